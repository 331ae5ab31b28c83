"""`inspector watch (URL | --config FILE)`: live verdicts from a broker, every payload checked against the schema."""

from __future__ import annotations

import argparse
import queue
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from inspector.backoff import Backoff
from inspector.config import MqttConfig, load_config
from inspector.errors import InspectorError
from inspector.mqtt.connection import Link, MqttConnectError, open_link
from inspector.mqtt.topics import split_topic, watch_filters
from inspector.mqtt.url import mqtt_config_from_url
from inspector.payloads.reject import REJECT_SCHEMA_VERSION, RejectMessage
from inspector.payloads.status import STATUS_SCHEMA_VERSION, StatusMessage
from inspector.payloads.verdict import SCHEMA_VERSION, FrameVerdict

DESCRIPTION = """\
Subscribe to the verdict, reject and status topics of one or many stations and show
each message as it arrives. Every payload is validated against its schema (`inspector
schema`); a malformed one is flagged in red with the validation error. Duplicates (the
same message_id delivered again, as at-least-once delivery allows) are shown once.

Exit status: 0, or 1 when a payload was malformed or --count was not reached in time.
"""

EXAMPLES = """\
examples:
  inspector watch mqtt://127.0.0.1:1883
  inspector watch --config configs/line-example.yaml --line line-3
  inspector watch mqtts://dash:secret@broker:8883/acme --station final-check --json | jq .verdict
  inspector watch mqtt://127.0.0.1 --count 10 --timeout 30     # for scripts and tests
"""

Message = FrameVerdict | RejectMessage | StatusMessage
_MODELS: dict[str, tuple[type[BaseModel], str]] = {
    "verdict": (FrameVerdict, SCHEMA_VERSION),
    "reject": (RejectMessage, REJECT_SCHEMA_VERSION),
    "status": (StatusMessage, STATUS_SCHEMA_VERSION),
}
_STYLE = {"OK": "green", "NG": "bold red", "UNCERTAIN": "yellow"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="show live verdicts from an MQTT broker, validating every payload",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "url", nargs="?", metavar="URL", help="mqtt://[user[:pass]@]host[:port][/topic/root] or mqtts://..."
    )
    parser.add_argument("--config", "-c", help="station YAML: the broker from its sinks.mqtt (a URL overrides it)")
    parser.add_argument("--line", help="only this line (default: every line)")
    parser.add_argument("--station", help="only this station (default: every station)")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    parser.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")
    parser.add_argument("--json", action="store_true", help="print each valid payload as one JSON line, no table")
    parser.add_argument("--rows", type=int, default=30, help="table rows kept on screen (default 30)")
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class WatchEvent:
    """One received message, validated."""

    topic: str
    leaf: str
    station: str  # "line/station", from the topic
    payload: bytes
    message: Message | None
    error: str | None

    @property
    def message_id(self) -> str | None:
        return self.message.message_id if self.message is not None else None


def validate_payload(leaf: str, payload: bytes) -> tuple[Message | None, str | None]:
    """The parsed message, or the reason it does not match its schema."""
    model, version = _MODELS[leaf]
    try:
        message = model.model_validate_json(payload)
    except ValidationError as error:
        return None, _summarise(error)
    major = version.split(".")[0]
    got = str(message.schema_version)  # type: ignore[attr-defined]
    if got.split(".")[0] != major:  # a major bump renames or retypes fields: do not pretend to read it
        return None, f"schema_version {got} is not {major}.x, the version this tool reads"
    return message, None  # type: ignore[return-value]


def _summarise(error: ValidationError) -> str:
    problems = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "payload"
        problems.append(f"{where}: {item['msg']}")
    more = f" (+{error.error_count() - 3} more)" if error.error_count() > 3 else ""
    return "; ".join(problems) + more


def _broker_config(args: argparse.Namespace) -> MqttConfig:
    if args.config:
        base = load_config(args.config).sinks.mqtt
        if base is None and not args.url:
            raise InspectorError(f"{args.config} has no sinks.mqtt section", "add one, or pass the broker URL")
        return mqtt_config_from_url(args.url, base) if args.url else base  # type: ignore[return-value]
    if not args.url:
        raise InspectorError("give a broker URL or --config FILE", "e.g. inspector watch mqtt://127.0.0.1:1883")
    return mqtt_config_from_url(args.url)


class _Subscriber:
    """A read-only client: connects, subscribes, turns each message into a WatchEvent on a queue.

    Its links are opened by the same connection code as the MQTT sink's (TLS, auth, errors).
    """

    def __init__(self, config: MqttConfig, filters: list[str]) -> None:
        self.config = config
        self.filters = filters
        self.events: queue.Queue[WatchEvent] = queue.Queue()
        self.link: Link | None = None

    @property
    def lost(self) -> bool:
        return self.link is None or self.link.lost

    def connect(self) -> None:
        """Connect and subscribe; raises MqttConnectError (or InspectorError) naming the cause."""
        link = open_link(self.config, f"inspector-watch-{uuid.uuid4().hex[:8]}", on_message=self._on_message)
        self.link = link
        subscribed = threading.Event()
        reasons: list = []

        def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, codes: list, _p: object) -> None:
            reasons.extend(codes)
            subscribed.set()

        link.client.on_subscribe = on_subscribe
        link.client.subscribe([(f, 1) for f in self.filters])
        deadline = time.monotonic() + self.config.connect_timeout_s
        while not subscribed.wait(0.1) and not link.lost and time.monotonic() < deadline:
            pass
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            self.close()
            raise InspectorError(
                f"the broker refused the subscription ({', '.join(refused)})", "check the broker's ACL for this user"
            )

    def reconnect(self, backoff: Backoff, stop_at: float | None) -> bool:
        """Reconnect after a loss, waiting with back-off between attempts; False once ``stop_at`` has passed."""
        self.close()
        while stop_at is None or time.monotonic() < stop_at:
            time.sleep(backoff.next_delay())
            try:
                self.connect()
                backoff.reset()
                return True
            except MqttConnectError as error:
                if not error.transient:
                    raise
        return False

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        parts = split_topic(self.config.topic_root, message.topic)
        if parts is None or parts[4] not in _MODELS:
            return
        _site, _area, line, station, leaf = parts
        payload = bytes(message.payload)
        parsed, error = validate_payload(leaf, payload)
        self.events.put(WatchEvent(message.topic, leaf, f"{line}/{station}", payload, parsed, error))

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None


def run(args: argparse.Namespace) -> int:
    config = _broker_config(args)
    filters = watch_filters(config.topic_root, line=args.line, station=args.station)
    notices = Console(stderr=True, soft_wrap=True)
    out = Console(soft_wrap=args.json)
    subscriber = _Subscriber(config, filters)
    subscriber.connect()
    notices.print(f"watching {', '.join(filters)} on {config.host}:{config.port}", highlight=False)
    view = None if args.json else _View(out, args.rows)
    seen: OrderedDict[tuple[str, str], None] = OrderedDict()
    shown = malformed = duplicates = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    backoff = Backoff.from_policy(config.reconnect)
    try:
        with view.live() if view else _nothing():
            while args.count is None or shown < args.count:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                if subscriber.lost:
                    notices.print("[yellow]connection lost; reconnecting ...[/]")
                    if not subscriber.reconnect(backoff, deadline):
                        break
                    notices.print("[green]reconnected[/]")
                try:
                    event = subscriber.events.get(timeout=min(0.5, remaining) if remaining is not None else 0.5)
                except queue.Empty:
                    continue
                key = (event.leaf, event.message_id) if event.message_id else None
                if key is not None and key in seen:
                    duplicates += 1
                    continue
                if key is not None:
                    seen[key] = None
                    if len(seen) > 10_000:
                        seen.popitem(last=False)
                shown += 1
                if event.error is not None:
                    malformed += 1
                if args.json:
                    _print_json(event, out, notices)
                else:
                    view.add(event, duplicates)  # type: ignore[union-attr]
    except KeyboardInterrupt:
        pass
    finally:
        subscriber.close()
    if duplicates:
        notices.print(f"{duplicates} duplicate delivery(ies) not shown", highlight=False)
    short = args.count is not None and shown < args.count
    if short:
        notices.print(f"[yellow]timed out: {shown} of {args.count} message(s) received[/]")
    if malformed:
        notices.print(f"[red]{malformed} malformed payload(s)[/]")
    return 1 if malformed or short else 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _print_json(event: WatchEvent, out: Console, notices: Console) -> None:
    if event.error is None:
        out.out(event.payload.decode("utf-8"), highlight=False)
    else:
        notices.print(Text(f"MALFORMED on {event.topic}: {event.error}", style="red"))


class _View:
    """The table: a live, refreshing one on a terminal, one printed line per message otherwise."""

    def __init__(self, console: Console, rows: int) -> None:
        self.console = console
        self.rows: deque[tuple[Text, ...]] = deque(maxlen=max(1, rows))
        self.duplicates = 0
        self._live: Live | None = None

    def live(self) -> Live | _nothing:
        if not self.console.is_terminal:
            return _nothing()
        self._live = Live(self._table(), console=self.console, refresh_per_second=8, transient=False)
        return self._live

    def add(self, event: WatchEvent, duplicates: int) -> None:
        row = _row(event)
        self.duplicates = duplicates
        if self._live is not None:
            self.rows.append(row)
            self._live.update(self._table())
        else:
            self.console.print(Text("  ").join(row), soft_wrap=True)

    def _table(self) -> Table:
        caption = f"{self.duplicates} duplicate(s) hidden" if self.duplicates else None
        table = Table(caption=caption, expand=False)
        for name in ("time (UTC)", "station", "frame", "verdict", "conf", "defects", "model"):
            table.add_column(name, no_wrap=name != "defects")
        for row in self.rows:
            table.add_row(*row)
        return table


def _row(event: WatchEvent) -> tuple[Text, ...]:
    station = Text(event.station)
    message = event.message
    if message is None:
        return (Text("-"), station, Text("-"), Text("MALFORMED", style="bold red"), Text("-"),
                Text(f"{event.leaf}: {event.error}", style="red"), Text("-"))  # fmt: skip
    if isinstance(message, FrameVerdict):
        defects = ", ".join(f"{d.class_name} {d.confidence:.2f}" for d in message.defects) or "-"
        part = f" {message.source.part_id}" if message.source.part_id else ""
        model = f"{message.model.id} {message.model.backend}/{message.model.precision}"
        if message.model.random_weights:
            model += " (random)"
        return (Text(_clock(message.source.captured_at)), station, Text(f"#{message.source.frame_index}{part}"),
                Text(message.verdict, style=_STYLE[message.verdict]), Text(f"{message.confidence:.2f}"),
                Text(defects), Text(model))  # fmt: skip
    if isinstance(message, RejectMessage):
        part = f" {message.part_id}" if message.part_id else ""
        return (Text(_clock(message.captured_at)), station, Text(f"#{message.frame_index}{part}"),
                Text("REJECT", style="bold magenta"), Text(f"{message.confidence:.2f}"),
                Text(", ".join(message.classes)), Text("-"))  # fmt: skip
    state_style = {"online": "green", "degraded": "yellow", "offline": "red"}[message.state]
    detail = message.reason or ", ".join(f"{k}={v}" for k, v in message.details.items()) or "-"
    runtime = "/".join(x for x in (message.backend, message.precision) if x)
    model = " ".join(x for x in (message.model, runtime) if x) or message.software
    return (Text(_clock(message.at)), station, Text("-"), Text(f"status {message.state}", style=state_style),
            Text("-"), Text(detail), Text(model))  # fmt: skip


def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]
