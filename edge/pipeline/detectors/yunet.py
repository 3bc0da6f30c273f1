"""OpenCV's YuNet face detector (cv2.FaceDetectorYN, OpenCV >= 4.5.4) from an ONNX model
the user downloads (face_detection_yunet_2023mar.onnx needs OpenCV >= 4.8)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.pipeline.detectors.base import Detection, DetectorConfig, FaceDetector, register
from edge.paths import expand_path, not_a_file
from edge.errors import UserError, import_cv2
from edge.pipeline.geometry import BBox

MODEL_HINT = (
    "download face_detection_yunet_2023mar.onnx from the OpenCV model zoo (needs OpenCV >= 4.8; "
    "older OpenCV needs face_detection_yunet_2022mar.onnx) and pass [detector] model = PATH"
)


@dataclass
class YuNetConfig(DetectorConfig):
    """[detector] with kind = "yunet": OpenCV's YuNet (a model file you download; not on the Pi's OpenCV 4.6)."""

    kind: str = "yunet"


@register
class YuNet(FaceDetector):
    Config = YuNetConfig
    nms_iou = 0.3  # boxes overlapping more than this are one face

    def __init__(self, cfg: YuNetConfig, threads: int = 1):
        self.cfg, model = cfg, cfg.model
        cv2 = import_cv2()
        if not hasattr(cv2, "FaceDetectorYN"):
            raise UserError(
                f"The installed OpenCV {cv2.__version__} has no FaceDetectorYN (YuNet needs OpenCV >= 4.5.4, "
                "4.8 for the 2023mar model); use [detector] kind = \"blazeface\" or upgrade OpenCV."
            )
        if not model:
            raise UserError(f"The YuNet detector needs a model file: {MODEL_HINT}.")
        path = expand_path(model)
        if why := not_a_file(path):
            raise UserError(f"YuNet model {path} {why}: {MODEL_HINT}.")
        self.model_path = path
        self.min_score = float(cfg.min_score)
        self.min_face_px = int(cfg.min_face_px)
        try:
            self.net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), self.min_score, float(self.nms_iou))
        except cv2.error as exc:
            raise UserError(
                f"OpenCV {cv2.__version__} cannot load {path} as a YuNet model ({str(exc).strip().splitlines()[-1]}); "
                "the 2023mar model needs OpenCV >= 4.8."
            ) from exc
        self._size: tuple[int, int] | None = None

    def describe(self) -> str:
        return f"yunet ({self.model_path.name})"

    @classmethod
    def bundle_files(cls, cfg: YuNetConfig):
        raise UserError("detector.kind = 'yunet' needs OpenCV >= 4.8, but Raspberry Pi OS Bookworm's python3-opencv "
                        "is 4.6; use kind = 'blazeface' for the Pi.")

    def detect(self, frame: np.ndarray) -> list[Detection]:
        import cv2

        if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
            frame = cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        h, w = frame.shape[:2]
        if self._size != (w, h):
            self.net.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self.net.detect(frame)
        if faces is None:
            return []
        out = []
        for row in np.asarray(faces).reshape(-1, 15):
            x, y, bw, bh = (float(v) for v in row[:4])
            if bw < self.min_face_px:
                continue
            out.append(Detection(BBox(x, y, bw, bh), float(row[14])))
        return out
