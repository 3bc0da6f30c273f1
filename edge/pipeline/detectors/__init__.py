"""Face detectors. Importing this package registers every plugin module in it (a module
whose optional dependency is missing is logged and left out): a new detector is one file."""

from __future__ import annotations

from edge.pipeline.detectors.base import (DETECTORS, Detection, DetectorConfig, FaceDetector, create_detector,
                                          detector_config, register)

DETECTORS.load(__name__, __path__)

__all__ = ["DETECTORS", "Detection", "DetectorConfig", "FaceDetector", "create_detector", "detector_config", "register"]
