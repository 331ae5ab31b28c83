"""How an NG frame's words are shown: shortened on one line, the most confident defect's, labelled for toy models."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from inspector.explanations import DEMO_WORDS, MAX_CHARS, RANDOM_WORDS, explained, shorten, words_label


@given(st.text(min_size=0, max_size=600), st.integers(min_value=10, max_value=300))
def test_shortened_words_fit_one_line(text: str, limit: int) -> None:
    line = shorten(text, limit)
    assert len(line) <= limit and "\n" not in line
    flat = " ".join(text.split())
    assert line == flat if len(flat) <= limit else line.endswith("…")


def test_a_long_explanation_is_cut_at_a_word() -> None:
    words = "a thin bright line across the upper left of the tile " * 10
    line = shorten(words)
    assert len(line) <= MAX_CHARS and line.endswith("…")
    assert words.startswith(line[:-1])  # a prefix of the words, cut at a word
    assert line[:-1].split()[-1] in words.split()


def _verdict(verdict: str, defects: list[dict], model: dict | None = None) -> dict:
    return {"verdict": verdict, "source": {"id": "clips/a.mp4", "frame_index": 7}, "defects": defects,
            "model": model or {}}  # fmt: skip


def test_the_most_confident_explained_defect_speaks_for_the_frame() -> None:
    defects = [
        {"class": "spot", "confidence": 0.9, "bbox": [0, 0, 1, 1], "explanation": None},
        {"class": "scratch", "confidence": 0.6, "bbox": [0, 0, 1, 1], "explanation": "a thin line\nat the top"},
        {"class": "crack", "confidence": 0.7, "bbox": [0, 0, 1, 1], "explanation": "a jagged line"},
    ]
    words = explained(_verdict("NG", defects, {"demo_model": True}))
    assert words is not None
    assert (words.source, words.frame_index) == ("clips/a.mp4", 7)
    assert (words.class_name, words.text) == ("crack", "a jagged line")
    assert words.label == DEMO_WORDS


def test_only_ng_frames_with_words_are_explained() -> None:
    said = [{"class": "spot", "confidence": 0.9, "bbox": [0, 0, 1, 1], "explanation": "a dark stain"}]
    assert explained(_verdict("UNCERTAIN", said)) is None
    assert explained(_verdict("NG", [{**said[0], "explanation": "  "}])) is None
    assert explained(_verdict("NG", said)).label is None  # a real checkpoint's words need no label


def test_toy_models_words_are_labelled() -> None:
    assert words_label({"random_weights": True, "demo_model": False}) == RANDOM_WORDS
    assert words_label({"demo_model": True}) == DEMO_WORDS
    assert words_label({}) is None and words_label(None) is None
