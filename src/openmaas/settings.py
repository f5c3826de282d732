"""Server settings: read once at start from `OPENMAAS_*` environment variables, passed explicitly.

Example::

    settings = Settings(home=Path("state"), catalog_autoregister=False)
    app = build_app(settings)
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the server. Environment variables use the `OPENMAAS_` prefix."""

    model_config = SettingsConfigDict(env_prefix="OPENMAAS_", extra="ignore")

    home: Path = Field(default=Path(".openmaas"), description="Root of all server state.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means SQLite at $OPENMAAS_HOME/openmaas.db.",
    )
    artifacts_dir: Path | None = Field(
        default=None, description="Artifact root; default $OPENMAAS_HOME/artifacts."
    )
    artifacts_url: str | None = Field(
        default=None,
        description="Object storage for every artifact, dataset, checkpoint and job output "
        "(s3://bucket/prefix; endpoint, region and credentials from the usual AWS variables, "
        "AWS_ENDPOINT_URL included). Set, the artifacts dir is unused: what this process "
        "loads is cached in OPENMAAS_ARTIFACT_CACHE_DIR, verified by hash.",
    )
    artifact_cache_dir: Path | None = Field(
        default=None,
        description="Local cache of the object store's files (with OPENMAAS_ARTIFACTS_URL); "
        "default $OPENMAAS_HOME/artifact-cache.",
    )
    host: str = "127.0.0.1"
    port: int = 8000

    allow_pickle: bool = Field(
        default=False,
        description="Accept pickle-based weight files (.bin/.pt pickles, .pkl, .joblib). "
        "Pickles run code when loaded: enable only for models you trust.",
    )
    max_upload_mb: int = Field(default=4096, ge=1, description="Largest accepted upload body.")
    max_extracted_mb: int = Field(
        default=8192, ge=1, description="Largest total size of an unpacked archive."
    )
    max_archive_members: int = Field(default=20_000, ge=1)
    catalog_autoregister: bool = Field(
        default=True, description="Register available built-in catalog models on start."
    )
    log_level: str = "info"
    log_format: str = Field(default="text", description="text | json (one JSON object a line).")
    # Tracing (observability/tracing.py): off unless a collector is named. The standard
    # OTEL_EXPORTER_OTLP_* variables name one too; the other OTEL_* ones (headers, sampler,
    # service name, batch delays) are read by OpenTelemetry itself.
    otel_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OPENMAAS_OTEL_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "otel_endpoint"
        ),
        description="OTLP/HTTP collector to send trace spans to (its base URL: spans go to "
        "<url>/v1/traces); also OTEL_EXPORTER_OTLP_ENDPOINT. Unset: no tracing.",
    )
    otel_traces_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OPENMAAS_OTEL_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "otel_traces_endpoint",
        ),
        description="The full URL spans are posted to (wins over OPENMAAS_OTEL_ENDPOINT); "
        "also OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.",
    )
    git_sha: str | None = Field(
        default=None,
        description="The commit this build was made from, for openmaas_build_info (an image "
        "build sets it); default: read from the source checkout when there is one.",
    )

    # -- serving --------------------------------------------------------------------------
    device: str = Field(default="cpu", description="Where models run: cpu, cuda, cuda:1, ...")
    threads: int | None = Field(
        default=None, ge=1, description="Threads per model for inference; default all cores."
    )
    memory_budget_mb: int = Field(
        default=8192, ge=1, description="Loaded models beyond this are evicted, LRU first."
    )
    idle_unload_s: float = Field(
        default=1800.0, ge=0, description="Unload models unused this long; 0 = never."
    )
    preload: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Model references to load at start and keep loaded (comma-separated).",
    )
    auto_onnx: bool = Field(
        default=True,
        description="On a cpu server, each transformers embedding or text-classification "
        "version registered (not an optimization job's output) queues an `onnx` job that "
        "stores its ONNX export as the version's variant.",
    )
    serve_variants: bool = Field(
        default=True,
        description="Serve a version from its ONNX variant (when the export matched it "
        "within the job's tolerance) instead of its own files.",
    )
    reload_unloaded: bool = Field(
        default=False,
        description="Load a model unloaded through /v2/repository/models/NAME/unload again on "
        "its next inference request. Default: such a model answers 404 model_unloaded until it "
        "is loaded (/load), as Triton does; models never unloaded on request load on demand.",
    )
    max_batch_size: int = Field(default=64, ge=1)
    max_batch_tokens: int = Field(default=16_384, ge=1)
    max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="Longest wait for a batch to fill, from its first item. 0: run as soon "
        "as the model is free (batches still form while the previous one runs).",
    )
    refill_wait_ms: float = Field(
        default=25.0,
        ge=0,
        description="After a batch, longest wait for the callers it answered to send again, "
        "so that closed-loop clients share one batch (never more than a tenth of the batch's "
        "run; a lone client never waits). 0: off.",
    )
    max_queue: int = Field(default=1024, ge=1, description="Queued items per model before 429.")
    max_items_per_request: int = Field(default=2048, ge=1)
    max_audio_mb: int = Field(default=25, ge=1, description="Largest audio upload.")
    # Image classification (issue 18): both checked from a file's header, before decoding.
    max_image_mb: int = Field(default=10, ge=1, description="Largest encoded image, per image.")
    max_image_pixels: int = Field(
        default=25_000_000,
        ge=1,
        description="Most pixels (width x height) an image may decode to; past it the image "
        "is refused (400) before decoding, as a possible decompression bomb.",
    )
    max_dataset_mb: int = Field(default=512, ge=1, description="Largest dataset file.")
    max_concurrent_generations: int = Field(
        default=64, ge=1, description="Generation requests per model, running or waiting."
    )
    moderation_model: str = Field(
        default="",
        description="Text classifier that answers /v1/moderations when a request names none.",
    )
    cache_max_entries: int = Field(default=100_000, ge=0, description="0 turns the cache off.")
    cache_max_mb: int = Field(default=256, ge=0)
    cache_tasks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["embedding"],
        description="Tasks whose results are cached: embedding, text-classification, "
        "token-classification.",
    )
    resolve_ttl_s: float = Field(
        default=2.0,
        ge=0,
        description="How long a model reference's resolution is reused; alias moves made by "
        "another process show within this time (this process's own at once).",
    )
    # -- security and metering ------------------------------------------------------------
    dev_no_auth: bool = Field(
        default=False,
        description="Development only: serve without API keys (every caller is an admin of "
        "the default project). Refused unless the server binds to a loopback address.",
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="On a store without keys, import this as the admin key instead of "
        "generating and printing one.",
    )
    key_pepper: SecretStr | None = Field(
        default=None,
        description="Secret mixed into every key hash; default a random one kept in "
        "$OPENMAAS_HOME/secrets/pepper. Servers sharing a database must share it.",
    )
    auth_cache_ttl_s: float = Field(
        default=1.0,
        ge=0,
        description="How long a verified key is reused without a store read. Revocations "
        "through this process apply at once; through another process within this time.",
    )
    auth_failures_before_delay: int = Field(
        default=5, ge=1, description="Failed key attempts from one address before slowing."
    )
    auth_failures_before_block: int = Field(
        default=20, ge=1, description="Failed key attempts from one address before refusing."
    )
    auth_block_s: int = Field(
        default=300, ge=1, description="How long an address is refused, and the window."
    )
    redis_url: str = Field(
        default="",
        description="Redis for rate limits and quotas shared by several server processes; "
        "empty: kept in this process's memory.",
    )
    usage_flush_s: float = Field(
        default=1.0, gt=0, description="Usage records are written in batches this often."
    )
    usage_prices: dict[str, float] = Field(
        default_factory=dict,
        description="Price per 1000 tokens by model name (JSON), for the billing export.",
    )
    encryption_key: SecretStr | None = Field(
        default=None,
        description="Base64 of a 32-byte AES-256-GCM key: artifacts are encrypted at rest.",
    )
    encryption_key_file: Path | None = Field(
        default=None, description="A file holding the encryption key (instead of the variable)."
    )
    ssl_certfile: Path | None = Field(default=None, description="TLS certificate (PEM).")
    ssl_keyfile: Path | None = Field(default=None, description="TLS private key (PEM).")
    console_session_minutes: int = Field(
        default=480,
        ge=1,
        le=7 * 24 * 60,
        description="How long a web console sign-in (/ui) lasts before the key is asked again.",
    )

    # -- training jobs --------------------------------------------------------------------
    workers: int = Field(
        default=1,
        ge=0,
        description="Training worker processes `openmaas serve` starts (and restarts when "
        "they die); 0: none, jobs wait for `openmaas worker` processes elsewhere.",
    )
    training_threads: int | None = Field(
        default=None,
        ge=1,
        description="Torch threads each training worker uses; default all cores. Fewer leave "
        "cores to serving on a shared machine: with every core busy, OpenMP's threads wait on "
        "each other and a job can run several times slower than on one thread.",
    )
    batch_runners: int = Field(
        default=1,
        ge=0,
        description="Batches (`/v1/batches`) this server runs at once, each in a thread of the "
        "server process, through its own serving path; 0: it runs none (another server on "
        "the same database does).",
    )
    batch_concurrency: int = Field(
        default=4,
        ge=1,
        description="Requests of one batch in flight at once. They queue behind online "
        "requests, so more mainly fills batches when the server is otherwise idle.",
    )
    job_heartbeat_s: float = Field(
        default=5.0, gt=0, description="A worker records that it is alive this often."
    )
    job_heartbeat_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A running job whose worker has not heartbeaten this long is requeued "
        "and resumes from its last checkpoint.",
    )
    job_max_attempts: int = Field(
        default=3, ge=1, description="A job whose worker dies this many times fails."
    )
    max_eval_examples: int = Field(
        default=10_000,
        ge=1,
        description="Most examples an evaluation (`/v1/evaluations`) scores; a file with "
        "more is refused with 400.",
    )
    extra_recipes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Training recipes besides the built-in ones: comma-separated "
        "`module:attribute` names of Recipe instances or classes.",
    )
    # Quotas finding (issue 13): max_tokens was unbounded on /v1 completions and /v2 seq2seq.
    max_generation_tokens: int = Field(
        default=4096,
        ge=256,  # at least the 256 a request that names no max_tokens gets
        description="Largest max_tokens a request may ask for: generation (/v1/completions, "
        "/v1/chat/completions) and translation and summarization per input (/v1 and /v2); "
        "above it the request is refused with 400.",
    )
    # Issue 13, "sources open to any models:write key".
    allowed_package_sources: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Installed packages (spaCy pipelines, Python distributions) a non-admin "
        "key may register from, besides those the built-in catalog ships: comma-separated "
        "names. Admin keys may name any installed package.",
    )
    # Issue 13, audio length: a small compressed file can hold hours (641 KiB of FLAC is an
    # hour of silence); checked from the container's header before decoding, then while
    # decoding.
    max_audio_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="Longest audio accepted per transcription request, in seconds; longer "
        "files answer 413 before they are decoded.",
    )

    # -- input limits (issue 13, "one input fails the batch") -----------------------------
    # Refused with a 400 before an item is queued: past these, one text holds a model's only
    # thread for seconds (spaCy: 100,000 characters take ~6 s and ~300 MB) to minutes.
    max_input_chars: int = Field(
        default=100_000,
        ge=1,
        description="Longest text item, in characters, any model accepts (a model may "
        "accept fewer: spaCy's max_length, TextRank, VADER, Apertium).",
    )
    max_input_sentences: int = Field(
        default=400,
        ge=1,
        description="Longest text, in sentences, for models whose work grows with the square "
        "of the sentences (TextRank summarization: 1,600 sentences took 37.5 s).",
    )

    # -- explanations (/v1/explain): one text's work, bounded ---------------------------------
    explain_max_words: int = Field(
        default=256,
        ge=1,
        description="Longest text /v1/explain takes, in words: occlusion runs one forward pass "
        "per word (256 words on MiniLM: about 3 s on 2 cores).",
    )
    explain_steps: int = Field(
        default=32,
        ge=2,
        le=512,
        description="Integrated gradients' points on the path from the baseline (forward and "
        "backward passes; the scores' error, reported as delta, shrinks with more).",
    )
    explain_image_grid: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Regions a side of the grid an image is explained in when a request names "
        "none (8: 8 x 8 regions; fewer for an image of fewer pixels).",
    )
    explain_max_regions: int = Field(
        default=256,
        ge=1,
        le=4096,
        description="Most regions (rows x cols) an image explanation may ask for: occlusion "
        "runs one forward pass per region. At least OPENMAAS_EXPLAIN_IMAGE_GRID squared.",
    )

    # -- client addresses and the brute-force guard (issue 13: brute-force guard finding) --
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses or networks (CIDR) of reverse proxies whose "
        "X-Forwarded-For is believed: from them the client is the rightmost hop that is not "
        "itself a trusted proxy. Empty: the socket's address, the header ignored.",
    )
    auth_admit_valid_keys_when_blocked: bool = Field(
        default=False,
        description="A client address blocked for wrong keys may still use a valid key (its "
        "keys are still verified; wrong ones answer 429). Off: a blocked address is refused "
        "whatever key it sends, so the block bounds how many keys it can have checked.",
    )

    # -- storage (issue 13, "Archives and disk") ----------------------------------------------
    project_storage_quota_mb: int = Field(
        default=10_240,
        ge=0,
        description="What one project's model versions may keep in the artifact store, all "
        "together (uncompressed: an archive is counted as it unpacks); a registration past it "
        "is refused with 413. Admin keys are not bound by it. 0: no quota.",
    )
    max_hub_download_mb: int = Field(
        default=8192,
        ge=1,
        description="Largest Hugging Face Hub repository (the files a registration downloads, "
        "all together) that a registration may fetch; checked from the Hub's file sizes "
        "before downloading, and again on what arrived.",
    )

    # -- event loop and chat templates (issue 13) -------------------------------------
    # Tenant-controlled work on the event loop (issue 13): inputs this large are planned,
    # normalized and tokenized in a worker thread; smaller ones inline, where a thread hop
    # would cost more than the work.
    offload_input_chars: int = Field(
        default=16_384,
        ge=0,
        description="Requests whose texts total more characters than this are tokenized "
        "off the event loop; 0: always.",
    )
    # Tenant-uploaded chat templates (issue 13): a deadline and a size bound on rendering.
    chat_template_timeout_s: float = Field(
        default=1.0,
        gt=0,
        description="Longest a chat template may take to render; past it the request answers 400.",
    )
    max_prompt_chars: int = Field(
        default=2_000_000,
        ge=1,
        description="Largest rendered chat prompt, and largest string a chat template may "
        "build on the way, in characters.",
    )

    # Issue 13, probes under load: a model's Python thread (spaCy, tokenizers, templates)
    # keeps the GIL for the whole switch interval before the event loop gets it back, and one
    # probe needs the GIL a dozen times; at Python's 5 ms a probe took 100+ ms while a
    # tenant's batch ran.
    gil_switch_interval_ms: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="How long a thread may hold the GIL while another waits for it "
        "(sys.setswitchinterval), in ms: shorter keeps the event loop and the probes "
        "answering while models run Python code.",
    )

    # Issue 15, scale-out on Ray (docs/scaling.md). Unset: one process, Ray never imported.
    ray_address: str | None = Field(
        default=None,
        description="A Ray cluster to scale out on: `auto` (the cluster this node belongs to) "
        "or the head's HOST:PORT. Models are served by Ray Serve replicas (docs/scaling.md), "
        "training jobs that ask for `resources` run on Ray Train and search trials on Ray Tune "
        "(docs/scaling-training.md). Unset: everything runs on this machine, Ray never imported.",
    )
    ray_deployments: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='Per-model Ray Serve settings, JSON: {"MODEL" | "PROJECT/MODEL" | "*": '
        '{"min_replicas", "max_replicas", "target_ongoing_requests", "idle_s", "num_cpus", '
        '"num_gpus", "max_ongoing_requests"}} (docs/scaling.md).',
    )

    @field_validator(
        "preload",
        "cache_tasks",
        "extra_recipes",
        "allowed_package_sources",
        "trusted_proxies",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("artifacts_url")
    @classmethod
    def _object_store_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme, _, rest = value.partition("://")
        if scheme != "s3" or not rest.strip("/"):
            raise ValueError(
                f"OPENMAAS_ARTIFACTS_URL: {value!r} is not an object store URL; write "
                "s3://BUCKET or s3://BUCKET/PREFIX (or leave it unset for the local artifacts dir)"
            )
        return f"s3://{rest.strip('/')}"

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        # A typo must stop the server, not quietly trust nobody (or everybody).
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(
                    f"OPENMAAS_TRUSTED_PROXIES: {network!r} is not an IP address or network (CIDR)"
                ) from None
        return value

    @model_validator(mode="after")
    def _explain_grid_fits(self) -> Settings:
        if self.explain_image_grid**2 > self.explain_max_regions:
            raise ValueError(
                f"OPENMAAS_EXPLAIN_IMAGE_GRID={self.explain_image_grid} makes "
                f"{self.explain_image_grid**2} regions, past "
                f"OPENMAAS_EXPLAIN_MAX_REGIONS={self.explain_max_regions}: lower the one or "
                "raise the other"
            )
        return self

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        # Absolute once, here: a relative path handed on (a lexicon inside the home, say) is
        # joined by whatever opens it to a directory of its own choosing, not to ours.
        self.home = self.home.expanduser().absolute()
        for name in (
            "artifacts_dir",
            "artifact_cache_dir",
            "encryption_key_file",
            "ssl_certfile",
            "ssl_keyfile",
        ):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.expanduser().absolute())
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.home / 'openmaas.db').as_posix()}"
        else:
            self.database_url = _absolute_sqlite(self.database_url)
        if self.artifacts_dir is None:
            self.artifacts_dir = self.home / "artifacts"
        if self.artifact_cache_dir is None:
            self.artifact_cache_dir = self.home / "artifact-cache"
        return self

    @property
    def artifact_root(self) -> Path:
        assert self.artifacts_dir is not None  # filled by the validator
        return self.artifacts_dir

    @property
    def artifact_cache_root(self) -> Path:
        assert self.artifact_cache_dir is not None  # filled by the validator
        return self.artifact_cache_dir

    @property
    def traces_endpoint(self) -> str | None:
        """Where spans are posted (None: tracing is off)."""
        if self.otel_traces_endpoint:
            return self.otel_traces_endpoint
        if self.otel_endpoint:
            return f"{self.otel_endpoint.rstrip('/')}/v1/traces"
        return None

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * MiB

    @property
    def max_extracted_bytes(self) -> int:
        return self.max_extracted_mb * MiB

    @property
    def project_storage_quota_bytes(self) -> int:
        return self.project_storage_quota_mb * MiB

    @property
    def max_hub_download_bytes(self) -> int:
        return self.max_hub_download_mb * MiB


def _absolute_sqlite(url: str) -> str:
    """A SQLite URL with a relative file made absolute; any other URL as given."""
    if not url.startswith("sqlite"):
        return url
    parsed = make_url(url)
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return url
    path = Path(database).expanduser()
    if path.is_absolute():
        return url
    return parsed.set(database=str(path.absolute())).render_as_string(hide_password=False)
