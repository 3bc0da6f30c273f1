"""The queue scenario benchmark: its scoring on hand-made timelines, the simulation's ground
truth, and a small seeded run end to end (files written, numbers finite)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.face_bank import FaceBank
from benchmarks.queue_sim import Scenario, SimResult, Simulation, identity, score
from edge.config import load_config
from edge.labels import LABELS
from edge.pipeline.core import QueueMonitor


def result(periods, hours=1.0, fps=5.0, visits=None, track_people=None) -> SimResult:
    n = int(hours * 3600 * fps)
    return SimResult(Scenario(hours=hours, fps=fps), np.arange(n) / fps, np.zeros(n, np.float32), np.zeros(n, np.int16),
                     periods, [], visits or {}, track_people or {})


def test_score_tells_hits_from_false_alarms():
    res = result([(100.0, 160.0), (1000.0, 1060.0), (2000.0, 2060.0)])
    transitions = [(105.0, "raised"), (170.0, "cleared"),  # caught after 5 s, cleared 10 s after it ended
                   (500.0, "raised"), (520.0, "cleared"),  # a false alarm
                   (1075.0, "raised"), (1200.0, "cleared")]  # late but within the grace: caught after 75 s
    s = score(res, transitions)
    assert s["false_alarms"] == 1 and s["unhappy_periods"] == 3 and s["alerted_share"] == pytest.approx(2 / 3)
    assert s["time_to_alert_s"] == [5.0, 75.0] and s["time_to_clear_s"] == [10.0, 140.0]
    calm_h = (3600 - 3 * 80) / 3600
    assert s["calm_hours"] == pytest.approx(calm_h) and s["false_alarms_per_8h"] == pytest.approx(8 / calm_h)


def test_identity_counts_fragments_and_swaps():
    visits = {1: {"first": 0.0, "last": 30.0, "tracks": {7}}, 2: {"first": 0.0, "last": 30.0, "tracks": {8, 9}},
              3: {"first": 40.0, "last": 45.0, "tracks": {7}}}  # 3 stayed 5 s: not judged for fragments
    ident = identity(result([], visits=visits, track_people={7: {1, 3}, 8: {2}, 9: {2, -1}}))
    assert ident["people_in_view_10s"] == 2 and ident["one_track_share"] == 0.5
    assert ident["identity_swaps"] == 1  # track 7 went from person 1 to person 3; the flicker (-1) is not a person


def fake_bank(seed=0) -> FaceBank:
    """Clear-cut outputs: each face's class gets most of the probability in every view."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, 140)
    probs = rng.dirichlet(np.ones(7), (140, 3, 4)).astype(np.float32) * 0.2
    probs[np.arange(140), :, :, labels] += 0.8
    return FaceBank(list(LABELS), labels, probs, (48, 80, 128), [])


def test_the_bank_gives_each_view_as_the_classifier_would_under_each_flip_setting():
    bank = fake_bank()
    assert np.array_equal(bank.output(0, 1, 2, None, 0.8), bank.probs[0, 1, 2])  # no single views: averaged
    sure, unsure = np.full(7, 0.01, np.float32), np.full(7, 1 / 7, np.float32)
    sure[3] = 0.94
    bank.turn = np.stack([bank.probs, bank.probs[..., ::-1]], axis=3).copy()
    bank.turn[0, 0, 0, 0], bank.turn[1, 0, 0, 0] = sure, unsure
    assert np.array_equal(bank.output(0, 0, 0, True, 1.0), bank.turn[0, 0, 0, 1])  # in turn: the mirror image
    assert np.array_equal(bank.output(0, 0, 0, False, 1.0), sure)
    assert np.array_equal(bank.output(0, 0, 0, None, 0.8), sure)  # sure enough: its own image alone
    assert np.array_equal(bank.output(1, 0, 0, None, 0.8), bank.probs[1, 0, 0])  # unsure: both averaged
    assert np.array_equal(bank.output(0, 0, 0, None, 1.0), bank.probs[0, 0, 0])  # 1: always both


@pytest.mark.slow
@pytest.mark.parametrize("arrive", [False, True])
def test_unhappy_periods_hold_the_truth(arrive):
    """During an unhappy period at least half of the people present are unhappy; outside
    none are; detections carry the person's id."""
    sc = Scenario(hours=0.5, unhappy_every_s=(120, 200), unhappy_arrive=arrive, miss_rate=0.0, occlusions_per_min=0.0,
                  flicker_spots=0)
    sim = Simulation(fake_bank(), sc, QueueMonitor(load_config(None), list(LABELS)), seed=3)
    checked = []
    orig = sim.detections

    def spy(t, dt):
        start = next((s for s, e in sim.periods if s <= t < e), None)
        present = list(sim.people.values())
        unhappy = [p for p in present if p.unhappy]
        if start is None:
            checked.append((False, not unhappy))
        elif arrive and t > start + 10:  # newcomers (a spot refills within 8 s) are the unhappy ones
            checked.append((True, unhappy and all(p.arrive_t >= start for p in unhappy)))
        elif not arrive:
            checked.append((True, len(unhappy) >= math.ceil(len(present) / 2)))
        return orig(t, dt)

    sim.detections = spy
    res = sim.run()
    assert res.periods and all(ok for _, ok in checked) and any(inside for inside, _ in checked)
    assert score(res, res.transitions)["unhappy_periods"] == len(res.periods)


@pytest.mark.parametrize("settings, per_classification", [
    ({"schedule.flip_in_turn": False}, 2.0),  # both images every time
    ({"schedule.flip_both_share": 1.0}, 1.0),  # one image, in turn, whatever the share
])
def test_the_simulation_counts_the_images_the_classifier_takes(settings, per_classification):
    sc = Scenario(hours=0.05, unhappy_every_s=(0.0, 0.0), flicker_spots=0)
    bank = fake_bank()
    bank.turn = np.stack([bank.probs, bank.probs], axis=3).copy()
    res = Simulation(bank, sc, QueueMonitor(load_config(None, settings), list(LABELS)), seed=1).run()
    assert res.classifications > 0 and res.images == per_classification * res.classifications


@pytest.mark.slow
def test_a_small_seeded_run_writes_finite_numbers(fer_faces, cache_env, tmp_path, shipped_model):
    """CI smoke test: the real classifier on a few real faces, a few simulated minutes. The model
    is given as the folder `edge convert --out` wrote, as `edge run --model` takes it."""
    from benchmarks import scenarios

    out = tmp_path / "out"
    argv = ["--model", str(shipped_model.parent), "--data", str(fer_faces), "--faces-per-class", "4", "--views", "2",
            "--hours", "0.1", "--mixed-hours", "0.2",
            "--sizes", "2", "--sweep-hours", "0.05", "--raise-shares", "0.4", "--raise-afters", "3",
            "--variants", "legacy", "expected", "--videos", "--out", str(out), "--seed", "1"]
    assert scenarios.main(argv) == 0
    r = json.loads((out / "scenarios.json").read_text())
    assert (out / "scenarios.md").read_text().startswith("# Queue scenarios") and (out / "scenarios.png").stat().st_size
    assert r["command"].endswith(" ".join(argv)) and r["machine"]["cpu"] and r["models"][0]["sha256"]
    assert r["models"][0]["path"] == str(shipped_model)
    assert [s["scenario"] for s in r["scenarios"]][:3] == ["calm queue", "people turn unhappy", "unhappy people arrive"]
    for row in r["scenarios"] + [kinds for s in r["sweep"] for kinds in s["by_kind"].values()]:
        assert math.isfinite(row["false_alarms_per_8h"]) and row["calm_hours"] > 0
    assert all(row["unhappy_periods"] > 0 for row in r["scenarios"][1:3])
    # in turn, both images while the share is high: between one and two images a classification
    assert all(1.0 <= row["classifier_images_per_classification"] <= 2.0 for row in r["scenarios"])
    assert {t["metric"] for t in r["targets"]} >= {"false_alarms_per_8h", "alerted_share", "one_track_share"}
    measured = {(t["scenario"], t["metric"]): t["measured"] for t in r["targets"]}
    assert 0 <= measured[("all 3-face runs", "one_track_share")] <= 1
    assert math.isfinite(measured[("all calm time", "false_alarms_per_8h")])
    assert len(r["sweep"]) == 2 * 2  # two mood variants x (the legacy alert row + one grid point)
    b = r["arrival_bound"]
    assert b["arrivals_per_8h"] > 0 and 0 <= b["person_auc"] <= 1 and len(b["rows"]) == 3
    assert all(0 <= row["unhappy_arrivals_caught"] <= 1 for row in b["rows"])
    assert all(0 <= row["caught_by_likelihood_ratio"] <= 1 and 0.5 < row["person_auc_needed_for_95"] < 1
               for row in b["rows"])
    assert "## Arrivals: the most a rule on absolute levels" in (out / "scenarios.md").read_text()


def test_arrival_bound_follows_how_well_the_levels_separate():
    """Levels that do not overlap catch every arrival at any budget; identical ones catch
    about as many mixed queues as calm ones are allowed to cross; AUC as defined."""
    from benchmarks.arrival_bound import auc, bound

    rng = np.random.default_rng(0)
    calm, unhappy = rng.uniform(0.0, 0.4, 3000), rng.uniform(0.6, 1.0, 1000)
    apart = bound(calm, unhappy, arrivals_per_8h=600, samples=50_000)
    assert [r["unhappy_arrivals_caught"] for r in apart["rows"]] == [1.0, 1.0, 1.0] and apart["person_auc"] == 1.0
    same = bound(calm, rng.uniform(0.0, 0.4, 1000), arrivals_per_8h=100, samples=200_000)
    for r in same["rows"]:  # budget 1/100 of queues cross: the mixed ones the same share
        assert r["unhappy_arrivals_caught"] == pytest.approx(r["false_alarms_per_8h"] / 100, abs=0.01)
    caught = [r["unhappy_arrivals_caught"] for r in same["rows"]]
    assert caught == sorted(caught)  # a larger budget never catches fewer
    assert auc(np.array([0.0, 1.0]), np.array([0.5, 1.0])) == pytest.approx(0.625)  # (1 + 1.5) / 2 / 2
    assert bound(calm, unhappy[:0], arrivals_per_8h=600) == {}
    for r in apart["rows"] + same["rows"]:  # the likelihood ratio follows the same two extremes
        assert r["caught_by_likelihood_ratio"] == pytest.approx(r["unhappy_arrivals_caught"], abs=0.015)


def test_likelihood_ratio_beats_the_mean_when_a_few_calm_faces_look_very_unhappy():
    """A calm person who looks far sadder than any unhappy one drags a queue's mean over the
    threshold; the likelihood ratio caps what one person can add, so it still catches the
    arrivals: the ratio is what makes the bound a bound on every rule, not just the mean."""
    from benchmarks.arrival_bound import bound

    rng = np.random.default_rng(1)
    calm = np.r_[rng.uniform(0.0, 0.1, 2940), rng.uniform(0.5, 1.0, 60)]
    b = bound(calm, rng.uniform(0.2, 0.4, 1000), arrivals_per_8h=600, samples=50_000)
    for r in b["rows"][1:]:  # budgets of 2 and 5 per 8 h: more than the queues with two such faces
        assert r["caught_by_likelihood_ratio"] >= 0.95 and r["unhappy_arrivals_caught"] < 0.2


def test_binormal_auc_needed_inverts_what_a_binormal_model_catches():
    from benchmarks.arrival_bound import auc_needed, binormal_caught

    need = auc_needed(1 / 594, faces=3, unhappy_faces=2)
    assert need == pytest.approx(0.9975, abs=2e-4)  # d = (2.93 + 1.645) * sqrt 3 / 2 = 3.96
    assert binormal_caught(need, 1 / 594, 3, 2) == pytest.approx(0.95, abs=1e-9)
    assert binormal_caught(0.947, 1 / 594, 3, 2) == pytest.approx(0.39, abs=0.01)  # v3's AUC
    assert auc_needed(5 / 594, 3, 2) < auc_needed(2 / 594, 3, 2) < need  # a larger budget needs less


def test_symmetric_sums_add_the_products_of_every_subset():
    from itertools import combinations

    from benchmarks.arrival_bound import symmetric_sums

    x = np.random.default_rng(0).uniform(0.1, 3, (50, 4))
    for k in (1, 2, 3):
        brute = [sum(np.prod(c) for c in combinations(row, k)) for row in x]
        assert symmetric_sums(x, k) == pytest.approx(brute)


def _votes(sad: int, neutral: int) -> np.ndarray:
    v = np.zeros(len(LABELS), np.int64)
    v[LABELS.index("sad")], v[LABELS.index("neutral")] = sad, neutral
    return v


def test_a_perfect_model_catches_arrivals_when_annotators_agree_and_not_when_they_split():
    """The ceiling comes from the votes alone: unanimous faces leave a perfect model nothing to
    miss; faces whose annotators split 6-4 either way leave it little to go on."""
    from benchmarks.arrival_bound import annotator_ceiling

    negative = np.array([c in ("angry", "disgust", "fear", "sad") for c in LABELS])
    unhappy = np.repeat([True, False], [300, 900])
    clear = np.stack([_votes(10, 0)] * 300 + [_votes(0, 10)] * 900)
    split = np.stack([_votes(6, 4)] * 300 + [_votes(4, 6)] * 900)
    kw = dict(arrivals_per_8h=600, repeats=2, draws=400, samples=50_000)
    agree = annotator_ceiling(clear, unhappy, negative, **kw)
    apart = annotator_ceiling(split, unhappy, negative, **kw)
    for p in agree["priors"]:
        assert p["person_auc"] > 0.99 and all(r["caught"] > 0.97 for r in p["rows"])
    for p in apart["priors"]:
        assert 0.5 < p["person_auc"] < 0.85 and all(r["caught"] < 0.5 for r in p["rows"])
        assert all(r["caught_range"][0] <= r["caught"] <= r["caught_range"][1] for r in p["rows"])
    assert [p["prior_votes"] for p in agree["priors"]] == [0.1, 0.5, 1.0, 2.0]
    assert agree["people"] == {"calm": 900, "unhappy": 300} and agree["votes_per_face"] == 10
    assert annotator_ceiling(clear[:300], unhappy[:300], negative, **kw) == {}  # no calm people


def test_bad_data_folder_is_one_sentence(tmp_path, capsys):
    from benchmarks import scenarios

    assert scenarios.main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--data" in err and "Traceback" not in err


def test_set_reads_lists_numbers_and_words():
    """A list key (mood.negative) could not be set at all: its value stayed a string."""
    from benchmarks.scenarios import parse_set

    given = parse_set(['mood.negative=["sad", "angry"]', "mood.score=expected", "alert.min_faces=3",
                       "alert.raise_share=0.5", "schedule.flip_in_turn=false"])
    assert given == {"mood.negative": ["sad", "angry"], "mood.score": "expected", "alert.min_faces": 3,
                     "alert.raise_share": 0.5, "schedule.flip_in_turn": False}
    assert load_config(None, given).mood.negative == ["sad", "angry"]


@pytest.mark.parametrize("kind", ["turn", "hide", "arrive", "calm"])
def test_rendered_scene_scripts_hold_the_truth(kind):
    """The rendered scenes' scripts: during the unhappy period two of the three people in view
    show an unhappy face (turned, or newcomers), outside it nobody does; in the hide scene three
    people are out of sight for 7 s each (longer than tracking.max_gap_s), two while unhappy."""
    from benchmarks.heads import Head
    from benchmarks.queue_video import CALM_S, UNHAPPY_S, frame, script
    from edge.config import TrackingConfig

    calm, unhappy = [[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[10, 11], [12, 13], [14, 15]]
    visits, periods = script(kind, calm, unhappy)
    assert periods == ([] if kind == "calm" else [(CALM_S, CALM_S + UNHAPPY_S)])
    hidden = [(v, a, b) for v in visits for a, b in v.hidden]
    assert len(hidden) == (3 if kind == "hide" else 0)
    assert all(b - a > TrackingConfig().max_gap_s for _, a, b in hidden)
    assert sum(any(s <= a and b <= e for s, e in periods) for _, a, b in hidden) == (2 if kind == "hide" else 0)
    heads = [Head(np.full((80, 60, 3), 128, np.uint8), (10.0, 10.0, 40.0, 50.0), "test")] * 16
    for v, a, b in hidden:  # out of the frame's truth while hidden, back after
        for t, seen in ((a + 1, False), (b + 1, True)):
            assert (v.pid in [p for p, *_ in frame(t, 0, visits, heads)[1]]) == seen
    for t in np.arange(0, 2 * CALM_S + UNHAPPY_S, 0.5):
        if kind == "hide":
            continue  # the same faces as the turn scene, fewer of them in view while someone is hidden
        shown = [v.face_at(t) for v in visits if v.start_s <= t < v.end_s]
        n_unhappy = sum(f >= 10 for f in shown)
        inside = any(s + 5 <= t < e for s, e in periods)  # newcomers take up to 4 s to arrive
        if inside:
            assert n_unhappy == 2 and len(shown) == 3, (t, shown)
        elif not any(s <= t < e for s, e in periods):
            assert n_unhappy == 0, (t, shown)


def write_votes(tmp_path) -> list[str]:
    """votes.csv for four faces under tmp_path/val (sad by the votes, happy, a tie, doubtful) and
    the files of those four and a fifth without votes."""
    from edge.labels import FERPLUS_CLASSES, FERPLUS_DOUBTFUL, FERPLUS_UNUSED

    cols = [*FERPLUS_CLASSES, *FERPLUS_DOUBTFUL, *FERPLUS_UNUSED]

    def row(file, **votes):
        return ",".join([file] + [str(votes.get(c, 0)) for c in cols])

    fer = {v: k for k, v in FERPLUS_CLASSES.items()}  # our label -> FER+ column
    (tmp_path / "votes.csv").write_text("\n".join([
        "file," + ",".join(cols),
        row("val/neutral/a.png", **{fer["sad"]: 7, fer["neutral"]: 3}),  # annotators say sad
        row("val/happy/b.png", **{fer["happy"]: 9, fer["neutral"]: 1}),  # they agree
        row("val/angry/c.png", **{fer["angry"]: 4, fer["disgust"]: 4}),  # a tie
        row("val/sad/d.png", **{fer["sad"]: 2, FERPLUS_DOUBTFUL[0]: 8}),  # mostly unknown / not a face
    ]) + "\n")
    return [str(tmp_path / "val" / c / f) for c, f in
            [("neutral", "a.png"), ("happy", "b.png"), ("angry", "c.png"), ("sad", "d.png"), ("fear", "e.png")]]


def test_fer_plus_majority_replaces_the_folder_label_and_drops_unsure_faces(tmp_path):
    from train.votes import read_votes

    files = write_votes(tmp_path)
    folder = np.array([LABELS.index(Path(f).parent.name) for f in files], np.int16)
    bank = FaceBank(list(LABELS), folder.copy(), np.zeros((5, 1, 1, 7), np.float32), (48,), files)
    info = bank.relabel_by_votes(tmp_path / "val", read_votes(tmp_path / "votes.csv"))
    assert list(bank.face_labels) == [LABELS.index("sad"), LABELS.index("happy"), -1, -1, -1]
    assert info["kept"] == 2 and info["left_out"] == 3 and info["changed_class"] == 1
    assert list(bank.faces_of(["sad"])) == [0] and list(bank.faces_of(["angry", "fear"])) == []
    from benchmarks.arrival_bound import bank_votes

    counts, unhappy, negative = bank_votes(bank, tmp_path / "val", read_votes(tmp_path / "votes.csv"),
                                           ["angry", "disgust", "fear", "sad"])
    assert counts.shape == (2, len(LABELS)) and list(unhappy) == [False, True]  # happy (calm) first, then sad
    assert counts[1][LABELS.index("sad")] == 7 and counts[0][LABELS.index("happy")] == 9
    assert [LABELS[i] for i in np.flatnonzero(negative)] == ["angry", "disgust", "fear", "sad"]


def test_fer_plus_majority_follows_the_models_own_label_order(tmp_path):
    """The votes file counts classes in FER+'s order, the bank in the model's card's: a model of
    one's own that lists its labels otherwise must still get sad faces as sad."""
    from train.votes import read_votes

    files = write_votes(tmp_path)
    labels = list(reversed(LABELS))
    bank = FaceBank(labels, np.zeros(5, np.int16), np.zeros((5, 1, 1, 7), np.float32), (48,), files)
    bank.relabel_by_votes(tmp_path / "val", read_votes(tmp_path / "votes.csv"))
    assert [labels[k] if k >= 0 else None for k in bank.face_labels] == ["sad", "happy", None, None, None]
    assert list(bank.faces_of(["sad"])) == [0] and list(bank.faces_of(["happy"])) == [1]


def test_rendered_scene_puts_whole_heads_where_the_detector_finds_them(fer_faces):
    """Level (b) renders heads at queue distance; the faces it picks are found at their truth boxes."""
    import cv2

    from benchmarks.heads import FER_FRAME, astronaut_head, blend_face
    from benchmarks.queue_video import SPOTS, Visit, frame, match, pick
    from edge.pipeline.core import load_parts

    _, detector = load_parts(load_config(None))
    template = astronaut_head()
    pool = [blend_face(template, cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), FER_FRAME, "fer")
            for p in sorted(fer_faces.glob("*/*.jpg"))[:60]]
    spots = pick(detector, pool, 1)
    assert all(len(s) == 1 for s in spots)
    visits = [Visit(k + 1, k, 0.0, 10.0, [(0.0, k)]) for k in range(len(SPOTS))]
    img, truth = frame(2.0, 7, visits, [s[0] for s in spots])
    assert img.shape == (480, 640, 3) and [w for *_, w, _ in truth] == [w for *_, w in SPOTS]
    found = sorted(match(d.box, truth) for d in detector.detect(img))
    assert found == [1, 2, 3]


def test_a_person_found_again_is_one_track_in_the_identity_figures():
    """fold_refound: the short track a person had on coming back folds into their old one, so
    `identity` counts them on one track, and the old track is not given to anyone else."""
    from benchmarks.queue_sim import fold_refound

    track_people, visits = {2: {1}, 5: {1}, 6: {3}}, {1: {"tracks": {2, 5}}, 3: {"tracks": {6}}}
    fold_refound([(5, 2)], track_people, visits)
    assert track_people == {2: {1}, 6: {3}} and visits == {1: {"tracks": {2}}, 3: {"tracks": {6}}}


def test_a_damaged_face_bank_cache_is_made_again_instead_of_failing_every_run(shipped_model, tmp_path, monkeypatch):
    """A run stopped while the bank cache was written used to leave half an .npz that every later
    `edge bench scenarios` died on (BadZipFile) until the user found and deleted it."""
    cv2 = pytest.importorskip("cv2")
    from benchmarks.face_bank import Jitter, build_bank
    from edge.pipeline.classifier import Classifier

    monkeypatch.setenv("QUEUE_MOOD_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for label in ("happy", "sad"):
        (tmp_path / "faces" / label).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "faces" / label / "a.png"), rng.integers(0, 255, (48, 48), np.uint8))
    clf = Classifier(shipped_model, num_threads=1)
    make = lambda: build_bank(clf, tmp_path / "faces", None, Jitter(per_face=1), 0, widths_px=(48,))  # noqa: E731
    first = make()
    (cache,) = (tmp_path / "cache" / "face_bank").iterdir()
    cache.write_bytes(cache.read_bytes()[:200])
    np.testing.assert_array_equal(make().probs, first.probs)
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # whole again, no temp file beside it


def test_each_rendered_scene_is_reported_when_it_ends_not_all_at_the_end(monkeypatch, capsys):
    """A scene takes minutes; its line used to come only after the last scene had run."""
    import edge.pipeline.core as core
    from benchmarks import detector_recall, queue_video

    monkeypatch.setattr(core, "load_parts", lambda cfg: (None, None))
    monkeypatch.setattr(detector_recall, "load_val_faces", lambda data, n, seed: [])
    monkeypatch.setattr(queue_video, "pick", lambda detector, pool, n: [[object()] * n] * len(queue_video.SPOTS))
    said_before = []

    def scene(cfg, kind, calm, unhappy, folder):
        said_before.append(capsys.readouterr().err.split())
        return {"scene": kind}

    monkeypatch.setattr(queue_video, "run_scene", scene)
    rows = queue_video.run_scenes(load_config(None), Path("."), ["turn", "calm"], Path("."), seed=0)
    assert [r["scene"] for r in rows] == ["turn", "calm"]
    assert said_before[1] == ["video", "turn", "done"] and capsys.readouterr().err.split() == ["video", "calm", "done"]


def test_a_target_whose_scenario_was_not_run_or_too_short_is_not_measured_not_failed(shipped_model, tmp_path,
                                                                                    monkeypatch):
    """--mixed-hours 0 (as the per-seed scene runs use it) runs no unhappy queue: its targets read
    'not run', not '**no**' as if the alert rule had missed them; a run too short for an unhappy
    period says so; one whose unhappy periods went unalerted still fails."""
    from benchmarks import scenarios

    monkeypatch.setattr(scenarios, "build_bank", lambda *a, **k: fake_bank())
    (tmp_path / "faces" / "happy").mkdir(parents=True)
    out = tmp_path / "out"
    assert scenarios.main(["--model", str(shipped_model), "--data", str(tmp_path / "faces"), "--truth", "folder",
                           "--hours", "0.05", "--mixed-hours", "0", "--sweep-hours", "0", "--sizes", "3", "--videos",
                           "--out", str(out)]) == 0
    r = json.loads((out / "scenarios.json").read_text())
    met = {(t["scenario"], t["metric"]): t["met"] for t in r["targets"]}
    assert met[("people turn unhappy", "alerted_share")] is None and met[("all calm time", "false_alarms_per_8h")]
    table = (out / "scenarios.md").read_text().split("## Targets")[1].split("##")[0]
    assert "**no**" not in table and "| people turn unhappy | alerted_share | >= 0.95 | – | not run |" in table
    assert "\n| calm queue | 3 | 0.05 | 0.05 | " in (out / "scenarios.md").read_text()  # 3 min: was "0.1"
    assert [scenarios._hours(h) for h in (2 / 60, 0.5, 0.0, 80.0)] == ["0.033", "0.5", "0.0", "80.0"]  # 2 min was "0.0"

    head = {"people turn unhappy": {"unhappy_periods": 0, "alerted_share": None, "time_to_alert_median_s": None},
            "unhappy people arrive": {"unhappy_periods": 2, "alerted_share": 0.0, "time_to_alert_median_s": None}}
    assert scenarios.judge(head, "people turn unhappy", "time_to_alert_median_s", "<=", 12.0)["met"] is None
    assert scenarios.judge(head, "unhappy people arrive", "time_to_alert_median_s", "<=", 12.0)["met"] is False
    assert scenarios.judge(head, "unhappy people arrive", "alerted_share", ">=", 0.95)["met"] is False
