"""`edge eval`: one evaluation for every model type. Needs no TensorFlow for .tflite models:
those run through the edge runtime, exactly as on the Pi.

Scores against the dataset's folder labels and, when a FER+ votes file is given or lies
beside the data, against the FER+ majority; --degrade repeats both on val shrunk to small
face sizes and scaled back up (a far-away face on a real camera).
"""

from __future__ import annotations

import sys

import numpy as np

from edge.card import INT8_MODEL, refuse_failed_conversion
from edge.errors import UserError
from edge.labels import columns_in_label_order
from edge.metrics import classification_report
from edge.paths import check_readable, expand_path, not_a_file
from edge.models import default_model_path
from train.data import EVAL_ORDER, eval_split, load_dataset, warn_absent_classes


def model_file(path: Path, what: str) -> Path:
    """The model file a path names: itself, or in a run folder from `edge train` or `edge soup`
    its model.keras, in the folder `edge convert --out` wrote its int8 model; one sentence, the
    path named as `what`, where there is none."""
    if path.is_dir():
        found = [path / name for name in ("model.keras", INT8_MODEL) if (path / name).is_file()]
        if not found:
            refuse_failed_conversion(path, what)
            raise UserError(f"{what} {path} holds no model.keras or {INT8_MODEL}; pass a run folder, the folder "
                            "`edge convert --out` wrote, or a .keras or .tflite file.")
        return found[0]
    if why := not_a_file(path):
        raise UserError(f"{what} {path} {why}; pass a .keras or .tflite file, or a run folder.")
    return path


def _read_split(data: str, size: int, split: str | None):
    """Only the scored split is decoded: (split, its name, its files or rows that could not be read)."""
    ds = load_dataset(data, size=size, only_split=split or EVAL_ORDER)
    sp, name = eval_split(ds, split)
    warn_absent_classes(ds, sp, name)
    return sp, name, ds.summary()["skipped"]


def load_votes(data: str, votes: str | None, required: bool = False):
    """The FER+ votes for `data`: the given file, else one found beside it, else None. A file
    found but unusable is a warning, not an error (nobody asked for it), but never silent: a
    report without its FER+ figures must not pass for one of a dataset that has no votes."""
    from train.votes import find_votes, read_votes, votes_beside

    if votes or required:
        return read_votes(find_votes(data, votes))
    if (found := votes_beside(data)) is None:
        return None
    try:
        check_readable(found, "Votes file")
        return read_votes(found)
    except UserError as exc:
        print(f"WARNING: only the folder labels are scored, not the FER+ majority: the votes file found beside the "
              f"data is ignored, as {str(exc).rstrip('.')}; fix or replace that file to score the FER+ majority too.",
              file=sys.stderr, flush=True)
        return None


def label_reports(names: list[str], y: np.ndarray, probs: np.ndarray, votes) -> dict:
    """The folder-label report, with the FER+ majority report under 'ferplus_majority' when votes exist."""
    rep = classification_report(y, probs)
    if votes is not None:
        from train.votes import ferplus_report

        rep["ferplus_majority"] = ferplus_report(names, probs, votes)
    return rep


def check_sides(sides: list[int] | None, size: int) -> None:
    """--degrade's sizes, checked before the split is scored (it takes a minute on FER2013)."""
    for side in sides or []:
        if not 1 <= side <= size:
            raise UserError(f"--degrade {side} is not a face size between 1 and the model's input size {size}.")


def degraded_reports(predict, sp, votes, sides: list[int]) -> dict:
    """Accuracies on the split shrunk to each side in pixels and scaled back to its size."""
    from train.augment import degrade

    out = {}
    for side in sides:
        rep = label_reports(sp.names, sp.y, predict(degrade(sp.x, side)), votes)
        out[str(side)] = {"accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"],
                          **({"ferplus_majority_accuracy": rep["ferplus_majority"]["accuracy"]}
                             if "ferplus_majority" in rep else {})}
    return out


def evaluate(model: str | None, data: str, split: str | None = None, calibrated: bool = True,
             votes: str | None = None, degrade: list[int] | None = None) -> dict:
    path = model_file(expand_path(model) if model else default_model_path(), "Model")
    if path.suffix == ".tflite":
        from edge.pipeline.classifier import Classifier

        clf = Classifier(path, calibrated=calibrated)
        for note in clf.notes():  # a failed parity gate: its figures here may not be the Keras model's
            print(f"Note: {path}: {note}.", file=sys.stderr, flush=True)
        sp, name, skipped = _read_split(data, clf.card.input_size, split)
        columns = columns_in_label_order(clf.labels)  # the labels index LABELS; the card may list them otherwise

        def predict(x):
            return clf.predict_many(x)[:, columns]

        runtime = clf.runtime.describe()
    elif path.suffix == ".keras":
        from train.keras_io import load_keras

        m = load_keras(path)
        sp, name, skipped = _read_split(data, int(m.input_shape[1]), split)

        def predict(x):
            return m.predict(x.astype(np.float32)[..., None], batch_size=256, verbose=0)

        import keras

        runtime = f"keras {keras.__version__}"
    else:
        raise UserError(f"{path} is neither a .keras nor a .tflite model.")
    from train.votes import unscorable

    v = load_votes(data, votes)
    why = unscorable(sp.names, v, given=bool(votes)) if v is not None else None
    if why:  # no image has a row, or none a majority (all tied or doubtful)
        if votes:  # asked for: a FER+ figure must not just be missing
            raise why
        print(f"Not scoring against the FER+ majority: {v.source} (found beside the data) fits none of these images: "
              f"{why}", file=sys.stderr, flush=True)
        v = None
    check_sides(degrade, sp.x.shape[1])
    from edge.card import sha256_file

    # What was measured, so figures of one's own model are never mistaken for another's: the
    # file's bytes, and whether the card's flip averaging and temperature were applied.
    rep = {"model": str(path), "model_sha256": sha256_file(path), "calibrated": calibrated and path.suffix == ".tflite",
           "data": str(data), "split": name, "runtime": runtime,
           **label_reports(sp.names, sp.y, predict(sp.x), v),
           "skipped": skipped}
    if degrade:
        rep["degraded"] = degraded_reports(predict, sp, v, degrade)
    return rep
