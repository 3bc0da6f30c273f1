"""Classification metrics in plain numpy, so every model type is scored the same way."""

from __future__ import annotations

import numpy as np

from edge.labels import LABELS


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int = len(LABELS)) -> np.ndarray:
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def classification_report(y_true, probs: np.ndarray) -> dict:
    """Accuracy, loss, per-class precision/recall/F1, macro-F1 and the confusion matrix."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, np.float64)
    y_pred = probs.argmax(1)
    cm = confusion(y_true, y_pred, probs.shape[1])
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(tp / cm.sum(0))
        recall = np.nan_to_num(tp / cm.sum(1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0))))
    # Over the classes that occur (as a label or a prediction): a dataset without some classes
    # (a store's own, with no disgust folder) must not count each of them as an F1 of 0.
    occur = (cm.sum(0) + cm.sum(1)) > 0
    return {
        "images": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()),
        "loss": loss,
        "macro_f1": float(f1[occur].mean()) if occur.any() else 0.0,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(LABELS, precision, recall, f1, cm.sum(1))
        },
        "confusion_matrix": cm.tolist(),
        "ece": expected_calibration_error(y_true, probs),
    }


def expected_calibration_error(y_true, probs, bins: int = 15) -> float:
    """Top-1 ECE: |confidence - accuracy| averaged over equal-width confidence bins."""
    conf = probs.max(1)
    correct = probs.argmax(1) == np.asarray(y_true)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(ece)


def format_report(rep: dict, title: str = "") -> str:
    """The evaluation as a small text table for the terminal."""
    lines = [title] if title else []
    lines.append(f"images {rep['images']}  accuracy {rep['accuracy']:.4f}  macro-F1 {rep['macro_f1']:.4f}  "
                 f"loss {rep['loss']:.4f}  ECE {rep['ece']:.4f}")
    if rep.get("skipped"):  # files or csv rows of the split that could not be read: not in the figures
        shown = "; ".join(f"{s['file']} ({s['reason']})" for s in rep["skipped"][:3])
        more = f"; {len(rep['skipped']) - 3} more in --json" if len(rep["skipped"]) > 3 else ""
        lines.append(f"skipped {len(rep['skipped'])} that could not be read (not in these figures): {shown}{more}")
    lines.append(f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for name, m in rep["per_class"].items():
        lines.append(f"{name:<10}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>9d}")
    fp = rep.get("ferplus_majority")
    if fp and fp.get("images"):
        skipped = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in fp["skipped"].items())
        lines.append("")
        lines.append(format_report({k: v for k, v in fp.items() if k != "skipped"},
                                   f"against the FER+ majority ({skipped} skipped)"))
    for side, d in (rep.get("degraded") or {}).items():
        extra = f"  FER+ majority {d['ferplus_majority_accuracy']:.4f}" if "ferplus_majority_accuracy" in d else ""
        lines.append(f"degraded to {side} px: accuracy {d['accuracy']:.4f}{extra}")
    return "\n".join(lines)
