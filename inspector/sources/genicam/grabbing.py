"""A GenICam camera as a ``FrameSource``: one grab thread, three trigger modes, failures survived.

The SDK specifics (pypylon, harvesters) sit behind ``CameraDriver``; this module owns what is
the same for every camera: the thread that alone talks to the device, the reconnect loop, and
how frames are handed on.

- ``free_run``: the camera streams; only the freshest frame is kept (a slow consumer judges
  what the line shows now), like a webcam.
- ``software``: nothing is grabbed until ``fire(part_id)``; the grab thread then executes
  TriggerSoftware and retrieves exactly that image, which carries the part id. A failed image
  (incomplete buffer) is fired again ``fire_retries`` times; a part whose image never comes is
  answered by the trigger book's time-out with the reason (``problem``).
- ``hardware``: the camera's input line fires it; every frame is kept in order (up to
  ``BACKLOG``) with its block id, its camera timestamp and ``trigger_sequence``, the count of
  line triggers since the source opened, gaps in block ids included (a frame the transport lost
  still used up a trigger), so part triggers can be matched to frames in order. A lost *first*
  frame is seen only where the driver knows where block ids start (``first_block_id``: pylon
  USB3 and the emulator 0, GigE 1; harvesters: unknown, the first frame seen counts as 0).

Failures: a grab time-out (free_run: ``max_timeouts`` in a row reopens the camera), an
incomplete buffer (counted, skipped), the camera unplugged or the SDK failing (``healthy`` goes
False, ``problem`` says why, the camera is reopened with back-off, the settings written again).
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

from inspector.backoff import Backoff
from inspector.camera_config import CameraConfig
from inspector.config import ReconnectConfig
from inspector.errors import SourceError
from inspector.sources.base import utcnow
from inspector.sources.genicam.settings import CameraSettingError, first_line
from inspector.sources.threaded import ThreadedSource

log = logging.getLogger(__name__)

# Hardware/software-triggered frames waiting to be taken; past this the oldest is dropped (counted).
BACKLOG = 64


class CameraLost(Exception):
    """The device is gone (unplugged, powered off, the link dropped): reopen it."""


class CameraUnavailable(Exception):
    """The device cannot be opened now (not found, busy): retry later."""


@dataclass(frozen=True)
class Grabbed:
    """One retrieved buffer: an image, or the reason it is not one."""

    image: np.ndarray | None
    block_id: int | None = None
    timestamp_s: float | None = None  # the camera's clock, seconds from its own origin; None when it has none
    failure: str | None = None  # "incomplete buffer: ..." when the image is not usable


class CameraDriver(Protocol):
    """What a camera SDK must offer; every call comes from the one grab thread."""

    name: str  # e.g. "pylon 0815-0000", for logs and errors
    first_block_id: int | None  # the block id of a session's first frame, None when the transport does not say

    def open(self, config: CameraConfig) -> None:
        """Open the device and write the settings; raises CameraUnavailable / CameraSettingError."""

    def start(self, latest_only: bool) -> None: ...

    def fire(self, timeout_s: float) -> None:
        """Execute the software trigger (waiting up to timeout_s for the camera to be ready)."""

    def grab(self, timeout_s: float) -> Grabbed | None:
        """The next buffer, None on time-out; raises CameraLost when the device is gone."""

    def removed(self) -> bool: ...

    def close(self) -> None: ...


class CameraSource(ThreadedSource):
    """Frames from a GenICam camera through ``driver``; see the module docstring for the modes."""

    thread_role = "grab"
    close_timeout_s = 3.0

    def __init__(
        self,
        driver: CameraDriver,
        config: CameraConfig,
        *,
        source_id: str,
        reconnect: ReconnectConfig | None = None,
        wait_for_first: bool = False,
        clock: Callable[[], datetime] = utcnow,
        poll_s: float = 0.2,
    ) -> None:
        # free_run keeps only the freshest frame; a triggered frame is a part's, each kept in order.
        super().__init__(source_id, keep=1 if config.trigger == "free_run" else BACKLOG, poll_s=poll_s, clock=clock)
        self.driver = driver
        self.config = config
        self.keeps_every_frame = config.trigger != "free_run"
        self.reconnect = reconnect or ReconnectConfig()
        self._fire_requests: queue.Queue[str] = queue.Queue()
        self._sequence_base = 0  # trigger_sequence of the first frame of the current session
        self._first_block: int | None = None
        self._last_block: int | None = None
        self._last_sequence = -1
        self.problem: str | None = None
        self.grab_timeouts = 0
        self.incomplete_buffers = 0
        self.fired = 0
        try:
            self._open()
        except CameraSettingError:
            raise  # a config the camera refuses will not fix itself: say so at start
        except (CameraUnavailable, CameraLost) as error:
            if not wait_for_first:
                raise SourceError(
                    f"{source_id}: {error}", "check the camera is connected, powered and not opened elsewhere"
                ) from None
            self.problem = f"camera unavailable: {error}"
            log.warning("%s: not available yet (%s); retrying in the background", source_id, error)
        self._start_thread(self._run)

    # -- what the service sees -----------------------------------------------------------------

    @property
    def trigger_mode(self) -> str:
        return self.config.trigger

    def fire(self, part_id: str) -> None:
        """Software trigger: take one image for ``part_id`` (returns at once; the image follows)."""
        if self.config.trigger != "software":
            raise SourceError(
                f"{self.source_id}: fire() needs source.camera.trigger: software (it is {self.config.trigger})"
            )
        self._fire_requests.put(part_id)

    # -- the grab thread -----------------------------------------------------------------------

    def _open(self) -> None:
        self.driver.open(self.config)
        self.driver.start(latest_only=self.config.trigger == "free_run")
        self._connected = True
        self.problem = None
        # Where this session's block ids start, when the transport says (a lost first frame is then seen).
        self._first_block = getattr(self.driver, "first_block_id", None)
        self._last_block = None
        self._sequence_base = self._last_sequence + 1
        self._stream_clock.reset()
        while not self._fire_requests.empty():  # parts fired while the camera was away have moved on
            log.warning("%s: part %s not fired: the camera was away", self.source_id, self._fire_requests.get())
        log.info("%s: camera open (%s, trigger %s)", self.source_id, self.driver.name, self.config.trigger)

    def _run(self) -> None:
        backoff = Backoff.from_policy(self.reconnect)
        try:
            while not self._closed.is_set():
                if not self._connected:
                    try:
                        self._open()
                    except (CameraUnavailable, CameraLost, CameraSettingError) as error:
                        self.problem = f"camera unavailable: {error}"
                        delay = backoff.next_delay()
                        log.warning("%s: %s; retrying in %.1f s", self.source_id, self.problem, delay)
                        self._closed.wait(delay)
                        continue
                    self.stats.reconnects += 1
                    log.info("%s: reconnected", self.source_id)
                try:
                    if self._step():
                        backoff.reset()
                except CameraLost as error:
                    self._lost(f"camera lost: {error}")
                except Exception as error:  # noqa: BLE001 - any SDK failure: reopen, never die
                    self._lost(f"camera failed: {type(error).__name__}: {first_line(error)}")
        finally:
            self._close_driver()
            self._thread_ended()

    def _step(self) -> bool:
        """One unit of grab work; True when a good frame came (the connection is proven)."""
        if self.config.trigger == "software":
            return self._serve_fire()
        grabbed = self.driver.grab(self.config.grab_timeout_s)
        if grabbed is None:
            if self.driver.removed():
                raise CameraLost("the device was removed")
            if self.config.trigger == "free_run":
                self.grab_timeouts += 1
                if self.grab_timeouts % self.config.max_timeouts == 0:
                    raise CameraLost(
                        f"{self.config.max_timeouts} grab time-outs of {self.config.grab_timeout_s:g} s in a row"
                    )
            return False  # hardware: no part passed the camera, nothing wrong
        return self._take(grabbed, part_id=None)

    def _serve_fire(self) -> bool:
        try:
            part_id = self._fire_requests.get(timeout=self.poll_s)
        except queue.Empty:
            if self.driver.removed():
                raise CameraLost("the device was removed") from None
            return False
        for attempt in range(self.config.fire_retries + 1):
            self.driver.fire(self.config.grab_timeout_s)
            self.fired += 1
            grabbed = self.driver.grab(self.config.grab_timeout_s)
            if grabbed is None:
                self.grab_timeouts += 1
                self.problem = f"part {part_id}: no image within {self.config.grab_timeout_s:g} s of firing"
                if self.driver.removed():
                    raise CameraLost("the device was removed")
            elif self._take(grabbed, part_id=part_id):
                return True
            if attempt < self.config.fire_retries:
                log.warning("%s: part %s: %s; firing again", self.source_id, part_id, self.problem)
        log.error("%s: part %s: no usable image (%s)", self.source_id, part_id, self.problem)
        return False

    def _take(self, grabbed: Grabbed, *, part_id: str | None) -> bool:
        """Hand a retrieved buffer on as a frame; False (and counted) when it is not usable."""
        sequence = self._trigger_sequence(grabbed.block_id)
        if grabbed.image is None:
            self.incomplete_buffers += 1
            self.stats.frames_skipped_corrupt += 1
            self.problem = grabbed.failure or "incomplete buffer"
            log.warning("%s: %s (block %s)", self.source_id, self.problem, grabbed.block_id)
            return False
        meta: dict[str, object] = {"camera_trigger": self.config.trigger}
        if grabbed.block_id is not None:
            meta["block_id"] = grabbed.block_id
        if grabbed.timestamp_s:
            meta["camera_timestamp_s"] = grabbed.timestamp_s
        if sequence is not None:
            meta["trigger_sequence"] = sequence
        self.problem = None
        self.grab_timeouts = 0
        self._emit(grabbed.image, stream_time_s=grabbed.timestamp_s or None, meta=meta, part_id=part_id)
        return True

    def _trigger_sequence(self, block_id: int | None) -> int | None:
        """Line triggers since the source opened, counted by block id so lost frames keep their place."""
        if self.config.trigger != "hardware":
            return None
        if block_id is None:
            sequence = self._last_sequence + 1
        else:
            if self._first_block is None:
                self._first_block = block_id
            if self._last_block is not None and block_id <= self._last_block:
                # Block ids wrapped (GigE Vision 1.x counts 16 bits): carry on from the last sequence.
                self._sequence_base, self._first_block = self._last_sequence + 1, block_id
            self._last_block = block_id
            sequence = self._sequence_base + block_id - self._first_block
        self._last_sequence = max(self._last_sequence, sequence)
        return sequence

    def _lost(self, reason: str) -> None:
        self._connected = False
        self.problem = reason
        log.warning("%s: %s; reopening", self.source_id, reason)
        self._close_driver()
        self._closed.wait(self.reconnect.initial_s)

    def _close_driver(self) -> None:
        try:
            self.driver.close()
        except Exception:  # noqa: BLE001 - closing a lost device is best effort
            log.debug("%s: closing the camera failed", self.source_id, exc_info=True)
