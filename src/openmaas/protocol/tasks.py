"""Wire models of the task routes OpenAI lacks: classify, ner, translate, summarize, rerank.

Every task route takes `model` and `input` (a string or a list of strings) and answers
`{"object": "list", "model", "data": [{"index", ...}], "usage"}`; rerank follows the
Jina/Cohere shape that rerank clients already speak.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from openmaas.protocol.common import Usage, check_texts


class _TextsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: str | list[str]

    @field_validator("input")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        check_texts([value] if isinstance(value, str) else value)
        return value


class ClassifyRequest(_TextsRequest):
    top_k: int | None = Field(default=None, ge=1, description="Labels per input; default all.")
    truncate: bool = False


class NerRequest(_TextsRequest):
    truncate: bool = False


class TranslateRequest(_TextsRequest):
    source_language: str | None = None
    target_language: str | None = None
    # Bounded by the server's OPENMAAS_MAX_GENERATION_TOKENS (400 above it).
    max_tokens: int = Field(default=256, ge=1)


class SummarizeRequest(_TextsRequest):
    # Bounded by the server's OPENMAAS_MAX_GENERATION_TOKENS (400 above it).
    max_tokens: int = Field(default=256, ge=1)
    ratio: float | None = Field(
        default=None, gt=0, le=1, description="Extractive models: share of sentences kept."
    )


class LabelOut(BaseModel):
    label: str
    score: float


class Classification(BaseModel):
    index: int
    label: str
    score: float
    labels: list[LabelOut]


class EntityOut(BaseModel):
    text: str
    label: str
    start: int
    end: int
    score: float | None


class EntitiesOut(BaseModel):
    index: int
    entities: list[EntityOut]


class TextOut(BaseModel):
    index: int
    text: str


class _ListResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    usage: Usage


class ClassifyResponse(_ListResponse):
    data: list[Classification]


class NerResponse(_ListResponse):
    data: list[EntitiesOut]


class TextResponse(_ListResponse):
    data: list[TextOut]


class RerankDocument(BaseModel):
    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    query: str = Field(min_length=1)
    documents: list[str | RerankDocument] = Field(min_length=1)
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    truncate: bool = True

    @field_validator("documents")
    @classmethod
    def _documents(cls, value: list[str | RerankDocument]) -> list[str | RerankDocument]:
        check_texts([d if isinstance(d, str) else d.text for d in value])
        return value

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult]
    usage: Usage
