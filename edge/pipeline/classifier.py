"""The expression classifier on the TFLite runtime: crops in, calibrated probabilities out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.card import INT8_MODEL, ModelCard, check_pair, load_card, pairing_notes, repair_advice, sha256_file
from edge.errors import UserError
from edge.labels import LABELS
from edge.pipeline.runtime import load_interpreter, runtime

# Batch sizes an interpreter is prepared for; a batch is zero-padded up to the next one (larger
# batches run in chunks of the last), so the face count changing never re-prepares tensors.
BATCH_SLOTS = (1, 2, 4, 8)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The one place model outputs are turned back into real numbers."""
    return (q.astype(np.float32) - zero_point) * scale


def apply_temperature(probs: np.ndarray, temperature: float, floor: float = 1e-6) -> np.ndarray:
    """softmax(log p / T): temperature scaling on a model whose output is already softmax."""
    if temperature == 1.0:
        return probs
    logp = np.log(np.maximum(probs, floor)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


class Classifier:
    """Runs a converted model; `predict` takes uint8 (n, s, s) face crops."""

    def __init__(self, model_path, card: ModelCard | None = None, num_threads: int | None = 1,
                 calibrated: bool = True):
        """calibrated=False gives the bare model: no flip averaging, no temperature."""
        self.path = Path(model_path)
        self._advice = repair_advice(self.path, "pass a .tflite model made by `edge convert`")
        if self.path.is_dir():  # a caller that took a folder resolves it first (edge.config.model_file)
            raise UserError(f"{self.path} is a folder, not a model file; pass the .tflite model in it (the folder "
                            f"`edge convert --out` writes holds {INT8_MODEL}).")
        if not self.path.is_file():
            raise UserError(f"Model file {self.path} does not exist; {self._advice}.")
        self.card = card or load_card(self.path)
        self.num_threads = num_threads
        # a damaged file says so before any pairing check
        self.interp = load_interpreter(self.path, num_threads, advice=self._advice)
        if card is None:
            check_pair(self.path, self.card)
        self.runtime = runtime()
        inputs, outputs = self.interp.get_input_details(), self.interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:  # which output the runtime lists first is not the Keras order
            raise UserError(f"{self.path} has {len(inputs)} input(s) and {len(outputs)} output(s); edge feeds one face "
                            f"crop and reads one output, the {len(self.card.labels)} class probabilities: export the "
                            "model with that output only and convert it again.")
        inp, out = inputs[0], outputs[0]
        s = self.card.input_size
        if len(inp["shape"]) == 4 and inp["shape"][-1] == 3:
            raise UserError(f"{self.path} takes colour input {inp['shape'].tolist()}, but edge feeds the model "
                            "grayscale face crops (a card's color can only be \"gray\"); train a grayscale model "
                            "(`edge train`) and convert it.")
        shape = inp["shape"].tolist()
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1:  # no card can describe it
            raise UserError(f"{self.path} takes input {shape}, but edge feeds the model square grayscale face crops, "
                            "[n, side, side, 1]; export the model with such an input and convert it again.")
        if out["shape"][-1] != len(self.card.labels):  # a card lists exactly edge's classes (check_card)
            raise UserError(f"{self.path} gives {out['shape'][-1]} class scores, but edge runs only models of the "
                            f"{len(LABELS)} classes {', '.join(LABELS)}; train one on them (`edge train`) and "
                            "convert it.")
        if shape[1] != s:
            raise UserError(
                f"{self.path} takes input {inp['shape'].tolist()} and gives {out['shape'].tolist()}, but its card says "
                f"[n, {s}, {s}, 1] -> [n, {len(self.card.labels)}]; the model and model.json do not belong together."
            )
        self._in, self._out = inp, out
        self._slots = {int(inp["shape"][0]): self.interp}  # batch size -> interpreter prepared for it
        # A model exported with a fixed batch (shape_signature not -1) fails to resize, or computes
        # garbage, at any other batch: it runs only at its own.
        fixed = int(inp.get("shape_signature", [-1])[0]) != -1
        self.batch_slots = (int(inp["shape"][0]),) if fixed else BATCH_SLOTS
        self.images_invoked = 0  # crops through the model so far (padding not counted)
        self.temperature = self.card.temperature if calibrated else 1.0
        self.flip_average = self.card.flip_average and calibrated
        # Quantization comes from the card; a card that disagrees with the file is refused.
        self._in_q = self._quant(inp, self.card.input_quant, "input")
        self._out_q = self._quant(out, self.card.output_quant, "output")
        # Small probabilities are 0 after int8 quantization; half a step keeps log() finite.
        self.prob_floor = self._out_q[0] / 2 if self._out_q else 1e-6
        self._check_probabilities()

    def _quant(self, detail, q, which) -> tuple[float, int] | None:
        if detail["dtype"] == np.float32:
            return None
        if q is None or not np.isclose(q.scale, detail["quantization"][0], rtol=1e-5) or q.zero_point != detail["quantization"][1]:
            raise UserError(f"{self.path}'s {which} quantization {detail['quantization']} differs from its card's ({q}); "
                            "the model and model.json do not belong together.")
        info = np.iinfo(detail["dtype"])
        top = (info.max - q.zero_point) * q.scale
        if which == "input" and top < 128:  # pixels above `top` all read as `top`: most faces look alike
            raise UserError(f"{self.path}'s input takes values up to {top:.3g}, but edge feeds it pixel values 0-255 "
                            "(a model trained on scaled pixels, e.g. /255 or -1..1); put the scaling inside the model, "
                            "as `edge train`'s models do, and convert it again.")
        return q.scale, q.zero_point

    def _check_probabilities(self) -> None:
        """Everything downstream (temperature, mood, alerts) reads the output as probabilities:
        a model that gives logits or sigmoid scores is refused before any face is scored."""
        s = self.card.input_size
        probe = np.stack([np.full((s, s), 128, np.uint8), np.tile(np.linspace(0, 255, s).astype(np.uint8), (s, 1))])
        probs = np.concatenate([self.raw_probs(c[None]) for c in probe])
        self.images_invoked = 0
        tol = 0.05  # int8 rounding of the outputs stays far inside this
        if not (np.isfinite(probs).all() and probs.min() >= -tol and np.abs(probs.sum(axis=1) - 1).max() <= tol):
            gave = [round(float(v), 3) for v in probs[0]]
            raise UserError(f"{self.path} does not output probabilities (a test crop gave {gave}, not 0-1 values "
                            "summing to 1); edge needs the softmax of the classes as the model's output: add the "
                            "softmax (a model ending in logits or sigmoid scores) and convert it again.")

    def notes(self) -> list[str]:
        """What to know before trusting this model on a Pi (failed parity gate, float model, a
        card borrowed from a sibling file)."""
        c = self.card
        borrowed = bool(c.model_sha256) and self.path.name != c.model_file and sha256_file(self.path) != c.model_sha256
        return pairing_notes(c, not self._computes_in_int8(), borrowed)

    def _computes_in_int8(self) -> bool:
        """An int8 input, or a float one that goes straight into a QUANTIZE op: TFLite's converter
        keeps float input and output around a fully int8 model unless told otherwise, and that
        runs at int8 speed. _get_ops_details is private but in every TFLite runtime's Interpreter;
        without it such a model is taken for a float one."""
        if self._in_q is not None:
            return True
        ops = getattr(self.interp, "_get_ops_details", list)()
        return any(op["op_name"] == "QUANTIZE" and self._in["index"] in op["inputs"] for op in ops)

    @property
    def labels(self) -> list[str]:
        return self.card.labels

    def _interpreter(self, slot: int):
        """The interpreter prepared for batch `slot`: one per slot, made on first use."""
        interp = self._slots.get(slot)
        if interp is None:
            interp = load_interpreter(self.path, self.num_threads)
            s = self.card.input_size
            interp.resize_tensor_input(self._in["index"], [slot, s, s, 1])
            interp.allocate_tensors()
            self._slots[slot] = interp
        return interp

    def raw_probs(self, crops: np.ndarray) -> np.ndarray:
        """Uncalibrated model probabilities, (n, classes) float32."""
        crops = np.asarray(crops)
        if crops.ndim == 2:
            crops = crops[None]
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        top = self.batch_slots[-1]
        return np.concatenate([self._invoke(crops[i : i + top]) for i in range(0, len(crops), top)])

    def _invoke(self, crops: np.ndarray) -> np.ndarray:
        n = len(crops)
        self.images_invoked += n
        slot = next(b for b in self.batch_slots if b >= n)
        x = np.zeros((slot, *crops.shape[1:], 1), np.float32)
        x[:n, ..., 0] = crops
        if self._in_q:
            x = quantize(x, self._in_q[0], self._in_q[1], self._in["dtype"])
        interp = self._interpreter(slot)
        interp.set_tensor(self._in["index"], x)
        interp.invoke()
        y = interp.get_tensor(self._out["index"])[:n]
        return dequantize(y, *self._out_q) if self._out_q else y.astype(np.float32)

    def predict(self, crops: np.ndarray, mirror=None, flip_below: float = 1.0) -> np.ndarray:
        """Calibrated probabilities: with the card's flip_average, the mean over each crop and
        its mirror image, then the card's temperature. flip_below < 1: the mirror image only for
        crops whose own top class is less sure than that (the others barely move). mirror: one
        flag per crop to see that crop or its mirror image instead of both (a track's smoothing
        averages the two over its classifications). Both are ignored without flip_average."""
        crops = np.asarray(crops)
        if crops.ndim == 2:
            crops = crops[None]
        if self.flip_average and len(crops) and mirror is not None:
            flags = np.asarray(mirror, bool)
            if flags.shape != (len(crops),):
                raise ValueError(f"mirror needs one flag per crop ({len(crops)}), got shape {flags.shape}")
            probs = self.raw_probs(np.where(flags[:, None, None], crops[:, :, ::-1], crops))
        elif self.flip_average and len(crops) and flip_below < 1:
            probs = self.raw_probs(crops)
            unsure = apply_temperature(probs, self.temperature, self.prob_floor).max(axis=1) < flip_below
            if unsure.any():
                probs[unsure] = (probs[unsure] + self.raw_probs(crops[unsure][:, :, ::-1])) / 2
        elif self.flip_average and len(crops):
            both = self.raw_probs(np.concatenate([crops, crops[:, :, ::-1]]))
            probs = (both[: len(crops)] + both[len(crops) :]) / 2
        else:
            probs = self.raw_probs(crops)
        return apply_temperature(probs, self.temperature, self.prob_floor)

    def predict_many(self, crops: np.ndarray, batch: int = 256) -> np.ndarray:
        return np.concatenate([self.predict(crops[i : i + batch]) for i in range(0, len(crops), batch)] or
                              [np.zeros((0, len(self.labels)), np.float32)])
