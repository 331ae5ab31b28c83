"""A self-contained HTML report of verdicts: the frames that matter as pictures, curves, then tables.

One file, no scripts, no external assets (pictures are JPEG/PNG data URIs): it opens from a
shared drive or an e-mail. Frames are re-read from the source each verdict names (or the
labelled data set), so the JSONL alone is enough; a frame whose source is gone is listed
without its picture.

With labels: missed defects (defective, judged OK), false rejects (good, judged NG) and
UNCERTAIN frames, each drawn with its labelled boxes (green) and predicted defects (red)
beside a heatmap of one class's tile probabilities stitched over the frame (overlaps
averaged); ROC and precision-recall curves; the metrics of ``inspector.evaluation.metrics``.
Without labels: every NG frame, drawn the same way.
"""

from __future__ import annotations

import html
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from inspector import render
from inspector.evaluation.metrics import SUMMARY_KEYS, Evaluation, evaluate, frame_score, predicted_class
from inspector.evaluation.plots import curves_png
from inspector.evaluation.predictions import Prediction
from inspector.explanations import shorten, words_label

log = logging.getLogger(__name__)

MAX_FRAMES_PER_SECTION = 12
THUMBNAIL_SIDE = 560

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1300px}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f3f3f3}.NG{color:#b00020;font-weight:bold}.OK{color:#1b5e20}.UNCERTAIN{color:#e65100}
.warn{background:#fff3cd;border:2px solid #e0a000;padding:.8rem;margin:1rem 0;font-size:1.1rem}
.bar{display:inline-block;height:.8rem;background:#5c6bc0}
.frame{border:1px solid #ddd;border-radius:6px;padding:.6rem;margin:.8rem 0}
.frame img{max-width:49%;min-width:240px;height:auto;margin-right:.5%;vertical-align:top;image-rendering:pixelated}
.headline td{font-variant-numeric:tabular-nums}
.muted{color:#666;font-size:.9rem}td.num{text-align:right;font-variant-numeric:tabular-nums}
.words{margin-top:.4rem;font-size:.95rem}.words ul{margin:.2rem 0 0 1.2rem;padding:0}
.toy{color:#8a5a00;font-weight:normal}
"""

FrameReader = Callable[[list[tuple[str, int]]], dict[tuple[str, int], np.ndarray]]


@dataclass(frozen=True)
class _Card:
    verdict: dict[str, Any]
    labelled: list[dict[str, Any]]
    heat_class: str | None
    source: str
    index: int
    note: str = ""
    whole: str = ""  # class folders: "whole image: <class>"


def read_frames(wanted: list[tuple[str, int]]) -> dict[tuple[str, int], np.ndarray]:
    """Frames by (source, index), re-read from files: an image, a video, an image folder or glob
    (each decoded once, in order); live cameras and streams are never opened. Unreadable ones are skipped."""
    from inspector.datasets.images import read_image
    from inspector.errors import InspectorError
    from inspector.sources import open_source, source_kind

    found: dict[tuple[str, int], np.ndarray] = {}
    by_source: dict[str, set[int]] = {}
    for source, index in wanted:
        by_source.setdefault(source, set()).add(index)
    for source, indices in by_source.items():
        try:
            kind = source_kind(source)
            if kind == "image":
                found[(source, 0)] = read_image(Path(source))  # 16-bit, grey, RGBA normalised as evaluated
                continue
            if kind not in ("video", "folder", "glob"):
                continue
            last = max(indices)
            with open_source(source) as frames:
                for frame in frames:
                    if frame.index in indices:
                        found[(source, frame.index)] = frame.image
                    if frame.index >= last:
                        break
        except InspectorError as error:
            log.warning("report: cannot re-read frames of %s (%s)", source, error.problem)
    return found


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _row(*cells: object, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{cell}</{tag}>" for cell in cells) + "</tr>"


def demo_warning(verdicts: Sequence[dict[str, Any]]) -> str | None:
    """The banner for verdicts of a random or demo model (None for a real one)."""
    models = [v.get("model") or {} for v in verdicts]
    if any(m.get("random_weights") for m in models):
        return "a <b>randomly initialised test model</b>"
    if any(m.get("demo_model") for m in models):
        return "a <b>demo model</b> (trained from the tiny random one on synthetic demo data)"
    return None


def _frame_size(verdict: dict[str, Any], image: np.ndarray) -> tuple[int, int]:
    tiles = verdict.get("tiles") or []
    if tiles:
        return max(t["bbox"][2] for t in tiles), max(t["bbox"][3] for t in tiles)
    return int(image.shape[1]), int(image.shape[0])


def _pictures(card: _Card, image: np.ndarray) -> list[tuple[str, str]]:
    import cv2

    width, height = _frame_size(card.verdict, image)
    if (width, height) != (image.shape[1], image.shape[0]):  # a class-folder image judged fitted to one tile
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    drawn = render.thumbnail(render.draw_verdict(image, card.verdict, card.labelled), THUMBNAIL_SIDE)
    pictures = [(render.data_uri(drawn), "labelled boxes (green) and predicted defects (red)")]
    if card.heat_class and card.verdict.get("tiles"):
        heat = render.probability_map(card.verdict, (width, height), card.heat_class)
        overlay = render.thumbnail(render.overlay_heatmap(image, heat), THUMBNAIL_SIDE)
        pictures.append(
            (
                render.data_uri(overlay),
                f"p({card.heat_class}) per tile, overlaps averaged (blue 0 to red 1; highest {float(heat.max()):.2f})",
            )
        )
    return pictures


def _card_html(card: _Card, image: np.ndarray | None) -> str:
    esc = html.escape
    v = card.verdict
    defects = "<br>".join(
        f"{esc(d['class'])} {d['confidence']:.2f} {list(d['bbox'])}" for d in v.get("defects") or []
    ) or esc(v.get("error") or "no defect found")
    labels = card.whole or ", ".join(f"{esc(b['class'])} {list(b['bbox'])}" for b in card.labelled) or "none (good)"
    parts = [
        "<div class='frame'>",
        f"<b>{esc(Path(card.source).name)}</b> frame {card.index} · verdict "
        f"<span class='{esc(v['verdict'])}'>{esc(v['verdict'])}</span> ({v.get('confidence', 0):.3f})"
        + (f" · {esc(card.note)}" if card.note else ""),
        f"<div class='muted'>predicted: {defects}<br>labelled: {labels}</div>",
    ]
    if image is None:
        parts.append("<div class='muted'>(frame not readable from its source)</div>")
    else:
        pictures = _pictures(card, image)
        for uri, alt in pictures:
            parts.append(f"<img src='{uri}' alt='{esc(alt)}' title='{esc(alt)}'>")
        parts.append("<div class='muted'>" + " · ".join(esc(alt) for _, alt in pictures) + "</div>")
    parts.append(_words_html(v))
    parts.append("</div>")
    return "\n".join(parts)


def _words_html(verdict: dict[str, Any]) -> str:
    """The model's words under the pictures, each defect's shortened, labelled for a random or demo model."""
    esc = html.escape
    said = [d for d in verdict.get("defects") or [] if (d.get("explanation") or "").strip()]
    if not said:
        return ""
    label = words_label(verdict.get("model"))
    lines = "".join(
        f"<li>{esc(d['class'])} {d['confidence']:.2f}: <i>{esc(shorten(d['explanation']))}</i></li>" for d in said
    )
    note = f" <span class='toy'>({esc(label)})</span>" if label else ""
    return f"<div class='words'><b>explanation</b>{note}<ul>{lines}</ul></div>"


def _cards_section(title: str, explain: str, cards: list[_Card], images: dict[tuple[str, int], np.ndarray]) -> str:
    shown = cards[:MAX_FRAMES_PER_SECTION]
    more = f" (the first {len(shown)} shown)" if len(cards) > len(shown) else ""
    body = "".join(_card_html(c, images.get((c.source, c.index))) for c in shown) or "<p>none</p>"
    return f"<h2>{html.escape(title)} ({len(cards)}){more}</h2><p class='muted'>{html.escape(explain)}</p>{body}"


def _labelled(prediction: Prediction) -> list[dict[str, Any]]:
    return [{"class": b.class_name, "bbox": list(b.bbox)} for b in prediction.item.boxes]


def _cards_with_labels(predictions: Sequence[Prediction]) -> list[tuple[str, str, list[_Card]]]:
    def card(p: Prediction, heat: str | None, note: str = "") -> _Card:
        whole = f"whole image: {p.item.whole_class}" if p.item.whole_class is not None else ""
        return _Card(p.verdict, _labelled(p), heat, p.item.source, p.item.frame_index, note or p.item.key, whole)

    missed = [p for p in predictions if p.item.is_defective and p.verdict["verdict"] == "OK"]
    missed.sort(key=lambda p: frame_score(p) or 0.0)
    rejects = [p for p in predictions if not p.item.is_defective and p.verdict["verdict"] == "NG"]
    rejects.sort(key=lambda p: -(frame_score(p) or 0.0))
    unsure = [p for p in predictions if p.verdict["verdict"] == "UNCERTAIN"]
    flagged = [p for p in predictions if p.item.is_defective and p.verdict["verdict"] == "NG"]
    wrong_class = [p for p in flagged if predicted_class(p.verdict) not in _labelled_classes(p)]
    found = [p for p in flagged if predicted_class(p.verdict) in _labelled_classes(p)]
    found.sort(key=lambda p: -(frame_score(p) or 0.0))
    return [
        (
            "Missed defects (escapes)",
            "defective frames judged OK; the heatmap shows the labelled class's probability",
            [card(p, p.item.truth_class) for p in missed],
        ),
        (
            "False rejects (overkill)",
            "good frames judged NG; the heatmap shows the predicted class's probability",
            [card(p, predicted_class(p.verdict)) for p in rejects],
        ),
        (
            "Flagged with the wrong class",
            "defective frames judged NG whose most confident defect names a class not labelled there",
            [card(p, p.item.truth_class) for p in wrong_class],
        ),
        (
            "UNCERTAIN frames",
            "sent for a second look; the heatmap shows the labelled (or else the likeliest defect) class",
            [card(p, p.item.truth_class if p.item.is_defective else _likeliest_defect(p.verdict)) for p in unsure],
        ),
        (
            "Defects found",
            "defective frames judged NG with a labelled class, most confident first, with the model's words",
            [card(p, predicted_class(p.verdict)) for p in found],
        ),
    ]


def _labelled_classes(p: Prediction) -> set[str | None]:
    return {b.class_name for b in p.item.boxes} or {p.item.truth_class}


def _likeliest_defect(verdict: dict[str, Any]) -> str | None:
    best: tuple[float, str] | None = None
    for tile in verdict.get("tiles") or []:
        for name, p in tile["probabilities"].items():
            if name != "ok" and (best is None or p > best[0]):
                best = (p, name)
    return best[1] if best else None


def _headline(evaluation: Evaluation) -> str:
    c = evaluation.counts
    cells = [
        (
            "escape rate",
            _fmt(evaluation.escape_rate),
            f"{c.false_negative} of {c.defective} defective frames judged OK",
        ),
        ("overkill rate", _fmt(evaluation.overkill_rate), f"{c.false_positive} of {c.good} good frames judged NG"),
        ("UNCERTAIN rate", _fmt(evaluation.uncertain_rate), f"{c.uncertain} of {c.frames} frames"),
        ("frame AUROC", _fmt(evaluation.frame_auroc), "score = max over tiles of 1 - p(ok)"),
        ("tile AUROC", _fmt(evaluation.tile_auroc), f"{evaluation.labelled_tiles} labelled tiles"),
    ]
    rows = "".join(_row(name, f"<b>{value}</b>", f"<span class='muted'>{note}</span>") for name, value, note in cells)
    return f"<h2>Against labels</h2><table class='headline'>{rows}</table>"


def _metrics_tables(evaluation: Evaluation) -> str:
    esc = html.escape
    c = evaluation.counts
    parts = ["<h2>Metrics (NG = positive)</h2><table>", _row("metric", "value", header=True)]
    for key in SUMMARY_KEYS:
        parts.append(_row(esc(key), f"<span class='num'>{_fmt(getattr(evaluation, key))}</span>"))
    parts.append(_row("tile average precision", _fmt(evaluation.tile_average_precision)))
    parts.append(_row("frame average precision", _fmt(evaluation.frame_average_precision)))
    parts.append("</table><table>")
    parts.append(_row("frames (defective / good)", f"{c.frames} ({c.defective} / {c.good})"))
    parts.append(
        _row("TP / FP / TN / FN", f"{c.true_positive} / {c.false_positive} / {c.true_negative} / {c.false_negative}")
    )
    parts.append(_row("UNCERTAIN (defective / good)", f"{c.uncertain_defective} / {c.uncertain_good}"))
    parts.append(
        _row("labelled tiles (ambiguous, left out)", f"{evaluation.labelled_tiles} ({evaluation.ambiguous_tiles})")
    )
    parts.append(_row("labelled boxes", evaluation.labelled_boxes))
    if evaluation.frames_without_tiles:
        parts.append(_row("frames without tile probabilities", evaluation.frames_without_tiles))
    parts.append("</table>")
    parts.append("<h3>Per class, tile level (class = most probable option)</h3><table>")
    parts.append(_row("class", "precision", "recall", "F1", "tiles", header=True))
    for name, row in evaluation.per_class.items():
        parts.append(_row(esc(name), _fmt(row["precision"]), _fmt(row["recall"]), _fmt(row["f1"]), row["support"]))
    parts.append("</table>")
    classes = list(evaluation.classes)
    parts.append("<h3>Confusion matrix, tiles (rows: label, columns: predicted)</h3><table>")
    parts.append(_row("", *map(esc, classes), header=True))
    for name, counts in zip(classes, evaluation.tile_confusion):
        parts.append(_row(f"<b>{esc(name)}</b>", *counts))
    parts.append("</table><h3>Confusion matrix, frames (rows: label, columns: verdict's class)</h3><table>")
    parts.append(_row("", *map(esc, [*classes, "UNCERTAIN"]), header=True))
    for name, counts in zip(classes, evaluation.frame_confusion):
        parts.append(_row(f"<b>{esc(name)}</b>", *counts))
    parts.append("</table>")
    return "\n".join(parts)


def render_report(
    verdicts: Sequence[dict[str, Any]],
    *,
    title: str,
    predictions: Sequence[Prediction] | None = None,
    classes: Sequence[str] | None = None,
    frame_reader: FrameReader = read_frames,
) -> str:
    """The report page. ``predictions`` (verdicts paired with labels) add the metrics and the pictures
    of what went wrong; ``classes`` ("ok" first) default to the tile probabilities' keys."""
    esc = html.escape
    counts = Counter(v["verdict"] for v in verdicts)
    latencies = np.array([v.get("timings", {}).get("total_ms", 0.0) for v in verdicts], float)
    defect_counts = Counter(d["class"] for v in verdicts for d in v.get("defects") or [])
    models = sorted(
        {
            (str(v["model"].get("id")), str(v["model"].get("backend")), str(v["model"].get("precision")))
            for v in verdicts
            if "model" in v
        }
    )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Inspection report — {esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Inspection report</h1><p>{esc(title)} · generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
    ]
    warning = demo_warning(verdicts)
    if warning:
        parts.append(
            f"<div class='warn'>⚠ These verdicts come from {warning}: they say nothing about real parts.</div>"
        )
    parts.append("<h2>Summary</h2><table>")
    parts.append(_row("frames", len(verdicts)))
    for verdict in ("OK", "NG", "UNCERTAIN"):
        share = counts.get(verdict, 0) / len(verdicts) if verdicts else 0.0
        bar = f"<span class='bar' style='width:{share * 200:.0f}px'></span>"
        parts.append(_row(f"<span class='{verdict}'>{verdict}</span>", f"{counts.get(verdict, 0)} {bar}"))
    if len(latencies):
        parts.append(
            _row(
                "latency mean / p50 / p95",
                f"{latencies.mean():.1f} / {np.percentile(latencies, 50):.1f} / {np.percentile(latencies, 95):.1f} ms",
            )
        )
    parts.append(_row("models", "<br>".join(esc(" · ".join(m)) for m in models) or "n/a"))
    parts.append("</table>")
    if defect_counts:
        parts.append("<h2>Defects by class</h2><table>" + _row("class", "defects", header=True))
        parts.extend(_row(esc(name), n) for name, n in defect_counts.most_common())
        parts.append("</table>")

    if predictions is not None:
        if classes is None:
            classes = classes_of_verdicts(verdicts)
        evaluation = evaluate(predictions, classes)
        sections = _cards_with_labels(predictions)
        wanted = [(c.source, c.index) for _, _, cards in sections for c in cards[:MAX_FRAMES_PER_SECTION]]
        images = frame_reader(wanted)
        parts.append(_headline(evaluation))
        for heading, explain, cards in sections:
            parts.append(_cards_section(heading, explain, cards, images))
        png = curves_png(evaluation.curves)
        if png:
            parts.append(
                f"<h2>Curves</h2><img src='{png}' alt='ROC and precision-recall curves' style='max-width:100%'>"
            )
        parts.append(_metrics_tables(evaluation))
    else:
        flagged = [v for v in verdicts if v["verdict"] == "NG"]
        flagged.sort(key=lambda v: -float(v.get("confidence", 0.0)))
        cards = [
            _Card(
                v,
                [],
                predicted_class(v) if v.get("defects") else None,
                str(v["source"]["id"]),
                int(v["source"]["frame_index"]),
            )
            for v in flagged
        ]
        images = frame_reader([(c.source, c.index) for c in cards[:MAX_FRAMES_PER_SECTION]])
        parts.append(_cards_section("NG frames", "most confident first; no labels given", cards, images))
        parts.append(_verdict_table(verdicts))
    parts.append("</body></html>")
    return "\n".join(parts)


def classes_of_verdicts(verdicts: Sequence[dict[str, Any]]) -> list[str]:
    for v in verdicts:
        for tile in v.get("tiles") or []:
            return list(tile["probabilities"])
    return ["ok", *sorted({d["class"] for v in verdicts for d in v.get("defects") or []})]


def _verdict_table(verdicts: Sequence[dict[str, Any]]) -> str:
    esc = html.escape
    flagged = [v for v in verdicts if v["verdict"] != "OK"]
    parts = [f"<h2>Frames not OK ({len(flagged)})</h2><table>"]
    parts.append(_row("source", "frame", "verdict", "confidence", "defects", header=True))
    for v in flagged:
        defects = "<br>".join(
            f"{esc(d['class'])} {d['confidence']:.2f} {list(d['bbox'])}"
            + (f" — <i>{esc(shorten(d['explanation']))}</i>" if d.get("explanation") else "")
            for d in v.get("defects") or []
        ) or esc(v.get("error") or "")
        parts.append(
            _row(
                esc(Path(str(v["source"]["id"])).name),
                int(v["source"]["frame_index"]),
                f"<span class='{esc(v['verdict'])}'>{esc(v['verdict'])}</span>",
                f"{float(v.get('confidence', 0.0)):.3f}",
                defects,
            )
        )
    parts.append("</table>")
    return "\n".join(parts)
