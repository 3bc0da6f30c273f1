"""A face detector run on the parts of the frame where the faces are.

A square-input detector sees the whole 640x480 frame at 192x192 (BlazeFace full range), so a
40-px face reaches it 12 px wide, below what it finds reliably. Two ways to give the faces
more of the detector's input pixels, measured in benchmarks/head_detection.py:

- a region of interest (`[source] roi`, fractions of the frame): only the queue's part;
- tiles (`[detector] tiles = [cols, rows]`): the region split into overlapping windows, one
  detector call each; `tile_whole = true` adds one call on the whole region for faces larger
  than the overlap, which a tile border would cut.

Boxes come back in frame pixels; a face found in two windows is merged by NMS, the box
of the smallest window that holds it whole first (detect_in).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.pipeline.detectors.base import Detection, FaceDetector
from edge.pipeline.geometry import BBox
from edge.words import plural

MERGE_IOU = 0.3  # the same face seen by two windows
MERGE_INSIDE = 0.6  # a part of a face cut by a tile border, lying inside the whole face's box
CUT_MARGIN = 0.04  # share of a window's size: a box this near an inner edge may be cut by it


@dataclass(frozen=True)
class Roi:
    """Fractions of the frame: left, top, width, height (the whole frame is 0, 0, 1, 1)."""

    x: float = 0.0
    y: float = 0.0
    w: float = 1.0
    h: float = 1.0

    @classmethod
    def from_list(cls, values) -> "Roi":
        return cls(*(float(v) for v in values)) if values else cls()

    def pixels(self, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in pixels, at least one pixel wide and tall, inside the frame."""
        x0, y0 = min(frame_w - 1, int(round(self.x * frame_w))), min(frame_h - 1, int(round(self.y * frame_h)))
        x1 = max(x0 + 1, min(frame_w, int(round((self.x + self.w) * frame_w))))
        y1 = max(y0 + 1, min(frame_h, int(round((self.y + self.h) * frame_h))))
        return x0, y0, x1, y1


def windows(frame_w: int, frame_h: int, roi: Roi, cols: int, rows: int, overlap: float,
            whole: bool) -> list[tuple[int, int, int, int]]:
    """The detector windows (x0, y0, x1, y1) in pixels: cols x rows tiles covering the ROI,
    neighbours sharing `overlap` of a tile's size, plus the whole ROI when `whole`."""
    rx0, ry0, rx1, ry1 = roi.pixels(frame_w, frame_h)
    out = []

    def spans(start: int, stop: int, n: int) -> list[tuple[int, int]]:
        length = stop - start
        if n == 1:
            return [(start, stop)]
        size = length / (n - (n - 1) * overlap)
        step = size * (1 - overlap)
        # each at least one pixel inside the region: a region narrower than its tiles (a small frame)
        # would round some to nothing, an empty image that the detector refuses
        firsts = [min(stop - 1, start + int(round(i * step))) for i in range(n)]
        return [(a, max(a + 1, min(stop, start + int(round(i * step + size))))) for i, a in enumerate(firsts)]

    for y0, y1 in spans(ry0, ry1, rows):
        for x0, x1 in spans(rx0, rx1, cols):
            out.append((x0, y0, x1, y1))
    if whole and len(out) > 1:
        out.append((rx0, ry0, rx1, ry1))
    return out


def merge(dets: list[Detection], ranked: bool = False) -> list[Detection]:
    """Greedy NMS across windows: a box overlapping a kept one by IoU > MERGE_IOU, or nested
    in it (mostly inside it, or holding it mostly inside), is dropped. Kept in order of score,
    or in the given order when `ranked` (detect_in's preference)."""
    kept: list[Detection] = []
    for d in (dets if ranked else sorted(dets, key=lambda d: -d.score)):
        if all(d.box.iou(k.box) <= MERGE_IOU and _inside(d.box, k.box) <= MERGE_INSIDE
               and _inside(k.box, d.box) <= MERGE_INSIDE for k in kept):
            kept.append(d)
    return kept


def detect_in(detector: FaceDetector, frame: np.ndarray, wins, min_score: float | None = None) -> list[Detection]:
    """`detector` on each window (x0, y0, x1, y1) of the frame; boxes in frame pixels, merged
    (min_score: also faces scored that high under the detector's threshold, detect_down_to).
    Where windows disagree about a face, the box from the smallest window that holds it whole
    wins, then the higher score: the smaller the window, the more of the detector's input the
    face fills, so the truer its box (a 56-px face in a 640-px frame reaches a 128-px input
    11 px wide, and came back twice its size there, swallowing its own tile's exact box); a
    box that reaches a window's inner edge may be a face that edge cuts, so it comes last."""
    found = []
    fh, fw = frame.shape[:2]
    for x0, y0, x1, y1 in wins:
        window = frame[y0:y1, x0:x1]
        for d in (detector.detect(window) if min_score is None else detector.detect_down_to(window, min_score)):
            b = BBox(d.box.x + x0, d.box.y + y0, d.box.w, d.box.h)
            rank = (_reaches_inner_edge(b, (x0, y0, x1, y1), fw, fh), (x1 - x0) * (y1 - y0), -d.score, len(found))
            found.append((rank, Detection(b, d.score)))
    if len(wins) <= 1:
        return [d for _, d in found]
    return merge([d for _, d in sorted(found, key=lambda f: f[0])], ranked=True)


def _reaches_inner_edge(b: BBox, win: tuple[int, int, int, int], frame_w: int, frame_h: int) -> bool:
    """The box comes within CUT_MARGIN of an edge of its window that is not the frame's."""
    x0, y0, x1, y1 = win
    mx, my = CUT_MARGIN * (x1 - x0), CUT_MARGIN * (y1 - y0)
    return ((x0 > 0 and b.x < x0 + mx) or (y0 > 0 and b.y < y0 + my)
            or (x1 < frame_w and b.x + b.w > x1 - mx) or (y1 < frame_h and b.y + b.h > y1 - my))


def _inside(small: BBox, big: BBox) -> float:
    """Share of `small`'s area inside `big`."""
    return small.intersect(big).area / small.area if small.area > 0 else 0.0


class RegionDetector(FaceDetector):
    """Runs `inner` on each window of the ROI; keeps the inner detector's key (its crop rule)."""

    def __init__(self, inner: FaceDetector, roi: Roi = Roi(), tiles: tuple[int, int] = (1, 1),
                 overlap: float = 0.25, whole: bool = False):
        self.inner, self.roi, self.tiles, self.overlap, self.whole = inner, roi, tuple(tiles), overlap, whole
        self.key, self.cfg = inner.key, getattr(inner, "cfg", None)
        self._windows: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}

    def windows_for(self, frame_w: int, frame_h: int) -> list[tuple[int, int, int, int]]:
        key = (frame_w, frame_h)
        if key not in self._windows:
            self._windows[key] = windows(frame_w, frame_h, self.roi, *self.tiles, self.overlap, self.whole)
        return self._windows[key]

    def detect(self, frame: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        return detect_in(self.inner, frame, self.windows_for(w, h))

    def regions(self) -> str:
        """Where it looks, e.g. 'roi 0,0.2,1,0.6; 4x2 tiles, overlap 0.25 + whole (9 calls per frame)'."""
        parts = []
        if self.roi != Roi():
            r = self.roi
            parts.append(f"roi {r.x:g},{r.y:g},{r.w:g},{r.h:g}")
        if self.tiles != (1, 1):
            parts.append(f"{self.tiles[0]}x{self.tiles[1]} tiles, overlap {self.overlap:g}"
                         + (" + whole" if self.whole else ""))
        calls = self.tiles[0] * self.tiles[1] + (self.whole and self.tiles != (1, 1))
        return f"{'; '.join(parts)} ({plural(calls, 'call')} per frame)"

    def describe(self) -> str:
        return f"{self.inner.describe()} on {self.regions()}"

    def doctor(self, width: int, height: int) -> tuple[str, str]:
        """The inner detector's own check, then this set-up on a blank frame (where no face is)."""
        status, line = self.inner.doctor(width, height)
        faces = self.detect(np.zeros((height, width, 3), np.uint8))
        return (status if not faces else "WARN"), f"{line}; on {self.regions()}: {plural(len(faces), 'face')}"


def with_regions(inner: FaceDetector, roi=(), tiles=(1, 1), overlap: float = 0.25, whole: bool = False) -> FaceDetector:
    """`inner` itself when it sees the whole frame in one call, else a RegionDetector."""
    r = Roi.from_list(roi)
    if r == Roi() and tuple(tiles) == (1, 1):
        return inner
    return RegionDetector(inner, r, tuple(tiles), overlap, whole)


def from_config(inner: FaceDetector, cfg) -> FaceDetector:
    """`inner` set up by a Config's [source] roi and [detector] tiles, tile_overlap, tile_whole."""
    d = cfg.detector
    return with_regions(inner, cfg.source.roi, d.tiles, d.tile_overlap, d.tile_whole)


def configured_detector(cfg) -> FaceDetector:
    """The face detector a Config describes ([detector]), on its ROI and tiles."""
    from edge.pipeline.detectors.base import create_detector

    return from_config(create_detector(cfg.detector, threads=cfg.model.threads), cfg)
