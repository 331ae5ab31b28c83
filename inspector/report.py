"""A self-contained HTML report of a replay: counts, latency, metrics against labels, every NG frame.

One file, no scripts, no external assets: it opens from a shared drive or an e-mail.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from inspector.errors import InspectorError
from inspector.replay import label_metrics

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f3f3f3}.NG{color:#b00020;font-weight:bold}.OK{color:#1b5e20}.UNCERTAIN{color:#e65100}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6rem;margin:1rem 0}
.bar{display:inline-block;height:.8rem;background:#5c6bc0}
"""


def _read_verdicts(path: Path) -> list[dict]:
    if not path.is_file():
        raise InspectorError(f"verdict file {path} does not exist", "pass the --out file of `inspector replay`")
    verdicts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            payload = json.loads(line)
            payload["source"]["frame_index"]
        except (ValueError, KeyError, TypeError):
            raise InspectorError(f"{path}:{number}: not a frame verdict") from None
        verdicts.append(payload)
    if not verdicts:
        raise InspectorError(f"{path} holds no verdicts")
    return verdicts


def _row(*cells: object, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{cell}</{tag}>" for cell in cells) + "</tr>"


def render_report(verdicts_path: Path, labels: dict[int, str] | None = None) -> str:
    verdicts = _read_verdicts(verdicts_path)
    esc = html.escape
    counts = Counter(v["verdict"] for v in verdicts)
    latencies = np.array([v.get("timings", {}).get("total_ms", 0.0) for v in verdicts])
    classes = Counter(d["class"] for v in verdicts for d in v.get("defects", []))
    models = {(v["model"]["id"], v["model"]["backend"], v["model"]["precision"]) for v in verdicts}
    random_weights = any(v["model"].get("random_weights") for v in verdicts)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Inspection report — {esc(verdicts_path.name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Inspection report</h1><p>{esc(str(verdicts_path))} · generated "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
    ]
    if random_weights:
        parts.append(
            "<div class='warn'>These verdicts come from a <b>randomly initialised test model</b>: "
            "they mean nothing about the parts.</div>"
        )
    parts.append("<h2>Summary</h2><table>")
    parts.append(_row("frames", len(verdicts)))
    for verdict in ("OK", "NG", "UNCERTAIN"):
        share = counts.get(verdict, 0) / len(verdicts)
        bar = f"<span class='bar' style='width:{share * 200:.0f}px'></span>"
        parts.append(_row(f"<span class='{verdict}'>{verdict}</span>", f"{counts.get(verdict, 0)} {bar}"))
    parts.append(
        _row(
            "latency mean / p50 / p95",
            f"{latencies.mean():.1f} / {np.percentile(latencies, 50):.1f} / {np.percentile(latencies, 95):.1f} ms",
        )
    )
    parts.append(_row("models", "<br>".join(esc(" · ".join(m)) for m in sorted(models))))
    parts.append("</table>")
    if classes:
        parts.append("<h2>Defects by class</h2><table>" + _row("class", "defects", header=True))
        parts.extend(_row(esc(name), n) for name, n in classes.most_common())
        parts.append("</table>")
    if labels:
        outcomes = {(v["source"]["id"], int(v["source"]["frame_index"])): v["verdict"] for v in verdicts}
        metrics = label_metrics(outcomes, labels)
        fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
        parts.append("<h2>Against labels (NG = positive)</h2><table>")
        parts.append(_row("labelled frames", metrics.labelled))
        parts.append(
            _row(
                "TP / FP / TN / FN",
                f"{metrics.true_positive} / {metrics.false_positive} / "
                f"{metrics.true_negative} / {metrics.false_negative}",
            )
        )
        parts.append(_row("UNCERTAIN", metrics.uncertain))
        parts.append(
            _row(
                "precision / recall / accuracy",
                f"{fmt(metrics.precision)} / {fmt(metrics.recall)} / {fmt(metrics.accuracy)}",
            )
        )
        parts.append("</table>")
    flagged = [v for v in verdicts if v["verdict"] != "OK"]
    parts.append(f"<h2>Frames not OK ({len(flagged)})</h2><table>")
    parts.append(_row("source", "frame", "verdict", "confidence", "defects", "label", header=True))
    for v in flagged:
        index = int(v["source"]["frame_index"])
        defects = "<br>".join(
            f"{esc(d['class'])} {d['confidence']:.2f} {list(d['bbox'])}"
            + (f" — <i>{esc(d['explanation'])}</i>" if d.get("explanation") else "")
            for d in v.get("defects", [])
        ) or esc(v.get("error") or "")
        label = labels.get(index, "") if labels else ""
        parts.append(
            _row(
                esc(Path(v["source"]["id"]).name),
                index,
                f"<span class='{v['verdict']}'>{v['verdict']}</span>",
                f"{v['confidence']:.3f}",
                defects,
                label,
            )
        )
    parts.append("</table></body></html>")
    return "\n".join(parts)
