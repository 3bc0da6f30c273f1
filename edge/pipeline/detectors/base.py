"""Face detector interface and registry: one `detect`, plugins register by key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edge.errors import UserError
from edge.pipeline.geometry import BBox


@dataclass(frozen=True)
class Detection:
    box: BBox  # pixels in the frame given to detect()
    score: float


class FaceDetector:
    """Subclasses set `key` and implement detect(); options come from config [detector]."""

    key = ""

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Faces in a BGR (h, w, 3) or grayscale (h, w) uint8 frame."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.key


DETECTORS: dict[str, Callable[..., FaceDetector]] = {}


def register(cls):
    DETECTORS[cls.key] = cls
    return cls


def create_detector(kind: str, **options) -> FaceDetector:
    """The detector named `kind` (blazeface, haar, yunet) built with its options."""
    from edge.pipeline import detectors  # noqa: F401  (imports the plugins so they register)

    if kind not in DETECTORS:
        raise UserError(f"Unknown face detector '{kind}'; choose one of: {', '.join(sorted(DETECTORS))}.")
    return DETECTORS[kind](**options)
