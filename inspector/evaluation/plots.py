"""ROC and precision-recall curves (matplotlib, Agg: no display) as PNG data URIs for the HTML report."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping

import numpy as np


def curves_png(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> str | None:
    """ROC and PR panels, one line per level ("tile", "frame") that has both classes; None if none has."""
    # A bare Figure renders with Agg and never touches pyplot's global state or a display.
    from matplotlib.figure import Figure
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    usable = {name: (t, s) for name, (t, s) in curves.items() if len(t) and 0 < int(np.sum(t)) < len(t)}
    if not usable:
        return None
    figure = Figure(figsize=(9, 4), dpi=100)
    roc_axes, pr_axes = figure.subplots(1, 2)
    for name, (truth, scores) in usable.items():
        fpr, tpr, _ = roc_curve(truth, scores)
        roc_axes.plot(fpr, tpr, label=f"{name} (AUROC {auc(fpr, tpr):.3f})")
        precision, recall, _ = precision_recall_curve(truth, scores)
        pr_axes.step(recall, precision, where="post", label=f"{name} (prevalence {np.mean(truth):.2f})")
    roc_axes.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1)
    roc_axes.set(title="ROC, NG vs OK", xlabel="false positive rate", ylabel="true positive rate")
    pr_axes.set(title="precision-recall, NG positive", xlabel="recall", ylabel="precision")
    for axes in (roc_axes, pr_axes):
        axes.set(xlim=(0, 1), ylim=(0, 1.02))
    for axes in (roc_axes, pr_axes):
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right" if axes is roc_axes else "lower left", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
