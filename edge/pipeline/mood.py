"""Queue mood over a sliding window: the share of tracked faces whose smoothed emotion is
negative and confident, and the count of faces per emotion."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.config import MoodConfig
from edge.pipeline.tracking import Track


@dataclass
class Mood:
    t_s: float
    faces: int
    negative: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def negative_share(self) -> float:
        return self.negative / self.faces if self.faces else 0.0


class MoodWindow:
    """Remembers each confirmed track's latest smoothed state for `window_s` seconds."""

    def __init__(self, labels: list[str], cfg: MoodConfig | None = None):
        self.cfg = cfg or MoodConfig()
        self.labels = list(labels)
        self.negative = {self.labels.index(n) for n in self.cfg.negative}
        self._latest: dict[int, tuple[float, int, float]] = {}  # track id -> (t_s, top class, confidence)

    def update(self, t_s: float, tracks: list[Track]) -> Mood:
        for tr in tracks:
            self._latest[tr.id] = (t_s, tr.top, tr.confidence)
        for tid in [tid for tid, (t, _, _) in self._latest.items() if t_s - t > self.cfg.window_s]:
            del self._latest[tid]
        counts = dict.fromkeys(self.labels, 0)
        negative = 0
        for _, top, conf in self._latest.values():
            counts[self.labels[top]] += 1
            negative += top in self.negative and conf >= self.cfg.min_confidence
        return Mood(t_s, len(self._latest), negative, counts)
