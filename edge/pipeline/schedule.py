"""The compute budget: which frames run the detector and which tracks the classifier sees.

Expressions change over seconds and the tracker smooths them, so each track is classified a
few times a second, not in every frame: new tracks first, then the longest-waiting due ones,
at most `max_per_frame` per frame (round robin). The detector runs a few times a second too
(rates, not frame counts, so the budget holds at any camera fps); between detector frames the
tracker carries the boxes of the last detection.
"""

from __future__ import annotations

from edge.config import ScheduleConfig
from edge.pipeline.tracking import Track

# Frame timestamps jitter; a track due within this much counts as due.
_SLACK_S = 1e-3


class Schedule:
    def __init__(self, cfg: ScheduleConfig):
        self.classify_hz, self.max_per_frame, self.detect_hz = cfg.classify_hz, cfg.classify_max_per_frame, cfg.detect_hz
        self.detected_t_s: float | None = None  # when the detector last ran

    def detect_now(self, t_s: float) -> bool:
        """Whether the frame at t_s runs the detector (call detected(t_s) when it does)."""
        return self.detect_hz <= 0 or self.detected_t_s is None or t_s - self.detected_t_s >= 1 / self.detect_hz - _SLACK_S

    def detected(self, t_s: float) -> None:
        self.detected_t_s = t_s

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
