"""Per-face tracks: greedy IoU matching, expiry after a gap, EMA-smoothed probabilities.

Counts are of people, not frames: a track becomes a face once it has `min_hits` detections.
A detection may come without a prediction (the classifier was not run on it this frame): the
track follows the box and keeps its last smoothed probabilities.

New people at the same spot: when detections carry a look (preprocess.look), a track unseen
for REPLACE_GAP_S or more continues only with a detection that looks like it (dot product
>= min_look_similarity), so the next person in a queue spot starts a new track even when the
gap between them is shorter than max_gap_s. Shorter gaps (a missed frame or two) are not
checked: nobody walks out and another in that fast, and each check can split a track.

People who come back: a confirmed track unseen for longer than max_gap_s is kept aside as
lost for up to refind_s. A new track that starts near a lost track's last box is compared with
it once, after REFIND_AFTER_S of its own looks (one look is too noisy; one decision per
newcomer keeps the chance of taking over someone else's track small): at least
refind_similarity alike, and it continues the lost track, id and first sighting included, so
the mood still knows the person's own level.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from edge.config import TrackingConfig
from edge.pipeline.geometry import BBox

log = logging.getLogger("edge.tracking")
REPLACE_GAP_S = 1.0  # the shortest gap in which one person can leave a spot and another take it
REFIND_AFTER_S = 1.0  # a new track is compared with the lost tracks near it once it has been seen this long


@dataclass
class Track:
    id: int
    box: BBox
    probs: np.ndarray | None  # smoothed class probabilities; None until first classified
    first_t_s: float
    last_t_s: float
    hits: int = 1  # frames with a detection
    frames: int = 1  # frames since the track began (hits / frames: how steadily it is detected)
    classified: int = 0  # predictions received
    latest: np.ndarray | None = field(default=None)  # this frame's raw prediction
    classified_t_s: float | None = None  # when the newest prediction was made (a schedule skips frames)
    look: np.ndarray | None = field(default=None)  # appearance (unit vector), smoothed
    confirmed: bool = False  # has had min_hits detections: counts as a person
    lost_near: list[int] | None = None  # new track: ids of the lost tracks near where it began, until compared

    @property
    def top(self) -> int:
        return int(self.probs.argmax())

    @property
    def confidence(self) -> float:
        return float(self.probs.max())

    @property
    def seen_s(self) -> float:
        return self.last_t_s - self.first_t_s

    @property
    def seen_share(self) -> float:
        return self.hits / self.frames


class Tracker:
    def __init__(self, cfg: TrackingConfig | None = None):
        self.cfg = cfg or TrackingConfig()
        self.tracks: dict[int, Track] = {}
        self.lost: dict[int, Track] = {}  # confirmed tracks unseen for more than max_gap_s, for up to refind_s
        self.refound: list[tuple[int, int]] = []  # (new id, the lost id it continues) in the last update
        self.seen: list[Track] = []  # every track detected in the last frame, confirmed or not, by id
        self.last_ids: list[int] = []  # the track id of each detection in the last update, in detection order
        self._next_id = 1
        self._said_not_finite = False

    def _same_look(self, tr: Track, look: np.ndarray | None, t_s: float) -> bool:
        """After a gap, a detection continues the track only if it looks like it."""
        if t_s - tr.last_t_s < REPLACE_GAP_S or look is None or tr.look is None or self.cfg.min_look_similarity <= 0:
            return True
        return float(tr.look @ look) >= self.cfg.min_look_similarity

    def _match(self, boxes: list[BBox], looks, t_s: float) -> dict[int, int]:
        """detection index -> track id, best overlaps first. A detection whose centre lies
        inside a track's box also matches (fast movers between low-fps frames)."""
        pairs = []
        for tid, tr in self.tracks.items():
            for di, b in enumerate(boxes):
                if not self._same_look(tr, looks[di], t_s):
                    continue
                iou = tr.box.iou(b)
                if iou >= self.cfg.iou_match:
                    score = iou
                else:
                    score = self.cfg.iou_match * 0.5 if _centre_inside(b, tr.box) else 0.0
                if score > 0:
                    pairs.append((score, di, tid))
        matched: dict[int, int] = {}
        used = set()
        for _, di, tid in sorted(pairs, reverse=True):
            if di not in matched and tid not in used:
                matched[di] = tid
                used.add(tid)
        return matched

    def observe(self, tr: Track, t_s: float, p) -> None:
        """A prediction for a track (None: not classified this frame). A frame without one
        leaves the smoothed state as it was: being skipped by a schedule is not evidence. A
        prediction weighs by the time since the track's last one (1 - exp(-dt / smooth_s)),
        so the smoothing has the same speed in seconds at any fps and classification rate."""
        if p is not None and not np.isfinite(p).all():
            # A NaN or inf from the model (a float32 file gone wrong) would stay in the smoothed
            # state, and the mood and alert with it, for as long as the person is in view.
            if not self._said_not_finite:
                log.warning("The classifier gave a probability that is not a number (NaN or inf); such "
                            "predictions are left out (said once): check the model with edge eval.")
                self._said_not_finite = True
            p = None
        tr.latest = None if p is None else np.asarray(p, np.float32)
        if p is None:
            return
        if tr.probs is None:  # the first prediction (classified_t_s is set with it)
            tr.probs = tr.latest.copy()
        else:
            dt = max(0.0, t_s - tr.classified_t_s)
            a = 1.0 if self.cfg.smooth_s <= 0 else 1.0 - math.exp(-dt / self.cfg.smooth_s)
            tr.probs = (1 - a) * tr.probs + a * tr.latest
        tr.classified += 1
        tr.classified_t_s = t_s

    @staticmethod
    def counted(tracks: list[Track]) -> list[Track]:
        """The tracks that count as people with a mood: confirmed and classified at least once."""
        return [tr for tr in tracks if tr.confirmed and tr.probs is not None]

    def update(self, t_s: float, boxes: list[BBox], probs: np.ndarray | Sequence[np.ndarray | None],
               looks: Sequence[np.ndarray | None] | None = None) -> list[Track]:
        """Feed one frame's detections, their predictions (an entry may be None: not
        classified this frame) and optionally their looks; returns the confirmed tracks
        seen in this frame."""
        for tid in [tid for tid, tr in self.tracks.items() if t_s - tr.last_t_s > self.cfg.max_gap_s]:
            tr = self.tracks.pop(tid)
            if tr.confirmed and tr.look is not None and self.cfg.refind_s > self.cfg.max_gap_s:
                self.lost[tid] = tr
        for tid in [tid for tid, tr in self.lost.items() if t_s - tr.last_t_s > self.cfg.refind_s]:
            del self.lost[tid]
        for tr in self.tracks.values():
            tr.frames += 1
        looks = looks if looks is not None else [None] * len(boxes)
        matched = self._match(boxes, looks, t_s)
        self.seen, self.last_ids, self.refound = [], [], []
        for di, box in enumerate(boxes):
            tid = matched.get(di)
            if tid is None:
                tr = Track(self._next_id, box, None, t_s, t_s)
                tr.lost_near = [lid for lid, lt in self.lost.items() if _near(lt.box, box, self.cfg.iou_match)] or None
                self.tracks[tr.id] = tr
                self._next_id += 1
            else:
                tr = self.tracks[tid]
                tr.box, tr.last_t_s = box, t_s
                tr.hits += 1
            self.observe(tr, t_s, probs[di])
            self._remember_look(tr, looks[di])
            if tr.lost_near is not None and t_s - tr.first_t_s >= REFIND_AFTER_S:
                tr = self._refind(tr)
            self.last_ids.append(tr.id)
            tr.confirmed = tr.hits >= self.cfg.min_hits
            self.seen.append(tr)
        confirmed = [tr for tr in self.seen if tr.confirmed]
        self.seen.sort(key=lambda tr: tr.id)
        return confirmed

    def _refind(self, new: Track) -> Track:
        """Compare a new track with the lost tracks near where it began, once: the most alike,
        if alike enough, takes it over (its id and history, the newcomer's box and state)."""
        near = [self.lost[lid] for lid in new.lost_near if lid in self.lost]
        new.lost_near = None
        if new.look is None or not near:
            return new
        old = max(near, key=lambda tr: float(tr.look @ new.look))
        if float(old.look @ new.look) < self.cfg.refind_similarity:
            return new
        del self.lost[old.id], self.tracks[new.id]
        log.debug("track #%d is #%d back after %.1f s out of sight (looks %.2f alike)", new.id, old.id,
                  new.first_t_s - old.last_t_s, float(old.look @ new.look))
        old.box, old.last_t_s = new.box, new.last_t_s
        old.hits, old.frames = old.hits + new.hits, old.frames + new.frames
        if new.probs is not None:  # what the person looks like now, not before they were hidden
            old.probs, old.latest, old.classified_t_s = new.probs, new.latest, new.classified_t_s
            old.classified += new.classified
        old.look = new.look
        old.confirmed = old.confirmed or new.confirmed
        self.tracks[old.id] = old
        self.refound.append((new.id, old.id))
        return old

    def _remember_look(self, tr: Track, look: np.ndarray | None) -> None:
        if look is None:
            return
        v = look if tr.look is None else 0.7 * tr.look + 0.3 * look  # follows slow changes (pose, light)
        tr.look = v / max(float(np.linalg.norm(v)), 1e-6)


class PeopleCount:
    """Distinct people (confirmed tracks) seen over a run, without keeping every id a run of
    months has given out: only ids the tracker may still report are remembered."""

    def __init__(self):
        self.count = 0
        self._known: set[int] = set()

    def update(self, tracker: Tracker, tracks: list[Track], refound: list[tuple[int, int]]) -> None:
        """tracks: a frame's confirmed tracks; refound: its (new id, old id) pairs (FrameResult)."""
        for tr in tracks:
            if tr.id not in self._known:
                self._known.add(tr.id)
                self.count += 1
        for new, _ in refound:  # someone back: counted once already
            if new in self._known:
                self._known.discard(new)
                self.count -= 1
        if len(self._known) > 2 * (len(tracker.tracks) + len(tracker.lost)) + 64:
            self._known &= tracker.tracks.keys() | tracker.lost.keys()  # ids are never given out again


def _centre_inside(box: BBox, outer: BBox) -> bool:
    cx, cy = box.center
    return outer.x <= cx <= outer.x + outer.w and outer.y <= cy <= outer.y + outer.h


def _near(last: BBox, box: BBox, iou_match: float) -> bool:
    """A box about where a lost track was last seen: overlapping it, or its centre inside it."""
    return last.iou(box) >= iou_match or _centre_inside(box, last)
