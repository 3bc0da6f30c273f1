"""The time-based logic, replayed on synthetic timelines (no clocks, no video)."""

import numpy as np
import pytest

from edge.config import AlertConfig, MoodConfig, TrackingConfig
from edge.pipeline.alerts import AlertPolicy
from edge.pipeline.geometry import BBox
from edge.labels import LABELS
from edge.pipeline.mood import MoodWindow
from edge.pipeline.tracking import Tracker


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


def test_flicker_inside_the_band_never_clears():
    p = AlertPolicy(AlertConfig(raise_share=0.6, clear_share=0.2, raise_after_s=1, clear_after_s=3, min_faces=1))
    events = replay(p, [(2, 0.8, 2)] + [(1, 0.1, 2), (1, 0.5, 2)] * 10)
    assert events == [(1.0, "raised")]


def test_tracker_keeps_ids_and_expires_after_gap():
    tr = Tracker(TrackingConfig(iou_match=0.3, max_gap_s=1.0, ema_alpha=0.5, min_hits=2))
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
    tr = Tracker(TrackingConfig(min_hits=1, ema_alpha=1.0))
    mw = MoodWindow(list(LABELS), MoodConfig(window_s=5, negative=["angry", "sad"], min_confidence=0.5))
    p = np.eye(7, dtype=np.float32)
    for i in range(20):  # one angry face seen 20 times, one happy face
        mood = mw.update(i * 0.1, tr.update(i * 0.1, [BBox(0, 0, 50, 50), BBox(300, 0, 50, 50)], p[[0, 3]]))
    assert mood.faces == 2 and mood.negative == 1 and mood.negative_share == 0.5
    assert mood.counts["angry"] == 1 and mood.counts["happy"] == 1
    unsure = np.full((1, 7), 1 / 7, np.float32)
    mw2 = MoodWindow(list(LABELS), MoodConfig(5, ["angry"], 0.5))
    assert mw2.update(0, Tracker(TrackingConfig(min_hits=1)).update(0, [BBox(0, 0, 9, 9)], unsure)).negative == 0
    assert mw.update(10.0, []).faces == 0  # everyone left the window


@pytest.mark.parametrize("a, b, iou", [((0, 0, 10, 10), (0, 0, 10, 10), 1.0), ((0, 0, 10, 10), (5, 0, 10, 10), 1 / 3),
                                       ((0, 0, 10, 10), (20, 20, 5, 5), 0.0)])
def test_bbox_iou(a, b, iou):
    assert BBox(*a).iou(BBox(*b)) == pytest.approx(iou)
