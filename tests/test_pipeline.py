"""The whole edge pipeline driven from videos built from real faces."""

import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from edge.service.app import RunOptions, run
from edge.config import load_config
from edge.errors import UserError
from edge.pipeline.sources import LiveSource
from tests.conftest import run_cli
from benchmarks.scenes import astronaut_face, background, fer_images, place, write_video

NEGATIVE = ("angry", "sad", "fear")


@pytest.fixture(scope="module")
def astronaut_video(tmp_path_factory):
    d = tmp_path_factory.mktemp("astro")
    face = astronaut_face()
    frames = []
    for i in range(30):
        f = background(i)
        place(f, face, 60 + 4 * i, 120, 200)
        frames.append(f)
    return write_video(d / "astronaut.mp4", frames, 10)


def test_run_on_a_video_tracks_the_face(astronaut_video, shipped_model, tmp_path):
    r = run_cli("run", "--source", astronaut_video, "--model", shipped_model,
                "--max-frames", 25, "--json", env={"HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["frames"] == 25 and summary["tracks"] == 1
    assert 0 < summary["cpu_s"] and 0 < summary["cpu_share_of_core"]  # the loop's CPU, model loading not counted
    assert summary["runtime"].startswith("ai-edge-litert")
    assert {"detect", "classify", "track"} <= set(summary["stage_ms"])
    # the journal names which model runs: its full path and the start of its sha256
    sha = json.loads(Path(shipped_model).with_name("model.json").read_text())["model_sha256"]
    assert f"model {Path(shipped_model).resolve()} (sha256 {sha[:12]}," in r.stderr


def test_the_journal_gives_the_sha256_of_the_file_loaded_not_its_cards(astronaut_video, shipped_model, tmp_path):
    """A float model beside the int8 file's card (what convert writes) was logged with the int8 hash."""
    import hashlib
    import shutil

    other = tmp_path / "model" / "model_other.tflite"
    other.parent.mkdir()
    shutil.copy(Path(shipped_model).with_name("model.json"), other.parent)
    other.write_bytes(Path(shipped_model).read_bytes() + b"\0" * 16)  # other bytes, the same network
    r = run_cli("run", "--source", astronaut_video, "--model", other, "--max-frames", 2, env={"HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert f"(sha256 {hashlib.sha256(other.read_bytes()).hexdigest()[:12]}," in r.stderr


@pytest.mark.parametrize("args, needle", [
    (["--source", "/nonexistent/video.mp4"], "does not exist"),
    (["--camera", "9"], "Cannot open camera 9"),
    (["--model", "/nonexistent/model_int8.tflite", "--source", "."], "does not exist"),
    (["--config", ".", "--source", "."], "Config file . is a folder, not a file"),
    (["--model", ".", "--source", "."], "Model folder . holds no model_int8.tflite"),
    (["--detector-model", ".", "--source", "."], "Face detector model . is a folder, not a file"),
])
def test_bad_inputs_are_one_sentence(args, needle, shipped_model, tmp_path):
    if "--model" not in args:
        args = args + ["--model", str(shipped_model)]
    r = run_cli("run", *args, "--max-frames", 1, env={"HOME": str(tmp_path)})
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and needle in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_folder_of_only_unreadable_images_is_an_error_not_an_empty_run(tmp_path, shipped_model):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.jpg", "b.png", "c.jpg"):
        (folder / name).write_bytes(b"junk")
    r = run_cli("run", "--source", folder, "--model", shipped_model, env={"HOME": str(tmp_path)})
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and errors == [f"error: None of the 3 images in {folder} could be read (damaged or "
                                            "not images)."], r.stderr
    assert "stopped after" not in r.stderr


def test_one_unreadable_image_is_one_image(tmp_path):
    from edge.errors import UserError
    from edge.pipeline.sources import ImageFolderSource

    (tmp_path / "a.jpg").write_bytes(b"junk")
    with pytest.raises(UserError, match=r"None of the 1 image in .* could be read"):  # was "1 images"
        list(ImageFolderSource(str(tmp_path)))
    assert ImageFolderSource(str(tmp_path)).describe().endswith("(1 image)")


def test_a_run_of_one_frame_says_one_frame(astronaut_video, shipped_model, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(None, {"source.path": str(astronaut_video), "model.path": str(shipped_model),
                             "status.enabled": False})
    with caplog.at_level(logging.INFO, logger="edge"):
        run(cfg, RunOptions(max_frames=1))
    assert any(r.getMessage().startswith("stopped after 1 frame: {") for r in caplog.records), caplog.text


def test_only_the_images_tried_are_counted_when_every_skips_some(tmp_path):
    from edge.errors import UserError
    from edge.pipeline.sources import ImageFolderSource

    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (tmp_path / name).write_bytes(b"junk")
    with pytest.raises(UserError, match=r"None of the 2 images tried \(one in 2 of 4\) in .* could be read"):
        list(ImageFolderSource(str(tmp_path), every=2))


@pytest.mark.parametrize("opts, says", [
    (RunOptions(max_frames=0), "--max-frames 0 is not a number of frames"),
    (RunOptions(max_frames=-5), "--max-frames -5 is not a number of frames"),
    (RunOptions(duration_s=-1.0), "--duration -1 is not a number of seconds"),
    (RunOptions(duration_s=0.0), "--duration 0 is not a number of seconds"),
    (RunOptions(duration_s=float("nan")), "--duration nan is not a number of seconds"),
    (RunOptions(duration_s=float("inf")), "--duration inf is not a number of seconds"),
])
def test_a_limit_that_is_not_a_positive_finite_number_is_refused_before_the_run(opts, says, tmp_path, monkeypatch):
    import edge.service.app as app

    def forbidden(cfg):
        raise AssertionError("the run started")

    monkeypatch.setattr(app, "load_parts", forbidden)
    with pytest.raises(UserError, match=re.escape(says)):
        run(load_config(None, {"source.path": str(tmp_path), "status.enabled": False}), opts)


def test_a_bad_limit_on_the_command_line_is_one_sentence(tmp_path):
    r = run_cli("run", "--source", tmp_path, "--duration", "nan")
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and errors == ["error: --duration nan is not a number of seconds; pass a finite number "
                                            "above 0, or leave it out to run until the source ends."], r.stderr


def test_a_model_this_user_may_not_read_is_called_unreadable_not_invalid(tmp_path, shipped_model, monkeypatch):
    import builtins
    import shutil

    from edge.pipeline.core import load_parts
    from edge.pipeline.runtime import load_interpreter

    for f in shipped_model.parent.iterdir():
        shutil.copy(f, tmp_path)
    model = tmp_path / shipped_model.name
    real_open = builtins.open

    def open_as_another_user(file, *args, **kwargs):  # a mode 000 file read by a non-root user
        if str(file) == str(model):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_as_another_user)
    for load in (lambda: load_parts(load_config(None, {"model.path": str(model)})), lambda: load_interpreter(model)):
        with pytest.raises(UserError, match=r"cannot be read \(Permission denied\).*chmod"):
            load()


@pytest.mark.parametrize("where", ["folder", "read-only"])
def test_preview_that_cannot_be_written_says_why(tmp_path, where):
    from edge.pipeline.annotate import AnnotatedVideo
    from tests.test_reliability import tmpfs

    if where == "folder":
        with pytest.raises(UserError, match="is a folder"):
            AnnotatedVideo(tmp_path, 15, ["happy"])
        return
    with tmpfs(tmp_path / "ro", "size=64k,ro") as disk, pytest.raises(UserError, match="cannot be written") as err:
        AnnotatedVideo(disk / "p.mp4", 15, ["happy"])
    assert "encoder" not in str(err.value)


@pytest.mark.parametrize("name", ["out.txt", "out"])
def test_preview_named_for_no_video_container_says_which_extensions_work(tmp_path, name):
    from edge.pipeline.annotate import AnnotatedVideo

    for make in (lambda p: RunOptions(preview=p).validate(), lambda p: AnnotatedVideo(p, 15, ["happy"])):
        with pytest.raises(UserError, match=r"ending in \.mp4, \.avi, \.mov or \.mkv") as err:
            make(str(tmp_path / name))
        assert "encoder" not in str(err.value)


def test_the_preview_extensions_named_are_ones_opencv_writes(tmp_path):
    import cv2

    from edge.pipeline.annotate import VIDEO_SUFFIXES

    for suffix in VIDEO_SUFFIXES:
        writer = cv2.VideoWriter(str(tmp_path / f"p{suffix}"), cv2.VideoWriter_fourcc(*"mp4v"), 15, (64, 48))
        assert writer.isOpened(), suffix
        writer.release()


def test_a_preview_holds_each_frame_until_the_next_so_it_plays_at_the_speed_seen(tmp_path, monkeypatch):
    """A live source's frames the loop had no time for are dropped: written once each at the
    camera's rate, a Pi classifying 5 of 15 frames a second gave a preview 3 times too fast."""
    import cv2

    from edge.pipeline import annotate
    from edge.pipeline.annotate import AnnotatedVideo

    monkeypatch.setattr(annotate, "draw", lambda image, result, labels, roi: image)
    path = tmp_path / "preview.mp4"
    video = AnnotatedVideo(path, 10, ["happy"])
    for t_s in (100.0, 100.3, 100.6, 100.7, 160.7, 160.8):  # a camera down for a minute before the fifth
        video.add(np.full((48, 64, 3), int(t_s) % 256, np.uint8), None, t_s)
    video.close()
    cap = cv2.VideoCapture(str(path))
    # 1 + 3 + 3 + 1, then at most a second (10 frames) for the minute-long gap, then 1
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 19
    cap.release()


@pytest.mark.parametrize("there_before", [False, True])
def test_an_annotated_video_is_readable_by_its_owner_only(tmp_path, there_before, monkeypatch):
    """It shows customers' faces: under a umask of 022 every local user could read it."""
    import os
    import stat

    import numpy as np

    from edge.pipeline import annotate
    from edge.pipeline.annotate import AnnotatedVideo

    monkeypatch.setattr(annotate, "draw", lambda image, result, labels, roi: image)  # the frames as they come

    path = tmp_path / "preview.mp4"
    if there_before:  # an earlier preview, readable by all: replaced, and closed to others
        path.write_bytes(b"old")
        path.chmod(0o644)
    old = os.umask(0o022)
    try:
        video = AnnotatedVideo(path, 15, ["happy"])
        for _ in range(3):
            video.add(np.zeros((48, 64, 3), np.uint8), None)
        video.close()
    finally:
        os.umask(old)
    assert path.stat().st_size > 100 and stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("given", ["the file", "a link to it"])
def test_an_annotated_video_cannot_be_read_through_the_earlier_file_held_open(tmp_path, given, monkeypatch):
    """An earlier preview readable by all, which another local user has open: the file was made
    0600, emptied and written again, and that user read the whole new video through the open file."""
    import stat

    from edge.pipeline import annotate
    from edge.pipeline.annotate import AnnotatedVideo

    monkeypatch.setattr(annotate, "draw", lambda image, result, labels, roi: image)
    target = tmp_path / "preview.mp4"
    target.write_bytes(b"last week's preview")
    target.chmod(0o644)
    path = target
    if given == "a link to it":  # the file the link names is the one written, as before
        path = tmp_path / "link.mp4"
        path.symlink_to(target)
    with open(target, "rb") as other_user:
        video = AnnotatedVideo(path, 15, ["happy"])
        for _ in range(3):
            video.add(np.zeros((48, 64, 3), np.uint8), None)
        video.close()
        assert other_user.read() == b"last week's preview"
    assert target.stat().st_size > 100 and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert path.is_symlink() == (given == "a link to it")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({path.name, target.name})  # no temporary file left


def test_a_video_given_as_a_path_opens_as_one_given_as_a_str(tmp_path, astronaut_video):
    from edge.pipeline.sources import VideoFileSource

    # OpenCV < 4.10 (a Pi's 4.6) refuses a Path with cv2.error instead of opening it
    with VideoFileSource(astronaut_video) as src:
        assert src.frame_count and next(iter(src)).image.shape == (480, 640, 3)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(UserError, match="Cannot read video"):
        VideoFileSource(bad)


def zero_frame_mp4(path: Path) -> Path:
    """A whole MP4 whose track holds no sample (as a recorder stopped before its first frame
    leaves it): a one-frame mp4v file with its sample tables and durations emptied."""
    import struct

    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    zero_at = {"stts": 12, "stsc": 12, "stco": 12, "stss": 12, "elst": 12, "stsz": 16,  # entry/sample counts
               "mvhd": 24, "mdhd": 24, "tkhd": 28}  # durations (version 0 boxes)

    def walk(at: int, end: int) -> None:
        while at + 8 <= end:
            size, kind = struct.unpack(">I4s", data[at:at + 8])
            if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"):
                walk(at + 8, at + size)
            elif kind.decode() in zero_at:
                struct.pack_into(">I", data, at + zero_at[kind.decode()], 0)
            at += size

    walk(0, len(data))
    path.write_bytes(bytes(data))
    return path


def test_a_video_with_no_frames_is_said_to_have_none_not_to_be_damaged(tmp_path):
    """A whole MP4 (or AVI) holding no frame was called "missing, damaged or in a format OpenCV cannot decode"."""
    import cv2

    from edge.pipeline.sources import VideoFileSource

    avi = tmp_path / "empty.avi"
    cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 15, (64, 48)).release()
    for video in (zero_frame_mp4(tmp_path / "empty.mp4"), avi):
        assert cv2.VideoCapture(str(video)).isOpened(), video  # a whole file, as OpenCV sees it
        with pytest.raises(UserError, match=f"^Video {re.escape(str(video))} has no frames: the file opens"):
            VideoFileSource(video)


def test_unreadable_video_and_bad_config(tmp_path, shipped_model):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    r = run_cli("run", "--source", bad, "--model", shipped_model)
    assert r.returncode == 2 and "Cannot read video" in r.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("[alert]\nraise_share = 0.2\nclear_share = 0.5\n")
    r = run_cli("run", "--config", cfg, "--print-config")
    assert r.returncode == 2 and "alert.clear_share" in r.stderr and "0.5" in r.stderr
    cfg.write_text("[detector]\nkind = 'blazeface'\nthreshold = 3\n")
    r = run_cli("run", "--config", cfg, "--print-config")
    assert r.returncode == 2 and "detector.threshold" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("line, flag, value", [
    ('model = "x.tflite"', "--model", "m.tflite"),
    ("source = 5", "--source", "v.mp4"),
    ('detector = "haar"', "--detector", "haar"),
])
def test_a_scalar_where_a_table_goes_is_one_sentence_with_or_without_its_flag(tmp_path, line, flag, value):
    cfg = tmp_path / "c.toml"
    cfg.write_text(line + "\n")
    key = line.split()[0]
    for extra in ([], [flag, value]):
        r = run_cli("run", "--config", cfg, "--print-config", *extra)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert f"Config key '{key}' must be a table" in r.stderr


def test_print_config_shows_effective_values(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[alert]\nmin_faces = 4\n")
    r = run_cli("run", "--config", cfg, "--print-config", "--camera", "2")
    assert r.returncode == 0, r.stderr
    assert "min_faces = 4" in r.stdout and "camera = 2" in r.stdout


class FakeCamera(LiveSource):
    """Our own LiveSource interface driven by a generator: fast frames, then a stall."""

    stall_s = 0.2

    def __init__(self, stall_after=None):
        super().__init__(max_backoff_s=0.05)
        self.n, self.stall_after, self.opens = 0, stall_after, 0

    def _open(self):
        self.opens += 1

    def _read(self):
        time.sleep(0.002)
        self.n += 1
        if self.stall_after and self.n > self.stall_after and self.opens == 1:  # unplugged until reopened
            return None
        return np.full((4, 4), self.n % 255, np.uint8)


def test_live_source_latest_frame_wins():
    seen = []
    with FakeCamera() as cam:
        for frame in cam:
            seen.append(frame.index)
            time.sleep(0.05)  # a slow consumer
            if len(seen) == 5:
                break
    assert cam.dropped > 5
    assert all(b - a > 1 for a, b in zip(seen, seen[1:])), "stale frames were delivered"


@pytest.mark.parametrize("every, at_least_dropped", [(1, 5), (3, 1)])
def test_a_realtime_recording_comes_at_its_own_rate_and_drops_what_a_slow_consumer_misses(astronaut_video, every, at_least_dropped):
    from edge.pipeline.sources import open_source

    with open_source(None, str(astronaut_video), every=every, realtime=True) as src:  # 10 fps, 30 frames
        start, late, seen = time.monotonic(), [], []
        for frame in src.poll(0.25):
            late.append(time.monotonic() - start - frame.t_s)
            seen.append(frame.index)
            if len(seen) == 2:
                before = src.dropped  # a loaded machine may already have dropped one
                time.sleep(0.75)  # the consumer falls behind: frames more than an interval late are dropped
            if len(seen) == 3:
                break
    assert min(late) >= -0.01, "a frame came before its time"
    assert src.dropped - before >= at_least_dropped and seen[2] - seen[1] == every * (src.dropped - before + 1)
    with open_source(None, str(astronaut_video), every=every) as src:  # not realtime: as fast as it can
        start = time.monotonic()
        assert len(list(src.poll(0.25))) == len(range(0, 30, every)) and src.dropped == 0
        assert time.monotonic() - start < 2.9  # not paced: the recording lasts 3 s


def test_realtime_is_a_source_setting_on_the_command_line_too(tmp_path):
    r = run_cli("run", "--print-config", "--source", "x.mp4", "--realtime")
    assert r.returncode == 0, r.stderr
    assert "realtime = true" in r.stdout
    r = run_cli("run", "--print-config", "--source", "x.mp4")
    assert "realtime = false" in r.stdout


def test_live_source_reopens_after_it_stops_delivering():
    cam = FakeCamera(stall_after=10)
    got = 0
    with cam:
        deadline = time.monotonic() + 30
        for _ in cam:
            got += 1
            if cam.reopens >= 1 and got > 15 or time.monotonic() > deadline:
                break
    assert cam.reopens >= 1 and got > 15


class CountingCapture:
    """A cv2.VideoCapture that counts the frames converted to BGR (retrieve)."""

    def __init__(self, cap):
        self.cap, self.retrieved = cap, 0

    def retrieve(self):
        self.retrieved += 1
        return self.cap.retrieve()

    def __getattr__(self, name):
        return getattr(self.cap, name)


@pytest.mark.parametrize("every", [1, 3])
def test_video_frames_are_converted_only_when_looked_at(astronaut_video, every):
    import cv2

    from edge.pipeline.sources import VideoFileSource

    cap, reference = cv2.VideoCapture(str(astronaut_video)), []  # OpenCV < 4.10 (a Pi's 4.6) takes no Path
    while (got := cap.read())[0]:
        reference.append(got[1])
    with VideoFileSource(astronaut_video, every=every) as src:
        src.cap = CountingCapture(src.cap)
        frames = list(src)  # nobody looks at the pixels
        assert [f.index for f in frames] == list(range(0, len(reference), every))
        assert src.cap.retrieved == 0
    with VideoFileSource(astronaut_video, every=every) as src:
        src.cap = CountingCapture(src.cap)
        looked = []
        for f in src:
            if f.index % 2 == 0:
                assert np.array_equal(f.image, reference[f.index]), f"frame {f.index} has another frame's pixels"
                assert f.image is f.image  # converted once
                looked.append(f)
        assert src.cap.retrieved == len(looked) - 1  # frame 0 is read when the file is opened
    with pytest.raises(RuntimeError, match="after the next frame was read"):
        _ = frames[1].image  # a frame kept past its turn on real faces: needs the shipped (real) model -------------

@pytest.fixture(scope="module")
def shipped_model():
    from edge.models import default_model_path

    try:
        return default_model_path()
    except UserError as exc:
        pytest.skip(f"needs the shipped default model: {exc}")


SLOTS_X = (40, 340)  # where the scene puts its two people


def _usable_faces(fer_root, model_path, labels_wanted, size=220, need=3):
    """FER2013 faces the detector finds, at both places the scene uses, and the model reads
    as their true label (so the scene's ground truth is unambiguous): {label: [gray faces]}."""
    from edge.pipeline.classifier import Classifier
    from edge.pipeline.detectors.base import create_detector
    from edge.pipeline.preprocess import crop_face, to_gray

    clf = Classifier(model_path)
    det = create_detector("blazeface")
    out = {}
    for label in labels_wanted:
        keep = []
        for face in fer_images(fer_root, label):
            ok = True
            for x in SLOTS_X:
                frame = background(1)
                place(frame, face, x, 120, size)
                found = det.detect(frame)
                if len(found) != 1:
                    ok = False
                    break
                crop = crop_face(to_gray(frame), found[0].box.as_tuple(), clf.card.crop, clf.card.input_size)
                probs = clf.predict(crop)[0]
                ok = ok and clf.labels[int(probs.argmax())] == label and probs.max() > 0.5
            if ok:
                keep.append(face)
            if len(keep) == need:
                break
        out[label] = keep
    return out


def test_queue_turning_unhappy_raises_one_alert_and_clears(fer_faces, shipped_model, tmp_path):
    from itertools import combinations

    from edge.pipeline.detectors.base import create_detector

    faces = _usable_faces(fer_faces, shipped_model, ("happy",) + NEGATIVE, need=6)
    astro = astronaut_face()
    det = create_detector("blazeface")

    def both_found(pair):
        # BlazeFace scores upscaled gray FER crops near its threshold, and a second face in
        # the frame can tip one under it: keep only pairs it finds together.
        f = background(7)
        for slot, face in enumerate(pair):
            place(f, face, SLOTS_X[slot], 120, 220 if face.ndim == 2 else 200)
        return len(det.detect(f)) == 2

    negative = [f for lab in NEGATIVE for f in faces[lab]]
    angry = next((list(p) for p in combinations(negative, 2) if both_found(p)), None)
    happy_face = next((f for f in faces["happy"] if both_found((astro, f))), None)
    if angry is None or happy_face is None:
        pytest.skip(f"too few real faces both detected and recognised: { {k: len(v) for k, v in faces.items()} }")
    fps = 5

    def scene(people, seconds, seed):
        frames = []
        for i in range(int(seconds * fps)):
            f = background(seed + i)
            for slot, face in enumerate(people):
                place(f, face, SLOTS_X[slot] + (i % 3), 120, 220 if face.ndim == 2 else 200)
            frames.append(f)
        return frames

    happy = [astro, happy_face]
    # happy queue 0-8 s, unhappy 10-26 s, happy 28-40 s, unhappy again 42-54 s (inside the
    # cooldown); the line is empty for 2 s between groups, so each group is new people
    frames = (scene(happy, 8, 0) + scene([], 2, 50) + scene(angry, 16, 100) + scene([], 2, 150)
              + scene(happy, 12, 200) + scene([], 2, 250) + scene(angry, 12, 300))
    video = write_video(tmp_path / "queue.mp4", frames, fps)
    cfg_file = tmp_path / "queue.toml"
    cfg_file.write_text(f"""
[source]
path = "{video}"
[tracking]
min_hits = 2
max_gap_s = 1.0
[mood]
window_s = 3
score = "expected"  # these people arrive unhappy: the default "change" score looks for people turning unhappy
[alert]
raise_share = 0.6
clear_share = 0.3
raise_after_s = 3
clear_after_s = 3
min_faces = 2
cooldown_s = 600
[sinks.jsonl]
path = "{tmp_path / 'events.jsonl'}"
[status]
enabled = false
""")
    cfg = load_config(cfg_file, {"model.path": str(shipped_model)})
    timeline = []
    held = {}
    summary = run(cfg, RunOptions(), on_result=lambda fr, res: (timeline.append(
        (res.t_s, res.mood.negative_share, res.mood.faces, res.transition)), held.update({res.t_s: res.held_back_s})))
    transitions = [(t, tr) for t, _, _, tr in timeline if tr]
    assert [tr for _, tr in transitions] == ["raised", "cleared"], transitions
    (t_raise, _), (t_clear, _) = transitions
    assert 10 + 3 <= t_raise <= 10 + 8, "raised outside the expected window (after raise_after_s of unhappy faces)"
    assert 26 + 3 <= t_clear <= 26 + 9
    peak = max(s for t, s, _, _ in timeline if 14 <= t <= 26)
    calm = max(s for t, s, _, _ in timeline if 2 <= t <= 8)
    assert peak >= 0.6 > calm
    # unhappy again inside the cooldown: each frame says how long it holds a new alert back
    again = [t for t, s, n, _ in timeline if t > t_clear and s >= 0.6 and n >= 2]
    assert again and all(held[t] == pytest.approx(t_clear + 600 + 3 - t) for t in again)  # cooldown, then raise_after_s
    assert all(held[t] is None for t, s, n, _ in timeline if t not in again)
    assert 6 <= summary["tracks"] <= 10  # people (8 came and went), not frames
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["raised", "cleared"]


def test_nothing_but_counts_leaves_the_device(astronaut_video, shipped_model, tmp_path, monkeypatch):
    """Privacy: with default settings no frame or crop is written or sent anywhere."""
    import cv2

    def forbidden(*a, **k):
        raise AssertionError("an image was about to be written")

    for name in ("imwrite", "VideoWriter", "imencode"):
        monkeypatch.setattr(cv2, name, forbidden)
    monkeypatch.setattr(np, "save", forbidden)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(None, {"source.path": str(astronaut_video), "model.path": str(shipped_model),
                             "sinks.jsonl.path": str(tmp_path / "ev.jsonl"), "status.port": 0,
                             "alert.min_faces": 1, "alert.raise_share": 0.01, "alert.clear_share": 0.0, "alert.raise_after_s": 0.0,
                             "mood.min_confidence": 0.0, "mood.min_seen_s": 0.0, "mood.score": "expected",
                             "mood.negative": ["angry", "disgust", "fear", "happy",
                                                                            "neutral", "sad", "surprise"]})
    before = {p for p in tmp_path.rglob("*")}
    run(cfg, RunOptions(max_frames=20))
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(p.suffix in ("", ".jsonl") for p in created), created
    lines = (tmp_path / "ev.jsonl").read_text().splitlines()
    assert lines
    for line in lines:
        assert len(line) < 1000 and set(json.loads(line)) <= {
            "kind", "t_s", "wall_time", "negative_share", "faces", "counts", "device", "event_id", "clock_synced"}
        assert isinstance(json.loads(line)["clock_synced"], bool)  # Linux: the kernel says whether NTP set the clock


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_stops_cleanly_and_flushes_the_sinks(sig, astronaut_video, shipped_model, tmp_path, request):
    """The signal arrives at frame 10 (sent from the frame callback, so no timing is involved):
    the loop finishes that frame, stops, and the sinks are closed with their events written."""
    import os
    import signal

    cfg = load_config(None, {"source.path": str(astronaut_video), "model.path": str(shipped_model),
                             "sinks.jsonl.path": str(tmp_path / "ev.jsonl"), "status.enabled": False,
                             "alert.min_faces": 1, "alert.raise_share": 0.01, "alert.clear_share": 0.0,
                             "alert.raise_after_s": 0.0, "mood.min_confidence": 0.0, "mood.min_seen_s": 0.0, "mood.score": "expected",
                             "mood.negative": ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]})
    if sig == "SIGHUP":  # as at a terminal (the test may run under nohup, which ignores it)
        was = signal.signal(signal.SIGHUP, signal.SIG_DFL)
        request.addfinalizer(lambda: signal.signal(signal.SIGHUP, was))
    before = signal.getsignal(getattr(signal, sig))

    def at_frame(frame, result):
        if frame.index == 9:
            os.kill(os.getpid(), getattr(signal, sig))

    summary = run(cfg, RunOptions(), on_result=at_frame)
    assert summary["frames"] == 10
    assert signal.getsignal(getattr(signal, sig)) is before  # the handler is given back
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert kinds == ["raised"]


def test_a_hang_up_ignored_by_nohup_stays_ignored():
    import signal

    from edge.signals import StopFlag

    was = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        stop = StopFlag()
        stop.install()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
        stop.restore()
    finally:
        signal.signal(signal.SIGHUP, was)

def test_a_second_signal_while_the_sinks_close_does_not_cut_the_close_short(astronaut_video, shipped_model, tmp_path,
                                                                            monkeypatch):
    """An impatient second Ctrl-C during the close (up to 2 s) raised KeyboardInterrupt there:
    a traceback, and queued events neither delivered nor spooled."""
    import os
    import signal

    from edge.sinks.fanout import Fanout

    cfg = load_config(None, {"source.path": str(astronaut_video), "model.path": str(shipped_model),
                             "sinks.jsonl.path": str(tmp_path / "ev.jsonl"), "status.enabled": False})
    close = Fanout.close

    def impatient_close(self):
        os.kill(os.getpid(), signal.SIGINT)
        close(self)

    monkeypatch.setattr(Fanout, "close", impatient_close)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup (as CI runs), the default at a terminal
    summary = run(cfg, RunOptions(),
                  on_result=lambda frame, result: frame.index == 2 and os.kill(os.getpid(), signal.SIGINT))
    assert summary["frames"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # given back only after the close


def test_a_forced_runtime_name_that_is_no_runtime_is_one_sentence(monkeypatch):
    """A typo in QUEUE_MOOD_RUNTIME read as 'No TFLite runtime is installed'."""
    from edge.errors import UserError
    from edge.pipeline import runtime

    monkeypatch.setattr(runtime, "_cached", None)
    monkeypatch.setenv("QUEUE_MOOD_RUNTIME", "ai_edge_litert")
    with pytest.raises(UserError, match=r"QUEUE_MOOD_RUNTIME=ai_edge_litert names no TFLite runtime; use one of "
                                        r"ai-edge-litert, tflite-runtime, tensorflow\.lite"):
        runtime.runtime()


def test_the_tensorflow_fallback_runtime_runs_the_shipped_model(monkeypatch, shipped_model):
    """The last fallback, forced: `import tensorflow.lite` gives a package without Interpreter."""
    pytest.importorskip("tensorflow")
    from edge.pipeline import runtime
    from edge.pipeline.classifier import Classifier

    monkeypatch.setattr(runtime, "_cached", None)
    monkeypatch.setenv("QUEUE_MOOD_RUNTIME", "tensorflow.lite")
    clf = Classifier(shipped_model)
    assert clf.runtime.name == "tensorflow.lite"
    assert clf.predict(np.full((1, 48, 48), 128, np.uint8)).shape == (1, 7)

@pytest.mark.parametrize("failure, says", [
    (ModuleNotFoundError("No module named 'ai_edge_litert'", name="ai_edge_litert"), "is installed"),
    (ImportError("libfoo.so: cannot open shared object file"), "libfoo.so"),
    (ModuleNotFoundError("No module named 'numpy'", name="numpy"), "numpy"),
])
def test_a_runtime_that_fails_to_import_is_told_apart_from_a_missing_one(monkeypatch, failure, says):
    """'not installed' only when the package is absent; a broken install says what broke."""
    import importlib

    from edge.errors import UserError
    from edge.pipeline import runtime

    def fail(name, *a, **k):
        if name.split(".")[0] in ("ai_edge_litert", "tflite_runtime", "tensorflow"):
            if name.startswith("ai_edge_litert"):
                raise failure
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
        return real(name, *a, **k)

    real = importlib.import_module
    monkeypatch.setattr(runtime, "_cached", None)
    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(UserError) as err:
        runtime.runtime()
    message = str(err.value)
    assert says in message and "\n" not in message
    assert ("could be imported" in message) == (says != "is installed")
    # on a Pi, through install.sh's constraints: numpy<2 is no numpy for Trixie's OpenCV 4.10 and Python 3.13
    assert "numpy<2" not in message and "-c /opt/queue-mood/pip-constraints.txt" in message, message


class TurnedCamera(LiveSource):
    """A camera whose frames have a marked top-left corner."""

    def _open(self):
        pass

    def _read(self):
        time.sleep(0.002)
        img = np.zeros((3, 4), np.uint8)
        img[0, 0] = 255
        return img


@pytest.mark.parametrize("rotate, corner", [(90, (0, 2)), (180, (2, 3)), (270, (3, 0))])
def test_every_kind_of_source_turns_its_frames_by_rotate(tmp_path, rotate, corner):
    import cv2

    from edge.pipeline.sources import open_source

    img = np.zeros((3, 4), np.uint8)
    img[0, 0] = 255
    cv2.imwrite(str(tmp_path / "a.png"), img)
    for make in (lambda: open_source(None, str(tmp_path), rotate=rotate),
                 lambda: open_source(None, str(tmp_path / "a.png"), rotate=rotate)):
        with make() as src:
            (frame,) = list(src)
        got = frame.image if frame.image.ndim == 2 else frame.image[:, :, 0]
        assert list(zip(*np.nonzero(got))) == [corner]
    cam = TurnedCamera()
    cam.rotate = rotate
    with cam:
        frame = next(iter(cam))
    assert list(zip(*np.nonzero(frame.image))) == [corner]


def test_an_upside_down_camera_finds_every_face_only_turned_back(tmp_path):
    """A Pi camera mounted upside down: the detector misses most faces (and the classifier would
    read the ones it finds upside down) until source.rotate = 180."""
    from edge.pipeline.detectors.regions import configured_detector
    from edge.pipeline.sources import open_source

    frames = []
    for i in range(6):
        f = background(i)
        place(f, astronaut_face(), 200 + 4 * i, 120, 160)
        frames.append(f[::-1, ::-1].copy())  # as the camera delivers it, turned by 180 degrees
    video = write_video(tmp_path / "upside_down.mp4", frames, 10)
    detector = configured_detector(load_config(None))
    found = {}
    for rotate in (0, 180):
        with open_source(None, str(video), rotate=rotate) as src:
            found[rotate] = sum(len(detector.detect(frame.image)) for frame in src)
    assert found[180] == 6 and found[0] <= 3, found


def test_rotate_other_than_a_quarter_turn_is_one_sentence(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[source]\nrotate = 45\n")
    r = run_cli("run", "--config", cfg, "--source", tmp_path / "x.mp4")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        "error: Config key 'source.rotate' has the bad value 45; allowed: 0, 90, 180 or 270 (degrees clockwise; 180 "
        "for a camera mounted upside down).")


@pytest.mark.slow  # two runs of the scene
def test_a_run_that_lost_alert_events_exits_1_saying_so(long_video, tmp_path):
    """Found in a review: events lost at the stop (a JSON-lines file that never became writable)
    were ERROR lines and exit status 0, which a script reads as success."""
    from tests.live_edge import CONFIG

    cfg = tmp_path / "edge.toml"
    text = CONFIG.format(device="till-9", video=long_video, port=0, token="page-test-token-0123456789",
                         metrics_token="fleet-test-token-0123456789", history="")
    (tmp_path / "afile").write_text("a file, where the sink needs a folder\n")
    cfg.write_text(text + f'[sinks.jsonl]\npath = "{tmp_path / "afile" / "alerts.jsonl"}"\n')  # never writable
    r = run_cli("run", "--config", cfg, "--max-frames", 150, "-q", env={"HOME": str(tmp_path)})
    assert r.returncode == 1 and "alert events were lost (jsonl: 1)" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    cfg.write_text(text)  # the same run without that sink: nothing lost, 0
    assert run_cli("run", "--config", cfg, "--max-frames", 150, "-q", env={"HOME": str(tmp_path)}).returncode == 0


@pytest.mark.parametrize("link", ["itself", "hard link"])
def test_a_preview_that_is_the_recording_watched_is_refused(tmp_path, link, monkeypatch):
    """`edge run --source v.mp4 --preview v.mp4` wrote a 13-frame annotated video over the recording."""
    import os

    video = write_video(tmp_path / "v.mp4", (background(i) for i in range(5)), 10)
    preview = video if link == "itself" else tmp_path / "p.mp4"
    if link == "hard link":
        os.link(video, preview)
    before = video.read_bytes()
    monkeypatch.chdir(tmp_path)  # the same file by another name: v.mp4, not its absolute path
    r = run_cli("run", "--source", "v.mp4", "--preview", preview, "--max-frames", 3)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"--preview {preview} is the recording being watched (v.mp4)" in errors[0]
    assert video.read_bytes() == before


def test_a_preview_that_cannot_be_created_is_one_sentence(tmp_path):
    """/sys passes the up-front check for root (os.access says yes) but takes no new file: that
    was a PermissionError traceback at the first frame."""
    if not os.path.ismount("/sys"):  # a chroot's bare /sys folder takes files
        pytest.skip("no sysfs at /sys here")
    video = write_video(tmp_path / "v.mp4", (background(i) for i in range(3)), 10)
    r = run_cli("run", "--source", video, "--preview", "/sys/p.mp4", "--max-frames", 2)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(errors) == 1 and errors[0].startswith("error: Cannot write the annotated video /sys/p.mp4"), errors
    assert not Path("/sys/p.mp4").exists()


def test_another_users_preview_is_one_sentence_and_keeps_its_contents(tmp_path, monkeypatch):
    """Root's 0666 file in a folder like /tmp, run as another user: it was emptied, then fchmod
    failed with a traceback. Tests run as root, so fchmod is made to fail as it does there."""
    import errno
    import os

    from edge.pipeline import annotate
    from edge.pipeline.annotate import AnnotatedVideo

    def not_the_owner(fd, mode):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", not_the_owner)
    monkeypatch.setattr(annotate, "draw", lambda image, result, labels, roi: image)  # the frames as they come
    path = tmp_path / "p.mp4"
    path.write_bytes(b"root's video")
    video = AnnotatedVideo(path, 15, ["happy"])
    with pytest.raises(UserError, match=rf"Cannot write the annotated video {path} \(Operation not permitted\); "
                                        "choose a file of your own"):
        video.add(np.zeros((48, 64, 3), np.uint8), None)
    assert path.read_bytes() == b"root's video"


@pytest.mark.parametrize("first,size", [((1, 1), (16, 16)), ((9000, 100), (8190, 90)), ((641, 481), (640, 480))])
def test_an_annotated_video_whose_first_frame_mp4v_cannot_take_is_made_at_a_size_it_can(tmp_path, monkeypatch, first,
                                                                                          size):
    """A folder whose first image was 1x1 or a 12000x9000 photo: `edge analyze --annotate` failed
    with "this OpenCV build has no mp4v encoder", and no analysis at all."""
    import cv2
    import numpy as np

    from edge.pipeline import annotate
    from edge.pipeline.annotate import AnnotatedVideo

    monkeypatch.setattr(annotate, "draw", lambda image, result, labels, roi: image)  # the frames as they come
    path = tmp_path / "annotated.mp4"
    video = AnnotatedVideo(path, 1.0, ["happy"])
    video.add(np.full((first[1], first[0], 3), 200, np.uint8), None)
    video.add(np.full((480, 640, 3), 200, np.uint8), None)
    video.close()
    cap = cv2.VideoCapture(str(path))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == size
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 2


def test_a_frame_at_another_time_makes_its_pixels_once_for_both():
    from edge.pipeline.sources import Frame

    made = []
    frame = Frame(None, 10.0, 3, pixels=lambda: made.append(1) or np.zeros((4, 4, 3), np.uint8))
    moved = frame.at(2.0)
    assert (moved.t_s, moved.index, frame.t_s) == (2.0, 3, 10.0)
    assert moved.image is frame.image and made == [1]
