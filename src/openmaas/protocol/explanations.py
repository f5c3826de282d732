"""Wire models of `/v1/explain`: one text or one image, the model, and optionally the label
(`target`), the method, for a tagger the characters of the entity (`span`), and for an image
the grid of regions (`grid`) and a heatmap; the answer scores every word of a text, as
written, or every region of an image (boxes in its pixels), toward the label.

Example::

    ExplainRequest(model="sentiment", input="a gripping film", target="positive")
    # -> {"object": "explanation", "model": "sentiment", "method": "integrated-gradients",
    #     "target": {"label": "positive", "score": 0.97, "span": null},
    #     "words": [{"text": "a", "start": 0, "end": 1, "score": 0.01}, ...], ...}
    ExplainRequest(model="shapes", input={"type": "image_url", "image_url": {"url": url}},
                   grid=GridIn(rows=4, cols=4))
    # -> {..., "grid": {"rows": 4, "cols": 4}, "image": {"width": 32, "height": 32},
    #     "regions": [{"row": 0, "col": 0, "x": 0, "y": 0, "width": 8, "height": 8,
    #                  "score": 0.41}, ...], ...}
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from openmaas.protocol.common import Usage, check_texts
from openmaas.protocol.tasks import ImagePart

Method = Literal["integrated-gradients", "occlusion"]


class SpanIn(BaseModel):
    """Characters of the input, end exclusive."""

    model_config = ConfigDict(extra="forbid")

    start: int = Field(ge=0)
    end: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> SpanIn:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be past start ({self.start})")
        return self


class GridIn(BaseModel):
    """Regions of an image: `rows` x `cols` boxes of (nearly) equal size."""

    model_config = ConfigDict(extra="forbid")

    rows: int = Field(ge=1)
    cols: int = Field(ge=1)


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: str | ImagePart = Field(
        description="One text, or one image as an OpenAI content part "
        '({"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}).'
    )
    target: str | None = Field(
        default=None,
        description="The label to explain (a tagger: an entity type); default the predicted one.",
    )
    method: Method | None = Field(
        default=None,
        description="Default: integrated-gradients where the model supports it, else occlusion.",
    )
    span: SpanIn | None = Field(
        default=None,
        description="Token-classification models: the characters of the entity to explain; "
        "default its most confident entity (of `target`, when given).",
    )
    grid: GridIn | None = Field(
        default=None,
        description="Images: the regions scored, rows x cols; default the server's "
        "OPENMAAS_EXPLAIN_IMAGE_GRID a side (fewer for an image of fewer pixels).",
    )
    heatmap: bool = Field(
        default=False,
        description="Images: also answer the region scores as a PNG data URL of the image's "
        "size (red supports the label, blue speaks against it) to lay over it.",
    )

    @field_validator("input", mode="before")
    @classmethod
    def _image_part(cls, value: object) -> object:
        """An image part parsed on its own, so a malformed one is named as such."""
        if not isinstance(value, dict):
            return value
        try:
            return ImagePart.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(
                f"input{'.' + where if where else ''}: {first['msg']}; an image is "
                '{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}'
            ) from None

    @field_validator("input")
    @classmethod
    def _text(cls, value: str | ImagePart) -> str | ImagePart:
        if isinstance(value, str):
            check_texts([value])
        return value

    def image(self) -> ImagePart | None:
        return self.input if isinstance(self.input, ImagePart) else None

    def text(self) -> str:
        return self.input if isinstance(self.input, str) else ""


class WordOut(BaseModel):
    text: str  # as written in the input
    start: int  # character offsets into the input, end exclusive
    end: int
    score: float  # toward the target label: positive supports it


class RegionOut(BaseModel):
    row: int
    col: int
    x: int  # the region's box in the image as sent, in its pixels
    y: int
    width: int
    height: int
    score: float  # toward the target label: positive supports it


class GridOut(BaseModel):
    rows: int
    cols: int


class ImageSizeOut(BaseModel):
    width: int
    height: int


class TargetOut(BaseModel):
    label: str
    score: float  # the model's probability of the label for the input
    span: SpanIn | None = None  # taggers: the entity explained


class ExplainResponse(BaseModel):
    object: Literal["explanation"] = "explanation"
    model: str
    method: Method
    target: TargetOut
    words: list[WordOut] = Field(default_factory=list)  # texts
    grid: GridOut | None = None  # images: the regions' grid
    image: ImageSizeOut | None = None  # images: the size of the image as sent
    regions: list[RegionOut] | None = None  # images: row by row, left to right
    heatmap: str | None = None  # images, when asked for: a PNG data URL of the image's size
    passes: int  # forward passes the explanation took
    # integrated gradients: |sum of the scores - (probability at the input - at the baseline)|
    delta: float | None = None
    usage: Usage
