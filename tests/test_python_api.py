"""The Python API: ``Inspector.from_config(...)`` and ``.predict(image)``.

``test_readme_example`` runs the example the README shows, line for line, in a directory
laid out as after the README's first-run steps (`inspector model tiny models/tiny`, the
repository's configs/). Keep the two in step: the README copies ``README_EXAMPLE``.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from inspector.config import parse_config
from inspector.errors import ConfigError, SourceError
from inspector.tiling import TilePlanner

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

README_EXAMPLE = textwrap.dedent(
    """\
    from inspector import Inspector

    inspector = Inspector.from_config("configs/demo.yaml", model="models/tiny", device="auto")
    verdict = inspector.predict("part.png")  # a path, a BGR numpy array (as OpenCV gives) or a PIL image
    print(verdict.verdict, verdict.confidence, verdict.model.random_weights)
    for defect in verdict.defects:
        print(defect.class_name, defect.confidence, defect.bbox, defect.explanation)
    """
)


def _part_image(width: int = 320, height: int = 224, seed: int = 0) -> np.ndarray:
    """A textured BGR frame with a dark blob: something with structure for the tiles to see."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(60, 200, (height, width, 3), dtype=np.uint8), (5, 5), 0)
    cv2.circle(image, (width // 3, height // 2), 18, (20, 20, 20), -1)
    return image


def test_readme_example(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    (tmp_path / "configs").mkdir()
    shutil.copy(CONFIGS / "demo.yaml", tmp_path / "configs" / "demo.yaml")
    (tmp_path / "models").mkdir()
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "tiny")
    cv2.imwrite(str(tmp_path / "part.png"), _part_image(640, 480))
    monkeypatch.chdir(tmp_path)

    namespace: dict = {}
    exec(compile(README_EXAMPLE, "README.md", "exec"), namespace)  # noqa: S102 - our own example, verbatim

    verdict = namespace["verdict"]
    assert verdict.verdict in ("OK", "NG", "UNCERTAIN") and verdict.error is None
    assert verdict.model.random_weights is True  # the tiny model is labelled, whatever it says
    assert verdict.source.id == "part.png" and verdict.source.frame_index == 0
    station = parse_config(yaml.safe_load((CONFIGS / "demo.yaml").read_text()))
    assert len(verdict.tiles) == len(TilePlanner.from_config(station.tiling).plan(640, 480))  # the station's grid
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[0] == verdict.verdict and len(printed) == 1 + len(verdict.defects)
    inspector = namespace["inspector"]
    import torch

    assert inspector.backend.info.device == ("cuda" if torch.cuda.is_available() else "cpu")  # auto, resolved


@pytest.fixture(scope="module")
def small(tiny_model_dir: Path):
    """The demo station at 64-px tiles on the tiny model: fast enough to compare inputs."""
    import yaml

    data = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    data["tiling"] = {"tile": 64, "overlap": 0.25, "global_view": True}
    data["inspection"]["explanation"] = "never"
    from inspector import Inspector

    return Inspector.from_config(parse_config(data), model=str(tiny_model_dir))


def _probabilities(verdict) -> list[dict[str, float]]:
    return [tile.probabilities for tile in verdict.tiles]


def test_path_array_and_pil_give_the_same_verdict(small, tmp_path: Path) -> None:
    from PIL import Image

    bgr = _part_image()
    path = tmp_path / "part.png"
    cv2.imwrite(str(path), bgr)
    original = bgr.copy()
    by_array = small.predict(bgr)
    by_path = small.predict(path)
    by_pil = small.predict(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    by_rgba_pil = small.predict(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA)))
    assert np.array_equal(bgr, original)  # the caller's array is never written to
    reference = _probabilities(by_array)
    for verdict in (by_path, by_pil, by_rgba_pil):
        assert _probabilities(verdict) == reference
        assert verdict.verdict == by_array.verdict
    # Each call is a new frame: indices count up, a path names its source.
    assert [v.source.frame_index for v in (by_array, by_path, by_pil, by_rgba_pil)] == [0, 1, 2, 3]
    assert by_path.source.id == str(path) and by_array.source.id == "predict"


def test_grayscale_is_judged_as_its_grey_bgr(small) -> None:
    grey = cv2.cvtColor(_part_image(seed=1), cv2.COLOR_BGR2GRAY)
    as_bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    assert _probabilities(small.predict(grey)) == _probabilities(small.predict(as_bgr))
    assert _probabilities(small.predict(grey[:, :, None])) == _probabilities(small.predict(as_bgr))


def test_a_part_id_is_carried(small) -> None:
    verdict = small.predict(_part_image(seed=2), part_id="P-17", source_id="cam3")
    assert (verdict.source.part_id, verdict.source.id) == ("P-17", "cam3")


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.zeros((64, 64, 3), np.float32), "must be uint8"),
        (np.zeros((64, 64, 2), np.uint8), "got shape (64, 64, 2)"),
        (np.zeros((0, 64, 3), np.uint8), "got shape (0, 64, 3)"),
        ([[0, 1], [2, 3]], "cannot inspect a list"),
    ],
)
def test_bad_images_are_named(small, image, expected: str) -> None:
    with pytest.raises(SourceError) as caught:
        small.predict(image)
    assert expected in str(caught.value) and caught.value.hint


def test_missing_and_undecodable_files_are_named(small, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        small.predict(tmp_path / "nope.png")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    with pytest.raises(SourceError, match="not an image OpenCV can decode"):
        small.predict(garbage)


def test_from_config_overrides_are_validated_like_the_file(tiny_model_dir: Path) -> None:
    from inspector import Inspector

    with pytest.raises(ConfigError, match="model.device"):
        Inspector.from_config(CONFIGS / "demo.yaml", model=str(tiny_model_dir), device="gpu0")
    with pytest.raises(ConfigError, match="config file .* does not exist"):
        Inspector.from_config("no/such.yaml")
