"""Command processing: one thread takes requests from the MQTT sink, validates, executes, responds.

The sink's callback runs on paho's network thread, so it only enqueues; a reload that
loads a model may take seconds and must not stall the connection. Requests are handled
one at a time, in arrival order; when the small queue is full the request is answered
"busy" at once rather than waiting unboundedly.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Collection
from typing import Any, Protocol

from edge.commands import (
    MAX_COMMAND_BYTES,
    CommandRejected,
    PauseCommand,
    ReloadConfigCommand,
    ResumeCommand,
    SelectRecipeCommand,
    SnapshotCommand,
    check_accepted,
    parse_command,
    response_payload,
)
from inspector.config import DEFAULT_MQTT_COMMANDS
from inspector.mqtt import Command, MqttSink

log = logging.getLogger(__name__)

_QUEUE_SIZE = 16


class Controllable(Protocol):
    """What commands act on (the service implements it)."""

    def pause(self) -> dict[str, Any]: ...

    def resume(self) -> dict[str, Any]: ...

    def reload_config(self, command: ReloadConfigCommand) -> dict[str, Any]: ...

    def snapshot(self, label: str | None) -> dict[str, Any]: ...

    def select_recipe(self, recipe_id: str) -> dict[str, Any]: ...


class CommandProcessor(threading.Thread):
    def __init__(
        self,
        sink: MqttSink,
        target: Controllable,
        *,
        on_result: Callable[[str | None, bool], None] = lambda command, ok: None,
        max_bytes: int = MAX_COMMAND_BYTES,
        accepted: Collection[str] = DEFAULT_MQTT_COMMANDS,
    ) -> None:
        super().__init__(name="commands", daemon=True)
        self._sink = sink
        self._target = target
        self._on_result = on_result
        self._max_bytes = max_bytes
        self._accepted = frozenset(accepted)
        self._requests: queue.Queue[Command | None] = queue.Queue(_QUEUE_SIZE)
        self.handled = 0
        self.rejected = 0

    def attach(self) -> None:
        """Subscribe to the station's command topic."""
        self._sink.on_command(self.submit)

    def submit(self, request: Command) -> None:
        """Sink callback (network thread): enqueue, or answer 'busy' if the queue is full."""
        try:
            self._requests.put_nowait(request)
        except queue.Full:
            self._answer(request, None, ok=False, error="busy: too many commands waiting; try again")

    def stop(self) -> None:
        # A full queue: the thread is busy and, being a daemon, cannot outlive the process anyway.
        with contextlib.suppress(queue.Full):
            self._requests.put_nowait(None)

    def run(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            self._handle(request)

    def _handle(self, request: Command) -> None:
        if not self._answerable(request):
            return  # not executed either: a request we cannot answer safely changes nothing
        name: str | None = None
        try:
            command = parse_command(request.payload, max_bytes=self._max_bytes)
            name = command.command
            check_accepted(command, self._accepted)
            result = self._execute(command)
        except CommandRejected as rejected:
            self._answer(request, rejected.command or name, ok=False, error=rejected.message)
        except Exception as error:  # noqa: BLE001 - an unexpected failure is still an answer, not silence
            log.exception("command %s failed", name)
            # The details stay in the local log: an exception's text may quote what it read.
            self._answer(request, name, ok=False, error=f"internal error ({type(error).__name__}); see the service log")
        else:
            self._answer(request, name, ok=True, result=result)

    def _answerable(self, request: Command) -> bool:
        """False for a response topic outside the station's response namespace (``<station>/response[/...]``);
        requests without one still run (MQTT 3.1.1). A refused request is not executed, and is answered on
        the namespace's own topic, so the requester can read why."""
        topic = request.response_topic
        if topic is None:
            return True
        namespace = self._sink.topics.response
        if topic == namespace or (topic.startswith(namespace + "/") and not any(c in topic for c in "#+")):
            return True
        # Another station's reject, a PLC's topic, our own command topic: the station publishes on none of them.
        log.warning("refusing a command whose response topic %r is outside %s/#", topic[:200], namespace)
        self.rejected += 1
        self._on_result(None, False)
        error = (
            f"response topic refused: set the MQTT v5 ResponseTopic to {namespace} or {namespace}/<your-id>; "
            "this station answers nowhere else. The command was not executed"
        )
        body = response_payload(None, ok=False, error=error)
        if not self._sink.respond(namespace, request.correlation_data, body):
            log.warning("could not send the refusal to %s (not connected)", namespace)
        return False

    def _execute(self, command: Any) -> dict[str, Any]:
        if isinstance(command, PauseCommand):
            return self._target.pause()
        if isinstance(command, ResumeCommand):
            return self._target.resume()
        if isinstance(command, ReloadConfigCommand):
            return self._target.reload_config(command)
        if isinstance(command, SnapshotCommand):
            return self._target.snapshot(command.label)
        if isinstance(command, SelectRecipeCommand):
            return self._target.select_recipe(command.recipe)
        raise CommandRejected(f"command {command.command!r} is not implemented")  # pragma: no cover

    def _answer(
        self,
        request: Command,
        command: str | None,
        *,
        ok: bool,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        if ok:
            self.handled += 1
            log.info("command %s done", command)
        else:
            self.rejected += 1
            log.warning("command %s rejected: %s", command or "(unknown)", error)
        self._on_result(command, ok)
        topic = request.response_topic
        if not topic:
            log.warning("command on %s had no response topic (MQTT v5 ResponseTopic); no answer sent", request.topic)
            return
        body = response_payload(command, ok=ok, error=error, result=result)
        if not self._sink.respond(topic, request.correlation_data, body):
            log.warning("could not send the answer to %s (not connected)", topic)
