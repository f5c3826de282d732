"""Wire models of the task routes OpenAI lacks: classify, ner, translate, summarize, rerank.

Every task route takes `model` and `input` (a string or a list of strings) and answers
`{"object": "list", "model", "data": [{"index", ...}], "usage"}`; rerank follows the
Jina/Cohere shape that rerank clients already speak.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="A data URL: data:image/png;base64,...")
    detail: str | None = Field(default=None, description="Accepted as OpenAI's; not used.")


class ImagePart(BaseModel):
    """An image as an OpenAI content part: `{"type": "image_url", "image_url": {"url": ...}}`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["image_url"]
    image_url: ImageURL


class ClassifyRequest(BaseModel):
    """Texts, or images as content parts (an image-classification model); multipart uploads
    (`model`, one or more `file` parts, `top_k`) are read as the image parts they stand for."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: str | list[str] | ImagePart | list[ImagePart]
    top_k: int | None = Field(default=None, ge=1, description="Labels per input; default all.")
    truncate: bool = False

    @field_validator("input", mode="before")
    @classmethod
    def _image_parts(cls, value: object) -> object:
        """Image parts parsed one by one, so a bad one is named (`input[1]: ...`)."""
        items = [value] if isinstance(value, dict) else value
        if not isinstance(items, list) or not any(isinstance(i, dict) for i in items):
            return value
        parts = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"input[{index}]: a list holds texts or image parts, not both")
            try:
                parts.append(ImagePart.model_validate(item))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise ValueError(
                    f"input[{index}]{'.' + where if where else ''}: {first['msg']}; an image part "
                    'is {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}'
                ) from None
        return parts[0] if isinstance(value, dict) else parts

    @field_validator("input")
    @classmethod
    def _inputs(
        cls, value: str | list[str] | ImagePart | list[ImagePart]
    ) -> str | list[str] | ImagePart | list[ImagePart]:
        if isinstance(value, ImagePart):
            return value
        if isinstance(value, list) and value and isinstance(value[0], ImagePart):
            return value
        check_texts([value] if isinstance(value, str) else [str(text) for text in value])
        return value

    def images(self) -> list[ImagePart] | None:
        """The image parts, or None for texts."""
        if isinstance(self.input, ImagePart):
            return [self.input]
        if isinstance(self.input, list) and self.input and isinstance(self.input[0], ImagePart):
            return [part for part in self.input if isinstance(part, ImagePart)]
        return None

    def texts(self) -> list[str]:
        if isinstance(self.input, str):
            return [self.input]
        return [text for text in self.input if isinstance(text, str)]


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
