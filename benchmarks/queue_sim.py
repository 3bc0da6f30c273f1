"""Simulated queues with ground truth, fed through the product's own tracker, mood window and
alert policy (`edge.pipeline.core.QueueMonitor`), frame by frame.

People arrive at spots in the frame, wait (drifting a little), and leave; a replacement comes
to a free spot after a short gap. Each person has a real FER2013 face from a calm class
(happy, neutral, surprise) and, while unhappy, one from a negative class (another FER2013
person: the dataset has one image per person); per frame the classifier output is drawn
from the shown face's bank of camera-jittered outputs (face_bank.py).
The truth is who is unhappy when: calm periods have nobody unhappy; in an unhappy period at
least `unhappy_share` of the people present are unhappy (people turn unhappy when it starts,
calm again when it ends, and arrivals keep the share up). The detector misses a face in some
frames, loses it for a short occlusion now and then, and `flicker_spots` places find a
"face" in a small share of frames (a poster, a face half behind a shoulder) that looks
unhappy, the worst case.

`run()` returns the per-frame mood series and the tracker's identity record; `score()` turns
a replay of any alert policy over that series into the numbers the store cares about.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np

from benchmarks.face_bank import FaceBank
from edge.config import MoodConfig
from edge.labels import LABELS
from edge.pipeline.geometry import BBox

W, H = 640, 480
# Ground truth: the product's own negative classes are unhappy, the rest calm; faces are drawn
# from these classes' files, as often as FER2013 has them.
UNHAPPY = tuple(MoodConfig().negative)
CALM = tuple(label for label in LABELS if label not in UNHAPPY)


@dataclass(frozen=True)
class Scenario:
    name: str = "mixed"
    hours: float = 1.0
    fps: float = 5.0
    faces: int = 3  # spots in the queue (people present when all spots are taken)
    width_px: tuple[float, float] = (40.0, 160.0)  # face width range, drawn per spot
    dwell_s: tuple[float, float] = (40.0, 240.0)  # how long a person waits
    refill_s: tuple[float, float] = (1.0, 8.0)  # a spot stays empty this long after someone leaves
    unhappy_every_s: tuple[float, float] = (240.0, 600.0)  # calm time between unhappy periods (0: never)
    unhappy_s: float = 60.0
    unhappy_share: float = 0.5  # at least this share of those present are unhappy in an unhappy period
    unhappy_arrive: bool = False  # unhappy people are newcomers (some leave as it starts), not people who turn
    miss_rate: float = 0.05  # detector misses a visible face in this share of frames
    occlusions_per_min: float = 0.3  # per person
    occlusion_s: tuple[float, float] = (0.5, 2.5)
    flicker_spots: int = 1
    flicker_rate: float = 0.02  # share of frames in which a flicker spot is "detected"
    drift: float = 0.05  # a person's typical distance from their spot, in face widths
    box_jitter: float = 0.03  # detector box noise per frame, in face widths
    # A person's camera view (pose, light, blur) changes this often, in seconds, not frames: a
    # faster camera sees the same look more often, not more independent looks. 1.8/s keeps a
    # 5 fps frame's view with chance 0.7.
    view_change_hz: float = 1.8

    @property
    def calm_only(self) -> bool:
        return self.unhappy_every_s[1] <= 0


@dataclass
class Person:
    id: int
    spot: int
    arrive_t: float
    leave_t: float
    width: float
    face: int  # the face shown now
    unhappy: bool
    calm_face: int = -1  # the face this person shows when calm (they come back to it)
    wbin: int = 0  # the bank's width bin for this person
    off: list = field(default_factory=lambda: [0.0, 0.0])
    view: int = 0
    occluded_until: float = -1.0


@dataclass
class SimResult:
    scenario: Scenario
    t_s: np.ndarray  # frame times
    share: np.ndarray  # mood negative share per frame
    faces: np.ndarray  # mood faces per frame
    periods: list[tuple[float, float]]  # unhappy periods (start, end)
    transitions: list[tuple[float, str]]  # from the monitor's own policy
    visits: dict[int, dict]  # person id -> {"seen_s": ..., "tracks": set}
    track_people: dict[int, set]  # track id -> person ids it was given
    classifications: int = 0  # faces classified
    images: int = 0  # images through the classifier for them (a face and its mirror image are two)


def schedule(sc: Scenario, rng) -> list[tuple[float, float]]:
    if sc.calm_only:
        return []
    out, t, end = [], 0.0, sc.hours * 3600
    while True:
        t += rng.uniform(*sc.unhappy_every_s)
        if t + sc.unhappy_s > end:
            return out
        out.append((t, t + sc.unhappy_s))
        t += sc.unhappy_s


def spots(n: int, rng, width_px) -> list[tuple[float, float, float]]:
    """(centre x, centre y, face width) per spot: one row up to 3 people, two rows above."""
    per_row = n if n <= 3 else math.ceil(n / 2)
    out = []
    for k in range(n):
        row, col = divmod(k, per_row)
        cx = (col + 0.5) * W / per_row
        cy = H * (0.33 if n <= 3 else (0.28 if row == 0 else 0.68))
        w = min(rng.uniform(*width_px), 0.85 * W / per_row)
        out.append((cx, cy, w))
    return out


class Simulation:
    def __init__(self, bank: FaceBank, sc: Scenario, monitor, seed: int):
        self.bank, self.sc, self.monitor = bank, sc, monitor
        self.rng = np.random.default_rng(seed)
        self.r = random.Random(seed)  # scalar draws in the frame loop (numpy's are slow one at a time)
        self.views = bank.probs.shape[2]
        self.looks = None if bank.looks is None else bank.looks.astype(np.float32)
        self.calm_faces = bank.faces_of([c for c in CALM if c in bank.labels])
        self.unhappy_faces = bank.faces_of([c for c in UNHAPPY if c in bank.labels])
        self.spots = spots(sc.faces, self.rng, sc.width_px)
        self.flickers = [(self.rng.uniform(60, W - 60), self.rng.uniform(60, H - 60), self.rng.uniform(36, 60),
                          int(self.rng.choice(self.unhappy_faces))) for _ in range(sc.flicker_spots)]
        self.people: dict[int, Person] = {}
        self.next_arrival = [0.0] * sc.faces
        self._next_id = 1

    def face(self, unhappy: bool) -> int:
        return int(self.rng.choice(self.unhappy_faces if unhappy else self.calm_faces))

    def set_mood(self, p: Person, unhappy: bool):
        if p.unhappy != unhappy:
            p.unhappy, p.face = unhappy, self.face(True) if unhappy else p.calm_face

    def need(self, n: int) -> int:
        return math.ceil(self.sc.unhappy_share * n - 1e-9)

    def rebalance(self, t: float, unhappy_period: bool, starts: bool):
        """Calm: nobody unhappy. Unhappy: at least unhappy_share of those present (people turn
        unhappy, or with unhappy_arrive some leave as it starts and newcomers arrive unhappy)."""
        present = list(self.people.values())
        if not unhappy_period:
            for p in present:
                self.set_mood(p, False)
            return
        if self.sc.unhappy_arrive:
            if starts:
                for p in present[: self.need(self.sc.faces)]:
                    p.leave_t = t
            present = [p for p in present if p.leave_t > t]
        need = self.need(len(present))
        calm = [p for p in present if not p.unhappy and (not self.sc.unhappy_arrive or p.arrive_t == t)]
        for p in calm[: max(0, need - sum(p.unhappy for p in present))]:
            self.set_mood(p, True)

    def arrivals_and_departures(self, t: float):
        sc = self.sc
        for pid in [pid for pid, p in self.people.items() if p.leave_t <= t]:
            p = self.people.pop(pid)
            self.next_arrival[p.spot] = t + self.r.uniform(*sc.refill_s)
        taken = {p.spot for p in self.people.values()}
        for s in range(sc.faces):
            if s not in taken and t >= self.next_arrival[s]:
                width = self.spots[s][2] * self.r.uniform(0.85, 1.15)  # the next person stands about as far
                calm = self.face(False)
                p = Person(self._next_id, s, t, t + self.r.uniform(*sc.dwell_s), width, calm, False, calm,
                           wbin=self.bank.width_index(width), view=self.r.randrange(self.views))
                self._next_id += 1
                self.people[p.id] = p

    def detections(self, t: float, dt: float):
        sc, r, bank = self.sc, self.r, self.bank
        boxes, views, looks, who = [], [], [], []  # views: (face, width bin, view) in the bank
        pull, step = dt / 10.0, math.sqrt(2 * dt / 10.0)  # drift: mean-reverting over ~10 s
        for p in self.people.values():
            cx, cy, _ = self.spots[p.spot]
            p.off = [o - o * pull + r.gauss(0, p.width * sc.drift * step) for o in p.off]
            if t < p.occluded_until:
                continue
            if r.random() < sc.occlusions_per_min * dt / 60.0:
                p.occluded_until = t + r.uniform(*sc.occlusion_s)
                continue
            if r.random() < sc.miss_rate:
                continue
            if r.random() > math.exp(-sc.view_change_hz * dt):
                p.view = r.randrange(self.views)
            w, jit = p.width * (1 + r.gauss(0, sc.box_jitter)), sc.box_jitter * p.width
            x, y = cx + p.off[0] + r.gauss(0, jit), cy + p.off[1] + r.gauss(0, jit)
            boxes.append(BBox(x - w / 2, y - w / 2, w, w * 1.1))
            views.append((p.face, p.wbin, p.view))
            looks.append(None if self.looks is None else self.looks[p.face, p.wbin, p.view])
            who.append(p.id)
        for k, (fx, fy, fw, face) in enumerate(self.flickers):
            if r.random() < sc.flicker_rate:
                boxes.append(BBox(fx - fw / 2, fy - fw / 2, fw, fw * 1.1))
                view = r.randrange(self.views)
                views.append((face, bank.width_index(fw), view))
                looks.append(None if self.looks is None else self.looks[face, bank.width_index(fw), view])
                who.append(-1 - k)
        return boxes, views, looks, who

    def run(self) -> SimResult:
        sc = self.sc
        dt = 1.0 / sc.fps
        periods = self.periods = schedule(sc, self.rng)
        n = int(sc.hours * 3600 * sc.fps)
        t_s = np.arange(n) * dt
        share, faces = np.zeros(n, np.float32), np.zeros(n, np.int16)
        transitions, visits, track_people = [], {}, {}
        pi, in_period = 0, False
        tracker = self.monitor.tracker
        counts = [0, 0]  # classifications, classifier images
        for i in range(n):
            t = float(t_s[i])
            while pi < len(periods) and t >= periods[pi][1]:
                pi += 1
            now_unhappy = pi < len(periods) and t >= periods[pi][0]
            self.arrivals_and_departures(t)
            if now_unhappy or now_unhappy != in_period:
                self.rebalance(t, now_unhappy, now_unhappy and not in_period)
            in_period = now_unhappy
            boxes, views, looks, who = self.detections(t, dt)

            def classify(due, mirror, views=views):  # the bank's outputs instead of running the model
                asked = [(*views[i], m, self.monitor.flip_below) for i, m in zip(due, mirror or [None] * len(due))]
                counts[0] += len(asked)
                counts[1] += sum(self.bank.images(*a) for a in asked)
                return [self.bank.output(*a) for a in asked]

            _, mood, tr = self.monitor.update(t, boxes, classify, looks)
            share[i], faces[i] = mood.negative_share, mood.faces
            if tr:
                transitions.append((t, tr))
            if self.monitor.detected:
                fold_refound(tracker.refound, track_people, visits)
            for pid, tid in zip(who, tracker.last_ids if self.monitor.detected else []):  # only fresh detections
                track_people.setdefault(tid, set()).add(pid)
                if pid > 0:
                    v = visits.setdefault(pid, {"first": t, "last": t, "tracks": set()})
                    v["last"] = t
                    v["tracks"].add(tid)
        return SimResult(sc, t_s, share, faces, periods, transitions, visits, track_people, *counts)


def fold_refound(refound: list[tuple[int, int]], track_people: dict[int, set], visits: dict[int, dict]) -> None:
    """A person the tracker found again after a long gap (tracking.refind_s) is on one track
    from then on: the short new track they had is folded into the old one."""
    for new, old in refound:
        for pid in track_people.pop(new, ()):
            track_people.setdefault(old, set()).add(pid)
            if pid > 0:
                visits[pid]["tracks"].discard(new)


def replay(policy, res: SimResult) -> list[tuple[float, str]]:
    """The transitions an alert policy makes on a recorded mood series."""
    out = []
    for t, s, f in zip(res.t_s.tolist(), res.share.tolist(), res.faces.tolist()):
        tr = policy.update(t, s, f)
        if tr:
            out.append((t, tr))
    return out


GRACE_S = 20.0  # an alert this soon after an unhappy period ends still belongs to it


def score(res: SimResult, transitions: list[tuple[float, str]]) -> dict:
    """Alert quality on one run: per unhappy period whether and when it was alerted and
    cleared; alerts outside periods (+grace) are false alarms."""
    raises = [t for t, e in transitions if e == "raised"]
    clears = [t for t, e in transitions if e == "cleared"]
    tta, ttc, alerted, used = [], [], 0, set()
    for k, (s, e) in enumerate(res.periods):
        nxt = res.periods[k + 1][0] if k + 1 < len(res.periods) else math.inf
        hit = [r for r in raises if s <= r <= e + GRACE_S]
        if hit:
            alerted += 1
            tta.append(hit[0] - s)
            used.update(hit)
            c = [c for c in clears if c > hit[0]]
            ttc.append(c[0] - e if c and c[0] < nxt else math.inf)
    false = [r for r in raises if r not in used]
    total_s = len(res.t_s) / res.scenario.fps
    calm_s = total_s - sum(min(e + GRACE_S, total_s) - s for s, e in res.periods)
    return {
        "calm_hours": calm_s / 3600,
        "false_alarms": len(false),
        "false_alarms_per_8h": 8 * 3600 * len(false) / calm_s if calm_s > 0 else None,
        "unhappy_periods": len(res.periods),
        "alerted_share": alerted / len(res.periods) if res.periods else None,
        "time_to_alert_s": tta,
        "time_to_clear_s": ttc,
    }


def identity(res: SimResult, min_seen_s: float = 10.0) -> dict:
    """Tracks per person who stayed in view >= min_seen_s, and tracks given to several people."""
    long = [v for v in res.visits.values() if v["last"] - v["first"] >= min_seen_s]
    one = sum(len(v["tracks"]) == 1 for v in long)
    real = [{p for p in people if p > 0} for people in res.track_people.values()]
    return {
        "people_in_view_10s": len(long),
        "one_track_share": one / len(long) if long else None,
        "tracks_per_person": float(np.mean([len(v["tracks"]) for v in long])) if long else None,
        "identity_swaps": sum(max(0, len(s) - 1) for s in real),
        "people": len(res.visits),
    }
