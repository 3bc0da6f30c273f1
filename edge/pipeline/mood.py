"""Queue mood over a short window: how much of the queue looks unhappy, and the count of
faces per emotion.

Only people count: a track joins the mood once it has been followed for `min_seen_s` and was
detected in at least `min_seen_share` of the frames since it began, so a detection that
flickers (a poster, a face half behind a shoulder) never becomes a face however it is
classified. A face stays in the mood for `window_s` after it was last seen.

Ways to score a face as unhappy (`score`):
  votes     1 when its smoothed top class is negative and at least `min_confidence` sure
  expected  its smoothed probability of any negative class (the calibrated expectation)
  change    how far that probability has risen above the person's own level while they were
            first seen (the `min_seen_s` before they count); a rise of FULL_RISE or more
            scores 1: a face that merely looks sad at rest stays at 0, one that turns unhappy
            goes up; a face at or above `unhappy_above` scores 1 whatever its own level
            (people who arrive unhappy)
The negative share is the mean score over the faces.

Optional per-camera baseline (`baseline_rise` > 0), for people who arrive unhappy (they never
rise): the window learns this camera's usual mean negative probability per face over calm queue
time (a running mean over about `baseline_s`, not while an alert is raised), and the share is
at least how far the queue's mean probability now is above that usual level, divided by
`baseline_rise`. Comparing the queue with its own usual level, not with a fixed number, keeps
it right for any model's bias (one that rates many neutral faces negative, or one that does not)
and for any camera's light and angle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.config import MoodConfig
from edge.pipeline.tracking import Track

FULL_RISE = 0.4  # score "change": a rise in negative probability this large is a fully unhappy face
BASELINE_WARMUP_S = 120.0  # the camera's usual level is used once it has been learned over this much calm queue time
MAX_STEP_S = 1.0  # a gap between updates counts as at most this much learning time


@dataclass
class Mood:
    t_s: float
    faces: int
    negative: float  # faces counted as unhappy (a sum of scores: fractional when score="expected")
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def negative_share(self) -> float:
        return self.negative / self.faces if self.faces else 0.0


class Baseline:
    """This camera's usual mean negative probability per face: the plain mean until `tau_s` of
    calm queue time has been learned, then an exponential running mean with that time constant."""

    def __init__(self, tau_s: float):
        self.tau_s = tau_s
        self.level = 0.0
        self.learned_s = 0.0
        self._t: float | None = None

    @property
    def ready(self) -> bool:
        return self.learned_s >= BASELINE_WARMUP_S

    def update(self, t_s: float, level: float | None, learn: bool):
        """level: the queue's mean negative probability now (None: no faces); learn: the queue
        is calm (no alert raised), so this moment may shape the usual level."""
        dt = 0.0 if self._t is None else min(MAX_STEP_S, max(0.0, t_s - self._t))
        self._t = t_s
        if learn and level is not None and dt > 0:
            self.learned_s += dt
            self.level += (level - self.level) * dt / min(self.learned_s, self.tau_s)


class MoodWindow:
    """Remembers each counted track's latest smoothed state for `window_s` seconds, and each
    person's own level (score "change") for `keep_s` (the tracker's refind_s: a person hidden
    for longer than the window who comes back on the same track is compared with their own
    level, not with how they look on coming back)."""

    def __init__(self, labels: list[str], cfg: MoodConfig | None = None, keep_s: float = 0.0):
        self.cfg = cfg or MoodConfig()
        self.labels = list(labels)
        self.negative = sorted({self.labels.index(n) for n in self.cfg.negative})
        self.keep_s = max(keep_s, self.cfg.window_s)
        self._latest: dict[int, tuple[float, int, float, float]] = {}  # track id -> (t_s, top class, unhappy score, p negative)
        # track id -> (last seen t_s, sum, n, complete) of its negative probabilities until it first counted
        self._base: dict[int, tuple[float, float, int, bool]] = {}
        self.baseline = Baseline(self.cfg.baseline_s)  # this camera's usual level (used when baseline_rise > 0)

    def counts_as_face(self, tr: Track) -> bool:
        return tr.probs is not None and tr.seen_s >= self.cfg.min_seen_s and tr.seen_share >= self.cfg.min_seen_share

    def face_score(self, tr: Track) -> float:
        if self.cfg.score == "votes":
            return float(tr.top in self.negative and tr.confidence >= self.cfg.min_confidence)
        p = float(tr.probs[self.negative].sum())
        if self.cfg.score == "expected":
            return p
        if p >= self.cfg.unhappy_above:
            return 1.0
        _, total, n, _ = self._base[tr.id]
        return min(1.0, max(0.0, p - total / n) / FULL_RISE)

    def forget(self, track_id: int) -> None:
        """A track that turned out to be someone already known (the tracker's refind): only
        the person's own track counts from now on."""
        self._latest.pop(track_id, None)
        self._base.pop(track_id, None)

    def update(self, t_s: float, tracks: list[Track], calm: bool = True) -> Mood:
        """calm: no alert is raised (the baseline learns only then)."""
        for tr in tracks:
            if tr.probs is None:
                continue
            _, total, n, complete = self._base.get(tr.id, (t_s, 0.0, 0, False))
            if not complete:  # the person's own level: until they count, and the first frame they do
                total, n = total + float(tr.probs[self.negative].sum()), n + 1
            self._base[tr.id] = (t_s, total, n, complete or self.counts_as_face(tr))
            if self.counts_as_face(tr):
                self._latest[tr.id] = (t_s, tr.top, self.face_score(tr), float(tr.probs[self.negative].sum()))
        for tid in [tid for tid, (t, _, _, _) in self._latest.items() if t_s - t > self.cfg.window_s]:
            del self._latest[tid]
        for tid in [tid for tid, (t, *_) in self._base.items() if t_s - t > self.keep_s and tid not in self._latest]:
            del self._base[tid]
        counts = dict.fromkeys(self.labels, 0)
        negative = 0.0
        for _, top, score, _ in self._latest.values():
            counts[self.labels[top]] += 1
            negative += score
        faces = len(self._latest)
        if self.cfg.baseline_rise > 0:
            level = sum(p for *_, p in self._latest.values()) / faces if faces else None
            if faces and self.baseline.ready:
                above = min(1.0, max(0.0, (level - self.baseline.level) / self.cfg.baseline_rise))
                negative = max(negative, above * faces)
            self.baseline.update(t_s, level, calm)
        return Mood(t_s, faces, negative, counts)
