"""One station at run time, for replay (`inspector replay`) and the edge service (`inspector-edge`) alike.

- ``Overrides``: command-line values that win over the config file (model path, backend,
  ONNX graphs, source...), applied and re-validated as one;
- ``build_sinks``: the JSONL and MQTT sinks for a config plus an output path / publish URL;
- ``ErrorPolicy``: a frame whose inspection raises gets an UNCERTAIN verdict carrying the
  error, and is counted; the caller decides whether to go on (the line) or stop (``--fail-fast``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector.config import MqttConfig, StationFile
from inspector.errors import InspectorError

if TYPE_CHECKING:  # torch, OpenCV and paho load with the model and the sinks, not with this module
    from inspector.frames import Frame
    from inspector.payloads.verdict import FrameVerdict
    from inspector.pipeline import Inspector
    from inspector.sinks.base import Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Overrides:
    """Command-line values that win over any config file (at start and, on the edge, on every reload)."""

    model: str | None = None
    backend: str | None = None
    onnx_dir: str | None = None
    device: str | None = None
    source: str | None = None
    loop: bool = False
    pace: bool = False

    def apply(self, config: StationFile) -> StationFile:
        """The config with these values in place, validated like the file (``ConfigError`` names the field)."""
        from inspector.pipeline import model_config_with

        config = model_config_with(
            config, path=self.model, backend=self.backend, onnx_dir=self.onnx_dir, device=self.device
        )
        changes: dict[str, Any] = {}
        if self.source is not None:
            changes["uri"] = self.source
        if self.loop:
            changes["loop"] = True
        if self.pace:
            changes["pace"] = True
        if changes:
            config = config.model_copy(update={"source": config.source.model_copy(update=changes)})
        return config


def mqtt_settings(config: StationFile, publish: str | None, *, from_config: bool) -> MqttConfig | None:
    """The broker to publish to: ``publish`` (a URL over the config's MQTT settings), else the
    config's ``sinks.mqtt`` when ``from_config`` (the edge), else none (replay publishes only when asked)."""
    if publish:
        from inspector.mqtt import mqtt_config_from_url

        return mqtt_config_from_url(publish, config.sinks.mqtt)
    return config.sinks.mqtt if from_config else None


@dataclass
class StationSinks:
    """Where verdicts go; ``mqtt`` is also the station channel (status, health, commands)."""

    sinks: list[Sink] = field(default_factory=list)
    mqtt: Any = None  # inspector.mqtt.MqttSink | None

    def close(self, timeout_s: float | None = None) -> None:
        for sink in self.sinks:
            try:
                sink.close() if timeout_s is None else sink.close(timeout_s)
            except Exception:  # noqa: BLE001 - close the others regardless
                log.exception("closing %s failed", type(sink).__name__)


def build_sinks(
    config: StationFile, inspector: Inspector, *, jsonl: Path | None, mqtt: MqttConfig | None
) -> StationSinks:
    """A JSONL sink at ``jsonl`` and an MQTT sink on ``mqtt`` (its birth message describes ``inspector``)."""
    from inspector.sinks.jsonl import JsonlSink

    built = StationSinks()
    if jsonl is not None:
        rotation = config.sinks.jsonl
        if rotation is not None:
            built.sinks.append(JsonlSink(jsonl, max_bytes=rotation.max_bytes, keep=rotation.keep))
        else:
            built.sinks.append(JsonlSink(jsonl))
    if mqtt is not None:
        from inspector.mqtt import MqttSink
        from inspector.pipeline import describe

        try:
            built.mqtt = MqttSink(mqtt, config.station, birth=describe(inspector))
        except BaseException:
            built.close(0)  # the JSONL file is already open
            raise
        built.sinks.append(built.mqtt)
    return built


@dataclass(frozen=True, slots=True)
class FrameFailure:
    """A frame whose inspection raised; its UNCERTAIN verdict carries ``error``."""

    source_id: str
    frame_index: int
    error: str


class FailFast(InspectorError):
    """Raised by ``ErrorPolicy.judge`` with ``fail_fast`` after the failed frame's verdict was made."""

    def __init__(self, failure: FrameFailure, verdict: FrameVerdict) -> None:
        super().__init__(
            f"frame {failure.frame_index} of {failure.source_id} could not be inspected: {failure.error}",
            "fix the cause, or run without --fail-fast to give such frames an UNCERTAIN verdict and go on",
        )
        self.failure = failure
        self.verdict = verdict


@dataclass
class ErrorPolicy:
    """A frame that fails gets an UNCERTAIN verdict carrying the error, and is counted.

    One bad frame must not stop the line: ``judge`` returns that verdict and goes on. With
    ``fail_fast`` (replay) it raises ``FailFast`` carrying the verdict, so the caller can
    still write it before stopping. ``failures`` keeps the first ``keep`` for the summary.
    """

    fail_fast: bool = False
    keep: int = 20
    count: int = 0
    failures: list[FrameFailure] = field(default_factory=list)
    last: FrameFailure | None = None
    on_failure: Callable[[FrameFailure], None] | None = None

    def judge(self, inspector: Inspector, frame: Frame) -> FrameVerdict:
        try:
            return inspector.inspect(frame)
        except Exception as error:  # noqa: BLE001 - any failure of one frame becomes its verdict
            verdict, failure = failed_frame(inspector, frame, error)
            self.count += 1
            self.last = failure
            if len(self.failures) < self.keep:
                self.failures.append(failure)
            if self.on_failure is not None:
                self.on_failure(failure)
            if self.fail_fast:
                raise FailFast(failure, verdict) from None
            return verdict


def failed_frame(
    inspector: Inspector, frame: Frame, error: BaseException, *, where: str = ""
) -> tuple[FrameVerdict, FrameFailure]:
    """The UNCERTAIN verdict carrying ``error`` for a frame that could not be judged, logged once.

    ``ErrorPolicy.judge`` uses it for one frame; the edge's batching worker for each frame of
    a batch that failed. ``where`` prefixes the log line (the edge's lane name).
    """
    verdict = inspector.error_verdict(frame, error)
    failure = FrameFailure(frame.source_id, frame.index, verdict.error or type(error).__name__)
    log.error(
        "%sframe %d of %s could not be inspected: %s",
        where,
        frame.index,
        frame.source_id,
        failure.error,
        exc_info=log.isEnabledFor(logging.DEBUG),
    )
    return verdict, failure
