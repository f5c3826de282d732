"""The baseline for `embeddings_serving.py`: the embeddings server users hand-roll.

A FastAPI app with one `POST /v1/embeddings` route that calls `SentenceTransformer.encode`
once per request, from a sync `def` route (so FastAPI runs it in its thread pool), with no
batching across requests and the default JSON rendering of a dict of Python floats.

Run::

    python benchmarks/baseline_server.py --model-path DIR --port 8001 --threads 2
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer


class EmbeddingRequest(BaseModel):
    model: str
    input: str | list[str]


def build_app(model_path: Path, threads: int) -> FastAPI:
    torch.set_num_threads(threads)
    encoder = SentenceTransformer(str(model_path), device="cpu")
    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/embeddings")
    def create_embedding(body: EmbeddingRequest) -> dict[str, Any]:
        texts = [body.input] if isinstance(body.input, str) else body.input
        vectors = encoder.encode(texts)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector.tolist()}
                for i, vector in enumerate(vectors)
            ],
            "model": body.model,
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.model_path, args.threads),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_keep_alive=600,  # as OpenMaaS: the load generator keeps connections open
    )


if __name__ == "__main__":
    main()
