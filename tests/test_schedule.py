"""The compute budget: the classification/detection schedule, fixed batch slots, MAC counting."""

import dataclasses
import math

import numpy as np
import pytest

from edge.card import ModelCard
from edge.config import ConfigError, ScheduleConfig, TrackingConfig, load_config
from edge.labels import LABELS
from edge.pipeline.detectors.base import Detection, FaceDetector
from edge.pipeline.geometry import BBox
from edge.pipeline.schedule import Schedule
from edge.pipeline.sources import Frame
from edge.pipeline.tracking import Track, Tracker

FPS = 15.0


def track(tid, classified_t_s):
    return Track(tid, BBox(0, 0, 10, 10), None, 0.0, 0.0, classified_t_s=classified_t_s)


def test_new_tracks_jump_the_queue_then_the_longest_waiting_go_first():
    s = Schedule(ScheduleConfig(classify_hz=2.0, classify_max_per_frame=2))
    tracks = [track(1, 0.1), track(2, None), track(3, 0.0), track(4, 0.9)]
    assert s.due(1.0, tracks) == [1, 2]  # the new one, then the oldest classification
    assert Schedule(ScheduleConfig(classify_hz=2.0, classify_max_per_frame=0)).due(1.0, tracks) == [1, 2, 0]
    assert s.due(0.3, [track(1, 0.0)]) == []  # not due for another 0.2 s


def test_schedule_off_classifies_every_face_in_every_frame():
    s = Schedule(ScheduleConfig(classify_hz=0.0, classify_max_per_frame=2))
    assert s.due(0.0, [track(i, 0.0) for i in range(5)]) == [0, 1, 2, 3, 4]


def test_a_frame_without_a_prediction_is_not_evidence():
    tr = Tracker(TrackingConfig(min_hits=2, smooth_s=0.5))
    sad, happy = np.eye(7, dtype=np.float32)[5], np.eye(7, dtype=np.float32)[3]
    box = BBox(10, 10, 50, 50)
    assert tr.update(0.0, [box], [sad]) == []  # not confirmed yet
    seen = tr.update(0.1, [box], [None])  # seen, not classified: still a sad person
    assert [t.id for t in seen] == [1] and seen[0].top == 5 and seen[0].probs[5] == 1.0
    seen = tr.update(0.2, [box], [happy])
    a = 1 - math.exp(-0.2 / 0.5)  # one step weighed by the 0.2 s since the last prediction
    assert np.allclose(seen[0].probs[[3, 5]], [a, 1 - a])
    # a new track that was never classified has no mood to count
    assert [t.id for t in tr.update(0.3, [box, BBox(300, 300, 50, 50)], [None, None])] == [1]


def test_the_detector_rate_holds_at_any_camera_fps():
    for fps, every in ((15, 3), (30, 6), (5, 1), (10, 2)):
        s, ran = Schedule(ScheduleConfig(detect_hz=5.0)), []
        for i in range(int(3 * fps)):
            if s.detect_now(i / fps):
                s.detected(i / fps)
                ran.append(i)
        assert set(np.diff(ran).tolist()) == {every}, fps
    off = Schedule(ScheduleConfig.every_frame())
    assert off.detect_now(0.0) and (off.detected(0.0) or off.detect_now(0.01))


def test_smoothing_runs_in_seconds_whatever_the_rate_of_predictions():
    """Four predictions at 15 fps and one scheduled prediction 4/15 s later leave the same state."""
    sad, happy = np.eye(7, dtype=np.float32)[5], np.eye(7, dtype=np.float32)[3]
    box = BBox(10, 10, 50, 50)
    tr, scheduled = Tracker(TrackingConfig(smooth_s=0.5)), Tracker(TrackingConfig(smooth_s=0.5))
    per_frame, sch = tr.update(0.0, [box], [sad])[0], scheduled.update(0.0, [box], [sad])[0]
    for i in range(1, 5):
        tr.update(i / 15, [box], [happy])
    scheduled.update(4 / 15, [box], [None])
    scheduled.observe(sch, 4 / 15, happy)
    assert np.allclose(sch.probs, per_frame.probs) and sch.probs[3] == pytest.approx(1 - math.exp(-(4 / 15) / 0.5))
    off = Tracker(TrackingConfig(smooth_s=0.0))  # no smoothing: the latest prediction
    t = off.update(0.0, [box], [sad])[0]
    off.update(0.1, [box], [happy])
    assert np.allclose(t.probs, happy)


def test_a_prediction_that_is_not_a_number_is_left_out_said_once(caplog):
    """One NaN used to stay in the smoothed state (and the mood and alert) for the person's stay."""
    sad, nan = np.eye(7, dtype=np.float32)[5], np.full(7, np.nan, np.float32)
    box = BBox(10, 10, 50, 50)
    tracker = Tracker(TrackingConfig(smooth_s=0.5))
    tr = tracker.update(0.0, [box], [sad])[0]
    for i in range(1, 4):
        tracker.update(i / 15, [box], [nan if i < 3 else np.where(np.arange(7) == 0, np.inf, 0).astype(np.float32)])
    assert np.array_equal(tr.probs, sad) and tr.classified == 1
    assert len([r for r in caplog.records if "not a number" in r.getMessage()]) == 1


def test_schedule_config_is_strict():
    with pytest.raises(ConfigError, match="schedule.detect_hz"):
        load_config(None, {"schedule.detect_hz": -1.0})
    # slower than tracks last (max_gap_s 3 s): every track would end between detector runs
    with pytest.raises(ConfigError, match=r"schedule\.detect_hz.*above 1 / tracking\.max_gap_s = 0\.33"):
        load_config(None, {"schedule.detect_hz": 0.3})
    assert load_config(None, {"schedule.detect_hz": 0.3, "tracking.max_gap_s": 5.0}).schedule.detect_hz == 0.3
    with pytest.raises(ConfigError, match="schedule.classify_hz"):
        load_config(None, {"schedule.classify_hz": -1.0})


class CountingDetector(FaceDetector):
    """A detector we own for tests: `find(frame)` gives the faces; calls are counted."""

    key = "blazeface"

    def __init__(self, find):
        self.calls, self.find = 0, find

    def detect(self, frame):
        self.calls += 1
        return self.find(frame)


def still_faces(frame):
    """Four faces that do not move."""
    return [Detection(BBox(40 + 150 * i, 100, 110, 120), 0.9) for i in range(4)]


def bright_square(frame):
    """The bright square in whatever window the detector is given."""
    ys, xs = np.nonzero(frame[..., 0] > 128)
    if not len(xs):
        return []
    return [Detection(BBox(xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1), 0.9)]


def bright_squares(frame):
    """Each bright square in the window the detector is given; a whole square scores higher than
    a part of one cut by a window's edge, as a real detector's would."""
    import cv2

    n, _, stats, _ = cv2.connectedComponentsWithStats((frame[..., 0] > 128).astype(np.uint8))
    return [Detection(BBox(x, y, w, h), 0.5 + w * h / 1e5) for x, y, w, h, _ in stats[1:n]]


@pytest.fixture(scope="module")
def shipped_classifier():
    from edge.models import default_model_path
    from edge.pipeline.classifier import Classifier
    from edge.errors import UserError

    try:
        return Classifier(default_model_path())
    except UserError as exc:
        pytest.skip(f"needs the shipped default model: {exc}")


def run_frames(cfg, clf, seconds=4.0):
    from edge.pipeline.core import Pipeline

    det = CountingDetector(still_faces)
    pipe = Pipeline(cfg, clf, det)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    results, classified_at = [], {}  # track id -> times it was classified (tracks are live objects)
    for i in range(int(seconds * FPS)):
        results.append(pipe.process(Frame(image, i / FPS, i)))
        for t in results[-1].tracks:
            classified_at.setdefault(t.id, set()).add(t.classified_t_s)
    return results, det, classified_at


def test_each_face_is_classified_at_the_rate_within_the_frame_budget(shipped_classifier):
    cfg = load_config(None, {"schedule.classify_hz": 2.0, "schedule.classify_max_per_frame": 2,
                             "schedule.detect_hz": 5.0})
    results, det, when = run_frames(cfg, shipped_classifier)
    assert det.calls == len(results) // 3  # 5 Hz at 15 fps: the detector on every third frame only
    assert max(r.classified for r in results) == 2
    assert all(r.classified == 0 for r in results if not r.detected)
    assert len(when) == 4
    for times in when.values():
        gaps = np.diff(sorted(times))
        # at least the period apart; late by at most two detector frames (the per-frame cap)
        assert len(gaps) >= 4 and gaps.min() >= 0.5 - 1e-6 and gaps.max() <= 0.5 + 2 * 3 / FPS + 1e-6
    # carried frames report the same people as detector frames
    assert {len(r.tracks) for r in results[10:]} == {4}
    per_frame, _, _ = run_frames(dataclasses.replace(
        cfg, schedule=ScheduleConfig.every_frame()), shipped_classifier)
    work = sum(r.classified for r in per_frame) / sum(r.classified for r in results)
    assert work >= 5, work


def test_batches_are_padded_to_fixed_slots_with_the_same_answers(shipped_classifier):
    clf = shipped_classifier
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 255, (9, clf.card.input_size, clf.card.input_size), dtype=np.uint8)
    one_by_one = np.concatenate([clf.raw_probs(c) for c in crops])
    for n in range(1, 10):
        assert np.allclose(clf.raw_probs(crops[:n]), one_by_one[:n], atol=1e-6)
    assert set(clf._slots) == {1, 2, 4, 8}


def test_a_mirror_flag_sees_that_image_only_and_the_two_average_to_flip_averaging(shipped_classifier):
    from edge.pipeline.classifier import apply_temperature

    clf = shipped_classifier
    assert clf.flip_average  # the shipped card asks for flip averaging
    rng = np.random.default_rng(2)
    crops = rng.integers(0, 255, (3, clf.card.input_size, clf.card.input_size), dtype=np.uint8)
    plain, mirrored = clf.raw_probs(crops), clf.raw_probs(crops[:, :, ::-1])
    calibrated = lambda p: apply_temperature(p, clf.temperature, clf.prob_floor)  # noqa: E731
    got = clf.predict(crops, [False, True, False])
    assert np.allclose(got, calibrated(np.stack([plain[0], mirrored[1], plain[2]])), atol=1e-6)
    assert np.allclose(clf.predict(crops), calibrated((plain + mirrored) / 2), atol=1e-6)
    with pytest.raises(ValueError, match="one flag per crop"):
        clf.predict(crops, [True])


def test_the_mirror_image_is_classified_only_for_faces_the_model_is_unsure_of(shipped_classifier):
    from edge.pipeline.classifier import apply_temperature

    clf = shipped_classifier
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 255, (6, clf.card.input_size, clf.card.input_size), dtype=np.uint8)
    plain, mirrored = clf.raw_probs(crops), clf.raw_probs(crops[:, :, ::-1])
    calibrated = lambda p: apply_temperature(p, clf.temperature, clf.prob_floor)  # noqa: E731
    sureness = calibrated(plain).max(axis=1)
    below = float(np.median(sureness))  # half the crops sure enough, half not
    unsure = sureness < below
    before = clf.images_invoked
    got = clf.predict(crops, flip_below=below)
    assert clf.images_invoked - before == len(crops) + unsure.sum()  # mirror images only for the unsure
    want = np.where(unsure[:, None], calibrated((plain + mirrored) / 2), calibrated(plain))
    assert np.allclose(got, want, atol=1e-6)
    assert np.allclose(clf.predict(crops, flip_below=1.0), calibrated((plain + mirrored) / 2), atol=1e-6)
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="flip_below"):
            load_config(None, {"schedule.flip_below": bad})


@pytest.mark.parametrize("in_turn", [True, False])
def test_each_track_sees_its_face_and_its_mirror_image_in_turn(in_turn):
    from edge.pipeline.core import QueueMonitor

    cfg = load_config(None, {"schedule.classify_hz": 2.0, "schedule.detect_hz": 5.0,
                             "schedule.flip_in_turn": in_turn})
    monitor = QueueMonitor(cfg, list(LABELS))
    asked: dict[int, list] = {}

    def classify(due, mirror):
        for k, i in enumerate(due):
            asked.setdefault(i, []).append(None if mirror is None else mirror[k])
        return [np.full(len(LABELS), 1 / len(LABELS), np.float32)] * len(due)

    boxes = [BBox(40, 40, 60, 60), BBox(300, 40, 60, 60)]
    for i in range(int(3 * FPS)):
        monitor.update(i / FPS, boxes, classify)
    for flags in asked.values():
        assert len(flags) >= 5
        assert flags == ([k % 2 == 1 for k in range(len(flags))] if in_turn else [None] * len(flags))


def test_a_queue_near_the_alert_threshold_or_alerted_gets_both_images_again():
    from edge.pipeline.core import QueueMonitor

    cfg = load_config(None, {"schedule.flip_in_turn": True, "schedule.flip_both_share": 0.15})
    monitor = QueueMonitor(cfg, list(LABELS))
    boxes = [BBox(40, 40, 60, 60), BBox(300, 40, 60, 60)]
    sad = np.eye(len(LABELS), dtype=np.float32)[list(LABELS).index("sad")]
    monitor.update(0.0, boxes, lambda due, mirror: [sad] * len(due))
    monitor.share = 0.1  # calm: in turn
    assert monitor.mirror([0, 1]) == [True, True]
    monitor.share = 0.15  # at the share: both images (None)
    assert monitor.mirror([0, 1]) is None
    monitor.share, monitor.policy.raised = 0.1, True  # an alert is up: both images until it clears
    assert monitor.mirror([0, 1]) is None
    monitor.policy.raised = False
    assert monitor.mirror([0, 1]) == [True, True]
    _, mood, _ = monitor.update(0.2, boxes, lambda due, mirror: [sad] * len(due))
    assert monitor.share == mood.negative_share  # each update leaves the share it computed
    always = QueueMonitor(load_config(None, {"schedule.flip_in_turn": True, "schedule.flip_both_share": 1.0}),
                          list(LABELS))
    always.update(0.0, boxes, lambda due, mirror: [sad] * len(due))
    always.share, always.policy.raised = 1.0, True  # 1: in turn whatever the share, raised or not
    assert always.mirror([0]) is not None
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="flip_both_share"):
            load_config(None, {"schedule.flip_both_share": bad})


def test_old_cards_load_without_a_mac_count():
    import json

    from edge.card import CardError
    from edge.models import default_model_path

    d = json.loads(default_model_path().with_name("model.json").read_text())
    assert ModelCard.from_dict(d).macs_per_invoke > 0
    del d["macs_per_invoke"]  # cards written before the field
    assert ModelCard.from_dict(d).macs_per_invoke == 0
    with pytest.raises(CardError, match="macs_per_invoke"):
        ModelCard.from_dict({**d, "macs_per_invoke": -5})


def test_macs_are_counted_from_the_model_ops(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from edge.pipeline.cost import model_macs

    inp = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    out = tf.keras.layers.Dense(3)(x)
    path = tmp_path / "m.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out)).convert())
    m = model_macs(path)
    assert m["by_op"] == {"CONV_2D": 8 * 8 * 4 * 3 * 3 * 1, "DEPTHWISE_CONV_2D": 8 * 8 * 4 * 3 * 3,
                          "FULLY_CONNECTED": 4 * 3}
    assert m["total"] == sum(m["by_op"].values())


def test_between_scans_a_tiled_detector_looks_only_around_known_faces(shipped_classifier):
    from edge.pipeline.core import Pipeline
    from edge.pipeline.detectors.regions import RegionDetector

    inner = CountingDetector(bright_square)
    det = RegionDetector(inner, tiles=(4, 3), whole=True)  # 13 calls for the whole frame
    cfg = load_config(None, {"schedule.detect_hz": 5.0, "schedule.scan_hz": 1.0, "schedule.scan_still_s": 0,
                             "schedule.detect_still_hz": 0})
    pipe = Pipeline(cfg, shipped_classifier, det)
    image = np.zeros((480, 640, 3), np.uint8)
    calls, boxes = [], []
    for i in range(30):  # 2 s at 15 fps; the face walks right 2 px a frame
        image[:] = 0
        image[200:280, 100 + 2 * i:180 + 2 * i] = 255
        before = inner.calls
        r = pipe.process(Frame(image, i / FPS, i))
        calls.append(inner.calls - before)
        boxes += [t.box.x for t in r.faces] if r.detected else []
    detector_frames = [c for c in calls[::3]]
    assert detector_frames == [13, 1, 1, 1, 1, 13, 1, 1, 1, 1]  # a scan a second, one window between
    assert boxes[-1] == 100 + 2 * 27  # the focused windows followed the face


def test_a_still_face_is_looked_for_less_often_and_stays_one_counted_track(shipped_classifier):
    from edge.pipeline.core import Pipeline
    from edge.pipeline.detectors.regions import RegionDetector

    inner = CountingDetector(bright_squares)
    det = RegionDetector(inner, tiles=(4, 3), whole=True)
    cfg = load_config(None, {"schedule.detect_hz": 5.0, "schedule.scan_hz": 0.5, "schedule.scan_still_s": 0,
                             "schedule.detect_still_hz": 2.5})
    pipe = Pipeline(cfg, shipped_classifier, det)
    calls, counted, shares = [], [], []
    for i in range(int(2.4 * FPS)):
        image = np.zeros((480, 640, 3), np.uint8)
        image[300:380, 450:530] = 255  # stands still
        image[60:140, 60 + 8 * i:140 + 8 * i] = 255  # walks right, 1.5 face widths a second
        before = inner.calls
        r = pipe.process(Frame(image, i / FPS, i))
        if r.detected:
            calls.append(inner.calls - before)
            counted.append(len(r.tracks))
            shares.append(min(tr.seen_share for tr in r.tracks) if r.tracks else 0.0)
    between = calls[1:10]  # detector frames between the first scan and the next (2 s later)
    assert calls[0] == 13 and calls[10] == 13
    assert between[0] == 2  # the still face is still only once it has been found twice
    assert set(between[1:]) == {1, 2} and sum(between[1:]) == 8 + 4  # walker every time, still face every other
    assert counted[1:] == [2] * (len(counted) - 1)  # both counted on every detector frame
    assert min(shares[1:]) == 1.0  # a carried box is not a missed detection
    assert len(pipe.tracker.tracks) == 2


def test_a_still_face_is_looked_for_at_once_when_its_window_changes():
    from edge.pipeline.schedule import Schedule, motion_blocks

    sched = Schedule(ScheduleConfig(detect_still_hz=2.5))
    tr = track(1, None)
    tr.box = BBox(300, 200, 80, 80)  # its window: 200 px around the face
    frame = np.full((480, 640), 100, np.uint8)
    frame[200:280, 300:380] = 200
    for t in (0.0, 0.2):
        sched.found(t, [1], [tr.box], motion_blocks(frame))
    sway = frame.copy()
    sway[200:280, 296:300] = 200  # the outline moves 4 px: a few blocks change
    assert sched.carry(0.4, [tr], motion_blocks(sway), 640, 480) == ([], [tr])
    step = np.full((480, 640), 100, np.uint8)
    step[200:280, 350:430] = 200  # the person steps aside by most of a face
    assert sched.carry(0.4, [tr], motion_blocks(step), 640, 480) == ([tr], [])
    assert sched.carry(0.6, [tr], motion_blocks(frame), 640, 480) == ([tr], [])  # 1 / 2.5 s since found
    assert Schedule(ScheduleConfig(detect_still_hz=0)).carry(0.4, [tr], motion_blocks(frame), 640, 480) == ([tr], [])


def test_a_still_face_that_leaves_is_not_kept_by_its_carried_box(shipped_classifier):
    from edge.pipeline.core import Pipeline
    from edge.pipeline.detectors.regions import RegionDetector

    det = RegionDetector(CountingDetector(bright_squares), tiles=(4, 3), whole=True)
    cfg = load_config(None, {"schedule.detect_still_hz": 2.5, "tracking.max_gap_s": 1.0})
    pipe = Pipeline(cfg, shipped_classifier, det)
    gone = None
    for i in range(int(4 * FPS)):
        t = i / FPS
        image = np.zeros((480, 640, 3), np.uint8)
        if t < 1.5:
            image[200:280, 300:380] = 255
        r = pipe.process(Frame(image, t, i))
        if t >= 1.5 and gone is None and not r.tracks:
            gone = t
    assert gone is not None and gone - 1.5 <= 1.0 + 1 / 2.5 + 0.2  # max_gap_s, at most one carried look, a frame


def test_boxes_with_nan_or_no_area_from_a_detector_are_left_out(shipped_classifier):
    """A plugin's detector (or a model gone wrong) giving NaN crashed the crop (the service with
    it); a box of no area started a new track on every detector frame."""
    from edge.pipeline.core import Pipeline

    def find(frame):
        return [Detection(BBox(float("nan"), 10, 50, 50), 0.9), Detection(BBox(10, 10, 50, -5), 0.9),
                Detection(BBox(300, 200, 0, 80), 0.9), *still_faces(frame)[:1]]

    pipe = Pipeline(load_config(None, {"schedule.detect_hz": 0}), shipped_classifier, CountingDetector(find))
    for i in range(6):
        r = pipe.process(Frame(np.zeros((480, 640, 3), np.uint8), i / FPS, i))
        assert r.detections == 1
    assert len(pipe.tracker.tracks) == 1


def blinking_still_face(classifier):
    """A pipeline on a tiled counting detector (a scan a second, detector at 5 Hz) and a frame with
    one still face; blind["calls"] = N makes the next N detector calls find nothing."""
    from edge.pipeline.core import Pipeline
    from edge.pipeline.detectors.regions import RegionDetector

    blind = {"calls": 0}

    def find(frame):
        if blind["calls"]:
            blind["calls"] -= 1
            return []
        return bright_square(frame)

    inner = CountingDetector(find)
    cfg = load_config(None, {"schedule.detect_hz": 5.0, "schedule.scan_hz": 1.0, "schedule.scan_still_s": 0,
                             "schedule.detect_still_hz": 0})
    pipe = Pipeline(cfg, classifier, RegionDetector(inner, tiles=(4, 3), whole=True))
    image = np.zeros((480, 640, 3), np.uint8)
    image[200:280, 300:380] = 255
    return pipe, inner, blind, image


def test_a_face_one_pass_misses_is_looked_for_again_in_its_window(shipped_classifier):
    """A whole-frame pass that misses a tracked face gives it one more call in the window around
    it, in the same frame: the face stays on its track and among the faces looked for."""
    pipe, inner, blind, image = blinking_still_face(shipped_classifier)
    ids, calls = {}, {}
    for i in range(int(1.5 * FPS)):
        if i == FPS:
            blind["calls"] = 13  # the scan at 1 s: every tile and the whole frame miss it
        before = inner.calls
        r = pipe.process(Frame(image, i / FPS, i))
        if r.detected:
            ids[i] = [tr.id for tr in r.faces if tr.last_t_s == i / FPS]
            calls[i] = inner.calls - before
    first = ids[0]
    assert calls[FPS] == 13 + 1 and ids[FPS] == first  # the pass, then its window: found, same track
    assert calls[FPS + 3] == 1 and ids[FPS + 3] == first  # and looked for as before


def test_a_face_missed_between_scans_is_looked_for_at_the_next_detector_frame(shipped_classifier):
    """Between scans only the faces of the last detector frame were looked for: one missed call
    took a face out of them until the next scan (up to scan_still_s, 4 s, past max_gap_s: the
    track ended, and the person's seen share and level restarted)."""
    pipe, inner, blind, image = blinking_still_face(shipped_classifier)
    ids, calls = {}, {}
    for i in range(int(FPS) // 2 + 4):
        if i == 6:
            blind["calls"] = 1  # a detector frame between scans: its one call misses the face
        before = inner.calls
        r = pipe.process(Frame(image, i / FPS, i))
        if r.detected:
            ids[i] = [tr.id for tr in r.faces if tr.last_t_s == i / FPS]
            calls[i] = inner.calls - before
    assert calls[6] == 1 and ids[6] == []  # missed
    assert calls[9] == 1 and ids[9] == ids[0]  # looked for again at once, on its track


class ScoredDetector(CountingDetector):
    """Like BlazeFace, keeps what scores at least its min_score (or a lower one, asked for): a
    bright square scores 0.9, a dim one 0.55 (a face near the detector's threshold)."""

    min_score = 0.65

    def __init__(self):
        super().__init__(lambda frame: self._find(frame, self.min_score))

    def detect_down_to(self, frame, min_score):
        self.calls += 1
        return self._find(frame, min(min_score, self.min_score))

    @staticmethod
    def _find(frame, min_score):
        import cv2

        n, _, stats, _ = cv2.connectedComponentsWithStats((frame[..., 0] > 128).astype(np.uint8))
        found = []
        for x, y, w, h, _ in stats[1:n]:
            score = 0.9 if frame[y : y + h, x : x + w, 0].max() > 250 else 0.55
            if score >= min_score:
                found.append(Detection(BBox(x, y, w, h), score))
        return found


@pytest.mark.parametrize("continue_score", [0.0, 0.5])
def test_a_less_sure_detection_continues_a_track_but_starts_none(shipped_classifier, continue_score):
    from edge.pipeline.core import Pipeline
    from edge.pipeline.detectors.regions import RegionDetector

    inner = ScoredDetector()
    det = RegionDetector(inner, tiles=(4, 3), whole=True)
    cfg = load_config(None, {"schedule.detect_hz": 5.0, "schedule.scan_hz": 0.5, "schedule.scan_still_s": 0,
                             "schedule.detect_still_hz": 0, "tracking.continue_score": continue_score})
    pipe = Pipeline(cfg, shipped_classifier, det)
    found = {}
    for i in range(int(2.4 * FPS)):
        t = i / FPS
        image = np.zeros((480, 640, 3), np.uint8)
        image[200:280, 300:380] = 255 if t < 1.0 else 200  # the face's score dips under 0.65 at 1 s
        image[150:190, 390:430] = 200  # something dim in that face's window, not on it
        r = pipe.process(Frame(image, t, i))
        if r.detected:
            found[round(t, 1)] = [tr.id for tr in r.faces if tr.last_t_s == t]
    assert inner.min_score == 0.65  # the detector's own threshold is untouched
    dipped = [found[t] for t in found if 1.0 <= t < 2.0]  # between the scans at 0 and 2 s
    if continue_score:
        assert all(ids == [1] for ids in dipped)  # the same track, every detector frame
        assert len(pipe.tracker.tracks) == 1  # the dim thing beside it never became a face
    else:
        assert all(ids == [] for ids in dipped)  # lost under the detector's own threshold


def test_a_scan_skips_tiles_where_nothing_moved_but_finds_a_newcomer(shipped_classifier):
    from edge.pipeline.core import Pipeline
    from edge.pipeline.detectors.regions import RegionDetector

    inner = CountingDetector(bright_square)
    det = RegionDetector(inner, tiles=(4, 3), whole=True)
    cfg = load_config(None, {"schedule.detect_hz": 5.0, "schedule.scan_hz": 1.0, "schedule.scan_still_s": 4.0})
    pipe = Pipeline(cfg, shipped_classifier, det)
    rng = np.random.default_rng(0)
    scans, found, oldest = {}, {}, []
    for i in range(int(6.5 * FPS)):  # a face walks right 2 px a frame; a newcomer stands still from 2.5 s
        t = i / FPS
        image = np.clip(rng.normal(60, 4, (480, 640, 3)), 0, 255).astype(np.uint8)  # sensor noise
        image[200:280, 100 + 2 * i:180 + 2 * i] = 255
        if t >= 2.5:
            image[60:120, 500:550] = 255
        before = inner.calls
        r = pipe.process(Frame(image, t, i))
        if i % FPS == 0:
            scans[i // FPS] = inner.calls - before
            oldest.append(max(t - when for _, when in pipe.monitor.schedule.gate.seen.values()))
        if r.detected:
            found[i] = sorted(int(tr.box.x) for tr in r.faces)
    assert scans[0] == 13  # nothing seen yet: every tile
    assert scans[1] == scans[2] == 1  # the walker moves inside the window around them: one call
    assert 2 <= scans[3] < 13  # the newcomer's tiles (and the whole frame), and the walker's window
    assert max(oldest) < 4.0  # no tile goes unlooked-at for scan_still_s or longer
    assert found[3 * FPS] == [100 + 2 * 3 * FPS, 500]  # the newcomer moved in: found at the next scan
    # the walker followed throughout; its slow walk (0.4 face widths a second) counts as still, so
    # between looks its box is carried and lags by at most 1 / detect_still_hz of walking
    lag = 2 * FPS / load_config(None).schedule.detect_still_hz
    assert all(0 <= 100 + 2 * i - boxes[0] <= lag + 2 for i, boxes in found.items())


def test_the_motion_gate_ignores_sensor_noise_and_sees_a_small_face():
    from edge.pipeline.schedule import MotionGate, motion_blocks

    gate = MotionGate(still_s=10.0)
    wins = [(0, 0, 320, 240), (320, 0, 640, 240), (0, 240, 320, 480), (320, 240, 640, 480)]
    rng = np.random.default_rng(1)

    def frame():
        return np.clip(rng.normal(120, 4, (480, 640)), 0, 255).astype(np.uint8)

    assert gate.pick(motion_blocks(frame()), wins, 0.0) == [0, 1, 2, 3]
    assert gate.pick(motion_blocks(frame()), wins, 1.0) == []
    img = frame()
    img[300:340, 400:430] = 60  # a 30-px face-sized change in the last window
    assert gate.pick(motion_blocks(img), wins, 2.0) == [3]
    assert MotionGate(still_s=0).pick(motion_blocks(frame()), wins, 3.0) == [0, 1, 2, 3]  # 0: never skip


def test_motion_of_a_tracked_person_does_not_open_tiles_but_a_newcomer_beside_them_does():
    from edge.pipeline.schedule import MotionGate, motion_blocks

    gate = MotionGate(still_s=10.0)
    wins = [(0, 0, 320, 480), (320, 0, 640, 480)]
    face_window = (40, 40, 200, 200)  # the window around a tracked face in the left tile
    base = np.full((480, 640), 120, np.uint8)
    assert gate.pick(motion_blocks(base), wins, 0.0, covered=[face_window]) == [0, 1]
    moved = base.copy()
    moved[60:180, 60:180] = 40  # the face moves
    moved[210:350, 80:160] = 200  # and the chest below it
    assert gate.pick(motion_blocks(moved), wins, 1.0, covered=[face_window]) == []
    moved[100:160, 400:450] = 30  # a newcomer in the right tile
    assert gate.pick(motion_blocks(moved), wins, 2.0, covered=[face_window]) == [1]


def test_an_old_config_with_ema_alpha_is_told_what_replaced_it(tmp_path):
    cfg = tmp_path / "old.toml"
    cfg.write_text("[tracking]\nema_alpha = 0.5\n")  # chosen: 0.3, the old default, is ignored (test_deploy)
    with pytest.raises(ConfigError, match=r"'tracking\.ema_alpha' is no longer read; use tracking\.smooth_s"):
        load_config(cfg)


def test_budget_rates_count_the_calls_the_schedule_makes_at_most():
    from edge.pipeline.schedule import budget_rates

    calls, faces = budget_rates(ScheduleConfig(), fps=15, faces=4, full_pass_calls=13)
    assert calls == pytest.approx(13 + 4 * 4)  # one full pass a second, a window per face in the 4 other detector frames
    assert faces == pytest.approx(4 * 5 / 3)  # at 5 detector frames a second a 0.5-s period is every 3rd one
    calls, faces = budget_rates(ScheduleConfig.every_frame(), fps=15, faces=4, full_pass_calls=13)
    assert (calls, faces) == (15 * 13, 15 * 4)
    _, capped = budget_rates(ScheduleConfig(classify_hz=5.0), fps=15, faces=4, full_pass_calls=13)
    assert capped == 2 * 5  # classify_max_per_frame = 2 on 5 detector frames a second


def _doctor_budget(tmp_path, toml=""):
    from edge.ops.doctor import DoctorSettings, diagnose

    (tmp_path / "frames").mkdir(exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(f"[source]\npath = '{tmp_path / 'frames'}'\n" + toml)
    return {c.name: c for c in diagnose(DoctorSettings(config=str(path), camera_timeout_s=5))}["compute budget"]


def test_doctor_times_this_board_and_warns_when_the_schedule_needs_a_core(tmp_path, monkeypatch, shipped_classifier):
    from edge.ops.doctor import budget

    check = _doctor_budget(tmp_path)  # timed on this machine: how fast it is is not this test's business
    assert check.status in ("OK", "WARN") and "of one core at 15 fps with 4 faces" in check.detail
    assert "29 calls/s" in check.detail and "6.7 faces/s" in check.detail
    monkeypatch.setattr(budget, "_median_s", lambda fn, n=7: 0.01)  # a slow board: 10 ms a call
    check = _doctor_budget(tmp_path)
    assert check.status == "OK" and check.detail.startswith("about 36% of one core")  # 29 x 10 ms + 6.7 x 10 ms
    check = _doctor_budget(tmp_path, "[schedule]\nclassify_hz = 0\nclassify_max_per_frame = 0\ndetect_hz = 0\nscan_hz = 0\n")
    assert check.status == "WARN" and check.detail.startswith("about 255% of one core") and "classify_hz = 1" in check.detail
    check = _doctor_budget(tmp_path, "[schedule]\nflip_in_turn = true\nflip_both_share = 0.15\n")
    assert "doubles while the queue's negative share is at least 0.15" in check.detail
    assert "doubles" not in _doctor_budget(tmp_path, "[schedule]\nflip_both_share = 1.0\n").detail


def test_doctor_states_the_budget_of_a_recording_at_its_own_size_and_rate(tmp_path, shipped_classifier):
    """A recording keeps its own size and rate, but the budget (and the detector's check) used
    [source] width, height and fps: a 1280x720 30 fps file was costed as a 640x480 camera at 15."""
    import cv2

    from edge.config import load_config
    from edge.ops.doctor import DoctorSettings, diagnose
    from edge.pipeline.detectors.regions import configured_detector
    from edge.pipeline.schedule import budget_rates

    video = tmp_path / "queue.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (1280, 720))
    for i in range(5):
        writer.write(np.full((720, 1280, 3), 40 * i, np.uint8))
    writer.release()
    path = tmp_path / "config.toml"
    path.write_text(f"[source]\npath = '{video}'\n")
    checks = {c.name: c for c in diagnose(DoctorSettings(config=str(path), camera_timeout_s=5))}
    detail = checks["compute budget"].detail
    assert f"at 30 fps ({video}'s 1280x720) with 4 faces" in detail, detail
    cfg = load_config(str(path), {})
    calls, _ = budget_rates(cfg.schedule, 30.0, 4, len(configured_detector(cfg).windows_for(1280, 720)))
    assert f"x {calls:.0f} calls/s at most" in detail
    assert "at 15 fps with 4 faces" in _doctor_budget(tmp_path).detail  # an image folder: [source] fps
    path.write_text(f"[source]\npath = '{video}'\nrotate = 90\n")  # a camera filmed on its side: turned upright
    checks = {c.name: c for c in diagnose(DoctorSettings(config=str(path), camera_timeout_s=5))}
    assert f"at 30 fps ({video}'s 720x1280) with 4 faces" in checks["compute budget"].detail


def test_doctor_states_the_budget_of_an_image_folder_at_its_images_size_and_the_source_rate(tmp_path,
                                                                                             shipped_classifier):
    """An image folder keeps its images' size too (its rate is [source] fps): a folder of 1280x720
    stills was costed, and the detector checked, as a 640x480 camera's frames."""
    import cv2

    from edge.ops.doctor import DoctorSettings, diagnose

    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0000.jpg").write_bytes(b"not an image")  # skipped, as edge run does
    cv2.imwrite(str(frames / "0001.jpg"), np.full((720, 1280, 3), 90, np.uint8))
    path = tmp_path / "config.toml"
    path.write_text(f"[source]\npath = '{frames}'\nfps = 2\n")
    checks = {c.name: c for c in diagnose(DoctorSettings(config=str(path), camera_timeout_s=5))}
    assert f"at 2 fps ({frames}'s 1280x720 images) with 4 faces" in checks["compute budget"].detail, \
        checks["compute budget"].detail
    assert "blank 1280x720 frame" in checks["detector"].detail, checks["detector"].detail


def test_the_schedule_forgets_people_long_gone_so_its_memory_stays_flat():
    """Each remembered look holds its frame's motion blocks (19 KB at 640x480): a queue where a
    new person is found every 50 s for hours keeps only the recent ones."""
    s = Schedule(ScheduleConfig())
    blocks = np.zeros((60, 80), np.float32)
    for i in range(200):
        s.found(50.0 * i, [i], [BBox(100, 100, 60, 60)], blocks.copy())
        assert len(s.looks) <= 10
    s.found(10_000.0, [7, 8, 9], [BBox(100, 100, 60, 60)] * 3, blocks)  # the ones found now are kept
    assert {7, 8, 9} <= set(s.looks)


def test_a_rate_of_one_a_second_or_less_is_kept_not_taken_for_every_frame():
    """0 means every frame; a store that sets 1 Hz (or less) gets that rate, and the doctor's
    compute budget counts it so."""
    from edge.pipeline.schedule import MotionGate, budget_rates, motion_blocks

    for hz in (1.0, 0.5):
        s, ran = Schedule(ScheduleConfig(detect_hz=hz)), []
        for i in range(int(4 * FPS)):
            if s.detect_now(i / FPS):
                s.detected(i / FPS)
                ran.append(i)
        assert len(ran) == math.ceil(4 * hz), hz
    calls, faces = budget_rates(ScheduleConfig(detect_hz=1.0, scan_hz=1.0, classify_hz=1.0, classify_max_per_frame=0),
                                fps=15, faces=4, full_pass_calls=13)
    assert (calls, faces) == (13, 4)  # one whole-frame pass and each face once, a second
    _, faces = budget_rates(ScheduleConfig(classify_hz=0.5), fps=15, faces=4, full_pass_calls=13)
    assert faces == pytest.approx(2)  # each of 4 faces every other second
    gate, still = MotionGate(still_s=1.0), motion_blocks(np.full((480, 640), 120, np.uint8))
    wins = [(0, 0, 320, 480), (320, 0, 640, 480)]
    assert [gate.pick(still, wins, t) for t in (0.0, 0.5, 1.0)] == [[0, 1], [], [0, 1]]


def test_timestamps_jittering_under_a_millisecond_keep_each_rate():
    """Frame timestamps jitter: a face due at the next detector frame, a tile due after
    scan_still_s, and a tile that moved MOTION_SETTLE_S ago are not put off by a frame for
    arriving a fraction of a millisecond early."""
    from edge.pipeline.schedule import MOTION_SETTLE_S, MotionGate, motion_blocks

    rng = np.random.default_rng(4)
    s = Schedule(ScheduleConfig(classify_hz=5.0, detect_hz=5.0, classify_max_per_frame=0))
    tracks, detector_frames, classified = [track(1, None), track(2, None)], 0, 0
    for i in range(int(4 * FPS)):
        t = 100.0 + i / FPS + rng.uniform(-4e-4, 4e-4)
        if not s.detect_now(t):
            continue
        s.detected(t)
        detector_frames += 1
        for k in s.due(t, tracks):
            tracks[k].classified_t_s = t
            classified += 1
    assert detector_frames == 4 * 5 and classified == 2 * detector_frames  # 5 Hz each: every detector frame

    still_s = 4 * MOTION_SETTLE_S
    gate = MotionGate(still_s)
    wins = [(0, 0, 320, 480), (320, 0, 640, 480)]
    base = np.full((480, 640), 120, np.uint8)
    assert gate.pick(motion_blocks(base), wins, 0.0) == [0, 1]
    assert gate.pick(motion_blocks(base), wins, still_s - 5e-4) == [0, 1]  # scan_still_s since each was looked at
    walked, t = base.copy(), still_s + 1
    walked[100:200, 50:150] = 30  # someone walks into the left tile and stops
    assert gate.pick(motion_blocks(walked), wins, t) == [0]
    assert gate.pick(motion_blocks(walked), wins, t + MOTION_SETTLE_S - 5e-4) == [0]  # settling
    assert gate.pick(motion_blocks(walked), wins, t + MOTION_SETTLE_S + 5e-4) == [0]
    assert gate.pick(motion_blocks(walked), wins, t + MOTION_SETTLE_S + 0.5) == []  # settled, looked at 0.5 s ago


def test_a_face_is_still_by_its_speed_in_face_widths_whatever_its_size():
    """Between scans a still face keeps its box; a walking one is looked for at every detector
    frame, however large it is in the frame."""
    blocks = np.zeros((60, 80), np.float32)
    for size, step in ((200, 20), (40, 4)):  # both 0.1 face widths in a second: a person swaying
        s = Schedule(ScheduleConfig())
        s.found(0.0, [1], [BBox(100, 100, size, size)], blocks)
        s.found(1.0, [1], [BBox(100 + step, 100, size, size)], blocks)
        look, carry = s.carry(1.2, [Track(1, BBox(100 + step, 100, size, size), None, 0.0, 0.0)], blocks, 640, 480)
        assert (look, [t.id for t in carry]) == ([], [1]), size
    s = Schedule(ScheduleConfig())  # a 60-px face crossing 5 face widths a second: walking
    s.found(0.0, [1], [BBox(100, 100, 60, 60)], blocks)
    s.found(0.2, [1], [BBox(160, 100, 60, 60)], blocks)
    look, carry = s.carry(0.4, [Track(1, BBox(160, 100, 60, 60), None, 0.0, 0.0)], blocks, 640, 480)
    assert ([t.id for t in look], carry) == ([1], [])


def test_flip_averaging_without_a_temperature_still_gives_probabilities(shipped_classifier):
    """A card with flip averaging and temperature 1 (uncalibrated): each face's probabilities are
    the mean over it and its mirror image, summing to 1; one (s, s) crop is one face; no crops,
    no rows. Another temperature is applied, 2 flattening them."""
    from edge.pipeline.classifier import Classifier, apply_temperature

    clf = Classifier(shipped_classifier.path, card=dataclasses.replace(shipped_classifier.card, temperature=1.0))
    assert clf.flip_average and clf.temperature == 1.0
    s = clf.card.input_size
    crops = np.random.default_rng(5).integers(0, 255, (3, s, s), dtype=np.uint8)
    got = clf.predict(crops)
    assert np.allclose(got, (clf.raw_probs(crops) + clf.raw_probs(crops[:, :, ::-1])) / 2, atol=1e-6)
    assert np.allclose(got.sum(axis=1), 1, atol=0.02)
    assert np.allclose(clf.predict(crops[0]), got[:1], atol=1e-6)
    assert clf.predict_many(crops[:0]).shape == (0, len(clf.labels))
    p = np.array([[0.64, 0.32, 0.04]], np.float32)
    assert np.allclose(apply_temperature(p, 2.0), np.sqrt(p) / np.sqrt(p).sum())  # softmax(log p / 2)


@pytest.mark.parametrize("rotate, expected", [(0, (640, 480, "")), (180, (640, 480, "")),
                                               (90, (480, 640, " (640x480 turned on its side)")),
                                               (270, (480, 640, " (640x480 turned on its side)"))])
def test_doctor_costs_a_camera_on_its_side_at_its_turned_size(rotate, expected):
    """A camera mounted on its side delivers 640x480 frames that [source] rotate turns to 480x640
    before the detector sees them: its tiles are laid over the turned frame."""
    from edge.config import SourceConfig
    from edge.ops.doctor.budget import frames_timed

    w, h, fps, whose = frames_timed(SourceConfig(camera=0, width=640, height=480, fps=15, rotate=rotate))
    assert (w, h, whose) == expected and fps == 15


def test_the_doctor_counts_one_face_on_a_blank_frame_in_the_singular():
    """A detector finding one face where none is was said as "(1 faces)"."""
    from edge.pipeline.detectors.regions import RegionDetector, Roi

    def one_face(frame):
        return [Detection(BBox(10, 10, 40, 40), 0.9)]

    assert CountingDetector(one_face).doctor(320, 240) == ("WARN", "blazeface: ran on a blank 320x240 frame (1 face)")
    status, line = RegionDetector(CountingDetector(one_face), roi=Roi(0, 0.5, 1, 0.5)).doctor(320, 240)
    assert status == "WARN" and line.endswith("(1 call per frame): 1 face"), line
