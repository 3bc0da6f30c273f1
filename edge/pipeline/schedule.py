"""The compute budget: which frames run the detector and which tracks the classifier sees.

Expressions change over seconds and the tracker smooths them, so each track is classified a
few times a second, not in every frame: new tracks first, then the longest-waiting due ones,
at most `max_per_frame` per frame (round robin). The detector runs a few times a second too
(rates, not frame counts, so the budget holds at any camera fps); between detector frames the
tracker carries the boxes of the last detection. A detector made of many calls (tiles) looks
at the whole frame only `scan_hz` times a second, for newcomers; in its other frames it looks
only around the faces being tracked, and around a face that stands still only
`detect_still_hz` times a second (Schedule.carry). A newcomer moves, so a pass skips the tiles in
which nothing has moved since the detector last looked at them (MotionGate), each for at most
`scan_still_s`.
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


def motion_blocks(gray: np.ndarray) -> np.ndarray:
    """The grey frame's mean in each MOTION_BLOCK x MOTION_BLOCK block, float32."""
    import cv2

    h, w = gray.shape[:2]
    return cv2.resize(gray, (max(1, w // MOTION_BLOCK), max(1, h // MOTION_BLOCK)),
                      interpolation=cv2.INTER_AREA).astype(np.float32)


def block_cut(win: tuple[int, int, int, int]) -> tuple[slice, slice]:
    """The motion blocks of window (x0, y0, x1, y1) in pixels (at least one)."""
    x0, y0, x1, y1 = (v // MOTION_BLOCK for v in win)
    return slice(y0, max(y0 + 1, y1)), slice(x0, max(x0 + 1, x1))


def moved(before: np.ndarray, now: np.ndarray, win: tuple[int, int, int, int], share: float) -> bool:
    """Whether more than `share` of the blocks in window (x0, y0, x1, y1) changed by more than
    MOTION_LEVELS."""
    if before.shape != now.shape:
        return True
    cut = block_cut(win)
    return bool((np.abs(now[cut] - before[cut]) > MOTION_LEVELS).mean() > share)


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

    def pick(self, blocks: np.ndarray, wins: list[tuple[int, int, int, int]], t_s: float,
             covered: list[tuple[int, int, int, int]] = ()) -> list[int]:
        """blocks: motion_blocks of the frame."""
        if self.still_s <= 0:
            return list(range(len(wins)))
        free = np.ones(blocks.shape, bool)  # blocks not wholly inside a covered window
        for x0, y0, x1, y1 in covered:
            below = y1 + (y1 - y0)  # the person's shoulders and chest
            first_x, first_y = math.ceil(x0 / MOTION_BLOCK), math.ceil(y0 / MOTION_BLOCK)
            free[first_y : below // MOTION_BLOCK, first_x : x1 // MOTION_BLOCK] = False
        picked = []
        for i, win in enumerate(wins):
            cut = block_cut(win)
            now, last = blocks[cut], self.seen.get(win)
            if last is not None and (last[0].shape != now.shape
                                     or bool(((np.abs(now - last[0]) > MOTION_LEVELS) & free[cut]).any())):
                self.moved[win] = t_s
            if (last is None or t_s - last[1] >= self.still_s - _SLACK_S
                    or t_s - self.moved.get(win, -np.inf) <= MOTION_SETTLE_S + _SLACK_S):
                picked.append(i)
                self.seen[win] = (now.copy(), t_s)
        return picked


# A face whose detections moved less than this many face widths a second is still: a standing
# person sways well under it, a walking one moves about ten times as fast.
STILL_SPEED = 0.5
# Its window counts as moved when more than this share of its motion blocks changed: a person
# stepping off changes their face and the background they uncover, a third of the window or
# more; one swaying in place changes the blocks along their outline and features. Chosen on
# benchmarks/pipeline.py's videos (README, Compute budget).
STILL_MOVED_SHARE = 0.2


class Schedule:
    def __init__(self, cfg: ScheduleConfig):
        self.classify_hz, self.max_per_frame, self.detect_hz = cfg.classify_hz, cfg.classify_max_per_frame, cfg.detect_hz
        self.scan_hz, self.still_hz = cfg.scan_hz, cfg.detect_still_hz
        self.gate = MotionGate(cfg.scan_still_s)
        # track id -> (when found, where, still, motion_blocks of that frame)
        self.looks: dict[int, tuple[float, BBox, bool, np.ndarray]] = {}
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

    def carry(self, t_s: float, tracks: list[Track], blocks: np.ndarray,
              frame_w: int, frame_h: int) -> tuple[list[Track], list[Track]]:
        """(tracks to look for, tracks to carry) on a detector frame between scans: a still face
        found less than 1 / detect_still_hz ago, whose window has not moved since (motion_blocks
        of this frame), keeps its box instead of a detector call."""
        if self.still_hz <= 0:
            return list(tracks), []
        look, carry = [], []
        for tr in tracks:
            when, _, still, before = self.looks.get(tr.id, (None, None, False, None))
            win = focus_windows([tr.box], frame_w, frame_h)
            keep = (still and t_s - when < 1.0 / self.still_hz - _SLACK_S and bool(win)
                    and not moved(before, blocks, win[0], STILL_MOVED_SHARE))
            (carry if keep else look).append(tr)
        return look, carry

    def found(self, t_s: float, ids: list[int], boxes: list[BBox], blocks: np.ndarray) -> None:
        """Where the detector found each track at t_s (blocks: motion_blocks of that frame); it
        is still when it moved under STILL_SPEED face widths a second since it was last found."""
        for tid, box in zip(ids, boxes):
            before = self.looks.get(tid)
            still = False
            if before is not None and t_s > before[0]:
                (x0, y0), (x1, y1) = before[1].center, box.center
                speed = math.hypot(x1 - x0, y1 - y0) / max(box.w, box.h, 1.0) / (t_s - before[0])
                still = speed < STILL_SPEED
            self.looks[tid] = (t_s, box, still, blocks)
        # Forget tracks long gone: each entry holds its frame's motion blocks (19 KB at 640x480),
        # so a few stale ones at most (64 had the service's memory creep for its first hour).
        if len(self.looks) > len(ids) + 8:
            keep = set(ids)
            self.looks = {tid: v for tid, v in self.looks.items() if tid in keep or t_s - v[0] < 60.0}
