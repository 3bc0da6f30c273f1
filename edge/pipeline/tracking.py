"""Per-face tracks: greedy IoU matching, expiry after a gap, EMA-smoothed probabilities.

Counts are of people, not frames: a track becomes a face once it has `min_hits` detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.config import TrackingConfig
from edge.pipeline.geometry import BBox


@dataclass
class Track:
    id: int
    box: BBox
    probs: np.ndarray | None  # smoothed class probabilities; None until first classified
    first_t_s: float
    last_t_s: float
    hits: int = 1
    latest: np.ndarray = field(default=None)  # the newest raw prediction
    confirmed: bool = False  # has had min_hits detections: counts as a person
    classified_t_s: float | None = None  # when `latest` was made (a schedule skips frames)

    @property
    def top(self) -> int:
        return int(self.probs.argmax())

    @property
    def confidence(self) -> float:
        return float(self.probs.max())


class Tracker:
    def __init__(self, cfg: TrackingConfig | None = None):
        self.cfg = cfg or TrackingConfig()
        self.tracks: dict[int, Track] = {}
        self.seen: list[Track] = []  # every track detected in the last frame, confirmed or not, by id
        self._next_id = 1

    def _match(self, boxes: list[BBox]) -> dict[int, int]:
        """detection index -> track id, best overlaps first. A detection whose centre lies
        inside a track's box also matches (fast movers between low-fps frames)."""
        pairs = []
        for tid, tr in self.tracks.items():
            for di, b in enumerate(boxes):
                iou = tr.box.iou(b)
                cx, cy = b.center
                inside = tr.box.x <= cx <= tr.box.x + tr.box.w and tr.box.y <= cy <= tr.box.y + tr.box.h
                score = iou if iou >= self.cfg.iou_match else (self.cfg.iou_match * 0.5 if inside else 0.0)
                if score > 0:
                    pairs.append((score, di, tid))
        matched: dict[int, int] = {}
        used = set()
        for _, di, tid in sorted(pairs, reverse=True):
            if di not in matched and tid not in used:
                matched[di] = tid
                used.add(tid)
        return matched

    def assign(self, t_s: float, boxes: list[BBox]) -> list[Track]:
        """Expire stale tracks, then the track (continued or new) of each detection, in box order."""
        for tid in [tid for tid, tr in self.tracks.items() if t_s - tr.last_t_s > self.cfg.max_gap_s]:
            del self.tracks[tid]
        matched = self._match(boxes)
        out = []
        for di, box in enumerate(boxes):
            tid = matched.get(di)
            if tid is None:
                tr = Track(self._next_id, box, None, t_s, t_s)
                self.tracks[tr.id] = tr
                self._next_id += 1
            else:
                tr = self.tracks[tid]
                tr.box, tr.last_t_s = box, t_s
                tr.hits += 1
            tr.confirmed = tr.hits >= self.cfg.min_hits
            out.append(tr)
        self.seen = sorted(out, key=lambda tr: tr.id)
        return out

    def observe(self, tr: Track, t_s: float, p, frames: int = 1) -> None:
        """One prediction for a track. A frame without one leaves the smoothed state as it
        was: being skipped by a schedule is not evidence. A prediction standing for `frames`
        frames (a schedule classified this track that many frames after its last time) weighs
        as much as that many equal per-frame predictions, so the smoothing keeps its speed in
        seconds whatever the classification rate."""
        p = np.asarray(p, np.float32)
        a = 1 - (1 - self.cfg.ema_alpha) ** max(frames, 1)
        tr.probs = p.copy() if tr.probs is None else (1 - a) * tr.probs + a * p
        tr.latest, tr.classified_t_s = p, t_s

    @staticmethod
    def counted(tracks: list[Track]) -> list[Track]:
        """The tracks that count as people with a mood: confirmed and classified at least once."""
        return [tr for tr in tracks if tr.confirmed and tr.probs is not None]

    def update(self, t_s: float, boxes: list[BBox], probs) -> list[Track]:
        """Feed one frame's detections and their predictions (a row may be None: not classified
        this frame); returns the confirmed tracks seen in this frame."""
        tracks = self.assign(t_s, boxes)
        for tr, p in zip(tracks, probs):
            if p is not None:
                self.observe(tr, t_s, p)
        return self.counted(tracks)
