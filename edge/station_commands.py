"""The commands a station executes (``Controllable``, edge/control.py): pause, resume, snapshot,
reload-config. ``StationCommands`` is a part of ``EdgeService`` (edge/supervisor.py).

A reload builds the candidate pipeline off the inference thread, then trials it on one frame
and swaps it in on the inference thread, between two frames: the model is never used by two
threads, and a config that cannot inspect a frame changes nothing.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.capture import source_opener
from edge.commands import CommandRejected, ReloadConfigCommand
from edge.options import ServiceOptions
from edge.recipes import RecipeBook
from edge.reload import (
    Overrides,
    build_candidate,
    check_swappable,
    needs_model_load,
    requested_config,
    trial_frame_size,
)
from edge.snapshot import save_snapshot
from inspector.config import StationFile
from inspector.errors import InspectorError
from inspector.frames import Frame
from inspector.pipeline import Inspector

if TYPE_CHECKING:
    from edge.capture import CaptureWorker
    from edge.inference import InferenceWorker, Lane
    from edge.queues import BoundedQueue

log = logging.getLogger(__name__)


class StationCommands:
    """Pause, resume, snapshot and reload-config of one station."""

    # Set by EdgeService.__init__.
    config: StationFile
    options: ServiceOptions
    overrides: Overrides
    capture: CaptureWorker
    inference: InferenceWorker | None
    lane: Lane
    frames: BoundedQueue[Frame]
    _discarded: int
    _owns_inference: bool
    _reload_lock: threading.Lock
    recipes: RecipeBook

    def _refresh_status(self, *, force: bool = False) -> None:
        raise NotImplementedError

    def pause(self) -> dict[str, Any]:
        self.lane.paused.set()
        self._refresh_status()
        return {"paused": True}

    def resume(self) -> dict[str, Any]:
        if self.lane.paused.is_set():
            source = self.capture.source
            if source is not None and source.is_live:
                self._discarded += self.frames.clear()  # stale by now: inspect what the line shows next
            self.lane.paused.clear()
        self._refresh_status()
        return {"paused": False}

    def snapshot(self, label: str | None) -> dict[str, Any]:
        last = self.lane.last
        if last is None:
            raise CommandRejected("no frame has been inspected yet; nothing to snapshot", "snapshot")
        try:
            files = save_snapshot(self.options.snapshot_dir, last.frame, last.verdict, label)
        except OSError as error:
            raise CommandRejected(
                f"snapshot could not be written to {self.options.snapshot_dir}: {error}", "snapshot"
            ) from None
        return {
            "image": str(files.image),
            "verdict": str(files.verdict),
            "frame_index": last.frame.index,
            "verdict_message_id": last.verdict.message_id,
            "result": last.verdict.verdict,
        }

    def reload_config(self, command: ReloadConfigCommand) -> dict[str, Any]:
        # One reload at a time: two concurrent model loads would double the memory for nothing.
        if not self._reload_lock.acquire(blocking=False):
            raise CommandRejected("another reload-config is in progress", "reload-config")
        try:
            return self._reload(command)
        finally:
            self._reload_lock.release()

    def _reload(self, command: ReloadConfigCommand) -> dict[str, Any]:
        candidate = requested_config(
            command, self.overrides, allowed_dirs=self.options.reload_dirs, current=self.config
        )
        check_swappable(self.config, candidate)
        if candidate == self.config:
            return {"changed": False}
        running = self.lane.inspector
        model_reloaded = needs_model_load(running.config, candidate)
        if model_reloaded and not self._owns_inference:
            raise CommandRejected(
                "reload-config cannot change the model of one station of a multi-station process (every "
                "station shares one model); change it in the stations file and restart the service",
                "reload-config",
            )
        new = build_candidate(running, candidate)
        book = self._rebuilt_recipes(candidate, new)
        new = book.inspector()  # the recipe selected before the reload, when the new config still has it

        def trial_and_swap() -> None:
            # On the inference thread, between frames: the model is never used by two threads.
            # The current frame shows what the line looks like; a new source may not, so then a blank one.
            last = self.lane.last
            usable = last is not None and candidate.source == self.config.source
            frame = last.frame if last is not None and usable else _blank_frame(trial_frame_size(new))
            try:
                new.inspect(frame)
            except Exception as error:  # noqa: BLE001 - reported to the requester, nothing swapped
                width, height = frame.size
                raise CommandRejected(
                    f"reload-config: the new config cannot inspect a {width}x{height} frame: "
                    f"{type(error).__name__}: {error}",
                    "reload-config",
                ) from None
            self.lane.inspector = new
            self.lane.recipes = self.recipes = book

        try:
            if self.inference is None:
                raise RuntimeError("the inference worker is not running")
            self.inference.call_between_frames(trial_and_swap, self.options.reload_timeout_s)
        except TimeoutError:
            raise CommandRejected(
                "reload-config: the frame in flight did not finish in time; nothing changed", "reload-config"
            ) from None
        except RuntimeError as error:
            raise CommandRejected(f"reload-config: {error}", "reload-config") from None
        source_changed = candidate.source != self.config.source
        self.config = candidate
        if source_changed:
            self.capture.switch_source(source_opener(candidate.source))
        log.info(
            "config reloaded (model %s, source %s)",
            "reloaded" if model_reloaded else "kept",
            "reopened" if source_changed else "kept",
        )
        self._refresh_status()
        return {"changed": True, "model_reloaded": model_reloaded, "source_changed": source_changed}

    def _rebuilt_recipes(self, candidate: StationFile, new: Inspector) -> RecipeBook:
        try:
            book = RecipeBook(candidate, new)
        except InspectorError as error:
            raise CommandRejected(f"reload-config: {error.problem}", "reload-config") from None
        if self.recipes.selected in book.ids:
            book.select(self.recipes.selected)
        return book


def _blank_frame(size: tuple[int, int]) -> Frame:
    return Frame(np.zeros((size[1], size[0], 3), np.uint8), "reload-trial", 0, datetime.now(UTC))
