"""The time-based logic, replayed on synthetic timelines (no clocks, no video)."""

import numpy as np
import pytest

from edge.config import AlertConfig, MoodConfig, TrackingConfig
from edge.pipeline.alerts import AlertPolicy
from edge.pipeline.geometry import BBox
from edge.labels import LABELS
from edge.pipeline.mood import BASELINE_WARMUP_S, MAX_STEP_S, Baseline, MoodWindow
from edge.pipeline.tracking import Track, Tracker


def replay(policy, timeline, step_s=0.5):
    """timeline: [(duration_s, share, faces)] -> [(t_s, transition)]"""
    events, t = [], 0.0
    for duration, share, faces in timeline:
        end = t + duration
        while t < end - 1e-9:
            ev = policy.update(t, share, faces)
            if ev:
                events.append((round(t, 2), ev))
            t += step_s
    return events


def test_raises_after_duration_and_clears_with_hysteresis():
    p = AlertPolicy(AlertConfig(raise_share=0.5, clear_share=0.3, raise_after_s=5, clear_after_s=4, min_faces=2, cooldown_s=60))
    events = replay(p, [(10, 0.0, 3), (10, 0.7, 3), (10, 0.4, 3), (10, 0.1, 3)])
    # raised 5 s after the share went high; 0.4 is between the thresholds so it stays raised
    assert events == [(15.0, "raised"), (34.0, "cleared")]


def test_clear_share_zero_clears_once_no_one_looks_unhappy():
    """'Below 0' never held: with clear_share = 0 a raised alert stayed raised for good."""
    p = AlertPolicy(AlertConfig(raise_share=0.5, clear_share=0.0, raise_after_s=1, clear_after_s=2, min_faces=1))
    assert replay(p, [(5, 0.8, 2), (2, 0.5, 2), (5, 0.0, 2)]) == [(1.0, "raised"), (9.0, "cleared")]


def test_short_spikes_do_not_raise():
    p = AlertPolicy(AlertConfig(raise_after_s=5, min_faces=1))
    assert replay(p, [(3, 0.9, 2), (1, 0.0, 2)] * 5) == []


def test_min_faces_guards_a_single_frown():
    p = AlertPolicy(AlertConfig(raise_after_s=2, min_faces=2))
    assert replay(p, [(20, 1.0, 1)]) == []
    assert replay(AlertPolicy(AlertConfig(raise_after_s=2, min_faces=2)), [(20, 1.0, 2)]) == [(2.0, "raised")]


def test_cooldown_blocks_a_second_alert_then_allows_it():
    p = AlertPolicy(AlertConfig(raise_share=0.5, clear_share=0.3, raise_after_s=2, clear_after_s=2, min_faces=1, cooldown_s=30))
    events = replay(p, [(5, 0.9, 2), (5, 0.0, 2), (10, 0.9, 2), (30, 0.0, 2), (5, 0.9, 2)])
    # raise at 2, clear at 7, cooldown until 37: the burst at 10-20 is ignored; the one at 50 raises at 52
    assert events == [(2.0, "raised"), (7.0, "cleared"), (52.0, "raised")]


def test_the_cooldown_is_said_to_hold_a_new_alert_back_only_while_the_queue_would_raise_one():
    """held_back_s: the seconds until the cooldown lets a new alert be raised, while the share and
    the faces are over the raise thresholds; None otherwise. It only reads: the same timeline as
    above gives the same transitions."""
    p = AlertPolicy(AlertConfig(raise_share=0.5, clear_share=0.3, raise_after_s=2, clear_after_s=2, min_faces=2, cooldown_s=30))
    events, held = [], {}
    for i in range(110):  # the timeline above at 0.5 s steps, with one face only at 25-30 s
        t = i / 2
        share = 0.9 if t < 5 or 10 <= t < 30 or t >= 50 else 0.0
        faces = 1 if 25 <= t < 30 else 2
        if ev := p.update(t, share, faces):
            events.append((t, ev))
        held[t] = p.held_back_s(t, share, faces)
    assert events == [(2.0, "raised"), (7.0, "cleared"), (52.0, "raised")]
    # the cooldown ends at 37 and the raise timer (2 s) starts only then: 39, not 37
    assert {t: s for t, s in held.items() if s is not None} == {t: 39 - t for t in held if 10 <= t < 25}


def test_flicker_inside_the_band_never_clears():
    p = AlertPolicy(AlertConfig(raise_share=0.6, clear_share=0.2, raise_after_s=1, clear_after_s=3, min_faces=1))
    events = replay(p, [(2, 0.8, 2)] + [(1, 0.1, 2), (1, 0.5, 2)] * 10)
    assert events == [(1.0, "raised")]


def test_the_thresholds_are_at_or_above_to_raise_and_below_to_clear():
    """One unhappy face of two is a share of exactly 0.5: raise_share = 0.5 raises on it; a share
    exactly at clear_share is not below it, so it does not clear."""
    p = AlertPolicy(AlertConfig(raise_share=0.5, clear_share=0.25, raise_after_s=1, clear_after_s=1, min_faces=2))
    assert replay(p, [(3, 0.5, 2), (5, 0.25, 4), (2, 0.0, 4)]) == [(1.0, "raised"), (9.0, "cleared")]


def test_each_timer_starts_when_its_own_condition_does():
    """The clear timer starts after the raise, not when the raise timer began: a queue calm
    right after the raise still needs clear_after_s; likewise a new raise after the clear."""
    p = AlertPolicy(AlertConfig(raise_share=0.5, clear_share=0.3, raise_after_s=5, clear_after_s=4, min_faces=1, cooldown_s=0))
    assert replay(p, [(5.5, 0.9, 2), (4.5, 0.0, 2), (6, 0.9, 2)]) == [(5.0, "raised"), (9.5, "cleared"), (15.0, "raised")]


def test_the_cooldown_ends_exactly_cooldown_s_after_the_clear():
    """Clear at 7, cooldown 30 s: the raise timer may start at 37.0 (and held_back_s says so
    until then, not at 37.0 itself)."""
    p = AlertPolicy(AlertConfig(raise_share=0.5, clear_share=0.3, raise_after_s=0, clear_after_s=2, min_faces=1, cooldown_s=30))
    assert replay(p, [(5, 0.9, 2), (5, 0.0, 2)]) == [(0.0, "raised"), (7.0, "cleared")]
    assert p.held_back_s(36.5, 0.9, 2) == pytest.approx(0.5) and p.held_back_s(37.0, 0.9, 2) is None
    assert p.update(36.5, 0.9, 2) is None and p.update(37.0, 0.9, 2) == "raised"


def test_tracker_keeps_ids_and_expires_after_gap():
    tr = Tracker(TrackingConfig(iou_match=0.3, max_gap_s=1.0, smooth_s=0.5, min_hits=2))
    p = np.eye(7, dtype=np.float32)
    a, b = BBox(100, 100, 80, 80), BBox(400, 100, 80, 80)
    assert tr.update(0.0, [a, b], p[[3, 0]]) == []  # not confirmed yet
    seen = tr.update(0.1, [BBox(105, 102, 80, 80), BBox(398, 99, 80, 80)], p[[3, 0]])
    assert sorted(t.id for t in seen) == [1, 2]
    # smoothing: one contrary frame does not flip a track's emotion
    seen = tr.update(0.2, [BBox(108, 104, 80, 80)], p[[5]])
    assert seen[0].id == 1 and LABELS[seen[0].top] == "happy"
    tr.update(1.15, [BBox(110, 104, 80, 80)], p[[3]])  # track 2 unseen for 1.05 s: gone
    assert set(tr.tracks) == {1}
    tr.update(3.0, [BBox(110, 104, 80, 80)], p[[3]])  # track 1 gone too: a new person
    assert set(tr.tracks) == {3}


def test_mood_counts_people_in_the_window_not_frames():
    tr = Tracker(TrackingConfig(min_hits=1, smooth_s=0.0))
    mw = MoodWindow(list(LABELS), MoodConfig(window_s=5, negative=["angry", "sad"], min_confidence=0.5, score="votes",
                                             min_seen_s=0.0))
    p = np.eye(7, dtype=np.float32)
    for i in range(20):  # one angry face seen 20 times, one happy face
        mood = mw.update(i * 0.1, tr.update(i * 0.1, [BBox(0, 0, 50, 50), BBox(300, 0, 50, 50)], p[[0, 3]]))
    assert mood.faces == 2 and mood.negative == 1 and mood.negative_share == 0.5
    assert mood.counts["angry"] == 1 and mood.counts["happy"] == 1
    unsure = np.full((1, 7), 1 / 7, np.float32)
    mw2 = MoodWindow(list(LABELS), MoodConfig(5, ["angry"], 0.5, score="votes", min_seen_s=0.0))
    assert mw2.update(0, Tracker(TrackingConfig(min_hits=1)).update(0, [BBox(0, 0, 9, 9)], unsure)).negative == 0
    assert mw.update(10.0, []).faces == 0  # everyone left the window


@pytest.mark.parametrize("a, b, iou", [((0, 0, 10, 10), (0, 0, 10, 10), 1.0), ((0, 0, 10, 10), (5, 0, 10, 10), 1 / 3),
                                       ((0, 0, 10, 10), (20, 20, 5, 5), 0.0)])
def test_bbox_iou(a, b, iou):
    assert BBox(*a).iou(BBox(*b)) == pytest.approx(iou)


# ---------------------------------------------------------------------------- who counts as a face

NEG = ["angry", "disgust", "fear", "sad"]


def mood_cfg(**kw) -> MoodConfig:
    """A 5-s window, the top-1 vote rule and no seen-guard unless a test asks for them."""
    return MoodConfig(**{"window_s": 5, "negative": NEG, "min_confidence": 0.4, "score": "votes", "min_seen_s": 0.0,
                         "min_seen_share": 0.0, **kw})


def onehot(label: str) -> np.ndarray:
    return np.eye(7, dtype=np.float32)[LABELS.index(label)]


def test_a_detection_without_prediction_follows_its_track_and_keeps_its_mood():
    tr = Tracker(TrackingConfig(min_hits=1, smooth_s=0.0))
    tr.update(0.0, [BBox(100, 100, 80, 80)], [onehot("sad")])
    seen = tr.update(0.2, [BBox(102, 100, 80, 80), BBox(400, 100, 80, 80)], [None, None])
    assert tr.last_ids == [1, 2]
    assert LABELS[seen[0].top] == "sad" and seen[0].classified == 1 and seen[0].hits == 2
    assert seen[1].probs is None  # a new track not yet classified has no mood ...
    mw = MoodWindow(list(LABELS), mood_cfg())
    assert mw.update(0.2, seen).faces == 1  # ... and is not counted


def test_the_scores_votes_expected_and_change():
    p = np.array([0.3, 0.0, 0.0, 0.2, 0.3, 0.2, 0.0], np.float32)  # 50% negative, top class neutral/angry tie
    tr = Tracker(TrackingConfig(min_hits=1, smooth_s=0.0))
    seen = tr.update(0.0, [BBox(0, 0, 50, 50)], [p])
    assert MoodWindow(list(LABELS), mood_cfg(score="expected")).update(0.0, seen).negative == pytest.approx(0.5)
    # change: a face that looks half-negative from the start scores 0, then 1 once it has risen by FULL_RISE
    mw = MoodWindow(list(LABELS), mood_cfg(score="change", min_seen_s=1.0))
    for i in range(6):
        mood = mw.update(i * 0.2, tr.update(i * 0.2, [BBox(0, 0, 50, 50)], [p]))
    assert mood.faces == 1 and mood.negative == 0.0
    seen = tr.update(1.4, [BBox(0, 0, 50, 50)], [onehot("angry")])
    assert mw.update(1.4, seen).negative == 1.0
    # unhappy_above: someone who arrives clearly unhappy counts without having changed
    mw = MoodWindow(list(LABELS), mood_cfg(score="change", unhappy_above=0.9))
    seen = Tracker(TrackingConfig(min_hits=1)).update(0.0, [BBox(0, 0, 50, 50)], [onehot("sad")])
    assert mw.update(0.0, seen).negative == 1.0


def neg_probs(p_negative: float) -> np.ndarray:
    """A prediction with probability p_negative on "sad", the rest on "neutral"."""
    return p_negative * onehot("sad") + (1 - p_negative) * onehot("neutral")


def test_the_baseline_is_a_running_mean_over_calm_time_only():
    b = Baseline(tau_s=10.0)
    b.update(0.0, 0.2, True)
    for i in range(1, 11):  # 10 s at 0.2: the plain mean
        b.update(float(i), 0.2, True)
    assert b.level == pytest.approx(0.2) and b.learned_s == pytest.approx(10.0) and not b.ready
    for i in range(11, 200):  # an alert is raised: the high level is not learned
        b.update(float(i), 0.9, False)
    assert b.level == pytest.approx(0.2) and b.learned_s == pytest.approx(10.0)
    b.update(500.0, 0.9, True)  # after a long gap one step counts as MAX_STEP_S, not 300 s
    assert b.learned_s == pytest.approx(10.0 + MAX_STEP_S) and b.level == pytest.approx(0.2 + 0.7 / 10)
    for i in range(501, 501 + int(BASELINE_WARMUP_S)):  # then an exponential mean with time constant tau_s
        b.update(float(i), 0.5, True)
    assert b.ready and b.level == pytest.approx(0.5, abs=1e-3)


def arrivals(cfg: MoodConfig, usual: float, arrive: float, calm_s: float = 300.0):
    """Two people at `usual` negative probability for calm_s, then they leave and two arrive at
    `arrive`: the negative share 10 s after they arrived, and the camera's learned usual level."""
    mw, tr = MoodWindow(list(LABELS), cfg), Tracker(TrackingConfig(min_hits=1, max_gap_s=0.5))
    boxes = [BBox(0, 0, 60, 60), BBox(300, 0, 60, 60)]
    t, mood = 0.0, None
    for p, until, at in ((usual, calm_s, 0.0), (arrive, calm_s + 10.0, 20.0)):
        t += 2.0  # the first two leave; the newcomers come in a little lower
        while t < until:
            moved = [BBox(b.x, b.y + at, b.w, b.h) for b in boxes]
            mood = mw.update(t, tr.update(t, moved, [neg_probs(p)] * 2))
            t += 0.5
    return mood.negative_share, mw.baseline.level


@pytest.mark.parametrize("usual", [0.1, 0.5])
def test_the_camera_baseline_catches_people_who_arrive_unhappy(usual):
    """People who arrive unhappy never rise, so the change score misses them; the baseline
    compares the queue with this camera's usual level, whatever that level is (a model that
    rates neutral faces half negative, or one that does not)."""
    change = mood_cfg(score="change", min_seen_s=1.0)
    assert arrivals(change, usual, usual + 0.4)[0] == 0.0
    share, learned = arrivals(MoodConfig(**{**change.__dict__, "baseline_rise": 0.8}), usual, usual + 0.4)
    # no alert policy here, so the 10 s after the arrival are learned too (a little: baseline_s is 600 s)
    assert learned == pytest.approx(usual, abs=0.01) and share == pytest.approx(0.4 / 0.8, abs=0.02)
    # a queue as negative as usual stays calm
    assert arrivals(MoodConfig(**{**change.__dict__, "baseline_rise": 0.8}), usual, usual)[0] == 0.0


def test_a_face_counts_only_after_being_seen_steadily():
    mw = MoodWindow(list(LABELS), mood_cfg(min_seen_s=2.0, min_seen_share=0.5))
    tr = Tracker(TrackingConfig(min_hits=1, max_gap_s=5.0))
    faces = []
    for i in range(30):  # 10 fps; detected every other frame at first, then every frame
        boxes = [BBox(0, 0, 50, 50)] if (i % 2 == 0 or i >= 10) else []
        faces.append(mw.update(i * 0.1, tr.update(i * 0.1, boxes, [onehot("sad")] * len(boxes))).faces)
    assert faces[:20] == [0] * 20 and faces[-1] == 1


def test_the_seen_and_vote_guards_count_a_face_at_exactly_their_thresholds():
    """At least min_seen_s, at least min_seen_share of the frames, at least min_confidence sure."""
    mw = MoodWindow(list(LABELS), mood_cfg(min_seen_s=1.0, min_seen_share=0.7, min_confidence=0.5))
    p = 0.5 * onehot("sad") + 0.25 * onehot("neutral") + 0.25 * onehot("happy")
    steady = Track(1, BBox(0, 0, 50, 50), p, first_t_s=0.0, last_t_s=1.0, hits=7, frames=10)
    flickery = Track(2, BBox(300, 0, 50, 50), p, first_t_s=0.0, last_t_s=1.0, hits=6, frames=10)
    mood = mw.update(1.0, [steady, flickery])
    assert mood.faces == 1 and mood.negative == 1.0


def test_the_change_score_is_the_rise_over_0_4_and_never_below_zero():
    """A rise of 0.4 is a fully unhappy face (README), so a rise of 0.2 scores 0.5; a face calmer
    than its own level scores 0, so it does not cancel out another face's rise."""
    tr = Tracker(TrackingConfig(min_hits=1, smooth_s=0.0))
    mw = MoodWindow(list(LABELS), mood_cfg(score="change", min_seen_s=1.0))
    boxes = [BBox(0, 0, 50, 50), BBox(300, 0, 50, 50)]
    for i in range(6):  # both at 0.3 until they count
        mw.update(i * 0.2, tr.update(i * 0.2, boxes, [neg_probs(0.3)] * 2))
    mood = mw.update(1.2, tr.update(1.2, boxes, [neg_probs(0.5), neg_probs(0.0)]))
    assert mood.faces == 2 and mood.negative == pytest.approx(0.5, abs=1e-5)


def test_a_face_missed_in_a_frame_before_it_counts_keeps_its_own_level_with_refind_off():
    """keep_s (the tracker's refind_s) may be 0: the own level is still kept for window_s, so a
    face the detector misses for a moment is compared with how it looked when it arrived."""
    mw = MoodWindow(list(LABELS), mood_cfg(score="change", min_seen_s=1.0), keep_s=0.0)
    face = Track(1, BBox(0, 0, 50, 50), neg_probs(0.0), first_t_s=0.0, last_t_s=0.0)
    mw.update(0.0, [face])
    mw.update(0.5, [])  # not detected in this frame
    face.probs, face.last_t_s = neg_probs(0.4), 1.0
    mood = mw.update(1.0, [face])  # own level (0.0 + 0.4) / 2: a rise of 0.2
    assert mood.faces == 1 and mood.negative == pytest.approx(0.5, abs=1e-5)


def test_the_baseline_is_used_after_2_minutes_of_calm_queue():
    """docs/alerts.md: the camera's usual level is used after 2 min of calm queue time."""
    b = Baseline(tau_s=600.0)
    for i in range(120):
        b.update(float(i), 0.2, True)
    assert b.learned_s == 119.0 and not b.ready
    b.update(120.0, 0.2, True)
    assert b.learned_s == 120.0 and b.ready

def test_the_own_level_is_the_first_seconds_and_stays_so_while_the_face_is_followed():
    """A face that turns unhappy and stays so keeps scoring 1, also after a stretch in which it
    was detected too seldom to count: its own level is how it looked until it first counted,
    not a running mean that would follow it."""
    mw = MoodWindow(list(LABELS), mood_cfg(score="change", min_seen_s=1.0, min_seen_share=0.7))
    face = Track(1, BBox(0, 0, 50, 50), None, first_t_s=0.0, last_t_s=0.0)

    def seen(t, p_negative, share=1.0):
        face.probs, face.last_t_s, face.hits, face.frames = neg_probs(p_negative), t, round(share * 10), 10
        return mw.update(t, [face])

    for i in range(6):  # counts from 1 s on, at its own level 0.1
        seen(i * 0.2, 0.1)
    for i in range(6, 16):  # turns unhappy, and is detected in half the frames for a while
        seen(i * 0.2, 0.5, share=0.5)
    for i in range(16, 60):
        mood = seen(i * 0.2, 0.5)
    assert mood.faces == 1 and mood.negative == pytest.approx(1.0)


def test_a_face_and_its_own_level_stay_exactly_window_s_after_it_was_last_seen():
    mw = MoodWindow(list(LABELS), mood_cfg(score="change", min_seen_s=1.0))  # window_s 5
    counted = Track(1, BBox(0, 0, 50, 50), neg_probs(0.0), first_t_s=-1.0, last_t_s=0.0)
    arriving = Track(2, BBox(300, 0, 50, 50), neg_probs(0.0), first_t_s=0.0, last_t_s=0.0)
    assert mw.update(0.0, [counted, arriving]).faces == 1
    assert mw.update(5.0, []).faces == 1
    arriving.probs, arriving.last_t_s = neg_probs(0.4), 5.2
    mood = mw.update(5.2, [arriving])  # own level (0.0 + 0.4) / 2: a rise of 0.2
    assert mood.faces == 1 and mood.negative == pytest.approx(0.5, abs=1e-5)


def test_the_camera_baseline_waits_for_its_warm_up_adds_to_the_own_scores_caps_at_1_and_learns_when_calm():
    mw = MoodWindow(list(LABELS), mood_cfg(score="change", baseline_rise=0.2))
    faces = {k: Track(k, BBox(300 * k, 0, 50, 50), None, first_t_s=0.0, last_t_s=0.0) for k in (1, 2, 3, 4)}

    def frame(t, p_negative, calm=True):
        for k, p in p_negative.items():
            faces[k].probs, faces[k].last_t_s = neg_probs(p), t
        return mw.update(t, [faces[k] for k in p_negative], calm)

    # before the usual level is learned, a queue at 0.3 is not "0.3 above" anything
    assert frame(0.0, {1: 0.3, 2: 0.3}).negative == 0.0
    for t in range(1, 121):
        frame(float(t), {1: 0.3, 2: 0.3})
    assert mw.baseline.ready and mw.baseline.level == pytest.approx(0.3)
    # one face rose by 0.4 (score 1), one calmed down: 0.05 above usual adds nothing to that 1
    assert frame(121.0, {1: 0.7, 2: 0.0}, calm=False).negative == pytest.approx(1.0)
    # two people who arrive at 0.9, three times baseline_rise above usual: a share of 1, not 3
    assert frame(130.0, {3: 0.9, 4: 0.9}, calm=False).negative_share == pytest.approx(1.0)
    assert mw.baseline.level == pytest.approx(0.3, abs=1e-6)  # an alert raised: nothing learned

def flicker_frames(n: int, rate: float, burst: int, seed: int):
    """Frames in which a flickering spot is detected: bursts of `burst` frames, `rate` of all frames."""
    rng = np.random.default_rng(seed)
    on = np.zeros(n, bool)
    for start in np.flatnonzero(rng.random(n) < rate / burst):
        on[start : start + burst] = True
    return on


def queue_with_flicker(cfg, rate=0.02, burst=1, calm_faces=2, seconds=300, fps=5, seed=0):
    """Calm people (happy) plus one flickering 'angry' detection; returns the transitions."""
    from edge.pipeline.core import QueueMonitor

    mon = QueueMonitor(cfg, list(LABELS))
    people = [BBox(60 + 200 * k, 100, 90, 100) for k in range(calm_faces)]
    ghost = BBox(500, 300, 50, 55)
    out = []
    for i, flick in enumerate(flicker_frames(seconds * fps, rate, burst, seed)):
        boxes = people + ([ghost] if flick else [])
        probs = [onehot("happy")] * len(people) + ([onehot("angry")] if flick else [])
        _, _, tr = mon.update(i / fps, boxes, probs)
        if tr:
            out.append(tr)
    return out


ANY_THRESHOLD = [dict(raise_share=rs, min_faces=mf, raise_after_s=ra, clear_share=0.0)
                 for rs in (0.01, 0.2, 0.34, 0.5, 1.0) for mf in (1, 2) for ra in (0.0, 2.0)]


@pytest.mark.parametrize("score", ["votes", "expected", "change", "baseline"])
@pytest.mark.parametrize("burst, calm_faces", [  # a burst beside calm people by default; every shape with the slow tests
    *(pytest.param(b, c, marks=pytest.mark.slow) for b, c in [(1, 0), (1, 2), (3, 0), (5, 0)]), (3, 2)])
def test_one_flickering_detection_never_pages_anyone_at_any_threshold(score, burst, calm_faces):
    """A spot detected in 2% of frames (singly, or in bursts of 3-5 that pass min_hits), always
    'angry', alone or beside calm people: with the default tracking and mood settings it never
    becomes a face, so no alert threshold can raise."""
    from edge.config import load_config

    for alert in ANY_THRESHOLD:
        base = {"mood.score": "change", "mood.baseline_rise": 0.2} if score == "baseline" else {"mood.score": score}
        cfg = load_config(None, {**base, "mood.unhappy_above": 0.5,
                                 **{f"alert.{k}": v for k, v in alert.items()}})
        assert queue_with_flicker(cfg, burst=burst, calm_faces=calm_faces) == [], (alert, score)


def test_without_the_guard_the_same_flicker_does_page():
    """The test above can fail: with the seen-guard off, the flicker alone raises."""
    from edge.config import load_config

    cfg = load_config(None, {"mood.min_seen_s": 0.0, "mood.min_seen_share": 0.0, "alert.min_faces": 1,
                             "schedule.detect_hz": 0.0, "schedule.classify_hz": 0.0,
                             "alert.raise_share": 0.3, "alert.clear_share": 0.0, "alert.raise_after_s": 0.0})
    assert "raised" in queue_with_flicker(cfg, burst=3, calm_faces=2)


def test_the_next_person_at_the_same_spot_starts_a_new_track():
    """A gap shorter than max_gap_s: the same look continues the track (an occlusion), a
    different look starts a new one (someone else took the spot); without looks they merge."""
    rng = np.random.default_rng(0)
    a, b = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 324)))
    spot = BBox(200, 100, 80, 88)

    def ids(second_look, min_look_similarity=0.5):
        tr = Tracker(TrackingConfig(max_gap_s=3.0, min_hits=1, min_look_similarity=min_look_similarity))
        for i in range(10):
            tr.update(i * 0.2, [spot], [None], [a])
        tr.update(3.6, [spot], [None], [second_look])  # unseen for 1.8 s
        return tr.last_ids  # the track the last detection went to

    assert ids(a) == [1]
    assert ids(b) == [2]
    assert ids(b, min_look_similarity=0.0) == [1]
    noisy_a = a + 0.3 * b
    assert ids(noisy_a / np.linalg.norm(noisy_a)) == [1]


def test_a_track_counts_as_a_person_once_confirmed_and_classified():
    tr = Tracker(TrackingConfig(min_hits=2))
    boxes = [BBox(0, 0, 50, 50), BBox(300, 0, 50, 50)]
    tr.update(0.0, boxes, [onehot("sad"), None])
    assert Tracker.counted(tr.seen) == []  # one detection of min_hits 2
    tr.update(0.2, boxes, [None, None])
    assert [t.id for t in Tracker.counted(tr.seen)] == [1]  # the other has no prediction yet

def test_a_prediction_stamped_before_the_last_one_does_not_move_the_smoothed_state():
    """A video whose timestamps step back: the weight 1 - exp(-dt / smooth_s) of a negative dt
    would be negative, and the probabilities with it."""
    tr = Tracker(TrackingConfig(min_hits=1, smooth_s=0.5))
    tr.update(1.0, [BBox(0, 0, 50, 50)], [onehot("happy")])
    seen = tr.update(0.5, [BBox(0, 0, 50, 50)], [onehot("sad")])
    assert np.allclose(seen[0].probs, onehot("happy"))

def test_each_detection_goes_to_the_track_it_overlaps_most_and_each_track_to_one_detection():
    """Greedy matching, best overlaps first: two people side by side keep their tracks; a second
    detection on one person starts a new track; a box that overlaps no track starts a new one;
    a fast mover whose centre lies inside the track's box continues it."""
    def ids(first, then, iou_match=0.3):
        tr = Tracker(TrackingConfig(iou_match=iou_match, min_hits=1))
        tr.update(0.0, first, [None] * len(first))
        tr.update(0.2, then, [None] * len(then))
        return tr.last_ids

    a, b = BBox(100, 100, 80, 80), BBox(160, 100, 80, 80)
    # side by side: each detection overlaps its own person (IoU 0.88) and the other a little (0.10, 0.18)
    assert ids([a, b], [BBox(105, 100, 80, 80), BBox(165, 100, 80, 80)], iou_match=0.1) == [1, 2]
    assert ids([a], [BBox(102, 100, 80, 80), BBox(130, 100, 80, 80)]) == [1, 2]  # IoU 0.95 and 0.45
    assert ids([a], [BBox(400, 100, 80, 80)]) == [2]  # no overlap
    assert ids([a], [BBox(140, 110, 30, 30)]) == [1]  # IoU 0.14, its centre inside the track's box
    assert ids([a], [BBox(170, 110, 20, 20)]) == [1]  # its centre on the box's edge counts as inside
    assert ids([BBox(0, 0, 10, 10)], [BBox(6, 0, 10, 10)], iou_match=0.25) == [1]  # IoU exactly iou_match


def test_the_look_is_checked_from_a_gap_of_1_s_and_min_look_similarity_alike_continues():
    """README: after a gap of 1 s or more a detection continues a track only if its look matches."""
    spot = BBox(200, 100, 80, 88)
    a, other, half = np.eye(4)[0], np.eye(4)[1], np.full(4, 0.5)  # a @ half is 0.5 exactly

    def ids(gap_s, look, min_look_similarity=0.5):
        tr = Tracker(TrackingConfig(max_gap_s=3.0, min_hits=1, min_look_similarity=min_look_similarity))
        tr.update(0.0, [spot], [None], [a])
        tr.update(gap_s, [spot], [None], [look])
        return tr.last_ids

    assert ids(0.75, other) == [1]  # shorter gaps are not checked
    assert ids(1.0, other) == [2]
    assert ids(1.0, half) == [1]
    assert ids(1.0, -a, min_look_similarity=0.0) == [1]  # 0 is off: looks (mean removed) can be opposite

def test_looks_tell_faces_apart_through_camera_jitter(fer_faces):
    """preprocess.look on real faces: the same face in two jittered camera views is more alike
    than two different faces, for most faces."""
    import cv2

    from benchmarks.face_bank import Jitter, jitter_face
    from edge.pipeline.preprocess import look

    rng = np.random.default_rng(0)
    faces = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(fer_faces.glob("*/*.jpg"))[:60]]
    views = [[look(jitter_face(f, 64, Jitter(), rng)) for _ in range(2)] for f in faces]
    same = np.array([v[0] @ v[1] for v in views])
    other = np.array([views[i][0] @ views[(i + 1) % len(views)][1] for i in range(len(views))])
    assert np.median(same) > 0.6 > 0.3 > np.median(other)
    assert np.mean(same > 0.5) > 0.8 and np.mean(other > 0.5) < 0.1


def hidden_and_back(back_look, refind_s=20.0, hidden_s=8.0, near=True):
    """A person seen for 4 s (look a), hidden for hidden_s (longer than max_gap_s), then a face
    at the same spot (or across the frame) with back_look for 2 s: the tracker's ids of the
    returning face over those 2 s, and the tracker."""
    spot, elsewhere = BBox(200, 100, 80, 88), BBox(480, 300, 80, 88)
    rng = np.random.default_rng(1)
    a = rng.normal(size=324)
    a /= np.linalg.norm(a)
    tr = Tracker(TrackingConfig(max_gap_s=3.0, min_hits=1, refind_s=refind_s, refind_similarity=0.7))
    for i in range(20):
        tr.update(i * 0.2, [spot], [None], [a])
    ids = []
    for i in range(10):
        tr.update(3.8 + hidden_s + i * 0.2, [spot if near else elsewhere], [None], [back_look(a)])
        ids += tr.last_ids
    return ids, tr


def test_a_person_hidden_longer_than_max_gap_keeps_their_track_when_they_come_back(caplog):
    """Hidden for 8 s (their phone, someone in front): the face that comes back at the same spot
    looking like them is a new track for REFIND_AFTER_S, then continues the old one; someone
    else there, the same person across the frame, or after refind_s stays a new track."""
    other = np.random.default_rng(2).normal(size=324)
    other /= np.linalg.norm(other)
    with caplog.at_level("DEBUG", logger="edge.tracking"):
        ids, tr = hidden_and_back(lambda a: a)
    assert "track #2 is #1 back after 8.0 s out of sight (looks 1.00 alike)" in caplog.text  # edge run -v shows it
    settle = 5  # over their first second back (README), at 0.2-s frames
    assert ids[:settle] == [2] * settle and ids[settle:] == [1] * (10 - settle)
    assert tr.tracks[1].first_t_s == 0.0 and 2 not in tr.tracks and not tr.lost
    assert tr.tracks[1].hits == tr.tracks[1].frames == 30  # detected in every frame it was followed
    assert hidden_and_back(lambda a: other)[0] == [2] * 10  # someone else took the spot
    assert hidden_and_back(lambda a: a, near=False)[0] == [2] * 10  # a look-alike elsewhere
    assert hidden_and_back(lambda a: a, hidden_s=25.0)[0] == [2] * 10  # gone too long
    assert hidden_and_back(lambda a: a, refind_s=0.0)[0] == [2] * 10  # refind off
    assert hidden_and_back(lambda a: a, refind_s=8.5)[0] == [2] * 10  # gone for good during its first second back


@pytest.mark.parametrize("classified_back", [False, True])
def test_a_person_back_keeps_their_mood_until_classified_again(classified_back):
    """The refound track takes the newcomer's prediction if it has one, else keeps the person's
    last one (still in the mood); its count of predictions adds up (the schedule's turns)."""
    a, spot = np.eye(4)[0], BBox(200, 100, 80, 88)
    tr = Tracker(TrackingConfig(max_gap_s=3.0, min_hits=1, refind_s=20.0, smooth_s=0.0))
    for i in range(5):
        tr.update(i * 0.2, [spot], [onehot("sad")], [a])
    for i in range(6):  # back after 4.2 s; continues track 1 after its first second
        tr.update(5.0 + i * 0.2, [spot], [onehot("happy") if classified_back and i == 0 else None], [a])
    person = tr.tracks[1]
    assert tr.last_ids == [1] and LABELS[person.top] == ("happy" if classified_back else "sad")
    assert person.classified == 5 + classified_back


def test_one_odd_look_does_not_change_who_a_track_looks_like():
    tr = Tracker(TrackingConfig(min_hits=1))
    a, b = np.eye(4)[0], np.eye(4)[1]
    tr.update(0.0, [BBox(0, 0, 50, 50)], [None], [a])
    tr.update(0.2, [BBox(0, 0, 50, 50)], [None], [b])
    assert tr.tracks[1].look @ a > tr.tracks[1].look @ b > 0

def test_someone_back_a_little_to_the_side_is_near_where_they_were():
    """Near a lost track: overlapping its last box (IoU >= iou_match), or the centre inside it."""
    a = np.eye(4)[0]
    tr = Tracker(TrackingConfig(max_gap_s=3.0, min_hits=1, refind_s=20.0))
    for i in range(5):
        tr.update(i * 0.2, [BBox(200, 100, 80, 88)], [None], [a])
    for i in range(6):  # IoU 0.32 with where they were, the centre 1 px outside that box
        tr.update(5.0 + i * 0.2, [BBox(241, 100, 80, 88)], [None], [a])
    assert tr.last_ids == [1]

def test_only_a_confirmed_track_is_kept_aside_for_refind():
    """With min_hits above 1, a detection that never became a person is not someone to come back."""
    a = np.eye(4)[0]
    tr = Tracker(TrackingConfig(max_gap_s=3.0, min_hits=3, refind_s=20.0))
    tr.update(0.0, [BBox(200, 100, 80, 88)], [None], [a])
    for i in range(10):
        tr.update(5.0 + i * 0.2, [BBox(200, 100, 80, 88)], [None], [a])
    assert tr.last_ids == [2] and not tr.lost


def test_a_person_who_comes_back_is_compared_with_their_own_level():
    """Score "change": a person calm for their first seconds, hidden for 8 s, back unhappy, is
    unhappy (their own calm level is remembered); without refind they would count as calm,
    their unhappy look taken for their own level."""
    from edge.config import load_config
    from edge.pipeline.core import QueueMonitor

    a = np.random.default_rng(1).normal(size=324)
    a /= np.linalg.norm(a)
    spot = BBox(200, 100, 80, 88)

    def share_after_return(refind_s):
        cfg = load_config(None, {"tracking.refind_s": refind_s, "schedule.detect_hz": 0.0,
                                 "schedule.classify_hz": 0.0, "mood.score": "change"})
        mon = QueueMonitor(cfg, list(LABELS))
        t = 0.0
        for p, until in ((0.1, 10.0), (None, 18.0), (0.8, 26.0)):  # calm, hidden, back unhappy
            while t < until:
                if p is None:
                    mon.update(t, [], [])
                else:
                    mon.update(t, [spot], [neg_probs(p)], [a])
                t += 0.2
        return mon.share

    assert share_after_return(20.0) == pytest.approx(1.0)
    assert share_after_return(0.0) == 0.0


def test_a_newcomer_taken_for_someone_back_is_not_counted_twice():
    """With mood.min_seen_s under REFIND_AFTER_S a face counts before the tracker knows it is
    someone back; once it does, only the person's own track is in the mood."""
    from edge.config import load_config
    from edge.pipeline.core import QueueMonitor

    a = np.random.default_rng(1).normal(size=324)
    a /= np.linalg.norm(a)
    spot = BBox(200, 100, 80, 88)
    cfg = load_config(None, {"mood.min_seen_s": 0.0, "schedule.detect_hz": 0.0, "schedule.classify_hz": 0.0})
    mon = QueueMonitor(cfg, list(LABELS))
    faces, t = [], 0.0
    for seen, until in ((True, 4.0), (False, 12.0), (True, 15.0)):
        while t < until:
            faces.append(mon.update(t, [spot] if seen else [], [neg_probs(0.1)] * seen, [a] * seen)[1].faces)
            t += 0.2
    assert max(faces) == 1 and faces[-1] == 1 and mon.tracker.tracks.keys() == {1}


def test_people_are_counted_without_keeping_every_id():
    """edge run's people count over months: 500 people one after another at one spot, two of
    them hidden for 8 s and back (the second while the ids remembered are thinned out: a lost
    person's id is kept): 500 counted, and the ids remembered stay few."""
    from edge.pipeline.tracking import PeopleCount

    rng = np.random.default_rng(3)
    tr, people, t = Tracker(TrackingConfig(max_gap_s=3.0, min_hits=1)), PeopleCount(), 0.0
    spot = BBox(200, 100, 80, 88)
    most = 0
    for person in range(500):
        look = rng.normal(size=324)
        look /= np.linalg.norm(look)
        hidden = (t + 2.0, t + 10.0) if person in (7, 68) else (0.0, 0.0)
        end = t + (14.0 if person in (7, 68) else 4.0)
        while t < end:
            boxes = [] if hidden[0] <= t < hidden[1] else [spot]
            tracks = tr.update(t, boxes, [None] * len(boxes), [look] * len(boxes))
            people.update(tr, tracks, tr.refound)
            most = max(most, len(people._known))
            t += 0.2
        t += 5.0  # the spot stays empty: the next person is a new track
    assert people.count == 500 and most < 100


def test_someone_back_before_their_new_track_was_confirmed_is_still_counted_once():
    from edge.pipeline.tracking import PeopleCount

    a, spot = np.eye(4)[0], BBox(200, 100, 80, 88)
    tr, people = Tracker(TrackingConfig(max_gap_s=3.0, min_hits=10, refind_s=20.0)), PeopleCount()
    for t in [i * 0.2 for i in range(20)] + [12.0 + i * 0.2 for i in range(10)]:  # hidden for 8 s
        tracks = tr.update(t, [spot], [None], [a])
        people.update(tr, tracks, tr.refound)
    assert tr.last_ids == [1] and people.count == 1
