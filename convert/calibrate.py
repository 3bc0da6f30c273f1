"""Temperature scaling fitted on the validation split, on the exact edge inference path
(int8 model, optional flip averaging), so alert thresholds read probabilities that mean
what they say."""

from __future__ import annotations

import numpy as np

from edge.pipeline.classifier import apply_temperature
from edge.metrics import expected_calibration_error


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


def fit_temperature(probs: np.ndarray, y: np.ndarray, floor: float = 1e-6) -> float:
    """The T in [0.25, 5] minimising validation NLL (golden-section search on log T)."""
    lo, hi = np.log(0.25), np.log(5.0)
    g = (np.sqrt(5) - 1) / 2

    def f(log_t):
        return nll(apply_temperature(probs, float(np.exp(log_t)), floor), y)

    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = f(b)
    return float(np.exp((lo + hi) / 2))


def calibration_report(probs_plain, probs_flip, y, floor) -> dict:
    """Chooses flip averaging when it helps val accuracy, then fits T on that path."""
    acc_plain = float((probs_plain.argmax(1) == y).mean())
    acc_flip = float((probs_flip.argmax(1) == y).mean())
    flip = acc_flip > acc_plain
    probs = probs_flip if flip else probs_plain
    t = fit_temperature(probs, y, floor)
    cal = apply_temperature(probs, t, floor)
    return {
        "images": int(len(y)),
        "accuracy_int8": acc_plain,
        "accuracy_int8_flip_average": acc_flip,
        "flip_average": bool(flip),
        "temperature": round(t, 4),
        "nll_before": nll(probs, y),
        "nll_after": nll(cal, y),
        "ece_before": expected_calibration_error(y, probs),
        "ece_after": expected_calibration_error(y, cal),
    }
