"""Wire models of the OpenAI-compatible routes (request bodies validated, responses documented).

Field names and defaults follow the OpenAI API reference, so the official `openai` client works
unchanged. OpenMaaS extensions are marked as such.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from openmaas.protocol.common import Usage, check_texts

Role = Literal["system", "user", "assistant", "developer", "tool"]


class _Request(BaseModel):
    # Unknown fields are ignored, as OpenAI's own API does for forward compatibility.
    model_config = ConfigDict(extra="ignore")


# -- models -------------------------------------------------------------------------------------


class ReplicaCard(BaseModel):
    id: str
    state: str = Field(description="Ray Serve's word: STARTING, RUNNING, STOPPING, ...")
    pid: int | None = None
    node: str | None = Field(default=None, description="The node's IP address.")
    requests: int = Field(description="Requests of this API process the replica answered.")


class ReplicaSetCard(BaseModel):
    deployment: str = Field(description="The Ray Serve application serving this version.")
    running: int
    min_replicas: int
    max_replicas: int
    replicas: list[ReplicaCard]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # OpenMaaS extensions
    task: str
    version: int
    runtime: str
    aliases: dict[str, int] = Field(default_factory=dict)
    loaded: bool
    load_seconds: float | None = Field(default=None, description="When loaded: load time.")
    memory_bytes: int | None = Field(default=None, description="When loaded: its estimate.")
    served_by: str | None = Field(
        default=None,
        description="When loaded: the runtime it runs on (`onnx` when its ONNX variant serves it).",
    )
    voices: list[str] | None = Field(
        default=None, description="Speech models: the voices /v1/audio/speech takes."
    )
    replicas: ReplicaSetCard | None = Field(
        default=None,
        description="On Ray Serve (OPENMAAS_RAY_ADDRESS): the version's replicas.",
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- embeddings ---------------------------------------------------------------------------------

EmbeddingInput = str | list[str] | list[int] | list[list[int]]


class EmbeddingRequest(_Request):
    model: str
    input: EmbeddingInput = Field(description="A string, a list of strings, or token ids.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    truncate: bool = Field(
        default=False,
        description="OpenMaaS extension: cut inputs at the model's limit instead of a 400.",
    )

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: EmbeddingInput) -> EmbeddingInput:
        if isinstance(value, str):
            check_texts([value])
        elif not value:
            raise ValueError("input is empty; send at least one string")
        elif all(isinstance(v, str) for v in value):
            check_texts([v for v in value if isinstance(v, str)])
        elif any(isinstance(v, list) and not v for v in value):
            raise ValueError("a token id list in input is empty")
        return value


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


# -- chat and completions -----------------------------------------------------------------------


class ContentPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _GenerationRequest(_Request):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    # A 64-bit seed, as the sampler's generator takes; a larger one raised a 500 (issue 13).
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool | int | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(_GenerationRequest):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("send one prompt (a string, or a list of one string)")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None  # required by OpenAI, nullable; our models never refuse


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


# -- moderations --------------------------------------------------------------------------------


class ModerationRequest(_Request):
    input: str | list[str]
    model: str | None = None

    @field_validator("input")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        check_texts([value] if isinstance(value, str) else value)
        return value


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool] = Field(description="OpenAI's 13 categories.")
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[Literal["text", "image"]]]
    # OpenMaaS extensions: the classifier's own labels (but its "nothing wrong" ones)
    model_categories: dict[str, bool]
    model_category_scores: dict[str, float]


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]
    usage: Usage


# -- audio --------------------------------------------------------------------------------------


class TranscriptionSegmentOut(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class TranscriptionWordOut(BaseModel):
    word: str
    start: float
    end: float


class DurationUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionResponse(BaseModel):
    text: str
    usage: DurationUsage
    # verbose_json only
    task: Literal["transcribe", "translate"] | None = None
    language: str | None = None
    duration: float | None = None
    segments: list[TranscriptionSegmentOut] | None = None
    words: list[TranscriptionWordOut] | None = Field(
        default=None, description="With timestamp_granularities including 'word'."
    )
