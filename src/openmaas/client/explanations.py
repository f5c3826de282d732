"""Explanations: which words of a text moved a classifier or a tagger toward a label
(`POST /v1/explain`).

Example::

    explained = client.explain("sentiment", "a gripping, beautifully shot film")
    print(explained.target.label, explained.method)
    for word in sorted(explained.words, key=lambda w: -w.score)[:3]:
        print(word.text, word.start, word.end, round(word.score, 3))
"""

from __future__ import annotations

from openmaas.client.resource import Resource
from openmaas.protocol.explanations import ExplainRequest, ExplainResponse, Method, SpanIn


class ExplanationsResource(Resource):
    """`/v1/explain`."""

    def explain(
        self,
        model: str,
        text: str,
        *,
        target: str | None = None,
        method: Method | None = None,
        span: tuple[int, int] | None = None,
    ) -> ExplainResponse:
        """Score every word of `text` toward `target` (default: the model's prediction) with
        `method` (default: integrated gradients where the model supports them, else
        occlusion); a tagger explains the entity at `span` (characters, end exclusive;
        default its most confident entity)."""
        body = ExplainRequest(
            model=model,
            input=text,
            target=target,
            method=method,
            span=SpanIn(start=span[0], end=span[1]) if span else None,
        )
        payload = body.model_dump(mode="json", exclude_none=True)
        return self._one("POST", "/v1/explain", ExplainResponse, json=payload)
