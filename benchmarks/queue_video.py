"""Level (b) of the scenario benchmark: a few rendered queue videos through the whole
pipeline, the `edge run` loop itself (detector, crop, classifier, tracker, mood, alert).

A scene has three spots at queue distance (faces 48-64 px wide in a 640x480 frame); people
(whole heads: FER2013 val faces blended into a head with hair, ears, neck and clothes, as in
heads.py, picked only if the configured detector finds them steadily there) arrive, drift a
few pixels and leave; in the unhappy period two of the three either turn unhappy (their face
is swapped for an unhappy one and back) or leave and are replaced by unhappy newcomers; in the
'hide' scene they turn, and three people are hidden for 7 s each (a phone, someone passing in
front: longer than tracking.max_gap_s), one while calm and the two unhappy ones while unhappy. Calm
or unhappy follows the FER+ annotators' majority when a votes file is given, else FER2013's
folder label.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.queue_sim import CALM, UNHAPPY, SimResult, Scenario, fold_refound, identity, score
from edge.labels import LABELS

FPS = 5.0
SPOTS = [(50, 150, 64), (270, 130, 56), (480, 170, 48)]  # (head x, head y, face width) per spot
CALM_S, UNHAPPY_S = 60.0, 60.0


@dataclass
class Visit:
    pid: int
    spot: int
    start_s: float
    end_s: float
    faces: list[tuple[float, int]] = field(default_factory=list)  # (from t_s, face index), in order
    hidden: list[tuple[float, float]] = field(default_factory=list)  # (from, to) t_s: in the spot, face not visible

    def face_at(self, t: float) -> int:
        return [f for s, f in self.faces if s <= t][-1]


def script(kind: str, calm: list[list[int]], unhappy: list[list[int]]) -> tuple[list[Visit], list[tuple[float, float]]]:
    """Who stands where showing which face, for a scene kind: 'turn', 'hide', 'arrive' or 'calm'.
    calm[spot] / unhappy[spot]: face indices that spot may show, used in order."""
    c, u = [iter(x) for x in calm], [iter(x) for x in unhappy]
    end = 2 * CALM_S + UNHAPPY_S
    s0, s1 = CALM_S, CALM_S + UNHAPPY_S
    visits = [Visit(1, 0, 0.0, end, [(0.0, next(c[0]))]), Visit(2, 1, 0.0, 35.0, [(0.0, next(c[1]))]),
              Visit(3, 1, 37.0, end, [(37.0, next(c[1]))]), Visit(4, 2, 0.0, end, [(0.0, next(c[2]))])]
    if kind in ("turn", "hide"):
        for v in (visits[0], visits[2]):
            v.faces += [(s0, next(u[v.spot])), (s1, v.faces[0][1])]
        if kind == "hide":  # hidden while calm, then each unhappy person in turn while unhappy
            visits[3].hidden, visits[0].hidden, visits[2].hidden = [(20.0, 27.0)], [(s0 + 10, s0 + 17)], [(s0 + 28, s0 + 35)]
        return visits, [(s0, s1)]
    if kind == "arrive":
        visits[0].end_s = visits[2].end_s = s0
        visits += [Visit(5, 0, s0 + 3, end, [(s0 + 3, next(u[0])), (s1, next(c[0]))]),
                   Visit(6, 1, s0 + 4, end, [(s0 + 4, next(u[1])), (s1, next(c[1]))])]
        return visits, [(s0, s1)]
    return visits, []


def frame(t: float, i: int, visits: list[Visit], heads: list):
    """The BGR frame at time t and the truth face boxes [(person id, x, y, w, h)]."""
    from benchmarks.heads import paste_head
    from benchmarks.scenes import background

    img = background(i)
    truth = []
    for v in visits:
        if not v.start_s <= t < v.end_s or any(a <= t < b for a, b in v.hidden):
            continue
        x, y, w = SPOTS[v.spot]
        x += int(round(4 * math.sin(t / 3 + v.pid)))
        y += int(round(3 * math.cos(t / 4 + v.pid)))
        fx, fy, fw, fh = paste_head(img, heads[v.face_at(t)], x, y, w)
        truth.append((v.pid, int(round(fx)), int(round(fy)), int(round(fw)), int(round(fh))))
    return img, truth


def steady(detector, face, spot: int) -> bool:
    """The detector finds this head's face alone at this spot in every one of 6 frames of its drift."""

    v = Visit(0, spot, 0.0, 1e9, [(0.0, 0)])
    for k in range(6):
        img, _ = frame(k * 2.1, k, [v], [face])
        if len(detector.detect(img)) != 1:
            return False
    return True


def pick(detector, pool: list, per_spot: int) -> list[list]:
    """Per spot, `per_spot` faces from the pool that the detector finds steadily there."""
    out, used = [], set()
    for spot in range(len(SPOTS)):
        got = []
        for k, face in enumerate(pool):
            if len(got) == per_spot:
                break
            if k not in used and steady(detector, face, spot):
                got.append(face)
                used.add(k)
        out.append(got)
    return out


def run_scene(cfg, kind: str, calm: list[list], unhappy: list[list], folder: Path) -> dict:
    from benchmarks.scenes import write_video
    from edge.service.app import RunOptions, run

    faces = [f for spot in calm + unhappy for f in spot]
    idx, k = [], 0
    for spot in calm + unhappy:
        idx.append(list(range(k, k + len(spot))))
        k += len(spot)
    visits, periods = script(kind, idx[: len(calm)], idx[len(calm):])
    n = int((2 * CALM_S + UNHAPPY_S) * FPS)
    truths = []

    def frames():
        for i in range(n):
            img, truth = frame(i / FPS, i, visits, faces)
            truths.append(truth)
            yield img

    video = write_video(folder / f"queue_{kind}.mp4", frames(), FPS)
    cfg.source.path = str(video)
    transitions, track_people, seen = [], {}, {}

    def on_result(fr, res):
        if res.transition:
            transitions.append((res.t_s, res.transition))
        fold_refound(res.refound, track_people, seen)
        for tr in res.tracks:
            pid = match(tr.box, truths[fr.index])
            track_people.setdefault(tr.id, set()).add(pid)
            if pid > 0:
                v = seen.setdefault(pid, {"first": res.t_s, "last": res.t_s, "tracks": set()})
                v["last"] = res.t_s
                v["tracks"].add(tr.id)

    run(cfg, RunOptions(), on_result=on_result)
    t_s = np.arange(n) / FPS
    res = SimResult(Scenario(name=kind, hours=n / FPS / 3600, fps=FPS), t_s, np.zeros(n, np.float32),
                    np.zeros(n, np.int16), periods, transitions, seen, track_people)
    return {"scene": kind, "seconds": n / FPS, "transitions": transitions, **score(res, transitions), **identity(res)}


def match(box, truth) -> int:
    """The person whose rendered face the tracked box overlaps most (IoU >= 0.2), else -1."""
    from edge.pipeline.geometry import BBox

    best, pid = 0.2, -1
    for p, x, y, w, h in truth:
        iou = box.iou(BBox(x, y, w, h))
        if iou >= best:
            best, pid = iou, p
    return pid


def run_scenes(cfg, data: Path, kinds, folder: Path, seed: int, votes=None) -> list[dict]:
    """Renders and runs each scene kind with the config's detector and model. votes (FER+):
    a face is calm or unhappy by the annotators' majority (ties and doubtful faces unused)."""
    import copy

    from benchmarks.detector_recall import load_val_faces
    from benchmarks.heads import FER_FRAME, astronaut_head, blend_face
    from edge.errors import UserError
    from edge.pipeline.core import load_parts
    from train.votes import majority_labels

    _, detector = load_parts(cfg)
    template = astronaut_head()
    faces = load_val_faces(data, 1500, seed)  # (class/file, image)
    labels = [name.split("/")[0] for name, _ in faces]
    if votes is not None:  # the votes file's keys are val/class/file
        labels = [LABELS[k] if k >= 0 else None for k in majority_labels([f"val/{n}" for n, _ in faces], votes)]
    by_class: dict[str, list] = {}
    for (_, img), label in zip(faces, labels):
        if img is not None and label:
            by_class.setdefault(label, []).append(blend_face(template, img, FER_FRAME, "fer", label))
    calm_pool = [f for c in CALM for f in by_class.get(c, [])]
    unhappy_pool = [f for c in UNHAPPY for f in by_class.get(c, [])]
    calm, unhappy = pick(detector, calm_pool, 3), pick(detector, unhappy_pool, 2)
    if min(map(len, calm)) < 3 or min(map(len, unhappy)) < 2:
        raise UserError("The detector does not find enough FER2013 faces steadily at the scene's spots "
                        f"(calm {[len(x) for x in calm]}, unhappy {[len(x) for x in unhappy]} of 3 and 2 per spot); "
                        "pass --data with more faces, or --videos with no names to skip the rendered scenes.")
    rows = []
    for kind in kinds:
        c = copy.deepcopy(cfg)
        c.status.enabled = False
        rows.append(run_scene(c, kind, calm, unhappy, folder))
        print(f"  video {kind} done", file=sys.stderr, flush=True)  # each as it ends: a scene takes a while
    return rows
