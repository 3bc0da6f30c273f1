"""Temperature scaling fitted on the validation split, on the exact edge inference path
(int8 model, optional flip averaging), so alert thresholds read probabilities that mean
what they say.

A model trained on FER+ votes is fitted against the vote distributions (soft targets): ten
annotators say how sure a face's label can be, which one folder label cannot.
"""

from __future__ import annotations

import numpy as np

from edge.pipeline.classifier import apply_temperature
from edge.metrics import expected_calibration_error


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Cross-entropy against integer labels (n,) or target distributions (n, k)."""
    if y.ndim == 2:
        return float(-np.mean((y * np.log(np.clip(probs, 1e-12, 1.0))).sum(1)))
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


T_RANGE = (0.25, 5.0)  # the temperatures fit_temperature searches


def fit_temperature(probs: np.ndarray, y: np.ndarray, floor: float = 1e-6) -> float:
    """The T in T_RANGE minimising validation NLL (golden-section search on log T)."""
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
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


def calibration_report(probs_plain, probs_flip, y, floor, soft=None, majority=None) -> dict:
    """Chooses flip averaging when it helps val accuracy, then fits T on that path.

    y: folder labels. For a model trained on votes, soft holds the vote distributions the
    temperature is fitted against and majority the FER+ majority (-1: none) that judges
    flip averaging; otherwise both use y.
    """
    if majority is not None and not (majority >= 0).any():  # every vote tied or doubtful: nothing to judge by
        majority = None
    judge, judged = (majority, majority >= 0) if majority is not None else (y, np.ones(len(y), bool))

    def acc(p, labels, m):
        return float((p[m].argmax(1) == labels[m]).mean())

    acc_plain, acc_flip = acc(probs_plain, judge, judged), acc(probs_flip, judge, judged)
    flip = acc_flip > acc_plain
    probs = probs_flip if flip else probs_plain
    target = soft if soft is not None else y
    t = fit_temperature(probs, target, floor)
    cal = apply_temperature(probs, t, floor)
    rep = {
        "images": int(len(y)),
        "judged_by": "FER+ majority" if majority is not None else "folder labels",
        "judged_images": int(judged.sum()),  # the accuracies below are over these (ties and doubtful votes skipped)
        "fitted_against": "FER+ vote distributions" if soft is not None else "folder labels",
        "accuracy_int8": acc_plain,
        "accuracy_int8_flip_average": acc_flip,
        "flip_average": bool(flip),
        "temperature": round(t, 4),
        # the NLL's minimum lies at or past the end of the search: a model far from calibrated, or
        # a validation set too small to fit on; the probabilities the alerts read are then suspect
        "temperature_at_limit": bool(min(abs(np.log(t / bound)) for bound in T_RANGE) < 0.01),
        "nll_before": nll(probs, target),
        "nll_after": nll(cal, target),
        "ece_before": expected_calibration_error(judge[judged], probs[judged]),
        "ece_after": expected_calibration_error(judge[judged], cal[judged]),
    }
    if majority is not None:  # the folder-label view of the same choice
        rep["accuracy_int8_folder_labels"] = acc(probs, y, np.ones(len(y), bool))
    return rep
