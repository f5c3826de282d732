"""Wire models of `/v1/explain`: one text, the model, and optionally the label (`target`),
the method and, for a tagger, the characters of the entity (`span`); the answer scores every
word of the input, as written, toward the label.

Example::

    ExplainRequest(model="sentiment", input="a gripping film", target="positive")
    # -> {"object": "explanation", "model": "sentiment", "method": "integrated-gradients",
    #     "target": {"label": "positive", "score": 0.97, "span": null},
    #     "words": [{"text": "a", "start": 0, "end": 1, "score": 0.01}, ...], ...}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from openmaas.protocol.common import Usage, check_texts

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


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: str = Field(description="One text to explain.")
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

    @field_validator("input")
    @classmethod
    def _text(cls, value: str) -> str:
        check_texts([value])
        return value


class WordOut(BaseModel):
    text: str  # as written in the input
    start: int  # character offsets into the input, end exclusive
    end: int
    score: float  # toward the target label: positive supports it


class TargetOut(BaseModel):
    label: str
    score: float  # the model's probability of the label for the input
    span: SpanIn | None = None  # taggers: the entity explained


class ExplainResponse(BaseModel):
    object: Literal["explanation"] = "explanation"
    model: str
    method: Method
    target: TargetOut
    words: list[WordOut]
    passes: int  # forward passes the explanation took
    # integrated gradients: |sum of the scores - (probability at the input - at the baseline)|
    delta: float | None = None
    usage: Usage
