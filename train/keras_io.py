"""Importing Keras, and reading a .keras model the pipeline can use (one sentence otherwise)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.labels import LABELS
from edge.paths import check_readable, not_a_file
from train.data import FER2013_SIZE


def import_keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"Training needs TensorFlow/Keras ({exc.name} is missing); install the build extra: pip install -e '.[train]'."
        ) from exc
    return keras


def load_keras(path: Path):
    if why := not_a_file(path):  # a pipe would hang Keras's zip check
        raise UserError(f"Keras model {path} {why}; pass a .keras model saved by `edge train`.")
    check_readable(path, "Keras model")
    if not zipfile.is_zipfile(path):  # Keras calls such a file "File not found"
        raise UserError(f"{path} is not a readable Keras model (not a .keras zip archive); pass a model saved "
                        "by `edge train`.")
    keras = import_keras()
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises several types for a damaged archive
        raise UserError(f"{path} is not a readable Keras model ({type(exc).__name__}: {exc}).") from exc
    shape = tuple(model.input_shape[1:])
    if len(shape) == 3 and None in shape[:2]:  # the card, the crops and the int8 file all need one size
        raise UserError(f"{path} takes input {model.input_shape}, of any size; the pipeline feeds crops of one size: "
                        f"save it with a fixed input, e.g. keras.Input(({FER2013_SIZE}, {FER2013_SIZE}, 1)).")
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 1:
        raise UserError(f"{path} takes input {model.input_shape}, but the pipeline feeds square grayscale crops "
                        "(None, S, S, 1); retrain it with `edge train`.")
    out = model.output_shape
    if not (isinstance(out, tuple) and len(out) == 2 and out[-1] == len(LABELS)):
        raise UserError(f"{path} outputs {out}, but the pipeline reads one row of {len(LABELS)} class probabilities "
                        f"(None, {len(LABELS)}) ({', '.join(LABELS)}); retrain it with `edge train`.")
    # Alerts, calibration and the parity gate read the outputs as probabilities: logits would pass
    # every check here yet mean nothing downstream.
    rows = np.asarray(model(np.random.default_rng(0).uniform(0, 255, (4, *shape)).astype(np.float32), training=False))
    if not np.isfinite(rows).all():  # NaN weights: a softmax of them is NaN too, not a missing softmax
        raise UserError(f"{path} outputs NaN (not numbers) instead of probabilities: its training diverged; retrain "
                        "it, e.g. with a lower --lr.")
    if not (np.all(rows >= -1e-6) and np.allclose(rows.sum(axis=1), 1, atol=1e-3)):
        raise UserError(f"{path} does not output probabilities (its rows sum to "
                        f"{', '.join(f'{v:.3g}' for v in rows.sum(axis=1))}); end the model with a softmax.")
    return model
