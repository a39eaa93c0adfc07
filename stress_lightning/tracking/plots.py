"""Figures logged with a run: confusion matrices and heart-rate traces.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot), so no GUI backend or global figure state
is involved and they can be made in worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts matrix [true, pred] over classes 0..n_classes-1 (classes absent from both still get a row)."""
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"confusion matrix: {y_true.size} true labels but {y_pred.size} predictions")
    return confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))


def confusion_matrix_figure(cm: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Two panels: raw counts, and rows normalised to recall per true class."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not match {len(class_names)} class names")
    row_sums = cm.sum(axis=1, keepdims=True)
    # A class with no true samples gets a zero row rather than NaNs.
    normalised = np.divide(cm, row_sums, out=np.zeros(cm.shape, dtype=float), where=row_sums > 0)

    size = max(4.0, 0.6 * len(class_names) + 2.0)
    fig = Figure(figsize=(2 * size + 1.0, size), layout="constrained")
    ax_counts, ax_norm = fig.subplots(1, 2)
    ConfusionMatrixDisplay(cm, display_labels=list(class_names)).plot(
        ax=ax_counts, values_format="d", colorbar=False, xticks_rotation=45
    )
    ax_counts.set_title(f"counts (n={int(cm.sum())})")
    ConfusionMatrixDisplay(normalised, display_labels=list(class_names)).plot(
        ax=ax_norm, values_format=".2f", colorbar=False, xticks_rotation=45, im_kw={"vmin": 0.0, "vmax": 1.0}
    )
    ax_norm.set_title("normalised by true class")
    fig.suptitle(title)
    return fig


def hr_trace_figure(
    hr_pred_bpm: np.ndarray,
    hr_true_bpm: np.ndarray,
    title: str,
    time_s: np.ndarray | None = None,
) -> Figure:
    """Predicted and reference heart rate per clip (or against `time_s`), with the absolute error below."""
    pred = np.asarray(hr_pred_bpm, dtype=float).reshape(-1)
    true = np.asarray(hr_true_bpm, dtype=float).reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"heart-rate trace: {pred.size} predictions but {true.size} references")
    x = np.arange(pred.size) if time_s is None else np.asarray(time_s, dtype=float).reshape(-1)
    if x.shape != pred.shape:
        raise ValueError(f"heart-rate trace: {x.size} time points for {pred.size} values")

    fig = Figure(figsize=(9.0, 5.0), layout="constrained")
    ax_hr, ax_err = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax_hr.plot(x, true, label="reference (ECG)", color="black", linewidth=1.2, marker=".")
    ax_hr.plot(x, pred, label="predicted (rPPG)", color="tab:red", linewidth=1.0, marker=".")
    ax_hr.set_ylabel("heart rate (bpm)")
    ax_hr.legend(loc="best")
    mae_bpm = float(np.mean(np.abs(pred - true))) if pred.size else float("nan")
    ax_hr.set_title(f"{title} (MAE {mae_bpm:.2f} bpm, n={pred.size})")
    ax_err.vlines(x, 0.0, np.abs(pred - true), color="tab:gray", linewidth=2.0)
    ax_err.set_ylabel("|error| (bpm)")
    ax_err.set_xlabel("clip" if time_s is None else "time (s)")
    return fig
