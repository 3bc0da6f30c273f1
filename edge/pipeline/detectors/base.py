"""Face detector interface and registry: one `detect`; each plugin module declares its
config dataclass (a DetectorConfig with its own keys), registers itself, and may refine the
doctor check and the files `edge bundle` ships."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from edge.errors import UserError, check
from edge.paths import FILE_KEY, expand_path, items, not_a_file
from edge.pipeline.geometry import BBox
from edge.plugins import Registry
from edge.words import plural


@dataclass(frozen=True)
class Detection:
    box: BBox  # pixels in the frame given to detect()
    score: float


DETECTORS = Registry("face detector")


@dataclass
class DetectorConfig:
    """[detector]: the keys every detector has. `kind` picks the plugin, whose own Config
    subclass (in its module) adds its keys and sets `kind`'s default to the plugin's key."""

    kind: str = "blazeface"  # which detector: blazeface, haar or yunet (each may add keys of its own)
    model: str = field(default="", metadata=FILE_KEY)  # detector model file; empty: the one shipped with queue-mood (blazeface) or OpenCV (haar)
    min_score: float = 0.5  # detections scoring lower are ignored
    min_face_px: int = 20  # faces narrower than this (pixels) are ignored
    # [source] roi split into [cols, rows] overlapping windows, one detector call each ([1, 1]:
    # one call on the whole ROI); tile_whole adds a call on the whole ROI for faces bigger than
    # the overlap (detectors/regions.py; benchmarks/head_detection.py measures the choices).
    # A detector with a small fixed input (BlazeFace) sets its own default.
    tiles: list[int] = field(default_factory=lambda: [1, 1], metadata=items(2))
    tile_overlap: float = 0.25  # a fraction of a tile
    tile_whole: bool = True  # also one call on the whole ROI, for faces bigger than the tiles' overlap

    @classmethod
    def table_class(cls, data: dict, path: str) -> type:
        """The config class of the detector that the [detector] table's `kind` names."""
        kind = data.get("kind", DetectorConfig.kind)
        check(isinstance(kind, str) and kind in DETECTORS, f"{path}.kind", kind, ", ".join(sorted(DETECTORS)))
        return DETECTORS[kind].Config

    def validate(self, p):
        check(self.kind in DETECTORS, f"{p}.kind", self.kind, ", ".join(sorted(DETECTORS)))
        check(0 < self.min_score < 1, f"{p}.min_score", self.min_score, "a number between 0 and 1")
        check(self.min_face_px >= 1, f"{p}.min_face_px", self.min_face_px, "an integer >= 1")
        check(len(self.tiles) == 2 and all(1 <= t <= 8 for t in self.tiles), f"{p}.tiles", self.tiles,
              "[cols, rows], each 1-8")
        check(0 <= self.tile_overlap < 0.75, f"{p}.tile_overlap", self.tile_overlap, "a number in [0, 0.75)")


class FaceDetector:
    """Subclasses set `Config` (its `kind` default is the key) and implement detect()."""

    key = ""
    Config = DetectorConfig
    min_score: float | None = None  # the score a face needs; None: the detector gives no score

    def __init__(self, cfg: DetectorConfig, threads: int = 1):
        self.cfg = cfg

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Faces in a BGR (h, w, 3) or grayscale (h, w) uint8 frame."""
        raise NotImplementedError

    def detect_down_to(self, frame: np.ndarray, min_score: float) -> list[Detection]:
        """detect(), also keeping faces scored at least `min_score` under the usual threshold. A
        detector that cannot lower it (a cascade; OpenCV's YuNet fixes it when created) gives
        its usual faces."""
        return self.detect(frame)

    def describe(self) -> str:
        return self.key

    def doctor(self, width: int, height: int) -> tuple[str, str]:
        """(OK or WARN, one line) for `edge doctor`: runs on a blank frame, where no face is."""
        faces = self.detect(np.zeros((height, width, 3), np.uint8))
        return ("OK" if not faces else "WARN"), f"{self.describe()}: ran on a blank {width}x{height} frame ({plural(len(faces), 'face')})"

    @classmethod
    def bundle_files(cls, cfg: DetectorConfig) -> dict[str, Path]:
        """{file name: path} that a Pi bundle ships for this detector; the first is the one
        `model` names on the Pi. Default: the configured model file, if any."""
        if not cfg.model:
            return {}
        path = expand_path(cfg.model)
        if why := not_a_file(path):
            raise UserError(f"Face detector model {path} (detector.model) {why}; fix it or leave it empty.")
        return {path.name: path}


def register(cls):
    """Class decorator: adds a detector to DETECTORS under its config's default kind."""
    cls.key = cls.Config.kind
    return DETECTORS.register(cls)


def detector_config(kind: str, **options) -> DetectorConfig:
    """A validated [detector] section from a kind and keyword options (scripts, benchmarks, tests)."""
    from edge.pipeline import detectors  # noqa: F401  (imports the plugins so they register)

    if kind not in DETECTORS:
        raise UserError(f"Unknown face detector '{kind}'; choose one of: {', '.join(sorted(DETECTORS))}.")
    config = DETECTORS[kind].Config
    unknown = sorted(set(options) - {f.name for f in fields(config)})
    if unknown:
        raise UserError(f"The {kind} detector has no option {', '.join(unknown)}; "
                        f"its options: {', '.join(f.name for f in fields(config) if f.name != 'kind')}.")
    cfg = config(**options)
    cfg.validate("detector")
    return cfg


def create_detector(cfg: DetectorConfig | str, threads: int = 1, **options) -> FaceDetector:
    """The detector a [detector] section names; or a kind and its options (see detector_config)."""
    if isinstance(cfg, str):
        cfg = detector_config(cfg, **options)
    return DETECTORS[cfg.kind](cfg, threads=threads)
