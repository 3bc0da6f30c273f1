"""The compute budget: which frames run the detector and which tracks the classifier sees.

Expressions change over seconds and the tracker smooths them, so each track is classified a
few times a second, not in every frame: new tracks first, then the longest-waiting due ones,
at most `max_per_frame` per frame (round robin). The detector runs a few times a second too
(rates, not frame counts, so the budget holds at any camera fps); between detector frames the
tracker carries the boxes of the last detection. A detector made of many calls (tiles) looks
at the whole frame only `scan_hz` times a second, for newcomers; in its other frames it looks
only around the faces being tracked. A newcomer moves, so a pass skips the tiles in which nothing
has moved since the detector last looked at them (MotionGate), each for at most `scan_still_s`.
"""

from __future__ import annotations

import math

import numpy as np

from edge.config import ScheduleConfig
from edge.pipeline.geometry import BBox
from edge.pipeline.tracking import Track

# Frame timestamps jitter; a track due within this much counts as due.
_SLACK_S = 1e-3
# A window around a known face is this many face sizes wide: a step between detector frames
# stays inside it, and the face fills a share of it that a short-range detector finds.
FOCUS_SIZES = 2.5


def focus_windows(boxes: list[BBox], frame_w: int, frame_h: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) around each box, FOCUS_SIZES times its larger side, inside the frame."""
    out = []
    for b in boxes:
        half, (cx, cy) = FOCUS_SIZES * max(b.w, b.h) / 2, b.center
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(frame_w, int(cx + half)), min(frame_h, int(cy + half))
        if x1 - x0 > 1 and y1 - y0 > 1:
            out.append((x0, y0, x1, y1))
    return out


def budget_rates(cfg: ScheduleConfig, fps: float, faces: int, full_pass_calls: int) -> tuple[float, float]:
    """(detector model calls, faces classified) per second that the schedule makes at most
    with `faces` in view at `fps`: every tile in every whole-frame pass (a pass that skips
    still tiles makes fewer), a window per face between passes, and each face classified on
    the first detector frame after its period is up."""
    det_fps = fps if cfg.detect_hz <= 0 else min(fps, cfg.detect_hz)
    passes = det_fps if cfg.scan_hz <= 0 else min(det_fps, cfg.scan_hz)
    calls = passes * full_pass_calls + (det_fps - passes) * min(faces, full_pass_calls)
    per_face = det_fps if cfg.classify_hz <= 0 else det_fps / math.ceil(det_fps / cfg.classify_hz - _SLACK_S)
    classified = faces * per_face
    if cfg.classify_max_per_frame:
        classified = min(classified, cfg.classify_max_per_frame * det_fps)
    return calls, classified


# Motion is judged on the grey frame in blocks of MOTION_BLOCK x MOTION_BLOCK pixels (averaging
# sensor noise of a few grey levels down to well under one), and a block has moved when its mean
# changed by more than MOTION_LEVELS grey levels: a face or a body entering changes it by tens.
MOTION_BLOCK = 8
MOTION_LEVELS = 10.0
# A window that moved is looked at for this long after, too: someone who walks in and stops may
# be found only once they face the camera.
MOTION_SETTLE_S = 2.0


class MotionGate:
    """Which of the detector's windows a pass looks at: those with a block that moved since the
    window was last looked at or within MOTION_SETTLE_S, and those not looked at for `still_s` (a
    face the detector missed gets more tries). Motion inside `covered` does not count: the
    windows around the faces being tracked, which the pass looks at anyway, and as much again
    below each (that person's shoulders and chest): a tracked person swaying is not a newcomer.
    A face that appears in front of someone's chest is found within `still_s`."""

    def __init__(self, still_s: float):
        self.still_s = still_s
        self.seen: dict[tuple[int, int, int, int], tuple[np.ndarray, float]] = {}  # window -> (its blocks, when)
        self.moved: dict[tuple[int, int, int, int], float] = {}  # window -> when it last moved

    def pick(self, gray: np.ndarray, wins: list[tuple[int, int, int, int]], t_s: float,
             covered: list[tuple[int, int, int, int]] = ()) -> list[int]:
        if self.still_s <= 0:
            return list(range(len(wins)))
        import cv2

        h, w = gray.shape[:2]
        blocks = cv2.resize(gray, (max(1, w // MOTION_BLOCK), max(1, h // MOTION_BLOCK)),
                            interpolation=cv2.INTER_AREA).astype(np.float32)
        free = np.ones(blocks.shape, bool)  # blocks not wholly inside a covered window
        for x0, y0, x1, y1 in covered:
            below = y1 + (y1 - y0)  # the person's shoulders and chest
            first_x, first_y = math.ceil(x0 / MOTION_BLOCK), math.ceil(y0 / MOTION_BLOCK)
            free[first_y : below // MOTION_BLOCK, first_x : x1 // MOTION_BLOCK] = False
        picked = []
        for i, win in enumerate(wins):
            x0, y0, x1, y1 = (v // MOTION_BLOCK for v in win)
            cut = (slice(y0, max(y0 + 1, y1)), slice(x0, max(x0 + 1, x1)))
            now, last = blocks[cut], self.seen.get(win)
            if last is not None and (last[0].shape != now.shape
                                     or bool(((np.abs(now - last[0]) > MOTION_LEVELS) & free[cut]).any())):
                self.moved[win] = t_s
            if (last is None or t_s - last[1] >= self.still_s - _SLACK_S
                    or t_s - self.moved.get(win, -np.inf) <= MOTION_SETTLE_S + _SLACK_S):
                picked.append(i)
                self.seen[win] = (now.copy(), t_s)
        return picked


class Schedule:
    def __init__(self, cfg: ScheduleConfig):
        self.classify_hz, self.max_per_frame, self.detect_hz = cfg.classify_hz, cfg.classify_max_per_frame, cfg.detect_hz
        self.scan_hz = cfg.scan_hz
        self.gate = MotionGate(cfg.scan_still_s)
        self.detected_t_s: float | None = None  # when the detector last ran
        self.scanned_t_s: float | None = None  # when it last looked at the whole frame

    def detect_now(self, t_s: float) -> bool:
        """Whether the frame at t_s runs the detector (call detected(t_s) when it does)."""
        return self.detect_hz <= 0 or self.detected_t_s is None or t_s - self.detected_t_s >= 1 / self.detect_hz - _SLACK_S

    def detected(self, t_s: float) -> None:
        self.detected_t_s = t_s

    def scan_now(self, t_s: float) -> bool:
        """Whether this detector frame looks at the whole frame (call scanned(t_s) when it does)."""
        return self.scan_hz <= 0 or self.scanned_t_s is None or t_s - self.scanned_t_s >= 1 / self.scan_hz - _SLACK_S

    def scanned(self, t_s: float) -> None:
        self.scanned_t_s = t_s

    def due(self, t_s: float, tracks: list[Track]) -> list[int]:
        """Indices of the tracks to classify at t_s: never classified first (in order), then
        those whose last classification is oldest, among those due."""
        if self.classify_hz <= 0:  # schedule off: every face in every frame
            return list(range(len(tracks)))
        new = [i for i, tr in enumerate(tracks) if tr.classified_t_s is None]
        period = 1.0 / self.classify_hz
        waiting = [i for i, tr in enumerate(tracks)
                   if tr.classified_t_s is not None and t_s - tr.classified_t_s >= period - _SLACK_S]
        waiting.sort(key=lambda i: tracks[i].classified_t_s)
        picked = new + waiting
        return picked[: self.max_per_frame] if self.max_per_frame else picked
