"""One frame through the product: detect -> crop -> classify -> track -> mood -> alert.

Shared by `edge run` (live) and `edge analyze` (recordings): one pipeline, two front doors.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge.pipeline.alerts import AlertPolicy
from edge.pipeline.classifier import Classifier
from edge.config import Config, resolve_model
from edge.pipeline.detectors.base import Detection, FaceDetector
from edge.pipeline.detectors.regions import configured_detector, detect_in
from edge.pipeline.geometry import BBox
from edge.pipeline.mood import Mood, MoodWindow
from edge.pipeline.preprocess import crop_face, look, to_gray
from edge.pipeline.schedule import Schedule, focus_windows, motion_blocks
from edge.pipeline.sources import Frame
from edge.pipeline.tracking import Track, Tracker

log = logging.getLogger("edge")

STAGES = ("detect", "classify", "track")
MISSED_RETRY_S = 0.45  # how long a person the detector missed is still looked for between scans (Pipeline.detect)


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
    detected: bool = True  # False: the schedule skipped the detector; tracks carry their last boxes
    classified: int = 0  # faces classified in this frame (the schedule picks which)
    refound: list[tuple[int, int]] = field(default_factory=list)  # (new track id, the lost one it continues)
    held_back_s: float | None = None  # AlertPolicy.held_back_s: the cooldown holds back an alert the queue would raise


class StageTimer:
    """Median stage latencies over the last `keep` frames (for /status and benchmarks)."""

    def __init__(self, keep: int = 300):
        self.samples = {s: deque(maxlen=keep) for s in STAGES}
        self.per_face = deque(maxlen=keep)

    def add(self, stage_s: dict[str, float], faces: int, detected: bool = True):
        """faces: how many were classified. A stage the schedule skipped in this frame adds no
        sample, so the medians stay the cost of doing the work."""
        for k, v in stage_s.items():
            if (k == "detect" and not detected) or (k == "classify" and not faces):
                continue
            self.samples[k].append(v)
        if faces:
            self.per_face.append(stage_s["classify"] / faces)

    def medians_ms(self) -> dict[str, float]:
        out = {k: 1000 * float(np.median(v)) for k, v in self.samples.items() if v}
        if self.per_face:
            out["classify_per_face"] = 1000 * float(np.median(self.per_face))
        return out


class QueueMonitor:
    """After the detector: tracker -> (the classifier, on the faces the schedule picks) ->
    mood window -> alert policy, one frame at a time. The scenario benchmark drives this same
    object with banked classifier outputs."""

    def __init__(self, cfg: Config, labels: list[str]):
        self.tracker = Tracker(cfg.tracking)
        self.mood = MoodWindow(labels, cfg.mood, keep_s=cfg.tracking.refind_s)
        self.policy = AlertPolicy(cfg.alert)
        self.schedule = Schedule(cfg.schedule)
        self.flip_in_turn, self.flip_below = cfg.schedule.flip_in_turn, cfg.schedule.flip_below
        self.flip_both_share = cfg.schedule.flip_both_share
        self.share = 0.0  # the queue's negative share after the last update
        self.carried: list[Track] = []  # the tracks of the last detector frame, in detection order
        self.classified = 0  # faces classified in the last update
        self.detected = False  # whether the last update ran the tracker on fresh detections

    def detect_now(self, t_s: float) -> bool:
        """Whether the schedule runs the detector on the frame at t_s."""
        return self.schedule.detect_now(t_s)

    def mirror(self, due: list[int]) -> list[bool] | None:
        """With flip_in_turn, every other classification of a track sees its mirror image; both
        images (None) while the queue's negative share is at least flip_both_share, and while an
        alert is raised (so it clears on the same evidence it was raised on)."""
        if not self.flip_in_turn or (self.flip_both_share < 1
                                     and (self.share >= self.flip_both_share or self.policy.raised)):
            return None
        return [self.carried[i].classified % 2 == 1 for i in due]

    def update(self, t_s: float, boxes: list | None, probs, looks=None) -> tuple[list[Track], Mood, str | None]:
        """boxes: this frame's detections; on a frame where the schedule skips the detector
        (or boxes is None) the last detector frame's tracks carry on with their boxes. probs:
        one prediction per box (None where there is none), or a callable classify(indices,
        mirror) -> predictions that runs the classifier on the boxes the schedule picks (mirror:
        per box, whether to see its mirror image instead, from schedule.flip_in_turn; None: both
        the crop and its mirror); only those are used. looks: preprocess.look of each box's crop
        (or None). Returns (confirmed tracks seen, mood, transition)."""
        detect = boxes is not None and self.detect_now(t_s)
        self.classified = 0
        self.detected = detect  # whether this update ran the tracker on fresh detections
        if detect:
            self.schedule.detected(t_s)
            self.tracker.update(t_s, boxes, [None] * len(boxes), looks)
            for new, _ in self.tracker.refound:
                self.mood.forget(new)
            self.carried = [self.tracker.tracks[tid] for tid in self.tracker.last_ids]
            due = self.schedule.due(t_s, self.carried)
            if not callable(probs):
                due = [i for i in due if probs[i] is not None]
            if due:
                predictions = probs(due, self.mirror(due)) if callable(probs) else [probs[i] for i in due]
                for i, p in zip(due, predictions):
                    tr = self.carried[i]
                    self.tracker.observe(tr, t_s, p)
                self.classified = len(due)
        else:
            self.carried = [tr for tr in self.carried if tr.id in self.tracker.tracks]
        tracks = Tracker.counted(self.carried)
        mood = self.mood.update(t_s, tracks, calm=not self.policy.raised)
        self.share = mood.negative_share
        return tracks, mood, self.policy.update(t_s, mood.negative_share, mood.faces)


def usable(box: BBox) -> bool:
    return all(math.isfinite(v) for v in (box.x, box.y, box.w, box.h)) and box.w >= 1 and box.h >= 1


# A camera outage up to this long is left out of the monitor's clock (Pipeline.outage_ended): the
# people still in view when it is back keep their tracks (tracking.refind_s) and their own levels,
# and the alert its state, as if the camera had blinked. Without it a 30-s outage made everyone
# new, each person's level whatever they showed at the return (an unhappy queue then read as
# calm), and the alert cleared 3 s after it. A longer outage is a new start: the queue has changed.
BRIDGE_MAX_S = 120.0
BRIDGE_STEP_S = 0.25  # what is left of a bridged outage in the monitor's clock: time still moves on


class Pipeline:
    def __init__(self, cfg: Config, classifier: Classifier, detector: FaceDetector):
        self.cfg, self.classifier, self.detector = cfg, classifier, detector
        card = classifier.card
        self.crop_rule, self.size = card.crop_for(detector.key), card.input_size
        self.monitor = QueueMonitor(cfg, card.labels)
        self.tracker, self.mood, self.policy = self.monitor.tracker, self.monitor.mood, self.monitor.policy
        self.timer = StageTimer()
        self.carried_n = 0  # detections of the last frame that were carried boxes (Schedule.carry), last in the list
        self._blocks_of: tuple[np.ndarray | None, np.ndarray | None] = (None, None)  # (frame image, its motion_blocks)
        self.paused_s = 0.0  # camera outages left out of the monitor's clock (outage_ended)
        self._last_t_s: float | None = None  # the source's time of the last frame processed

    def outage_ended(self, t_s: float, say: bool = True) -> None:
        """The source (a live camera) was down until the frame at t_s: an outage of up to
        BRIDGE_MAX_S is left out of the clock the tracker, mood and alert policy see (logged
        at DEBUG when not `say`: an outage the journal was not told of)."""
        gap = t_s - self._last_t_s if self._last_t_s is not None else 0.0
        if 0 < gap <= BRIDGE_MAX_S:
            self.paused_s += max(0.0, gap - BRIDGE_STEP_S)
            log.log(logging.INFO if say else logging.DEBUG, "camera outage of %.0f s left out of the monitor's "
                    "clock: the people in view keep their tracks and the alert its state", gap)

    def crops(self, gray: np.ndarray, boxes) -> np.ndarray:
        return np.stack([crop_face(gray, b.as_tuple(), self.crop_rule, self.size) for b in boxes])

    def detect(self, frame: Frame) -> list:
        """Windows around the faces being tracked, when that takes fewer detector calls than
        the whole frame (tiles); on a scan also the tiles where something else moved."""
        if not hasattr(self.detector, "windows_for"):  # one call sees the whole frame
            return self.detector.detect(frame.image)
        h, w = frame.image.shape[:2]
        wins = self.detector.windows_for(w, h)
        tracked = [tr for tr in self.monitor.carried if tr.id in self.tracker.tracks]
        # People the last detector frame missed, for MISSED_RETRY_S: looked for each time, never
        # carried, so one missed call does not take a face out of the search until the next scan
        # (up to scan_still_s, past max_gap_s). Not longer: each person who walks out would cost a
        # call per detector frame (1 s on the queue video: 1.8x the detector calls, 2 points of
        # recall; 0.45 s, two detector frames at 5 Hz: 1.1x, the same recall).
        found_ids = {tr.id for tr in tracked}
        missing = [tr for tr in self.tracker.tracks.values() if tr.id not in found_ids and tr.confirmed
                   and frame.t_s - tr.last_t_s <= MISSED_RETRY_S]
        known = [tr.box for tr in tracked + missing]
        schedule = self.monitor.schedule
        if len(tracked) >= len(wins):  # the whole frame takes fewer calls than the faces
            schedule.scanned(frame.t_s)
            return self._missed_again(frame.image, self.detector.detect(frame.image), tracked + missing, w, h)
        focus = focus_windows(known, w, h)
        if schedule.scan_now(frame.t_s):
            schedule.scanned(frame.t_s)
            picked = schedule.gate.pick(self._blocks(frame), wins, frame.t_s, covered=focus)
            if len(picked) == len(wins):  # every tile: the faces are in them
                found = self.detector.detect(frame.image)
            else:
                found = detect_in(self.detector.inner, frame.image, [wins[i] for i in picked] + focus)
            return self._missed_again(frame.image, found, tracked + missing, w, h)
        look_for, carry = schedule.carry(frame.t_s, tracked, self._blocks(frame), w, h)
        found = self._look_again(frame.image, look_for + missing, w, h)
        self.carried_n = len(carry)  # appended last: kept where they were, not found anew
        return found + [Detection(tr.box, 0.0) for tr in carry]

    def _missed_again(self, image: np.ndarray, found: list[Detection], tracked: list[Track], w: int,
                      h: int) -> list[Detection]:
        """A pass over the frame can miss a face it is tracking (a tile shows it smaller, or its
        score dips under the threshold); such a face gets one more call in the window around it
        (_look_again) in the same frame, so one miss does not drop it from the faces looked for."""
        iou = self.cfg.tracking.iou_match
        missed = [tr for tr in tracked if all(d.box.iou(tr.box) < iou for d in found)]
        if not missed:
            return found
        again = [d for d in self._look_again(image, missed, w, h) if all(d.box.iou(f.box) < iou for f in found)]
        return found + again

    def _look_again(self, image: np.ndarray, tracks: list[Track], w: int, h: int) -> list[Detection]:
        """The detector in the window around each of these tracks. With tracking.continue_score
        below the detector's threshold, a less sure detection is kept too when it overlaps the
        box of a track looked for (it can continue that track, not start one): a face near the
        threshold is then not dropped, and its track not split, each time its score dips."""
        inner, weak = self.detector.inner, self.cfg.tracking.continue_score
        wins = focus_windows([tr.box for tr in tracks], w, h)
        strong = inner.min_score
        if not weak or strong is None or weak >= strong:
            return detect_in(inner, image, wins)
        found = detect_in(inner, image, wins, min_score=weak)
        iou = self.cfg.tracking.iou_match
        return [d for d in found if d.score >= strong or any(d.box.iou(tr.box) >= iou for tr in tracks)]

    def _blocks(self, frame: Frame) -> np.ndarray:
        """motion_blocks of this frame, made once."""
        if self._blocks_of[0] is not frame.image:
            self._blocks_of = (frame.image, motion_blocks(to_gray(frame.image)))
        return self._blocks_of[1]

    def process(self, frame: Frame) -> FrameResult:
        t0 = time.perf_counter()
        source_t_s = self._last_t_s = frame.t_s  # the result and its events keep the source's time
        if self.paused_s:
            frame = frame.at(frame.t_s - self.paused_s)
        detect = self.monitor.detect_now(frame.t_s)
        self.carried_n = 0
        # A box with NaN or no area (a plugin's detector, a model gone wrong) would crash the crop
        # or start a track every detector frame: left out.
        detections = [d for d in self.detect(frame) if usable(d.box)] if detect else []
        t1 = time.perf_counter()
        boxes = [d.box for d in detections]
        crops = self.crops(to_gray(frame.image), boxes) if boxes else None
        looks = [look(c) for c in crops] if boxes else []
        spent = [0.0]

        def classify(indices, mirror):  # only the faces the schedule picks
            t = time.perf_counter()
            out = self.classifier.predict(crops[indices], mirror, self.monitor.flip_below)
            spent[0] += time.perf_counter() - t
            return out

        tracks, mood, transition = self.monitor.update(frame.t_s, boxes if detect else None, classify, looks)
        if self.monitor.detected and self.monitor.schedule.still_hz > 0:
            found = len(boxes) - self.carried_n
            self.monitor.schedule.found(frame.t_s, self.tracker.last_ids[:found], boxes[:found], self._blocks(frame))
        t3 = time.perf_counter()
        stage_s = {"detect": t1 - t0, "classify": spent[0], "track": (t3 - t1) - spent[0]}
        self.timer.add(stage_s, self.monitor.classified, detect)
        # every face with a mood to show, confirmed or not (carried boxes between detector frames)
        faces = sorted((tr for tr in self.monitor.carried if tr.probs is not None), key=lambda tr: tr.id)
        return FrameResult(frame.index, source_t_s, len(detections), tracks, mood, transition, self.policy.state, stage_s,
                           faces, detect, self.monitor.classified, list(self.tracker.refound) if detect else [],
                           self.policy.held_back_s(frame.t_s, mood.negative_share, mood.faces))


def load_parts(cfg: Config):
    """(classifier, detector) for a config; errors are UserErrors with one sentence."""
    classifier = Classifier(resolve_model(cfg), num_threads=cfg.model.threads)
    for note in classifier.notes():
        log.warning("Model %s: %s.", classifier.path, note)
    return classifier, configured_detector(cfg)
