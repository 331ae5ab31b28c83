"""The live page (edge/web): the access rules as an attacker tries them, then the page in headless Chromium."""

from __future__ import annotations

import io
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import numpy as np
import pytest

from edge.web import LivePage, LiveServer, LiveState, LiveStation
from inspector.explanations import RANDOM_WORDS
from inspector.frames import Frame
from inspector.model_warning import RANDOM_WEIGHTS_WARNING
from inspector.payloads.verdict import Defect, FrameVerdict, ModelRef, SourceRef, StationRef

TOKEN = "s3cret-token-0123456789"
CHROMIUM = Path("/usr/bin/chromium")
STATION = StationRef(site="s", area="a", line="l", station="st", camera="c")
MODEL = ModelRef(id="tiny", backend="torch", precision="float32", random_weights=True)


class Controls:
    def __init__(self) -> None:
        self.paused = threading.Event()
        self.presses: list[str] = []

    def pause(self) -> None:
        self.presses.append("pause")
        self.paused.set()

    def resume(self) -> None:
        self.presses.append("resume")
        self.paused.clear()


def observe(state: LiveState, result: str, index: int, part: str | None = None) -> FrameVerdict:
    image = np.full((240, 320, 3), 150, np.uint8)
    image[100:140, 60:200] = 30
    defects = [Defect(class_name="scratch", confidence=0.91, bbox=(40, 80, 220, 160), tiles=[0],
                      explanation="a dark line across the surface")] if result == "NG" else []  # fmt: skip
    verdict = FrameVerdict(
        station=STATION, model=MODEL, verdict=result, confidence=0.91, defects=defects,
        source=SourceRef(id="cam0", frame_index=index, captured_at=datetime.now(UTC), part_id=part),
    )  # fmt: skip
    state.observe(Frame(image, "cam0", index, verdict.source.captured_at, part_id=part), verdict)
    return verdict


@pytest.fixture
def page() -> tuple[LivePage, LiveState, Controls]:
    state, controls = LiveState("st", model_warning=RANDOM_WEIGHTS_WARNING), Controls()
    live = LivePage({"st": LiveStation(state, controls.pause, controls.resume, controls.paused.is_set)}, TOKEN)
    return live, state, controls


def call(app: LivePage, path: str, *, method: str = "GET", remote: str = "127.0.0.1", host: str = "127.0.0.1:9109",
         token: str | None = None) -> tuple[str, bytes]:  # fmt: skip
    path, _, query = path.partition("?")
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": method, "REMOTE_ADDR": remote, "HTTP_HOST": host,
                               "QUERY_STRING": query}  # fmt: skip
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO(b"")
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers: status.append(s)))
    return status[0], body


def test_from_this_box_the_page_reads_without_a_token(page) -> None:
    app, state, _ = page
    observe(state, "NG", 1, "P-1")
    status, body = call(app, "/api/state")
    assert status.startswith("200") and json.loads(body)["counts"]["NG"] == 1
    shown = json.loads(body)
    assert shown["recent_ng"][0]["explanation"] == "a dark line across the surface"
    assert shown["recent_ng"][0]["words_label"] == shown["current"]["words_label"] == RANDOM_WORDS
    assert call(app, "/")[0].startswith("200") and call(app, "/api/frame.jpg")[1][:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    ("remote", "host", "token"),
    [
        ("10.1.2.3", "10.0.0.9:9109", None),  # another machine, no token
        ("10.1.2.3", "10.0.0.9:9109", "wrong-token-0123456789"),  # a guessed token
        ("10.1.2.3", "10.0.0.9:9109", TOKEN[:-1]),  # a prefix of the token
        ("127.0.0.1", "evil.example:9109", None),  # DNS rebinding: loopback peer, foreign Host
    ],
)
def test_without_the_token_nothing_leaves_the_box(page, remote: str, host: str, token: str | None) -> None:
    app, state, _ = page
    observe(state, "NG", 1, "P-SECRET")
    for path in ("/api/state", "/api/frame.jpg", "/api/stations"):
        status, body = call(app, path, remote=remote, host=host, token=token)
        assert status.startswith("401") and b"P-SECRET" not in body and b"\xff\xd8" not in body[:2]
    assert call(app, "/api/state", remote=remote, host=host, token=TOKEN)[0].startswith("200")


def test_the_buttons_always_need_the_token(page) -> None:
    app, _, controls = page
    for token in (None, "wrong-token-0123456789"):
        for action in ("/api/pause", "/api/resume"):
            assert call(app, action, method="POST", token=token)[0].startswith("401")
    assert controls.presses == []
    status, body = call(app, "/api/pause", method="POST", token=TOKEN)
    assert status.startswith("200") and json.loads(body) == {"paused": True} and controls.presses == ["pause"]
    assert call(app, "/api/pause", token=TOKEN)[0].startswith("405")  # a GET (an <img src>) presses nothing


def test_with_no_token_configured_the_buttons_are_off() -> None:
    controls = Controls()
    app = LivePage({"st": LiveStation(LiveState("st"), controls.pause, controls.resume, controls.paused.is_set)}, None)
    status, body = call(app, "/api/pause", method="POST", token="anything-at-all-12345")
    assert status.startswith("403") and b"no token is set" in body and controls.presses == []


def test_unknown_paths_and_stations_are_not_found(page) -> None:
    app, _, _ = page
    assert call(app, "/static/../../etc/passwd")[0].startswith("404")
    assert call(app, "/api/state?station=nope")[0].startswith("404")
    assert call(app, "/api/state?station=st")[0].startswith("200")
    assert call(app, "/api/ng/does-not-exist.jpg")[0].startswith("404")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
def test_the_page_renders_updates_on_a_new_verdict_and_its_buttons_work(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    app, state, controls = page
    observe(state, "OK", 1, "P-1")
    server = LiveServer("127.0.0.1", 0, app)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run"]  # fmt: skip
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=flags)
            tab = browser.new_page(viewport={"width": 1100, "height": 700})
            tab.goto(server.url + "#token=" + TOKEN)
            expect(tab.locator("#count-OK")).to_have_text("1", timeout=15_000)
            expect(tab.locator("#verdict")).to_have_text("OK")
            expect(tab.locator("#random")).to_be_visible()
            expect(tab.locator("#random")).to_have_text(RANDOM_WEIGHTS_WARNING)

            observe(state, "NG", 2, "P-2")  # a new verdict arrives
            expect(tab.locator("#count-NG")).to_have_text("1", timeout=15_000)
            expect(tab.locator("#verdict")).to_have_text("NG")
            expect(tab.locator("#part")).to_have_text("part P-2")
            expect(tab.locator("#yield")).to_have_text("50.0 %")
            expect(tab.locator("#recent li")).to_have_count(1)
            expect(tab.locator("#recent li")).to_contain_text("a dark line across the surface")
            # The words sit beside the rejected part's picture, under the random model's label.
            words = tab.locator("#recent li .words")
            expect(words).to_contain_text("a dark line across the surface")
            expect(words.locator(".toy")).to_have_text(RANDOM_WORDS)
            expect(tab.locator("#defects .words .toy")).to_have_text(RANDOM_WORDS)
            tab.wait_for_function("document.querySelector('#recent img').naturalWidth > 0", timeout=15_000)
            tab.wait_for_function("document.querySelector('#frame').naturalWidth > 0", timeout=15_000)
            # One read of both boxes (the list is rebuilt on every poll): the words beside the picture, not under.
            picture, said = tab.evaluate("""() => {
                const li = document.querySelector('#recent li');
                const box = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
                return [box(li.querySelector('img')), box(li.querySelector('.words'))];
            }""")  # fmt: skip
            assert said[0] >= picture[2] and said[1] < picture[3], (picture, said)

            tab.click("#pause")
            expect(tab.locator("#state")).to_have_text("paused", timeout=15_000)
            tab.click("#resume")
            expect(tab.locator("#state")).to_have_text("inspecting", timeout=15_000)
            assert controls.presses == ["pause", "resume"]
            tab.screenshot(path=str(tmp_path / "live.png"))
            if os.environ.get("LIVE_SCREENSHOT"):
                tab.screenshot(path=os.environ["LIVE_SCREENSHOT"])

            stranger = browser.new_page()  # no token: reading works from this box, the buttons do not
            stranger.goto(server.url)
            expect(stranger.locator("#count-NG")).to_have_text("1", timeout=15_000)
            stranger.click("#pause")
            expect(stranger.locator("#message")).to_contain_text("token", timeout=15_000)
            assert controls.presses == ["pause", "resume"]
            browser.close()
    finally:
        server.close()
