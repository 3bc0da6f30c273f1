"""The face widths a camera gives, and what they mean for finding and reading faces.

Widths are detector box widths in frame pixels. The thresholds come from
benchmarks/results/head_detection.md (detector recall on whole heads per face width) and
face_width_accuracy.md (expression accuracy on val faces degraded to a face width); the
README's camera-placement section quotes the measured figures.
"""

from __future__ import annotations

import math

import numpy as np

READ_PX = 40  # from here up: >= 95% of faces found, and the shipped model's crop holds as many pixels as it reads
FIND_PX = 32  # from here up: >= 90% found; below it the detector misses more and more (57% at 24 px)
MEASURED_W = 640  # the frame width those figures were measured at: the default detector's tiles grow with the frame


def read_px_at(frame_w: int) -> float:
    """READ_PX for a frame `frame_w` px wide: the tiles, and so the faces they find, scale with it."""
    return READ_PX * frame_w / MEASURED_W


def read_px_for(card, detector_key: str) -> int:
    """The face width from which a face is found (READ_PX) and its crop (the face box times the card's
    crop scale for this detector) holds the model's input_size pixels: a model reading 96-px crops
    upsamples a 40-px face's 50-px crop. The shipped model (48 px, crop 1.25x) reads from 39 px."""
    return max(READ_PX, math.ceil(card.input_size / card.crop_for(detector_key).scale))


def summarize(widths, read_px: int = READ_PX) -> dict | None:
    """Median, spread and the shares below FIND_PX and read_px (read_px_for the model) of face
    widths; None without faces."""
    w = np.asarray(list(widths), np.float64)
    if w.size == 0:
        return None
    p10, median, p90 = np.percentile(w, [10, 50, 90])
    return {"faces": int(w.size), "min": round(float(w.min()), 1), "p10": round(float(p10), 1),
            "median": round(float(median), 1), "p90": round(float(p90), 1), "max": round(float(w.max()), 1),
            "read_px": read_px, f"share_below_{FIND_PX}": round(float((w < FIND_PX).mean()), 4),
            f"share_below_{read_px}": round(float((w < read_px).mean()), 4)}


def advice(s: dict) -> str:
    """One sentence on a summarize() result for someone placing the camera."""
    spread = f"Faces were {s['p10']:g}-{s['p90']:g} px wide (10th-90th percentile, median {s['median']:g})"
    read_px = s.get("read_px", READ_PX)  # a summary.json of an earlier version has none
    below_read = s[f"share_below_{read_px}"]
    if below_read <= 0.1:
        return f"{spread}: wide enough to find and read (>= {read_px} px)."
    below_find = s[f"share_below_{FIND_PX}"]
    return (f"{spread}: {below_read:.0%} are under {read_px} px, where the classifier gets fewer pixels than it reads"
            + (f", {below_find:.0%} under {FIND_PX} px, where the detector misses many faces" if below_find > 0 else "")
            + "; move the camera closer, zoom in, set [source] roi to the queue, or capture at 1280x960 "
              "(README: Camera placement).")
