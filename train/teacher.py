"""Knowledge distillation: a stronger model's (or an ensemble's) probabilities on the training
images mixed into each training target, so the student learns how a teacher splits a face
between classes, not only which class the labels name.

The teacher's outputs are computed once, on the training images as they are (no
augmentation), before training starts; a .tflite teacher runs through the edge Classifier
as on the Pi (its card's flip averaging and temperature), a .keras teacher through Keras.
A .npz teacher is probabilities computed elsewhere (train/torch_teacher.py on a GPU), found
for each training image by a hash of its pixels. Several teachers (comma-separated) are averaged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.labels import LABELS
from edge.paths import not_a_file


def teacher_paths(spec: str) -> list[Path]:
    paths = [Path(p.strip()).expanduser() for p in spec.split(",") if p.strip()]
    if not paths:
        raise UserError("--teacher needs a model: a .tflite (with its model.json) or a .keras file, or several "
                        "separated by commas.")
    for p in paths:
        if why := not_a_file(p):
            raise UserError(f"--teacher {p} {why}; pass a trained model (e.g. edge/models/default/model_int8.tflite).")
        if p.suffix not in (".tflite", ".keras", ".npz"):
            raise UserError(f"--teacher {p}: not a .tflite or .keras file or a teacher_probs.npz; pass a trained model "
                            "(e.g. edge/models/default/model_int8.tflite).")
    return paths


def predict(path: Path, x: np.ndarray, folder_share: float = 0.0) -> np.ndarray:
    """(N, classes) probabilities of one teacher on uint8 crops x (N, S, S). folder_share: for a
    .npz teacher, the share of its FER2013-label head, the rest from its vote head."""
    if path.suffix == ".npz":
        from train.torch_teacher import HEADS  # (vote head, FER2013-label head): the file's key names

        shares = dict(zip(HEADS, (1 - folder_share, folder_share)))
        return sum(w * looked_up(path, x, head) for head, w in shares.items() if w > 0)
    if path.suffix == ".tflite":
        from edge.pipeline.classifier import Classifier

        clf = Classifier(path)
        if list(clf.labels) != list(LABELS):
            raise UserError(f"--teacher {path} predicts {', '.join(clf.labels)}, not {', '.join(LABELS)}.")
        return clf.predict_many(_resized(x, clf.card.input_size)).astype(np.float32)
    from train.keras_io import load_keras

    m = load_keras(path)
    xs = _resized(x, int(m.input_shape[1]))
    return m.predict(xs.astype(np.float32)[..., None], batch_size=256, verbose=0).astype(np.float32)


def looked_up(path: Path, x: np.ndarray, head: str) -> np.ndarray:
    """The probabilities a teacher_probs.npz holds for each image of x, by pixel hash."""
    from train.teacher_pack import pixel_keys

    try:
        with np.load(path) as d:
            keys, probs, labels = d["keys"], d[head].astype(np.float32), [str(v) for v in d["labels"]]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"--teacher {path} is not a teacher_probs.npz from train.torch_teacher combine ({exc}).") from None
    if labels != list(LABELS):
        raise UserError(f"--teacher {path} predicts {', '.join(labels)}, not {', '.join(LABELS)}.")
    row = {k: i for i, k in enumerate(keys)}  # identical images share a key and get the last of their rows
    want = pixel_keys(x)
    missing = sum(k not in row for k in want)
    if missing:
        raise UserError(f"--teacher {path} has no probabilities for {missing} of the {len(x)} training images: it was "
                        "made from other images; make its pack from this --data (python -m train.teacher_pack).")
    return probs[[row[k] for k in want]]


def _resized(x: np.ndarray, size: int) -> np.ndarray:
    """The crops at the teacher's input size, resized as the edge runtime resizes them."""
    from edge.pipeline.preprocess import resize_square

    return x if x.shape[1] == size else np.stack([resize_square(img, size) for img in x])


def check_weight(weight: float, option: str = "--teacher-weight") -> None:
    if not 0.0 <= weight <= 1.0:
        raise UserError(f"{option} must lie in [0, 1], got {weight}.")


def mix(targets: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) * targets + weight * teacher, each row still a distribution."""
    check_weight(weight)
    t = teacher / np.maximum(teacher.sum(axis=1, keepdims=True), 1e-12)
    return ((1.0 - weight) * targets + weight * t).astype(np.float32)


def distill(spec: str, weight: float, x: np.ndarray, targets: np.ndarray,
            folder_share: float = 0.0) -> tuple[np.ndarray, dict]:
    """The training targets with the teachers' mean probabilities mixed in, and what was done.
    folder_share: the FER2013-label head's share in a .npz teacher's probabilities."""
    paths = teacher_paths(spec)
    probs = np.mean([predict(p, x, folder_share) for p in paths], axis=0)
    agree = float((probs.argmax(1) == targets.argmax(1)).mean()) if len(x) else 0.0
    print(f"teacher: {len(paths)} model(s) on {len(x)} training images, top-1 agreement with the labels "
          f"{agree:.1%}; weight {weight:g} in each target", flush=True)
    from edge.card import CARD_NAME, sha256_file

    # A resume checks that the teachers are the same bytes, and a .tflite's card too: its temperature
    # is in the probabilities the teacher gives.
    cards = [p.with_name(CARD_NAME) if p.suffix == ".tflite" else None for p in paths]
    info = {"models": [str(p) for p in paths], "weight": weight, "agreement_with_labels": round(agree, 4),
            "sha256": [sha256_file(p) for p in paths],
            "card_sha256": [sha256_file(c) if c and c.is_file() else "" for c in cards]}
    if any(p.suffix == ".npz" for p in paths):
        info["folder_head_share"] = folder_share
    return mix(targets, probs, weight), info
