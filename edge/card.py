"""The model card: the one contract between convert and edge (model.json beside the .tflite).

Everything the runtime needs to feed the model and read its answer lives here; edge code
holds none of these as constants.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.errors import UserError
from edge.pipeline.preprocess import CropRule

CARD_NAME = "model.json"


@dataclass
class Quant:
    scale: float
    zero_point: int


@dataclass
class ModelCard:
    labels: list[str]
    input_size: int
    color: str  # "gray"
    crop: CropRule  # for the default detector
    input_quant: Quant | None  # None for a float model
    output_quant: Quant | None
    flip_average: bool = False  # average each crop's prediction with its mirror image's
    temperature: float = 1.0  # probabilities are softmax(log p / T), after flip averaging
    model_file: str = "model_int8.tflite"
    model_sha256: str = ""  # the .tflite this card describes
    source_sha256: str = ""  # the Keras model it was converted from
    architecture: str = ""
    macs_per_invoke: int = 0  # multiply-accumulates of one batch-1 invoke (edge.pipeline.cost); 0: not counted
    parity: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    # Detectors frame a face differently: the rule measured for each detector key.
    crop_by_detector: dict[str, CropRule] = field(default_factory=dict)

    def crop_for(self, detector_key: str) -> CropRule:
        return self.crop_by_detector.get(detector_key, self.crop)

    def to_json(self) -> str:
        d = asdict(self)
        d["crop"] = self.crop.to_dict()
        d["crop_by_detector"] = {k: r.to_dict() for k, r in self.crop_by_detector.items()}
        return json.dumps(d, indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelCard":
        d = dict(d)
        d["crop"] = CropRule.from_dict(d["crop"])
        d["crop_by_detector"] = {k: CropRule.from_dict(r) for k, r in d.get("crop_by_detector", {}).items()}
        for k in ("input_quant", "output_quant"):
            d[k] = Quant(**d[k]) if d.get(k) else None
        return cls(**d)

    def save(self, folder: Path) -> Path:
        p = Path(folder) / CARD_NAME
        p.write_text(self.to_json())
        return p


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_card(model_path) -> ModelCard:
    """The card for a .tflite: model.json in the same folder."""
    p = Path(model_path).with_name(CARD_NAME)
    if not p.exists():
        raise UserError(f"No model card {p} beside {model_path}; convert the model with `edge convert`, which writes it.")
    try:
        return ModelCard.from_dict(json.loads(p.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"Model card {p} is damaged ({exc}); re-run `edge convert`.") from exc
