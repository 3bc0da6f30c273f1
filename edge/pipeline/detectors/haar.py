"""OpenCV's Viola-Jones frontal-face cascade: no TFLite model needed, weaker on small,
turned or dim faces. Works with the pip wheel (cv2.data) and Debian's python3-opencv
(cascades in the opencv-data package)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.pipeline.detectors.base import Detection, DetectorConfig, FaceDetector, register
from edge.paths import expand_path, not_a_file
from edge.errors import UserError, import_cv2
from edge.pipeline.geometry import BBox

CASCADE = "haarcascade_frontalface_default.xml"
SYSTEM_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades")


def find_cascade(cv2) -> Path | None:
    """The frontal-face cascade of the wheel (cv2.data) or of Debian's opencv-data."""
    dirs = []
    data = getattr(cv2, "data", None)
    if data is not None and getattr(data, "haarcascades", None):
        dirs.append(data.haarcascades)
    dirs.extend(SYSTEM_DIRS)
    for d in dirs:
        candidate = Path(d) / CASCADE
        if candidate.is_file():
            return candidate
    return None


def cascade_hint(cv2) -> str:
    """How to get the cascade for the OpenCV in use: Debian's (a Pi's; no cv2.data) keeps it in
    opencv-data, and a pip OpenCV wheel in a Pi's venv would replace apt's numpy-matched build."""
    if getattr(cv2, "data", None) is None:
        return "install Debian's cascades with: sudo apt install opencv-data"
    # the wheel itself, not queue-mood[opencv]: --force-reinstall would reinstall queue-mood too, from
    # an index that does not have it
    return "reinstall OpenCV with: pip install --force-reinstall --no-deps 'opencv-python-headless>=4.6,<5'"


@dataclass
class HaarConfig(DetectorConfig):
    """[detector] with kind = "haar": OpenCV's frontal-face Haar cascade."""

    kind: str = "haar"  # min_score is not used: the cascade gives no score


@register
class Haar(FaceDetector):
    Config = HaarConfig
    scale_factor = 1.1  # detectMultiScale's image pyramid step
    min_neighbors = 5  # overlapping hits a face needs

    def __init__(self, cfg: HaarConfig, threads: int = 1):
        self.cfg, model = cfg, cfg.model
        self._cv2 = cv2 = import_cv2()
        if model:
            path = expand_path(model)
            if why := not_a_file(path):
                raise UserError(f"Haar cascade {path} {why}; fix [detector] model or leave it empty.")
        else:
            path = find_cascade(cv2)
            if path is None:
                raise UserError(f"OpenCV's {CASCADE} was not found; {cascade_hint(cv2)}, or pass [detector] model = "
                                "PATH to the cascade file.")
        self.model_path = path
        try:
            self.cascade = cv2.CascadeClassifier(str(path))
        except (cv2.error, SystemError):  # a file that is not XML: raised, as SystemError in current OpenCV
            self.cascade = None
        if self.cascade is None or self.cascade.empty():
            raise UserError(f"{path} is not a valid OpenCV cascade file; pass [detector] model = PATH to {CASCADE}.")
        self.min_face_px = int(cfg.min_face_px)

    def describe(self) -> str:
        return f"haar ({self.model_path.name})"

    def detect(self, frame: np.ndarray) -> list[Detection]:
        from edge.pipeline.preprocess import to_gray

        gray = to_gray(frame)
        faces = self.cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_face_px, self.min_face_px),
        )
        boxes = np.asarray(faces).reshape(-1, 4)
        return [Detection(BBox(float(x), float(y), float(w), float(h)), 1.0) for x, y, w, h in boxes]
