"""Product recipes: config validation, the recipe book, the switch between parts, every verdict naming its recipe.

The service tests run the real edge service in process (real Mosquitto, the HTTP camera stand-in,
the tiny random model: its verdicts mean nothing, only which recipe judged them is checked).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from edge_station import RunningService, Subscriber, build_service, config_for, station_data

from edge.commands import CommandRejected, parse_command
from edge.recipes import RecipeBook
from edge.triggers import TriggerBook, TriggerSettings
from inspector.errors import ConfigError
from inspector.payloads.trigger import TriggerMessage
from inspector.payloads.verdict import FrameVerdict, ModelRef, SourceRef, StationRef

from mosquitto import Mosquitto
from streams import MjpegCamera, noise_camera, poll

WAIT_S = 60.0

RECIPES = {
    "red-brick": {
        "description": "red facing bricks",
        "inspection": {"product": "a red brick", "defects": {"crack": {"description": "a crack", "threshold": 0.9}}},
    },
    "grey-tile": {
        "inspection": {"product": "a grey tile", "defects": {"chip": {"description": "a chipped edge"}}},
    },
}


def recipe_station(model_dir: Path, source: str, **source_extra: Any) -> dict[str, Any]:
    data = station_data(model_dir, source, **source_extra)
    data["recipes"] = RECIPES
    return data


# -- config ---------------------------------------------------------------------------------------


def test_the_top_level_inspection_is_recipe_default_and_recipes_replace_it(tiny_model_dir: Path) -> None:
    config = config_for(recipe_station(tiny_model_dir, "x.mp4"))
    assert config.recipe_ids == ["default", "red-brick", "grey-tile"]
    assert config.for_recipe("default") is config
    brick = config.for_recipe("red-brick")
    assert brick.inspection.product == "a red brick" and brick.inspection.defects["crack"].threshold == 0.9
    assert brick.model == config.model  # no model of its own: the station's
    with pytest.raises(KeyError):
        config.for_recipe("nope")


def test_an_unknown_default_recipe_names_the_field_and_the_known_ones(tiny_model_dir: Path) -> None:
    data = recipe_station(tiny_model_dir, "x.mp4")
    data["default_recipe"] = "blue-brick"
    with pytest.raises(ConfigError) as caught:
        config_for(data)
    message = str(caught.value)
    assert "default_recipe 'blue-brick' is not a recipe" in message and "red-brick" in message


@pytest.mark.parametrize("recipe_id", ["", "has space", "a/b", "-lead", "x" * 65])
def test_a_malformed_recipe_id_is_refused(tiny_model_dir: Path, recipe_id: str) -> None:
    data = recipe_station(tiny_model_dir, "x.mp4")
    data["recipes"] = {recipe_id: RECIPES["red-brick"]}
    with pytest.raises(ConfigError) as caught:
        config_for(data)
    assert "recipes" in str(caught.value)


# -- the recipe book ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def book(tiny_model_dir: Path) -> RecipeBook:
    from inspector.pipeline import build_inspector

    config = config_for(recipe_station(tiny_model_dir, "x.mp4"))
    return RecipeBook(config, build_inspector(config))


def test_every_recipe_shares_the_loaded_model_and_has_its_own_prompt(book: RecipeBook) -> None:
    inspectors = [book.inspector(rid) for rid in book.ids]
    assert len({id(i.backend) for i in inspectors}) == 1  # one model in memory
    assert [i.recipe for i in inspectors] == ["default", "red-brick", "grey-tile"]
    assert [i.classifier.inspection.product for i in inspectors] == ["a textured surface", "a red brick", "a grey tile"]


def test_selecting_an_unknown_recipe_is_rejected_with_the_known_ids(book: RecipeBook) -> None:
    with pytest.raises(CommandRejected) as caught:
        book.select("blue-brick")
    assert caught.value.message == "unknown recipe 'blue-brick'; this station has: default, red-brick, grey-tile"
    assert book.selected == "default"


def test_select_recipe_command_is_validated_before_anything_acts() -> None:
    assert parse_command(b'{"command": "select-recipe", "recipe": "red-brick"}').recipe == "red-brick"
    for bad, expected in (
        (b'{"command": "select-recipe"}', "recipe: Field required"),
        (b'{"command": "select-recipe", "recipe": 5}', "recipe: Input should be a valid string"),
        (b'{"command": "select-recipe", "recipe": "a b"}', "recipe: String should match pattern"),
    ):
        with pytest.raises(CommandRejected) as caught:
            parse_command(bad)
        assert expected in caught.value.message


# -- the switch happens between parts ------------------------------------------------------------


def _verdict(part: str) -> FrameVerdict:
    return FrameVerdict(
        station=StationRef(site="s", area="a", line="l", station="st", camera="c"),
        source=SourceRef(id="x", frame_index=0, captured_at=datetime.now(UTC), part_id=part),
        verdict="OK", confidence=0.9,
        model=ModelRef(id="m", backend="torch", precision="float32", random_weights=True),
    )  # fmt: skip


def test_a_part_keeps_the_recipe_selected_when_it_was_accepted(book: RecipeBook) -> None:
    emitted: list[FrameVerdict] = []
    triggers = TriggerBook(
        TriggerSettings(timeout_s=60), unserved=lambda t, reason: _verdict(t.part_id).model_copy(
            update={"verdict": "UNCERTAIN", "error": reason, "recipe": t.recipe}),
        emit=lambda v, f: emitted.append(v), recipe_for=book.check,
    )  # fmt: skip
    try:
        assert triggers.add(TriggerMessage(part_id="P-1")) == "accepted"
        book.select("red-brick")
        assert triggers.add(TriggerMessage(part_id="P-2")) == "accepted"
        assert triggers.add(TriggerMessage(part_id="P-3", recipe="grey-tile")) == "accepted"
        assert triggers.add(TriggerMessage(part_id="P-4", recipe="blue-brick")) == "unserved"
        first = triggers.current()
        assert first is not None and (first.part_id, first.recipe) == ("P-1", "default")  # chosen before the switch
        waiting = [(t.part_id, t.recipe) for t in list(triggers._pending)]
        assert waiting == [("P-1", "default"), ("P-2", "red-brick"), ("P-3", "grey-tile")]
        assert emitted[0].source.part_id == "P-4" and emitted[0].verdict == "UNCERTAIN"
        assert "unknown recipe 'blue-brick'" in (emitted[0].error or "")
        assert triggers.counts["unknown_recipe"] == 1
    finally:
        book.select("default")


# -- in the running service -----------------------------------------------------------------------


@pytest.fixture
def camera() -> Iterator[MjpegCamera]:
    yield from noise_camera(2)


@pytest.fixture(scope="module")
def inspector(tiny_model_dir: Path):
    from inspector.pipeline import build_inspector

    return build_inspector(config_for(recipe_station(tiny_model_dir, "http://127.0.0.1:1/x.mjpg")))


def test_parts_triggered_through_the_service_name_their_recipe(
    broker: Mosquitto, camera: MjpegCamera, inspector, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = config_for(recipe_station(tiny_model_dir, camera.url, trigger="opcua", trigger_timeout_s=30.0))
    service = build_service(config, inspector, broker.port, tmp_path)
    subscriber = Subscriber(broker.port)
    running = RunningService(service)
    try:
        assert poll(lambda: service.capture.captured > 0, WAIT_S), "the camera delivers no frames"
        assert service.trigger_part("P-1") == "accepted"
        assert service.trigger_part("P-2", "grey-tile") == "accepted"
        answer = subscriber.command("st", {"command": "select-recipe", "recipe": "red-brick"})
        assert answer["ok"] and answer["result"]["recipe"] == "red-brick" and answer["result"]["previous"] == "default"
        assert service.trigger_part("P-3") == "accepted"
        assert service.trigger_part("P-3") == "duplicate"
        refused = subscriber.command("st", {"command": "select-recipe", "recipe": "blue-brick"})
        assert not refused["ok"] and "unknown recipe 'blue-brick'" in refused["error"]
        with pytest.raises(CommandRejected, match="unknown recipe 'blue-brick'"):
            service.trigger_part("P-4", "blue-brick")
        with pytest.raises(CommandRejected, match="invalid trigger"):
            service.trigger_part("bad id/with slash")
        verdicts = poll(lambda: len(subscriber.json("verdict")) >= 3 and subscriber.json("verdict"), WAIT_S)
        assert verdicts, "no verdicts for the triggered parts"
        by_part = {v["source"]["part_id"]: v for v in verdicts}
        assert sorted(by_part) == ["P-1", "P-2", "P-3"] and len(verdicts) == 3  # one each
        # P-1 was accepted before the switch: it keeps the recipe selected then.
        assert [by_part[p]["recipe"] for p in ("P-1", "P-2", "P-3")] == ["default", "grey-tile", "red-brick"]
        assert all(v["schema_version"] == "1.2" for v in verdicts)
        status = poll(lambda: [s for s in subscriber.json("status") if s["details"].get("recipe") == "red-brick"],
                      WAIT_S)  # fmt: skip
        assert status, "the retained status does not name the selected recipe"
        state = service.line_state()
        assert state.selected_recipe == "red-brick" and state.triggered and state.recipes[0] == "default"
    finally:
        assert running.stop() == 0
        subscriber.close()


def test_a_free_running_station_names_the_selected_recipe_and_refuses_part_triggers(
    broker: Mosquitto, camera: MjpegCamera, inspector, tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = recipe_station(tiny_model_dir, camera.url)
    data["default_recipe"] = "grey-tile"
    config = config_for(data)
    from edge.reload import build_candidate

    service = build_service(config, build_candidate(inspector, config), broker.port, tmp_path)
    subscriber = Subscriber(broker.port)
    running = RunningService(service)
    try:
        assert poll(lambda: subscriber.json("verdict"), WAIT_S), "no verdicts"
        assert {v["recipe"] for v in subscriber.json("verdict")} == {"grey-tile"}
        with pytest.raises(CommandRejected, match="free-running"):
            service.trigger_part("P-1")
        service.select_recipe("red-brick")
        seen = len(subscriber.json("verdict"))
        later = poll(lambda: subscriber.json("verdict")[seen + 2 :], WAIT_S)  # frames picked up after the switch
        assert later and {v["recipe"] for v in later} == {"red-brick"}
    finally:
        assert running.stop() == 0
        subscriber.close()
