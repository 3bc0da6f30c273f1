"""Float-vs-int8 parity: the gate that proves quantization kept the model's behaviour."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np

from edge.card import loosened_gate
from edge.pipeline.classifier import Classifier
from edge.labels import LABELS
from edge.metrics import classification_report


def parity_report(model, files: dict, card, split, calibration_size: int, votes=None) -> dict:
    keras_probs = model.predict(split.x.astype(np.float32)[..., None], batch_size=256, verbose=0)
    reports = {"keras": classification_report(split.y, keras_probs)}
    probs = {"keras": keras_probs}
    for kind, path in files.items():
        clf = Classifier(path, card, calibrated=False)
        probs[kind] = clf.predict_many(split.x)
        reports[kind] = classification_report(split.y, probs[kind])
    diff = np.abs(probs["int8"] - keras_probs)
    extra = {}
    from train.votes import majority_labels

    maj = majority_labels(split.names, votes) if votes is not None else np.full(len(split), -1)
    known = maj >= 0
    if known.any():  # the same gate's numbers against the ten annotators' majority (none: no NaN in the JSON)
        extra["ferplus_majority_accuracy"] = {k: float((p[known].argmax(1) == maj[known]).mean()) for k, p in probs.items()}
        extra["ferplus_majority_images"] = int(known.sum())
    return {**extra,
        "images": int(len(split)),
        "calibration_size": calibration_size,
        "accuracy": {k: r["accuracy"] for k, r in reports.items()},
        "keras_accuracy": reports["keras"]["accuracy"],
        "int8_accuracy": reports["int8"]["accuracy"],
        "drop_pp": round(100 * (reports["keras"]["accuracy"] - reports["int8"]["accuracy"]), 3),
        "agreement": float((probs["int8"].argmax(1) == keras_probs.argmax(1)).mean()),
        "recall_delta_pp": {c: round(100 * (reports["int8"]["per_class"][c]["recall"] - reports["keras"]["per_class"][c]["recall"]), 3)
                            for c in LABELS},
        "prob_abs_diff": {"mean": float(diff.mean()), "max": float(diff.max())},
        "file_bytes": {k: Path(p).stat().st_size for k, p in files.items()},
        "macro_f1": {k: r["macro_f1"] for k, r in reports.items()},
        **({"class_order_suspect": moved} if (moved := other_class_order(reports["keras"]["confusion_matrix"])) else {}),
    }


# Orders of the seven outputs, to find one a model was trained in (5,040: a few milliseconds).
_ORDERS = np.array(list(itertools.permutations(range(len(LABELS)))))


def other_class_order(cm) -> dict[str, str]:
    """{class: the output that names its images} when, read in another order, every class that
    order moves would be named right more often than now, by a margin chance gives less than
    once in 10,000 (a strict bar, as the best of 5,040 orders is taken): outputs trained in
    another class order (fer2013.csv's codes put sad, surprise, neutral last), which no parity
    figure catches, as Keras and int8 agree. A poor model's confusions do not pass it. {}: none."""
    cm = np.asarray(cm)
    own = np.diag(cm)
    named = cm[np.arange(len(own)), _ORDERS]  # per order, the images of each class its output would name
    moved = _ORDERS != np.arange(len(own))
    better = np.all((named > own) | ~moved, axis=1) & moved.any(axis=1)
    if not better.any():
        return {}
    best = int(np.where(better, (named - own).sum(axis=1), -1).argmax())
    wins, losses = int(named[best][moved[best]].sum()), int(own[moved[best]].sum())
    # sign test: the chance of this many wins or more if each image went either way at even odds
    if sum(math.comb(wins + losses, k) for k in range(wins, wins + losses + 1)) / 2 ** (wins + losses) >= 1e-4:
        return {}
    return {LABELS[c]: LABELS[o] for c, o in enumerate(_ORDERS[best]) if o != c}


def markdown(p: dict) -> str:
    rows = ["| model | accuracy | macro-F1 | file size |", "|---|---:|---:|---:|"]
    for k, acc in p["accuracy"].items():
        size = f"{p['file_bytes'][k] / 1024:.0f} KiB" if k in p["file_bytes"] else "-"
        rows.append(f"| {k} | {100 * acc:.2f}% | {p['macro_f1'][k]:.4f} | {size} |")
    rows += [
        "",
        f"- images: {p['images']}, calibration images: {p['calibration_size']}",
        f"- int8 drop vs Keras: {p['drop_pp']:.2f} pp; top-1 agreement: {100 * p['agreement']:.2f}%",
        f"- probability |diff| int8 vs Keras: mean {p['prob_abs_diff']['mean']:.4f}, max {p['prob_abs_diff']['max']:.4f}",
        "- per-class recall change (pp): " + ", ".join(f"{c} {d:+.2f}" for c, d in p["recall_delta_pp"].items()),
    ]
    if "ferplus_majority_accuracy" in p:
        rows.append("- accuracy against the FER+ majority (" + str(p["ferplus_majority_images"]) + " images): "
                    + ", ".join(f"{k} {100 * a:.2f}%" for k, a in p["ferplus_majority_accuracy"].items()))
    if moved := p.get("class_order_suspect"):
        named = ", ".join(f"{c} images {o}" for c, o in moved.items())
        rows.append(f"- WARNING: the Keras model names {named} more often than by their own class: its outputs "
                    f"look trained in another class order than the one the card gives and the pipeline reads "
                    f"({', '.join(LABELS)}; fer2013.csv's codes 0-6 run angry, disgust, fear, happy, sad, surprise, "
                    "neutral); retrain it with its outputs in the card's order before shipping it.")
    c = p.get("calibration")
    split = (p.get("converted_from") or {}).get("parity_split", "val")  # --split: the images judged and fitted on
    if c:
        rows.append(f"- flip averaging: {'on' if c['flip_average'] else 'off'} (int8 {split} accuracy against the "
                    f"{c.get('judged_by', 'folder labels')} {100 * c['accuracy_int8']:.2f}% plain, "
                    f"{100 * c['accuracy_int8_flip_average']:.2f}% averaged with the mirror image)")
        rows.append(f"- temperature {c['temperature']:.3f} (fitted against {c.get('fitted_against', 'folder labels')}): "
                    f"ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}, NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f}")
        if c.get("temperature_at_limit"):
            rows.append(f"- WARNING: the temperature is at the end of the range searched ({c['temperature']:.2f}): the "
                        f"model's probabilities are far from calibrated or the {c['images']} {split} images are too "
                        "few to fit on; the alert thresholds read these probabilities, so check the model before "
                        "shipping it.")
    b = p.get("budget")
    if b:
        rows.append(f"- gate (drop <= {b['max_drop_pp']} pp, agreement >= {b['min_agreement']}): "
                    + ("passed" if b["passed"] else "FAILED: " + "; ".join(b["failures"])))
        if loosened := loosened_gate(b):
            rows.append(f"- WARNING: the gate passed only at {loosened}, looser than the project's gate; "
                        "`edge bundle`, `edge doctor` and `edge run` say so wherever this model goes.")
    return "\n".join(rows) + "\n"


def write_parity(out: Path, p: dict) -> None:
    (out / "parity.json").write_text(json.dumps(p, indent=2))
    (out / "parity.md").write_text(markdown(p))
