"""`edge eval`: one evaluation for every model type. Needs no TensorFlow for .tflite models:
those run through the edge runtime, exactly as on the Pi."""

from __future__ import annotations


import numpy as np

from edge.errors import UserError
from edge.metrics import classification_report
from edge.paths import expand_path
from edge.models import default_model_path
from train.data import EVAL_ORDER, eval_split, load_dataset


def _read_split(data: str, size: int, split: str | None):
    """Only the scored split is decoded."""
    return eval_split(load_dataset(data, size=size, only_split=split or EVAL_ORDER), split)


def evaluate(model: str | None, data: str, split: str | None = None, calibrated: bool = True) -> dict:
    path = expand_path(model) if model else default_model_path()
    if not path.exists():
        raise UserError(f"Model {path} does not exist; pass a .keras or .tflite file.")
    if path.is_dir():
        path = path / "model.keras"
    if path.suffix == ".tflite":
        from edge.pipeline.classifier import Classifier

        clf = Classifier(path, calibrated=calibrated)
        sp, name = _read_split(data, clf.card.input_size, split)
        probs = clf.predict_many(sp.x)
        runtime = clf.runtime.describe()
    elif path.suffix == ".keras":
        from train.trainer import load_keras

        m = load_keras(path)
        sp, name = _read_split(data, int(m.input_shape[1]), split)
        probs = m.predict(sp.x.astype(np.float32)[..., None], batch_size=256, verbose=0)
        import keras

        runtime = f"keras {keras.__version__}"
    else:
        raise UserError(f"{path} is neither a .keras nor a .tflite model.")
    return {"model": str(path), "data": str(data), "split": name, "runtime": runtime,
            **classification_report(sp.y, probs)}
