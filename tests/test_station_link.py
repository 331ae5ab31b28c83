"""The station link's reconnect loop (edge/station_link.py): back-off grows while the broker refuses, resets after
a connection the broker accepted. The broker and the clock are fakes: the waits are recorded, never slept."""

from __future__ import annotations

from typing import Any

import pytest

import edge.station_link as station_link
from edge.station_link import StationLink
from inspector.config import MqttConfig, ReconnectConfig, StationConfig
from inspector.errors import InspectorError


class _Accepted:
    is_failure = False


class _FakeClient:
    """Connects (CONNACK success), then the connection drops at once: ``loop_forever`` returns."""

    def __init__(self) -> None:
        self.on_connect: Any = None
        self.on_disconnect: Any = None
        self.on_message: Any = None

    def subscribe(self, topic: str, qos: int = 0) -> None:
        pass

    def loop_forever(self) -> None:
        self.on_connect(self, None, None, _Accepted(), None)
        self.on_disconnect(self, None, None, None, None)

    def disconnect(self) -> None:
        pass


class _RecordedWaits:
    """Stands in for the link's stop event: each wait is recorded and returns at once; stops after ``waits``."""

    def __init__(self, waits: int) -> None:
        self.delays: list[float] = []
        self._waits = waits

    def is_set(self) -> bool:
        return len(self.delays) >= self._waits

    def wait(self, timeout: float | None = None) -> bool:
        self.delays.append(float(timeout or 0.0))
        return self.is_set()

    def set(self) -> None:
        self._waits = 0


def test_the_link_back_off_grows_while_refused_and_resets_after_an_accepted_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Refused three times, accepted once (then the connection drops), refused twice more.
    outcomes = iter(["refused", "refused", "refused", "accepted", "refused", "refused"])

    def connect(client: _FakeClient, config: MqttConfig) -> None:
        if next(outcomes) == "refused":
            raise InspectorError("broker unreachable")

    monkeypatch.setattr(station_link, "build_client", lambda config, client_id: _FakeClient())
    monkeypatch.setattr(station_link, "connect", connect)
    config = MqttConfig(reconnect=ReconnectConfig(initial_s=1.0, max_s=60.0, jitter=0.0))
    link = StationLink(config, StationConfig(), on_trigger=lambda payload, at: None)
    waits = _RecordedWaits(6)
    link._stop = waits  # type: ignore[assignment]
    link._run()  # on this thread: every attempt, then the recorded wait after it
    # 1, 2, 4 while refused; the accepted connection resets it: 1 after it drops, then 2, 4 again.
    assert waits.delays == [1.0, 2.0, 4.0, 1.0, 2.0, 4.0]
    assert not link.connected
