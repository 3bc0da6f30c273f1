"""One frame through the product: detect -> crop -> classify -> track -> mood -> alert.

Shared by `edge run` (live) and `edge analyze` (recordings): one pipeline, two front doors.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge.pipeline.alerts import AlertPolicy
from edge.pipeline.classifier import Classifier
from edge.config import Config, resolve_model
from edge.pipeline.detectors.base import FaceDetector
from edge.pipeline.detectors.regions import configured_detector
from edge.pipeline.mood import Mood, MoodWindow
from edge.pipeline.preprocess import crop_face, look, to_gray
from edge.pipeline.sources import Frame
from edge.pipeline.tracking import Track, Tracker

STAGES = ("detect", "classify", "track")


@dataclass
class FrameResult:
    frame_index: int
    t_s: float
    detections: int
    tracks: list[Track]  # confirmed tracks seen in this frame (what mood and alerts count)
    mood: Mood
    transition: str | None  # "raised" / "cleared" on this frame
    alert_state: str
    stage_s: dict[str, float] = field(default_factory=dict)
    faces: list[Track] = field(default_factory=list)  # every track detected in this frame, confirmed or not


class StageTimer:
    """Median stage latencies over the last `keep` frames (for /status and benchmarks)."""

    def __init__(self, keep: int = 300):
        self.samples = {s: deque(maxlen=keep) for s in STAGES}
        self.per_face = deque(maxlen=keep)

    def add(self, stage_s: dict[str, float], faces: int):
        for k, v in stage_s.items():
            self.samples[k].append(v)
        if faces:
            self.per_face.append(stage_s["classify"] / faces)

    def medians_ms(self) -> dict[str, float]:
        out = {k: 1000 * float(np.median(v)) for k, v in self.samples.items() if v}
        if self.per_face:
            out["classify_per_face"] = 1000 * float(np.median(self.per_face))
        return out


class QueueMonitor:
    """After the classifier: tracker -> mood window -> alert policy, one frame at a time.
    The scenario benchmark drives this same object with banked classifier outputs."""

    def __init__(self, cfg: Config, labels: list[str]):
        self.tracker = Tracker(cfg.tracking)
        self.mood = MoodWindow(labels, cfg.mood)
        self.policy = AlertPolicy(cfg.alert)

    def update(self, t_s: float, boxes: list, probs, looks=None) -> tuple[list[Track], Mood, str | None]:
        """boxes: this frame's detections; probs: one prediction per box, None where the
        box was not classified this frame; looks: preprocess.look of each box's crop (or
        None). Returns (confirmed tracks seen, mood, transition)."""
        tracks = self.tracker.update(t_s, boxes, probs, looks)
        mood = self.mood.update(t_s, tracks, calm=not self.policy.raised)
        return tracks, mood, self.policy.update(t_s, mood.negative_share, mood.faces)


class Pipeline:
    def __init__(self, cfg: Config, classifier: Classifier, detector: FaceDetector):
        self.cfg, self.classifier, self.detector = cfg, classifier, detector
        card = classifier.card
        self.crop_rule, self.size = card.crop_for(detector.key), card.input_size
        self.monitor = QueueMonitor(cfg, card.labels)
        self.tracker, self.mood, self.policy = self.monitor.tracker, self.monitor.mood, self.monitor.policy
        self.timer = StageTimer()

    def crops(self, gray: np.ndarray, boxes) -> np.ndarray:
        return np.stack([crop_face(gray, b.as_tuple(), self.crop_rule, self.size) for b in boxes])

    def classify(self, gray: np.ndarray, boxes) -> np.ndarray:
        """Calibrated probabilities per box, all faces in one batch."""
        return self.classifier.predict(self.crops(gray, boxes))

    def process(self, frame: Frame) -> FrameResult:
        t0 = time.perf_counter()
        detections = self.detector.detect(frame.image)
        t1 = time.perf_counter()
        boxes = [d.box for d in detections]
        looks = []
        if boxes:
            crops = self.crops(to_gray(frame.image), boxes)
            probs = self.classifier.predict(crops)
            looks = [look(c) for c in crops]
        else:
            probs = np.zeros((0, len(self.classifier.labels)), np.float32)
        t2 = time.perf_counter()
        tracks, mood, transition = self.monitor.update(frame.t_s, boxes, probs, looks)
        t3 = time.perf_counter()
        stage_s = {"detect": t1 - t0, "classify": t2 - t1, "track": t3 - t2}
        self.timer.add(stage_s, len(boxes))
        return FrameResult(frame.index, frame.t_s, len(detections), tracks, mood, transition, self.policy.state, stage_s,
                           list(self.tracker.seen))


def load_parts(cfg: Config):
    """(classifier, detector) for a config; errors are UserErrors with one sentence."""
    classifier = Classifier(resolve_model(cfg), num_threads=cfg.model.threads)
    return classifier, configured_detector(cfg)
