"""The model card: the one contract between convert and edge (model.json beside the .tflite).

Everything the runtime needs to feed the model and read its answer lives here; edge code
holds none of these as constants.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from edge.errors import UserError
from edge.labels import LABELS
from edge.pipeline.preprocess import CropRule

CARD_NAME = "model.json"
INT8_MODEL = "model_int8.tflite"  # what `edge convert` writes and the runtime loads
FAILED_DIR = "failed"  # where `edge convert` leaves a conversion that failed its parity gate, for inspection
# The project's int8 parity gate: `edge convert`'s defaults, and what edge compares the gate on a card with.
DEFAULT_MAX_DROP_PP = 0.5  # --max-drop: the largest accuracy drop, percentage points
DEFAULT_MIN_AGREEMENT = 0.97  # --min-agreement: the smallest Keras/int8 top-1 agreement, a fraction
GATE_KEYS = ("max_drop_pp", "min_agreement")  # the thresholds a card's parity records (older cards: none)


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
    model_file: str = INT8_MODEL
    model_sha256: str = ""  # the .tflite this card describes
    source_sha256: str = ""  # the Keras model it was converted from
    architecture: str = ""
    macs_per_invoke: int = 0  # multiply-accumulates of one batch-1 invoke (edge.pipeline.cost); 0: not counted
    parity: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    # Detectors frame a face differently: the rule measured for each detector key.
    crop_by_detector: dict[str, CropRule] = field(default_factory=dict)

    def edge_accuracy(self) -> tuple[float, str] | None:
        """(accuracy, what it is) for the model as edge runs it: the int8 model, with flip
        averaging when the card turns it on, as convert measured it; the Keras figure only
        when the card has nothing closer. None when the card has no accuracy at all."""
        cal, images = self.metrics.get("calibration") or {}, self.parity.get("images")
        key = "accuracy_int8_flip_average" if self.flip_average else "accuracy_int8"
        pi_run, pi_images = "int8 as the Pi runs it", cal.get("images")
        if cal.get("judged_by") == "FER+ majority":  # scored on the images with a clear majority, not all of them
            pi_run, pi_images = pi_run + ", against the FER+ majority", cal.get("judged_images")  # older cards: none
        # the images convert judged on: the validation ones unless `edge convert --split` named others
        split = (self.metrics.get("converted_from") or {}).get("parity_split", "val")
        judged_on = "validation" if split == "val" else split
        for value, what, n, on in ((cal.get(key), pi_run, pi_images, judged_on),
                                   (self.parity.get("int8_accuracy"), "int8", images, judged_on),
                                   (self.metrics.get("accuracy"), "float model before int8", None, "validation")):
            if isinstance(value, (int, float)):
                return float(value), what + (f", {n:,} {on} images" if n else f", {on}")
        return None

    def crop_for(self, detector_key: str) -> CropRule:
        return self.crop_by_detector.get(detector_key, self.crop)

    def to_json(self) -> str:
        d = asdict(self)
        d["crop"] = self.crop.to_dict()
        d["crop_by_detector"] = {k: r.to_dict() for k, r in self.crop_by_detector.items()}
        return json.dumps(d, indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelCard":
        """A card from its JSON; a missing, unknown or out-of-range key raises CardError."""
        check_card(d)
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


class CardError(ValueError):
    """One sentence: the card key, its bad value and what is allowed."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _need(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise CardError(f"key '{key}' has the bad value {value!r}; allowed: {allowed}")


def _check_crop(d, key: str) -> None:
    _need(isinstance(d, dict) and {"scale", "shift_y"} <= set(d), key, d, "an object with scale and shift_y")
    _need(_number(d["scale"]) and 0 < d["scale"] <= 4, f"{key}.scale", d["scale"], "a number > 0 and <= 4")
    _need(_number(d["shift_y"]) and -1 <= d["shift_y"] <= 1, f"{key}.shift_y", d["shift_y"],
          "a number between -1 and 1")


def _check_quant(d, key: str) -> None:
    if d is None:
        return  # a float model
    _need(isinstance(d, dict) and set(d) == {"scale", "zero_point"}, key, d,
          "null or an object with scale and zero_point")
    _need(_number(d["scale"]) and d["scale"] > 0, f"{key}.scale", d["scale"], "a number > 0")
    zp = d["zero_point"]
    _need(isinstance(zp, int) and not isinstance(zp, bool) and -128 <= zp <= 255, f"{key}.zero_point", zp,
          "an integer between -128 and 255")


def check_card(d) -> None:
    """Every key of a model card's JSON, before any of it is used (convert wrote it; a hand edit
    or a damaged file must fail here, not as NaN probabilities later)."""
    _need(isinstance(d, dict), "(top)", type(d).__name__, "a JSON object")
    known = {f.name for f in fields(ModelCard)}
    unknown = sorted(set(d) - known)
    _need(not unknown, unknown[0] if unknown else "", "present", f"only {', '.join(sorted(known))}")
    required = ("labels", "input_size", "color", "crop", "input_quant", "output_quant")
    missing = [k for k in required if k not in d]
    _need(not missing, missing[0] if missing else "", "missing", "it is required")
    labels = d["labels"]
    _need(isinstance(labels, list) and sorted(map(str, labels)) == sorted(LABELS) and len(set(labels)) == len(LABELS),
          "labels", labels, f"a list of the {len(LABELS)} names {', '.join(LABELS)}, each once, in any order "
          "(edge runs only models of these classes: one with other classes needs training on them, `edge train`)")
    size = d["input_size"]
    _need(isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= 512, "input_size", size,
          "an integer between 8 and 512")
    _need(d["color"] == "gray", "color", d["color"], '"gray"')
    _check_crop(d["crop"], "crop")
    _check_quant(d["input_quant"], "input_quant")
    _check_quant(d["output_quant"], "output_quant")
    t = d.get("temperature", 1.0)
    _need(_number(t) and 0 < t <= 100, "temperature", t, "a number > 0 and <= 100")
    _need(isinstance(d.get("flip_average", False), bool), "flip_average", d.get("flip_average"), "true or false")
    macs = d.get("macs_per_invoke", 0)
    _need(isinstance(macs, int) and not isinstance(macs, bool) and macs >= 0, "macs_per_invoke", macs,
          "an integer >= 0 (0: not counted)")
    for key in ("model_file", "model_sha256", "source_sha256", "architecture"):
        _need(isinstance(d.get(key, ""), str), key, d.get(key), "a string")
    for key in ("parity", "metrics", "crop_by_detector"):
        _need(isinstance(d.get(key, {}), dict), key, d.get(key), "an object")
    for det, rule in d.get("crop_by_detector", {}).items():
        _check_crop(rule, f"crop_by_detector.{det}")
    for key in GATE_KEYS:
        v = d.get("parity", {}).get(key, 0)
        _need(_number(v), f"parity.{key}", v, "a number")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_pair(model_path, card: ModelCard) -> None:
    """Refuse a card that names this file but was written for other bytes (a .tflite copied over,
    or a convert interrupted between the model and its card): its temperature and accuracy
    would be applied to the wrong model. A sibling borrowing the card (model_float32.tflite)
    is not checked."""
    path = Path(model_path)
    if card.model_sha256 and path.name == card.model_file and card.model_sha256 != sha256_file(path):
        raise UserError(f"{path.with_name(CARD_NAME)} describes a different .tflite than {path} (sha256 differs); "
                        f"{repair_advice(path, 're-run `edge convert` or pair the files correctly')}.")


def repair_advice(path, advice: str) -> str:
    """What to do about a model or card that is missing or cannot be used: `advice` (convert it
    again), except in the folder install.sh puts the model in on a Pi (whatever its PREFIX), whose
    reader (a store's IT person) has no training setup: there, reinstall the bundle, which puts
    its model and card back."""
    from edge.ops.bundle import installed_prefix, reinstall_bundle  # lazily: that module imports this one

    prefix = installed_prefix(Path(path).parent)
    if prefix is None:
        return advice
    return f"reinstall the bundle, which puts its model and card back: {reinstall_bundle(prefix)}"


def refuse_failed_conversion(folder: Path, what: str) -> None:
    """A model folder holding no model but the failed/ of a conversion that failed its parity gate
    (into a new --out): one sentence saying so and where its report is, wherever a model folder
    is read, rather than that it holds no model file. `what` names the folder as the caller does."""
    failed = Path(folder) / FAILED_DIR
    if failed.is_dir():
        raise UserError(f"{what} {folder} holds no model: its conversion failed the parity gate; the failed files "
                        f"and the parity report (parity.md) are in {failed}: read the report, then retrain or convert "
                        "again (a larger --calibration-size, or a looser --max-drop or --min-agreement if that loss "
                        "is acceptable).")


def loosened_gate(parity: dict) -> str:
    """The thresholds of a passed parity gate that were looser than the project's, as
    "--max-drop 100 (default 0.5)"; '' when none was (or the card predates recording them)."""
    if parity.get("passed") is not True:
        return ""  # a failed gate is said as such
    looser = []
    if parity.get("max_drop_pp", 0) > DEFAULT_MAX_DROP_PP:
        looser.append(f"--max-drop {parity['max_drop_pp']:g} (default {DEFAULT_MAX_DROP_PP:g})")
    if parity.get("min_agreement", 1) < DEFAULT_MIN_AGREEMENT:
        looser.append(f"--min-agreement {parity['min_agreement']:g} (default {DEFAULT_MIN_AGREEMENT:g})")
    return " and ".join(looser)


def pairing_notes(card: ModelCard, float_model: bool, borrowed: bool = False) -> list[str]:
    """Sentences a user should see before trusting a model on a Pi. borrowed: the file is a
    sibling of the card's own model with other bytes (check_pair lets it run)."""
    notes = []
    if borrowed:
        notes.append(f"its card {CARD_NAME} was written for {card.model_file}, not for this file (sha256 differs): the "
                     "card's temperature, crop rule and accuracy are that model's; give this model its own card "
                     "(`edge convert` writes it)")
    if card.parity.get("passed") is False:
        notes.append("its card says it failed convert's int8 parity gate: it may disagree with the Keras model it "
                     "came from; re-run `edge convert` or use a model that passed")
    if loosened := loosened_gate(card.parity):
        notes.append(f"it passed convert's int8 parity gate only at {loosened}, looser than the project's gate: it "
                     "may disagree with the Keras model it came from more than the project allows; re-run "
                     "`edge convert` without those options or use a model that passed the default gate")
    if float_model:
        notes.append("it is a float model, not int8: it runs several times slower on a Pi than the int8 model "
                     "`edge convert` writes (model_int8.tflite)")
    return notes


def load_card(model_path) -> ModelCard:
    """The card for a .tflite: model.json in the same folder."""
    p = Path(model_path).with_name(CARD_NAME)
    if not p.exists():
        raise UserError(f"No model card {p} beside {model_path}; "
                        f"{repair_advice(p, 'convert the model with `edge convert`, which writes it')}.")
    try:
        return ModelCard.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except CardError as exc:
        raise UserError(f"Model card {p}: {exc}; {repair_advice(p, 'fix it or re-run `edge convert`, which writes it')}.") \
            from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"Model card {p} is damaged ({exc}); {repair_advice(p, 're-run `edge convert`')}.") from exc
    except OSError as exc:
        raise UserError(f"Model card {p} cannot be read ({exc.strerror}); check its permissions.") from exc
