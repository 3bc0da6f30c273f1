"""The run report: metrics.json and the PNG figures a person reads without code."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from edge.files import write_atomic
from edge.labels import LABELS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_run_report(out: Path, model, va, probs, tr, ds, weights, train_seconds: float, val_source: str,
                     votes: str | None = None) -> dict:
    """metrics.json scores val against the folder labels and, when votes exist, the FER+ majority."""
    from train.evaluate import label_reports, load_votes

    rep = label_reports(va.names, va.y, probs, load_votes(ds.source, votes))
    metrics = {
        "model": "model.keras",
        "architecture": model.name,
        "parameters": int(model.count_params()),
        "validation": val_source,
        "train_seconds": round(train_seconds, 1),
        "class_weights": dict(zip(LABELS, np.round(weights, 4).tolist())),
        "skipped_files": len(ds.skipped),
        **rep,
    }
    figures(out, tr, rep)
    # Last, and renamed into place whole: its presence says the report is complete (and
    # `edge train --resume` takes it to mean the run finished).
    write_atomic(out / "metrics.json", json_text(metrics))
    return metrics


def json_text(obj) -> str:
    """obj as indented JSON, a NaN or infinite number as null: JSON has no NaN, and json.dumps
    would write one that strict readers refuse (a model that outputs NaN gives a NaN loss)."""
    def finite(v):
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(obj), indent=2, allow_nan=False)


def figures(out: Path, tr, rep: dict) -> None:
    sample_faces(tr, out / "samples_per_class.png")
    class_counts(tr, out / "images_per_class.png")
    if (out / "history.csv").exists():
        curves(out / "history.csv", out / "curves.png")
    confusion_figure(np.array(rep["confusion_matrix"]), out / "confusion_matrix.png", "folder labels")
    if rep.get("ferplus_majority", {}).get("images"):
        confusion_figure(np.array(rep["ferplus_majority"]["confusion_matrix"]), out / "confusion_matrix_ferplus.png",
                         "FER+ majority")


def sample_faces(split, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(LABELS), figsize=(1.6 * len(LABELS), 2.0))
    for c, ax in enumerate(axes):
        idx = np.flatnonzero(split.y == c)
        if len(idx):
            ax.imshow(split.x[idx[0]], cmap="gray", vmin=0, vmax=255)
        ax.set_title(LABELS[c], fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def class_counts(split, path: Path) -> None:
    plt = _plt()
    counts = split.counts()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(LABELS, counts, color="#4c72b0")
    for i, n in enumerate(counts):
        ax.text(i, n, str(n), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("training images")
    ax.set_title("Images per class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def curves(history_csv: Path, path: Path) -> None:
    plt = _plt()
    with history_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    epoch = [int(r["epoch"]) + 1 for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, ax in (("accuracy", a1), ("loss", a2)):
        ax.plot(epoch, [float(r[key]) for r in rows], label="train (augmented)")
        ax.plot(epoch, [float(r[f"val_{key}"]) for r in rows], label="val")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_figure(cm: np.ndarray, path: Path, title: str = "") -> None:
    plt = _plt()
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, mat, fmt, name in ((axes[0], cm, "d", "counts"), (axes[1], norm, ".2f", "row-normalised (recall)")):
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(LABELS)):
            for j in range(len(LABELS)):
                ax.text(j, i, format(mat[i, j], fmt), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(LABELS)), LABELS, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} {name}".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
