"""Face detectors. Importing this package registers every plugin whose module imports;
a plugin that cannot be imported is logged and left out of the registry."""

from __future__ import annotations

import importlib
import logging

from edge.pipeline.detectors.base import DETECTORS, Detection, FaceDetector, create_detector, register

log = logging.getLogger(__name__)

PLUGINS = ("blazeface", "haar", "yunet")

for _name in PLUGINS:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ImportError as _exc:  # an optional dependency of that plugin is missing
        log.warning("face detector '%s' is unavailable: %s", _name, _exc)

__all__ = ["DETECTORS", "Detection", "FaceDetector", "create_detector", "register"]
