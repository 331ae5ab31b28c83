"""Station configuration: pydantic v2 models loaded from YAML, validated once at start.

Errors name the file, the field path and what is allowed (``ConfigError``), so a
malformed config never surfaces as a pydantic or YAML traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from inspector.backends.base import BackendConfig
from inspector.backends.registry import DEFAULT_BACKEND, PLUGINS
from inspector.camera_config import CameraConfig
from inspector.config_paths import RELATIVE_TO_CONFIG, SET_RELATIVE_TO_CONFIG, resolve_relative
from inspector.errors import ConfigError
from inspector.payloads.trigger import RECIPE_ID_PATTERN
from inspector.plc_config import OpcUaConfig, SparkplugConfig

# Qwen3-VL: 16-px patches merged 2x2, so one visual token covers 32x32 px.
TILE_MULTIPLE = 32
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Characters that would break an MQTT topic level or a file name.
_TOPIC_LEVEL = re.compile(r"^[^/#+\s]+$")


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _topic_level(value: str) -> str:
    if not _TOPIC_LEVEL.match(value):
        raise ValueError(
            "must be non-empty and contain no '/', '#', '+' or whitespace (it becomes an MQTT topic level)"
        )
    return value


TopicLevel = Annotated[str, Field(min_length=1, max_length=64)]


class StationConfig(_Strict):
    """Where this inspection runs, in ISA-95 terms; it becomes the MQTT topic path."""

    site: TopicLevel = Field("site", description="plant or site; the first level of the MQTT topic path")
    area: TopicLevel = Field("area", description="area of the site (hall, department)")
    line: TopicLevel = Field("line", description="production line")
    station: TopicLevel = Field("station", description="inspection station on the line")
    camera: TopicLevel = Field("cam0", description="camera of the station (verdicts say which)")

    @field_validator("site", "area", "line", "station", "camera")
    @classmethod
    def _valid_level(cls, value: str) -> str:
        return _topic_level(value)


class ReconnectConfig(_Strict):
    """Reconnect back-off (inspector/backoff.py): doubles from initial_s to max_s, jittered, reset after a success."""

    initial_s: float = Field(0.5, gt=0, description="first wait after a connection fails")
    max_s: float = Field(30.0, gt=0, description="longest wait between reconnect attempts")
    jitter: float = Field(
        0.5,
        ge=0,
        le=1,
        description="each wait is drawn from [(1 - jitter) x delay, delay], so that a line's clients do not "
        "reconnect in lock-step after a broker or camera restart; 0 = no jitter",
    )


class SourceConfig(_Strict):
    """What to inspect: a video file, an image folder or glob, a camera index, an RTSP/HTTP URL, a GenICam camera."""

    uri: str | int | None = Field(
        None,
        description="file, folder, glob, camera index, rtsp:// or http(s):// URL, pylon://SERIAL (Basler, pypylon) "
        "or genicam://PRODUCER.cti?serial=… (any GenTL producer, harvesters)" + RELATIVE_TO_CONFIG,
    )
    pace: bool = Field(False, description="files: yield frames at their recorded fps instead of as fast as possible")
    loop: bool = Field(False, description="files: start again at the end (soak tests, demos)")
    reconnect: ReconnectConfig = ReconnectConfig()
    camera: CameraConfig = Field(
        CameraConfig(), description="GenICam cameras: settings and trigger mode (docs/cameras.md)"
    )
    # Triggered inspection (edge/triggers.py): one verdict per part instead of one per frame.
    trigger: Literal["none", "mqtt", "opcua"] = Field(
        "none",
        description="none: judge every frame (free-running); mqtt: judge one part per message on .../trigger (and "
        "per OPC UA StartSingleJob); opcua: one part per OPC UA StartSingleJob / EdgeService.trigger_part only",
    )
    trigger_frames: int = Field(1, ge=1, le=16, description="frames judged per trigger; the worst verdict wins")
    trigger_timeout_s: float = Field(
        2.0, gt=0, le=600, description="a trigger not served within this time gets an UNCERTAIN verdict saying why"
    )
    trigger_duplicate_window_s: float = Field(
        60.0, ge=0, le=86400, description="a part id triggered again within this window is ignored (0: never)"
    )
    trigger_backlog: int = Field(
        8, ge=1, le=1024, description="triggers waiting at most; one more gets an UNCERTAIN verdict at once"
    )
    trigger_delay_s: float = Field(
        0.0,
        ge=0,
        le=60,
        description="time from a part's trigger to the part being in view: only frames taken at least this long "
        "after the trigger (by the stream's or camera's own timestamps where it has them) are that part",
    )


class RectROI(_Strict):
    rect: tuple[int, int, int, int] = Field(description="[x0, y0, x1, y1) in frame pixels")

    @field_validator("rect")
    @classmethod
    def _ordered(cls, rect: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = rect
        if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
            raise ValueError("needs 0 <= x0 < x1 and 0 <= y0 < y1")
        return rect


class MaskROI(_Strict):
    mask: Path = Field(
        description="image file; non-zero pixels are inside the region of interest (read as frames "
        "are: 16-bit scaled to 8, transparent pixels are zero)" + RELATIVE_TO_CONFIG,
    )
    min_coverage: float = Field(0.05, gt=0, le=1, description="keep a tile when at least this share of it is inside")


def _roi_kind(value: Any) -> str:
    keys = value.keys() if isinstance(value, dict) else vars(value)
    return "mask" if "mask" in keys else "rect"


# `rect:` or `mask:` picks the branch, so an error names only the fields of the one meant.
ROI = Annotated[
    Annotated[RectROI, Tag("rect")] | Annotated[MaskROI, Tag("mask")],
    Discriminator(_roi_kind),
]


class TilingConfig(_Strict):
    tile: int = Field(512, ge=TILE_MULTIPLE, le=2048, description="tile side in pixels, a multiple of 32")
    overlap: float = Field(0.2, ge=0, lt=1, description="overlap ratio between neighbouring tiles")
    global_view: bool = Field(True, description="also judge the whole frame downscaled to one tile")
    roi: ROI | None = None

    @field_validator("tile")
    @classmethod
    def _multiple_of_32(cls, tile: int) -> int:
        if tile % TILE_MULTIPLE:
            lower = tile // TILE_MULTIPLE * TILE_MULTIPLE
            raise ValueError(
                f"must be a multiple of {TILE_MULTIPLE} (one Qwen3-VL visual token covers 32x32 px); "
                f"try {max(lower, TILE_MULTIPLE)} or {lower + TILE_MULTIPLE}"
            )
        return tile


def _backend_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("backend", DEFAULT_BACKEND)
    return getattr(value, "backend", None)  # None: not a mapping at all


# Which Qwen3-VL checkpoint, and how to run it: one config model per registered backend
# (inspector/backends/registry.py), picked by `backend:` (default torch), so an option that
# belongs to another backend (onnx_dir under torch) is an unknown key.
ModelConfig = Annotated[
    Union[tuple(Annotated[plugin.config, Tag(name)] for name, plugin in PLUGINS.items())],  # noqa: UP007
    Discriminator(_backend_tag),
]
_MODEL_ADAPTER: TypeAdapter[BackendConfig] = TypeAdapter(ModelConfig)


def parse_model_config(data: dict[str, Any], source: str = "model") -> BackendConfig:
    """Validate a ``model`` section alone (command-line overrides); errors as for a whole file."""
    try:
        return _MODEL_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(source, error, prefix=("model",))) from None


class DefectClass(_Strict):
    description: str = Field(min_length=1, description="what the defect looks like, in words (goes into the prompt)")
    threshold: float = Field(0.5, gt=0, le=1, description="probability at or above which a tile is NG for this class")


class InspectionConfig(_Strict):
    """What the model is asked, and how its answers become verdicts."""

    product: str = Field(min_length=1, description="what the camera sees, in words")
    ok_description: str = Field("no visible defect", description="the ok option's description in the prompt")
    defects: dict[str, DefectClass] = Field(min_length=1, description="the defect classes (at most 25), by name")
    uncertain_band: float = Field(
        0.15, ge=0, lt=1, description="a defect probability within this distance below its threshold is UNCERTAIN"
    )
    explanation: Literal["never", "defects", "always"] = Field(
        "defects", description="which tiles get an explanation in words: never, NG or uncertain ones, or all"
    )
    explanation_words: Literal["taught", "free"] = Field(
        "taught",
        description="taught: the class's words follow from the verdict, the region and size are chosen among "
        "the phrases inspector train teaches ('scratch: a thin line, top left, small'); free: whatever the "
        "model writes after 'Explanation:' (a checkpoint fine-tuned to explain in its own words)",
    )
    max_explanation_tokens: int = Field(48, ge=1, le=1024, description="bound on each explanation's length")

    @field_validator("defects")
    @classmethod
    def _class_names(cls, defects: dict[str, DefectClass]) -> dict[str, DefectClass]:
        for name in defects:
            if not _NAME.match(name):
                raise ValueError(f"class name {name!r} must be letters, digits, '_', '.', '-'")
            if name.lower() == "ok":
                raise ValueError("'ok' is the built-in no-defect class; list only defect classes")
        if len(defects) > 25:
            raise ValueError("at most 25 defect classes (each answer option is one letter)")
        return defects

    @property
    def classes(self) -> list[str]:
        """Answer options in prompt order: 'ok' first, then the defect classes."""
        return ["ok", *self.defects]

    def uncertain_floor(self, name: str) -> float:
        """Lowest probability of class ``name`` that makes a tile UNCERTAIN (rounded: 0.8 - 0.1 is 0.7)."""
        return max(round(self.defects[name].threshold - self.uncertain_band, 9), 0.0)


class JsonlSinkConfig(_Strict):
    path: Path = Field(
        description="JSON-lines file, one verdict per line (replay's default: results.jsonl)" + RELATIVE_TO_CONFIG
    )
    max_bytes: int = Field(
        0, ge=0, description="rotate the file when it would grow past this size (0: never); replay's resume reads all"
    )
    keep: int = Field(5, ge=1, le=1000, description="rotated files kept (verdicts.jsonl.1 newest ... .N oldest)")


class MqttTLSConfig(_Strict):
    ca_file: Path | None = Field(
        None,
        description="CA bundle that signed the broker certificate; empty: the system CAs" + RELATIVE_TO_CONFIG,
    )
    cert_file: Path | None = Field(
        None,
        description="client certificate (PEM), for brokers that require one" + RELATIVE_TO_CONFIG,
    )
    key_file: Path | None = Field(
        None,
        description="client private key (PEM, unencrypted); defaults to cert_file" + RELATIVE_TO_CONFIG,
    )
    verify_hostname: bool = Field(True, description="check the broker certificate names the host; false only for tests")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> MqttTLSConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate it belongs to)")
        return self


# What the MQTT outbox may drop when it is full (rejects are never dropped; they expire instead).
MqttOverflowPolicy = Literal["drop_oldest_ok", "drop_oldest", "drop_new"]


class MqttConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    username: str | None = None
    password: str | None = Field(None, repr=False)
    password_env: str | None = Field(None, description="environment variable holding the password")
    password_file: Path | None = Field(None, description="file holding the password" + RELATIVE_TO_CONFIG)
    tls: MqttTLSConfig | None = None
    topic_root: str = Field("inspector", min_length=1)
    outbox: Path = Field(
        Path("outbox.sqlite"),
        description="durable outbox (SQLite, WAL)" + SET_RELATIVE_TO_CONFIG,
    )
    outbox_max_messages: int = Field(100_000, ge=10)
    outbox_max_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    reject_expiry_s: int = Field(10, ge=1, description="a reject older than this is never delivered (MQTT v5)")
    outbox_overflow: MqttOverflowPolicy = Field(
        "drop_oldest_ok",
        description="when the outbox is full: drop_oldest_ok (OK, then UNCERTAIN, then NG verdicts, oldest first), "
        "drop_oldest (oldest verdict of any kind) or drop_new (refuse the new verdict); rejects are never dropped",
    )
    outbox_sync: Literal["normal", "full"] = Field(
        "normal",
        description="normal: an accepted verdict survives a process crash; full: also a power loss (fsync per verdict)",
    )
    max_inflight: int = Field(100, ge=1, le=65535, description="QoS 1 messages sent but not yet acknowledged")
    redeliver_window_s: float = Field(
        5.0,
        ge=0,
        description="after a lost connection, send again what the broker acknowledged this many seconds before it: "
        "a broker that crashes loses messages it acknowledged but had not yet saved or delivered (0: off)",
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=120, description="TCP connect, TLS handshake and CONNACK")
    reconnect: ReconnectConfig = ReconnectConfig()

    @field_validator("topic_root")
    @classmethod
    def _valid_root(cls, value: str) -> str:
        levels = value.split("/")
        if any(not level for level in levels):
            raise ValueError("must not start or end with '/' nor contain '//'")
        for level in levels:
            _topic_level(level)
        return value

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        given = [n for n in ("password", "password_env", "password_file") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of password, password_env, password_file (got {', '.join(given)})")
        return self


class SinksConfig(_Strict):
    jsonl: JsonlSinkConfig | None = None
    mqtt: MqttConfig | None = None


class EvidenceConfig(_Strict):
    """Evidence pictures (edge/evidence.py): a JPEG with boxes for every NG or UNCERTAIN verdict."""

    enabled: bool = Field(True, description="write evidence pictures at all")
    dir: Path = Field(
        Path("evidence"),
        description="where the JPEGs go" + SET_RELATIVE_TO_CONFIG,
    )
    max_files: int = Field(1000, ge=1, description="keep at most this many pictures (oldest removed first)")
    max_age_s: float = Field(7 * 86400.0, gt=0, description="remove pictures older than this")
    heatmap: bool = Field(False, description="also draw the per-class probability heatmap beside the frame")
    jpeg_quality: int = Field(85, ge=10, le=100)
    queue_size: int = Field(
        8, ge=1, le=1024, description="pictures waiting for the writer; one more is dropped (inference never waits)"
    )
    mqtt_snapshot: bool = Field(False, description="publish the last NG picture, retained, on .../snapshot")


# Commands taken over MQTT unless edge.mqtt_commands says otherwise: not reload-config.
DEFAULT_MQTT_COMMANDS: tuple[Literal["pause", "resume", "snapshot", "select-recipe"], ...] = (
    "pause",
    "resume",
    "snapshot",
    "select-recipe",
)


class EdgeConfig(_Strict):
    """The edge service's own settings (`inspector-edge`); its command-line flags override them."""

    heartbeat_s: float = Field(10.0, gt=0, description="seconds between heartbeats on .../health")
    metrics_host: str = Field("127.0.0.1", min_length=1, description="address of /metrics and /healthz")
    metrics_port: int = Field(9108, ge=0, le=65535, description="port of /metrics and /healthz (0: off)")
    snapshot_dir: Path = Field(
        Path("snapshots"),
        description="where the snapshot command writes" + SET_RELATIVE_TO_CONFIG,
    )
    queue_size: int = Field(4, ge=1, le=1024, description="frames buffered between capture and inference (files)")
    drain_timeout_s: float = Field(10.0, ge=0, description="longest wait for the MQTT outbox to empty at shutdown")
    stall_timeout_s: float = Field(60.0, gt=0, description="one frame in inference longer than this is a hang")
    # The failure policy (docs/security.md): a station that fails every verdict must not look online.
    degraded_after: int = Field(
        5, ge=1, description="verdicts failed in a row (inspection errors, or refused by a sink) that make it degraded"
    )
    exit_after: int = Field(
        200, ge=0, description="verdicts failed in a row after which the service exits 1 for a restart (0: never)"
    )
    sink_retries: int = Field(2, ge=0, le=10, description="tries again a sink that raised before the verdict is failed")
    spill_file: Path = Field(
        Path("undelivered.jsonl"),
        description="JSON lines of the verdicts a sink refused, kept for replay (several stations: one file "
        "each, the station's key before the suffix)" + SET_RELATIVE_TO_CONFIG,
    )
    # Who may steer the station (edge/commands.py, edge/reload.py, edge/web/).
    mqtt_commands: list[Literal["pause", "resume", "reload-config", "snapshot", "select-recipe"]] = Field(
        list(DEFAULT_MQTT_COMMANDS),
        description="commands accepted on .../cmd; others are refused (reload-config swaps the model and the "
        "prompt: add it only where the broker's ACL limits who may publish on .../cmd)",
    )
    reload_paths: list[Path] = Field(
        default_factory=list,
        description="folders reload-config may read, besides the config file's own folder" + RELATIVE_TO_CONFIG,
    )
    evidence: EvidenceConfig = EvidenceConfig()
    live_host: str = Field("127.0.0.1", min_length=1, description="address of the live page (edge/web)")
    live_port: int = Field(9109, ge=0, le=65535, description="port of the live page (0: off)")
    live_token_env: str | None = Field(
        "INSPECTOR_LIVE_TOKEN", description="environment variable holding the live page's token"
    )
    live_token_file: Path | None = Field(
        None,
        description="file holding the live page's token (wins over the env)" + RELATIVE_TO_CONFIG,
    )
    opcua: OpcUaConfig | None = Field(None, description="the OPC UA server for PLCs and SCADA (docs/opcua.md)")
    sparkplug: SparkplugConfig | None = Field(None, description="the Sparkplug B edge node (docs/sparkplug.md)")


# The recipe the top-level ``inspection`` (and ``model``) sections form when no recipe of that id is listed.
DEFAULT_RECIPE = "default"


class RecipeConfig(_Strict):
    """One product the station can inspect: its taxonomy, prompt and thresholds, optionally its own model."""

    description: str | None = Field(None, description="what the recipe is for, in words (status, OPC UA, docs)")
    inspection: InspectionConfig = Field(
        description="the product, its defect classes (taxonomy), their thresholds and the uncertain band"
    )
    model: ModelConfig | None = Field(
        None, description="a model of its own (loaded at start beside the station's); default: the station's model"
    )


class StationFile(_Strict):
    """The whole YAML file."""

    station: StationConfig = StationConfig()
    source: SourceConfig = SourceConfig()
    tiling: TilingConfig = TilingConfig()
    model: ModelConfig
    inspection: InspectionConfig
    recipes: dict[Annotated[str, Field(pattern=RECIPE_ID_PATTERN)], RecipeConfig] = Field(
        default_factory=dict,
        description="product recipes the line controller selects by id (OPC UA SelectRecipe, MQTT select-recipe, "
        "Sparkplug DCMD); the top-level inspection and model sections are the recipe 'default' unless one of "
        "that id is listed",
    )
    default_recipe: str = Field(DEFAULT_RECIPE, description="the recipe selected at start")
    sinks: SinksConfig = SinksConfig()
    edge: EdgeConfig = EdgeConfig()

    @model_validator(mode="after")
    def _default_recipe_exists(self) -> StationFile:
        if self.default_recipe not in self.recipe_ids:
            raise ValueError(
                f"default_recipe {self.default_recipe!r} is not a recipe of this station; "
                f"use one of: {', '.join(self.recipe_ids)}"
            )
        return self

    @property
    def recipe_ids(self) -> list[str]:
        """Every recipe id this station accepts, the implicit 'default' first."""
        return [DEFAULT_RECIPE, *(rid for rid in self.recipes if rid != DEFAULT_RECIPE)]

    def for_recipe(self, recipe_id: str) -> StationFile:
        """This config with ``inspection`` (and ``model``) replaced by the recipe's; KeyError for an unknown id."""
        recipe = self.recipes.get(recipe_id)
        if recipe is None:
            if recipe_id != DEFAULT_RECIPE:
                raise KeyError(recipe_id)
            return self
        return self.model_copy(update={"inspection": recipe.inspection, "model": recipe.model or self.model})


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for previous, item in zip((None, *loc), loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif previous == "roi" and item in ("rect", "mask") or previous == "model" and item in PLUGINS:
            continue  # the union branch tag pydantic inserts, not a key the user wrote
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def format_validation_error(source: str, error: ValidationError, prefix: tuple[Any, ...] = ()) -> str:
    """One line per problem: ``file: field.path: message (got value)``.

    ``prefix``: where the validated mapping sits in the file (``("model",)`` for the model section alone).
    """
    lines = [f"{source}: invalid configuration ({error.error_count()} problem(s))"]
    for item in error.errors():
        got = item.get("input")
        loc = (*prefix, *item["loc"])
        shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against `inspector config check --help`"
            if loc[:1] == ("model",) and len(loc) == 3 and loc[1] in PLUGINS:
                message = _misplaced_model_key(str(loc[1]), str(loc[2]))
        elif item["type"] == "union_tag_invalid":
            tag = item.get("ctx", {}).get("tag")
            loc, shown = (*loc, "backend"), f" (got {tag!r})"
            message = f"unknown backend; use one of: {', '.join(PLUGINS)}"
        elif item["type"] == "union_tag_not_found":
            message = "must be a mapping with path: and backend: (one of " + ", ".join(PLUGINS) + ")"
        lines.append(f"  {_field_path(loc)}: {message}{shown}")
    return "\n".join(lines)


def _misplaced_model_key(backend: str, key: str) -> str:
    owners = [name for name, plugin in PLUGINS.items() if key in plugin.config.model_fields]
    if owners:
        return f"not an option of backend {backend}; it belongs to backend {' / '.join(owners)}"
    return f"unknown key for backend {backend}; check its spelling against `inspector config check --help`"


def parse_config(data: object, source: str = "<config>") -> StationFile:
    """Validate an already-parsed mapping."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return StationFile.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(source, error), "see docs/configuration.md") from None


def load_config(path: str | Path) -> StationFile:
    """Read and validate a station YAML file; the relative paths it writes are taken from its own folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", "pass an existing YAML file, e.g. configs/demo.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    return resolve_relative(parse_config(data, str(path)), path.parent)
