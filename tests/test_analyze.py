"""`edge analyze` on real faces with known labels: skimage's astronaut (smiling: happy) and
FER2013 val faces, upscaled onto a gradient background in a short 640x480 video and in a
folder of images.

The default BlazeFace detector finds grayscale, upscaled FER2013 crops only some of the
time, so the helpers keep only the faces it finds where they will be shown. File structure
is checked with the tiny model trained in the session (tiny_converted); the emotions need a
really trained model: the shipped default model, or QUEUE_MOOD_TEST_MODEL=path/model_int8.tflite.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from tests.conftest import run_cli  # noqa: E402
from edge.ops.analyze import figure_size_px, time_bins  # noqa: E402
from edge.errors import UserError  # noqa: E402
from edge.pipeline.geometry import BBox  # noqa: E402
from edge.labels import LABELS  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "edge" / "models" / "default" / "model_int8.tflite"
W, H, FPS = 640, 480, 15
SECONDS = 4
N_FRAMES = SECONDS * FPS
# The astronaut's face in skimage.data.astronaut() (see test_detectors.py).
ASTRONAUT_FACE = BBox(174.2, 69.8, 105.2, 105.2)

# Where each face is shown in the test video: (left, top) of its square patch, its side, and
# the frames it is on screen. The two FER faces take turns on the right, with a 0.4 s gap
# and apart, so that each is a track of its own; the astronaut walks along on the left.
PATCH = 230
FER_SIDE = 220
HAPPY_AT, HAPPY_FRAMES = (400, 10), range(0, 27)  # 0.0 - 1.73 s
SURPRISE_AT, SURPRISE_FRAMES = (400, 250), range(33, N_FRAMES)  # 2.2 - 3.93 s
ASTRONAUT_Y = 125

# Faces that look clearly happy / surprised to a person, tried before the others in the
# fixture's set (the first 12 val faces per class); any that the detector misses is skipped.
PREFERRED = {"happy": ["PublicTest_10130075.jpg", "PublicTest_10248771.jpg", "PublicTest_10303060.jpg"],
             "surprise": ["PublicTest_10709121.jpg", "PublicTest_13861015.jpg", "PublicTest_11715606.jpg",
                          "PublicTest_12795179.jpg"]}


# -- helpers: real faces on a plain background ---------------------------------------------


def background(w: int = W, h: int = H) -> np.ndarray:
    """A smooth, slightly tinted left-to-right and top-to-bottom gradient (BGR)."""
    g = (np.linspace(70, 170, w)[None, :] + np.linspace(0, 40, h)[:, None])
    return np.dstack([g, g * 0.95, g * 0.9]).astype(np.uint8)


def astronaut_patch(side: int = PATCH) -> np.ndarray:
    """The astronaut's head and shoulders (twice her face box) as a side x side BGR patch."""
    data = pytest.importorskip("skimage.data")
    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cx, cy = ASTRONAUT_FACE.center
    half = ASTRONAUT_FACE.w  # crop side = 2 face widths
    x0, y0 = int(cx - half), int(max(0, cy - half))
    crop = img[y0 : y0 + int(2 * half), x0 : x0 + int(2 * half)]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_LINEAR)


def fer_patch(path: Path, side: int = FER_SIDE) -> np.ndarray:
    """A 48x48 FER2013 face upscaled to side x side, as BGR."""
    face = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return cv2.cvtColor(cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)


def paste(frame: np.ndarray, patch: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    x, y = at
    frame[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    return frame


def found_at(detector, frame: np.ndarray, at: tuple[int, int], side: int) -> bool:
    """Exactly one face, centred inside the patch at `at`, in the frame and in a JPEG-compressed
    copy of it (the test video is lossy too)."""
    jpeg = cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_COLOR)
    for img in (frame, jpeg):
        dets = detector.detect(img)
        if len(dets) != 1:
            return False
        cx, cy = dets[0].box.center
        if not (at[0] <= cx <= at[0] + side and at[1] <= cy <= at[1] + side):
            return False
    return True


def detected_fer_face(fer_root: Path, label: str, at: tuple[int, int], detector, side: int = FER_SIDE) -> Path:
    """The first FER2013 face of `label` (preferred ones first) the detector finds at `at`."""
    files = sorted((fer_root / label).iterdir())
    order = [f for name in PREFERRED.get(label, []) for f in files if f.name == name]
    order += [f for f in files if f not in order]
    for f in order:
        if found_at(detector, paste(background(), fer_patch(f, side), at), at, side):
            return f
    pytest.skip(f"the detector finds none of the {len(files)} FER2013 '{label}' faces at {side} px")


def astronaut_x(i: int) -> int:
    return 30 + int(round(80 * i / (N_FRAMES - 1)))  # walks 80 px to the right over the video


def scene_frame(i: int, astronaut: np.ndarray, happy: np.ndarray | None, surprise: np.ndarray | None) -> np.ndarray:
    frame = paste(background(), astronaut, (astronaut_x(i), ASTRONAUT_Y))
    if happy is not None and i in HAPPY_FRAMES:
        paste(frame, happy, HAPPY_AT)
    if surprise is not None and i in SURPRISE_FRAMES:
        paste(frame, surprise, SURPRISE_AT)
    return frame


def write_video(path: Path, frames) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    assert writer.isOpened(), "this OpenCV cannot write mp4v"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@dataclass
class Scene:
    video: Path
    folder: Path  # astronaut.jpg, happy.png, surprise.png, empty.png, broken.jpg
    happy: Path  # the FER2013 files used
    surprise: Path


@pytest.fixture(scope="module")
def detector():
    from edge.pipeline.detectors.blazeface import find_model
    from edge.pipeline.detectors.base import create_detector

    if find_model("face_detection_full_range.tflite") is None:
        pytest.skip("BlazeFace models missing from edge/pipeline/detectors/models (reinstall queue-mood)")
    return create_detector("blazeface")


@pytest.fixture(scope="module")
def scene(tmp_path_factory, fer_faces, detector) -> Scene:
    root = tmp_path_factory.mktemp("analyze")
    astro = astronaut_patch()
    for i in (0, N_FRAMES - 1):
        assert found_at(detector, paste(background(), astro, (astronaut_x(i), ASTRONAUT_Y)), (astronaut_x(i), ASTRONAUT_Y), PATCH)
    happy_file = detected_fer_face(fer_faces, "happy", HAPPY_AT, detector)
    surprise_file = detected_fer_face(fer_faces, "surprise", SURPRISE_AT, detector)
    happy, surprise = fer_patch(happy_file), fer_patch(surprise_file)
    video = write_video(root / "queue.mp4", (scene_frame(i, astro, happy, surprise) for i in range(N_FRAMES)))

    folder = root / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "astronaut.jpg"), paste(background(), astro, (200, 120)))
    cv2.imwrite(str(folder / "happy.png"), paste(background(), happy, HAPPY_AT))
    cv2.imwrite(str(folder / "surprise.png"), paste(background(), surprise, SURPRISE_AT))
    cv2.imwrite(str(folder / "empty.png"), background())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 20)
    return Scene(video, folder, happy_file, surprise_file)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def analyze_cli(path, out, model, *extra) -> subprocess.CompletedProcess:
    r = run_cli("analyze", path, "--out", out, "--model", model, *extra)
    assert r.returncode == 0, r.stderr
    return r


def timeline_columns(labels, image: bool = False) -> list[str]:
    return ["time_s", "frame", *(["image"] if image else []), "track_id", "x", "y", "w", "h", *labels, "top",
            "confidence", "smoothed_top", "smoothed_confidence", *([] if image else ["confirmed"])]


def where(rows: list[dict], track_id: str) -> str:
    """Which face a track follows, from where its boxes are: astronaut, happy or surprise."""
    xs = [float(r["x"]) + float(r["w"]) / 2 for r in rows if r["track_id"] == track_id]
    ys = [float(r["y"]) + float(r["h"]) / 2 for r in rows if r["track_id"] == track_id]
    if np.mean(xs) < W / 2:
        return "astronaut"
    return "happy" if np.mean(ys) < H / 2 else "surprise"


# -- the video, with the tiny model: the files and their structure -------------------------


@pytest.mark.slow
def test_video_timeline_tracks_and_chart(scene, tiny_converted, tmp_path):
    out = tmp_path / "out"
    res = analyze_cli(scene.video, out, tiny_converted / "model_int8.tflite")
    labels = json.loads((tiny_converted / "model.json").read_text())["labels"]
    header, rows = read_csv(out / "timeline.csv")
    assert header == timeline_columns(labels)
    # every face in every frame: the astronaut throughout, one FER face in 54 of the 60 frames
    per_frame = np.bincount([int(r["frame"]) for r in rows], minlength=N_FRAMES)
    expected = np.array([1 + (i in HAPPY_FRAMES) + (i in SURPRISE_FRAMES) for i in range(N_FRAMES)])
    assert (per_frame == expected).mean() >= 0.9, per_frame  # a lossy frame may lose a face now and then
    for r in rows:
        p = np.array([float(r[name]) for name in labels])
        assert abs(p.sum() - 1) < 0.02 and r["top"] == labels[int(p.argmax())]
        x, y, w, h = (float(r[k]) for k in "xywh")  # a box may reach a little past the frame's edge
        assert -20 < x and x + w < W + 20 and -20 < y and y + h < H + 20 and w > 50 and h > 50
        assert float(r["time_s"]) == pytest.approx(int(r["frame"]) / FPS, abs=1e-3)

    t_header, tracks = read_csv(out / "tracks.csv")
    assert t_header[:8] == ["track_id", "first_s", "last_s", "frames", "dominant", "dominant_prob", "confirmed",
                            f"mean_{labels[0]}"]
    assert len(tracks) == 3 and {r["track_id"] for r in rows} == {t["track_id"] for t in tracks}
    assert sum(int(t["frames"]) for t in tracks) == len(rows)
    faces = {where(rows, t["track_id"]): t for t in tracks}
    assert set(faces) == {"astronaut", "happy", "surprise"}
    tol = 3 / FPS
    for name, frames in (("astronaut", range(N_FRAMES)), ("happy", HAPPY_FRAMES), ("surprise", SURPRISE_FRAMES)):
        t = faces[name]
        assert float(t["first_s"]) == pytest.approx(frames[0] / FPS, abs=tol), name
        assert float(t["last_s"]) == pytest.approx(frames[-1] / FPS, abs=tol), name
        mean = np.array([float(t[f"mean_{x}"]) for x in labels])
        assert t["dominant"] == labels[int(mean.argmax())] and t["confirmed"] == "1"

    s = json.loads((out / "summary.json").read_text())
    assert s["kind"] == "video" and s["frames_analysed"] == N_FRAMES and s["media_seconds"] == pytest.approx(SECONDS)
    assert s["faces"] == len(rows) and s["tracks"] == 3 and s["failed"] == [] and s["alerts"] == []
    assert sum(s["counts"]["tracks_by_dominant"].values()) == 3
    assert s["seconds_per_media_minute"] > 0 and s["elapsed_s"] >= s["processing_s"] > 0
    assert png_size(out / "summary.png") == figure_size_px("video")
    assert "s per minute of video" in res.stdout and "3 tracks" in res.stdout
    assert not (out / "annotated.mp4").exists()  # only with --annotate


@pytest.mark.slow
def test_every_nth_frame_json_and_annotated_copy(scene, tiny_converted, tmp_path):
    out = tmp_path / "out"
    analyze_cli(scene.video, out, tiny_converted / "model_int8.tflite", "--every", "3", "--format", "json", "--annotate")
    rows = json.loads((out / "timeline.json").read_text())
    assert rows and all(r["frame"] % 3 == 0 for r in rows)
    assert list(rows[0]) == timeline_columns(json.loads((tiny_converted / "model.json").read_text())["labels"])
    tracks = json.loads((out / "tracks.json").read_text())
    assert len(tracks) == 3  # 0.2 s between analysed frames: still well inside tracking.max_gap_s
    s = json.loads((out / "summary.json").read_text())
    assert s["frames_analysed"] == N_FRAMES // 3 and s["every"] == 3
    assert s["media_seconds"] == pytest.approx(SECONDS)
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    n, ok = 0, True
    while ok:
        ok, img = cap.read()
        if ok:
            assert img.shape == (H, W, 3)
            n += 1
    cap.release()
    assert n == N_FRAMES // 3


def every_face_negative(tmp_path: Path, raise_after_s: float) -> Path:
    """A config under which every face counts as negative from its first frame."""
    cfg = tmp_path / "alert.toml"
    cfg.write_text('[mood]\nnegative = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]\n'
                   'min_confidence = 0.0\nmin_seen_s = 0.0\nscore = "expected"\n[alert]\nmin_faces = 1\n'
                   f'raise_after_s = {raise_after_s:g}\n')
    return cfg


@pytest.mark.slow
def test_alert_periods_are_in_the_summary_and_shaded(scene, tiny_converted, tmp_path):
    """A config that counts every face as negative raises the alert 0.5 s after the first
    confirmed face, and it stays raised (the astronaut never leaves)."""
    cfg = every_face_negative(tmp_path, raise_after_s=0.5)
    out = tmp_path / "out"
    r = analyze_cli(scene.video, out, tiny_converted / "model_int8.tflite", "--config", cfg)
    s = json.loads((out / "summary.json").read_text())
    assert len(s["alerts"]) == 1
    (alert,) = s["alerts"]
    # tracking.min_hits = 1: confirmed at the first frame with a face, raised 0.5 s later
    assert alert["raised_s"] == pytest.approx(0.5, abs=1.5 / FPS)
    assert alert["cleared_s"] is None and alert["open_at_end"]
    assert "alert would have been raised once: " in r.stdout
    # the shading: the faces panel (white, below the stacked shares) turns pink after the raise
    img = cv2.imread(str(out / "summary.png"))
    h, w = img.shape[:2]
    panel = img[int(0.80 * h) : int(0.86 * h), int(0.1 * w) : int(0.75 * w)].reshape(-1, 3).astype(int)
    pink = (panel[:, 2] > 235) & (panel[:, 1] < 230) & (panel[:, 1] > 190) & (abs(panel[:, 1] - panel[:, 0]) < 8)
    assert 0.5 < pink.mean() < 0.95  # shaded from ~0.63 s to the end of the 4 s


@pytest.mark.slow
def test_a_raise_the_recording_ends_before_is_said(scene, tiny_converted, tmp_path):
    """Every face negative but raise_after_s longer than the 4 s video: the share sits over the
    raise line to the end with no alert; the report says the raise timer was running, and for how long."""
    cfg = every_face_negative(tmp_path, raise_after_s=30)
    out = tmp_path / "out"
    r = analyze_cli(scene.video, out, tiny_converted / "model_int8.tflite", "--config", cfg)
    s = json.loads((out / "summary.json").read_text())
    assert s["alerts"] == []
    (note,) = [n for n in s["notes"] if "short of alert.raise_after_s (30 s)" in n]
    assert note.startswith(f"When the analysis ended at {(N_FRAMES - 1) / FPS:.1f} s, the queue had been unhappy")
    assert note in r.stdout


# -- images ----------------------------------------------------------------------------


@pytest.mark.slow
def test_image_folder_with_a_corrupt_image(scene, tiny_converted, tmp_path):
    out = tmp_path / "out"
    r = analyze_cli(scene.folder, out, tiny_converted / "model_int8.tflite")
    labels = json.loads((tiny_converted / "model.json").read_text())["labels"]
    header, rows = read_csv(out / "timeline.csv")
    assert header == timeline_columns(labels, image=True)
    assert sorted(r_["image"] for r_ in rows) == ["astronaut.jpg", "happy.png", "surprise.png"]  # one face each
    _, tracks = read_csv(out / "tracks.csv")
    assert len(tracks) == 3 and len({t["track_id"] for t in tracks}) == 3 and all(t["frames"] == "1" for t in tracks)
    s = json.loads((out / "summary.json").read_text())
    assert [Path(f["path"]).name for f in s["failed"]] == ["broken.jpg"]
    assert s["frames_analysed"] == 4 and s["faces"] == 3 and s["media_seconds"] is None
    assert "broken.jpg" in r.stdout and "could not be read" in r.stdout
    assert png_size(out / "summary.png") == figure_size_px("images", 5)


@pytest.mark.slow
def test_single_image(scene, tiny_converted, tmp_path):
    out = tmp_path / "out"
    analyze_cli(scene.folder / "astronaut.jpg", out, tiny_converted / "model_int8.tflite", "--format", "json")
    rows = json.loads((out / "timeline.json").read_text())
    assert len(rows) == 1 and rows[0]["image"] == "astronaut.jpg"
    assert png_size(out / "summary.png") == figure_size_px("images", 1)


# -- no faces, bad input ---------------------------------------------------------------------


@pytest.mark.slow
def test_no_faces_gives_a_header_only_timeline(tiny_converted, tmp_path):
    video = write_video(tmp_path / "empty.mp4", (background() for _ in range(FPS)))
    out = tmp_path / "out"
    r = analyze_cli(video, out, tiny_converted / "model_int8.tflite")
    labels = json.loads((tiny_converted / "model.json").read_text())["labels"]
    assert (out / "timeline.csv").read_text().strip().split(",") == timeline_columns(labels)
    assert len((out / "tracks.csv").read_text().strip().splitlines()) == 1
    assert "No faces were found" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["faces"] == 0 and s["tracks"] == 0 and s["frames_analysed"] == FPS
    assert png_size(out / "summary.png") == figure_size_px("video")


def test_no_faces_in_json_says_the_timeline_is_an_empty_list(tmp_path):
    """timeline.json is `[]`: it has no header to speak of, as timeline.csv has."""
    video = write_video(tmp_path / "empty.mp4", (background() for _ in range(5)))
    out = tmp_path / "out"
    r = run_cli("analyze", video, "--out", out, "--format", "json")  # the shipped model
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "timeline.json").read_text()) == []
    assert "timeline.json is an empty list" in r.stdout and "header" not in r.stdout


def test_a_video_cut_short_says_so_and_charts_only_what_was_read(tmp_path):
    """An AVI whose second half is gone still lists every frame in its header; the analysis
    covers the frames that decode and says the rest is missing, instead of passing silently."""
    import cv2

    small = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(small), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (160, 120))
    for i in range(60):
        writer.write(np.full((120, 160, 3), 40 + i, np.uint8))
    writer.release()
    data = small.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    r = run_cli("analyze", cut, "--out", out)  # the shipped model
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert 0 < s["frames_analysed"] < 50
    assert s["media_seconds"] == round(s["frames_analysed"] / FPS, 3)  # not the header's 4 s
    assert any("ended at frame" in n and "of the 60 its header lists" in n for n in s["notes"]), s["notes"]
    assert "ended at frame" in r.stdout


def _variable_rate_mp4(path: Path, frames: int = 40, slow_from: int = 20, slower: int = 6) -> None:
    """An MP4 whose frames from `slow_from` on last `slower` times as long (a phone's variable
    rate): OpenCV writes one stts entry, split here into two (the boxes around it grow)."""
    import struct

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 40 + i, np.uint8))
    writer.release()
    b = bytearray(path.read_bytes())
    i = b.find(b"stts")
    if b.find(b"moov") < b.find(b"mdat") or struct.unpack(">I", b[i + 8:i + 12])[0] != 1:
        pytest.skip("this OpenCV writes MP4 boxes another way")
    count, delta = struct.unpack(">II", b[i + 12:i + 20])
    b[i + 8:i + 20] = struct.pack(">IIIII", 2, slow_from, delta, count - slow_from, delta * slower)
    for box in (b"stts", b"moov", b"trak", b"mdia", b"minf", b"stbl"):  # moov is after mdat: no offset moves
        j = b.find(box)
        b[j - 4:j] = struct.pack(">I", struct.unpack(">I", b[j - 4:j])[0] + 8)
    j = b.find(b"mdhd")
    timescale = struct.unpack(">I", b[j + 16:j + 20])[0]
    seconds = (slow_from + (count - slow_from) * slower) * delta / timescale
    j = b.find(b"mvhd")
    movie_duration = struct.pack(">I", int(seconds * struct.unpack(">I", b[j + 16:j + 20])[0]))
    b[b.find(b"mdhd") + 20:b.find(b"mdhd") + 24] = struct.pack(">I", int(seconds * timescale))
    for box, at in ((b"mvhd", 20), (b"tkhd", 24), (b"elst", 12)):  # the edit list would cut it at the old length
        if (j := b.find(box)) > 0:
            b[j + at:j + at + 4] = movie_duration
    path.write_bytes(bytes(b))


@pytest.mark.slow
def test_a_variable_frame_rate_video_says_its_times_assume_a_steady_rate(tmp_path):
    """A phone's variable frame rate: the times (index / the header's fps) stray seconds from the
    file's own, which a player shows; the analysis says so instead of passing them off silently."""
    video = tmp_path / "phone.mp4"
    _variable_rate_mp4(video)
    cap = cv2.VideoCapture(str(video))
    own = [cap.get(cv2.CAP_PROP_POS_MSEC) / 1000 for _ in range(40) if cap.grab()]
    if len(own) != 40 or abs(own[20] - 20 / 30) > 0.01:
        pytest.skip("this OpenCV does not read the patched timestamps")
    out = tmp_path / "out"
    r = run_cli("analyze", video, "--out", out)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["frames_analysed"] == 40
    assert any("variable frame rate: its frame" in n for n in s["notes"]), s["notes"]
    assert "variable frame rate" in r.stdout


@pytest.mark.slow
def test_a_steady_rate_video_has_no_variable_rate_note(tmp_path):
    video = tmp_path / "steady.mp4"
    _variable_rate_mp4(video, slower=1)  # patched the same way, every frame as long
    out = tmp_path / "out"
    r = run_cli("analyze", video, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "variable frame rate" not in r.stdout + r.stderr


@pytest.mark.parametrize("name,content", [("broken.mp4", b"not a video " * 50), ("broken.jpg", b"\xff\xd8 junk" * 30),
                                          ("missing.mp4", None)])
def test_unreadable_input_is_one_error_line_and_exit_2(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    # the input is checked before any model is loaded, so no model is needed here
    r = run_cli("analyze", path, "--out", tmp_path / "out", "--model", tmp_path / "no-model.tflite")
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and name in errors[0], r.stderr
    assert r.stdout == ""


def test_an_empty_input_names_analyzes_own_argument(tmp_path):
    r = run_cli("analyze", "", "--out", tmp_path / "out")
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "edge analyze queue.mp4" in errors[0], r.stderr
    assert "--camera" not in errors[0] and "--source" not in errors[0]


@pytest.mark.slow
def test_a_folder_of_only_unreadable_images_is_an_error(tmp_path, tiny_converted):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"junk")
    (folder / "b.png").write_bytes(b"")
    r = run_cli("analyze", folder, "--out", tmp_path / "out", "--model", tiny_converted / "model_int8.tflite")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: None of the 2 images")


# -- real emotions: needs a trained model ----------------------------------------------------


@pytest.fixture(scope="module")
def real_model() -> Path:
    override = os.environ.get("QUEUE_MOOD_TEST_MODEL")
    if override:
        return Path(override)
    if not DEFAULT_MODEL.exists():
        pytest.skip("the shipped default model (edge/models/default/model_int8.tflite) is not there yet; "
                    "emotion checks need a really trained model (the tiny test model only learned synthetic squares)")
    return DEFAULT_MODEL


@pytest.mark.slow
def test_dominant_emotions_of_clearly_expressive_faces(scene, real_model, tmp_path):
    out = tmp_path / "video"
    analyze_cli(scene.video, out, real_model)
    _, rows = read_csv(out / "timeline.csv")
    _, tracks = read_csv(out / "tracks.csv")
    dominant = {where(rows, t["track_id"]): t["dominant"] for t in tracks}
    assert dominant == {"astronaut": "happy", "happy": "happy", "surprise": "surprise"}, \
        f"FER2013 faces {scene.happy.name}, {scene.surprise.name}"

    out = tmp_path / "images"
    analyze_cli(scene.folder, out, real_model)
    _, tracks = read_csv(out / "tracks.csv")
    assert {t["image"]: t["dominant"] for t in tracks} == {
        "astronaut.jpg": "happy", "happy.png": "happy", "surprise.png": "surprise"}


# -- pieces -----------------------------------------------------------------------------------


def test_time_bins_per_second_and_per_frame():
    c = np.eye(3, dtype=int)
    rows = [(0.0, 1, 0.0, c[0]), (0.5, 1, 0.0, c[1]), (1.2, 1, 0.0, c[2])]
    starts, width, counts = time_bins(rows, 0.5, 3)
    assert width == 1.0 and list(starts) == [0.0, 1.0] and counts.tolist() == [[1, 1, 0], [0, 0, 1]]
    starts, width, counts = time_bins([(0.0, 1, 0, c[0]), (2.0, 1, 0, c[1])], 2.0, 3)
    assert width == 2.0 and counts.tolist() == [[1, 0, 0], [0, 1, 0]]
    assert time_bins([], 0.1, 3)[2].shape == (0, 3)


def test_the_charts_frame_rows_hold_a_long_recording_in_little_memory():
    """A 12-hour recording at 15 fps is 648,000 analysed frames: as tuples they took ~240 MB."""
    import tracemalloc

    from edge.ops.analyze import FrameRows

    c = np.eye(7, dtype=np.int64)
    tracemalloc.start()
    try:
        rows = FrameRows(7)
        for i in range(20_000):
            rows.append((i / 15, 3, 0.25, c[i % 7] * 3))
        per_frame = tracemalloc.get_traced_memory()[0] / len(rows)
    finally:
        tracemalloc.stop()
    assert per_frame < 60, per_frame  # 18 bytes + 2 per label, and the arrays' spare room
    t, faces, share, counts = rows[-1]
    assert (t, faces, share, counts.tolist()) == (19_999 / 15, 3, 0.25, (c[19_999 % 7] * 3).tolist())
    as_list = [(i / 15, 3, 0.25, c[i % 7] * 3) for i in range(20_000)]
    for a, b in zip(time_bins(rows, 1 / 15, 7), time_bins(as_list, 1 / 15, 7)):
        assert np.array_equal(a, b)


def test_figure_sizes():
    assert figure_size_px("video") == (1200, 600)
    small, big = figure_size_px("images", 1), figure_size_px("images", 10)
    assert small[0] == big[0] and big[1] > small[1]
    assert figure_size_px("images", 10_000) == figure_size_px("images", 60)  # capped rows


def test_without_matplotlib_analyze_writes_the_tables_and_says_how_to_get_the_chart(monkeypatch, tmp_path,
                                                                                      shipped_model):
    from edge.config import load_config
    from edge.ops.analyze import AnalyzeOptions, analyze, report_lines

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError, as on a Pi
    cv2.imwrite(str(tmp_path / "a.png"), np.full((64, 64, 3), 128, np.uint8))
    out = tmp_path / "out"
    summary = analyze(load_config(None, {"model.path": str(shipped_model)}), str(tmp_path / "a.png"),
                      AnalyzeOptions(out=str(out), progress=False))
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "timeline.csv", "tracks.csv"]
    (note,) = [n for n in summary["notes"] if "summary.png" in n]
    assert "sudo apt install python3-matplotlib" in note and note in report_lines(summary)


def test_demo_names_every_missing_package_at_once_with_its_apt_name(monkeypatch, tmp_path):
    from edge.ops.demo import DemoSettings, run

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(UserError, match=r"sudo apt install python3-matplotlib python3-skimage") as err:
        run(DemoSettings(out=str(tmp_path / "demo")))
    assert "matplotlib and scikit-image" in str(err.value)
    assert not (tmp_path / "demo").exists()  # refused before any work


def test_demo_into_a_folder_that_takes_no_files_is_one_sentence(tmp_path, monkeypatch):
    """A write refused stands in for a read-only folder (root writes anywhere)."""
    import pathlib

    pytest.importorskip("matplotlib")
    pytest.importorskip("skimage")
    from edge.ops.demo import DemoSettings, run

    def refused(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "write_text", refused)
    with pytest.raises(UserError, match=r"Cannot write the demo's files in .*demo \(Permission denied: .*demo\.toml\); "
                                        r"pass --out DIR to a folder you can write\."):
        run(DemoSettings(out=str(tmp_path / "demo")))


def test_demo_into_a_folder_of_the_users_own_files_keeps_them(tmp_path):
    """`edge demo --out DIR` wrote over the user's summary.png there (found in a review); an earlier
    demo's folder is still reused."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("skimage")
    from edge.ops.demo import DEMO_CONFIG_HEAD, DemoSettings, _earlier_demo, run

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.png").write_bytes(b"my chart")
    with pytest.raises(UserError, match=r"--out .*mine already holds summary\.png, which no earlier edge demo wrote"):
        run(DemoSettings(out=str(mine)))
    assert [p.name for p in mine.iterdir()] == ["summary.png"] and (mine / "summary.png").read_bytes() == b"my chart"
    (mine / "demo.toml").write_text(DEMO_CONFIG_HEAD + "[source]\n")
    assert _earlier_demo(mine / "demo.toml") and not _earlier_demo(mine / "summary.png")


def test_edge_analyze_imports_neither_tensorflow_nor_matplotlib_up_front():
    code = ("import sys\nimport edge.ops.analyze, edge.cli\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'matplotlib', 'tqdm', 'train')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_a_person_back_after_a_long_gap_is_one_track_in_the_analysis(tmp_path):
    """tracking.refind_s: a face hidden for 8 s that comes back at its place looking the same
    continues its track, so tracks.csv has one person (the rows of its first second back folded
    in), numbered 1; with refind off the same frames give two."""
    from types import SimpleNamespace

    from edge.config import load_config
    from edge.ops.analyze import _Recorder
    from edge.pipeline.core import FrameResult, QueueMonitor

    look = np.random.default_rng(0).normal(size=324)
    look /= np.linalg.norm(look)
    spot, probs = BBox(200, 100, 80, 88), np.full(len(LABELS), 1 / len(LABELS), np.float32)

    def people(refind_s):
        out = tmp_path / f"refind{refind_s:g}"
        out.mkdir()
        mon = QueueMonitor(load_config(None, {"tracking.refind_s": refind_s, "schedule.detect_hz": 0.0,
                                           "schedule.classify_hz": 0.0}), list(LABELS))
        rec = _Recorder(out, list(LABELS), True, "csv")
        for i in range(75):  # 5 fps: seen 4 s, hidden 8 s, back 3 s
            t = i * 0.2
            boxes = [] if 4.0 <= t < 12.0 else [spot]
            tracks, mood, tr = mon.update(t, boxes, [probs] * len(boxes), [look] * len(boxes))
            faces = [mon.tracker.tracks[tid] for tid in mon.tracker.last_ids] if boxes else []
            res = FrameResult(i, t, len(boxes), tracks, mood, tr, mon.policy.state, faces=faces,
                              refound=list(mon.tracker.refound))
            rec.add(SimpleNamespace(index=i, t_s=t), res, "")
        rec.timeline.close()
        rec.write_tracks()
        with (out / "tracks.csv").open() as fh:
            return list(csv.DictReader(fh))

    rows = people(20.0)
    assert [(r["track_id"], r["frames"]) for r in rows] == [("1", "35")]  # 20 frames before, 15 after
    assert len(people(0.0)) == 2


def test_an_out_that_is_a_file_or_under_one_is_one_sentence(tmp_path):
    from edge.errors import UserError
    from edge.ops.analyze import _output_dir

    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(UserError, match=r"notes.txt is a file; pass a folder"):
        _output_dir(str(tmp_path / "notes.txt"))
    with pytest.raises(UserError, match=r"lies under the file .*notes.txt; pass a folder"):
        _output_dir(str(tmp_path / "notes.txt" / "results"))


@pytest.mark.slow
def test_an_earlier_analysis_in_the_same_folder_is_replaced_whole_and_said(tmp_path):
    """A second run into the same --out (the default ./NAME-analysis, run again) must not leave
    the first run's annotated.mp4 or timeline.csv beside its own files as if they were its."""
    video = write_video(tmp_path / "clip.mp4", (np.full((H, W, 3), 90, np.uint8) for _ in range(FPS)))
    out = tmp_path / "out"
    first = run_cli("analyze", video, "--out", out, "--annotate")
    assert first.returncode == 0, first.stderr
    assert "earlier analysis" not in first.stdout
    assert {"timeline.csv", "tracks.csv", "annotated.mp4", "summary.json"} <= {p.name for p in out.iterdir()}
    second = run_cli("analyze", video, "--out", out, "--format", "json")
    assert second.returncode == 0, second.stderr
    left = {p.name for p in out.iterdir()}
    assert {"timeline.json", "tracks.json", "summary.json"} <= left
    assert not left & {"timeline.csv", "tracks.csv", "annotated.mp4"}, left
    s = json.loads((out / "summary.json").read_text())
    assert any("held an earlier analysis" in n and "annotated.mp4" in n for n in s["notes"]), s["notes"]
    assert "held an earlier analysis" in second.stdout
    assert "an earlier analysis there is replaced" in " ".join(run_cli("analyze", "--help").stdout.split())


def test_the_summary_records_the_command_that_made_it(tmp_path):
    """The alert periods depend on --config and --every: the folder must say how it was made."""
    video = write_video(tmp_path / "clip.mp4", (np.full((H, W, 3), 90, np.uint8) for _ in range(3)))
    r = run_cli("analyze", video, "--out", tmp_path / "out", "--every", "2")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["command"].endswith(f"analyze {video} --out {tmp_path / 'out'} --every 2")
    assert s["working_folder"] == os.getcwd()


@pytest.mark.slow
def test_a_failed_analysis_puts_the_earlier_one_back(tmp_path):
    """A run that fails (here: no image of the folder can be read) removed the earlier analysis
    and left a header-only timeline.csv in its place."""
    images, bad, out = tmp_path / "images", tmp_path / "bad", tmp_path / "out"
    images.mkdir()
    bad.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((H, W, 3), 90, np.uint8))
    (bad / "a.png").write_bytes(b"junk")
    assert run_cli("analyze", images, "--out", out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = run_cli("analyze", bad, "--out", out)
    assert r.returncode == 2 and "None of the 1 image in" in r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing set aside left behind either


@pytest.mark.parametrize("source", ["rtsp://user:secret@127.0.0.1:1/live", "http://127.0.0.1:1/cam.mjpg"])
def test_a_stream_is_refused_before_the_model_loads(tmp_path, source):
    """It was opened as a camera: an error after the model loaded, or a run without an end."""
    r = run_cli("analyze", source, "--out", tmp_path / "out", "--model", tmp_path / "no-model.tflite")
    assert r.returncode == 2 and "is a live camera or stream; record it first" in r.stderr, r.stderr
    assert "secret" not in r.stderr and not (tmp_path / "out").exists()


def test_a_file_url_is_told_to_give_the_path():
    """file:// was called "a live camera or stream" (found in a review)."""
    r = run_cli("analyze", "file:///home/pi/queue.mp4")
    assert r.returncode == 2 and "is a file:// URL; pass the file's own path" in r.stderr, r.stderr


def test_an_out_that_is_the_folder_analysed_is_refused(tmp_path):
    """Its next run would have analysed this run's summary.png as one more image."""
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((H, W, 3), 90, np.uint8))
    r = run_cli("analyze", images, "--out", images)
    assert r.returncode == 2 and "is the folder being analysed" in r.stderr
    assert [p.name for p in images.iterdir()] == ["a.png"]


@pytest.mark.slow
def test_a_folder_no_analysis_wrote_keeps_its_files_of_the_same_names(tmp_path):
    """--out at a folder of the user's own: their summary.json was overwritten without a word;
    now that is refused in one sentence, and files of names this run does not write stay."""
    video = write_video(tmp_path / "clip.mp4", (np.full((H, W, 3), 90, np.uint8) for _ in range(FPS)))
    out = tmp_path / "mine"
    out.mkdir()
    (out / "annotated.mp4").write_bytes(b"the user's own video")
    (out / "summary.json").write_text('{"budget": 3}\n')
    (out / "timeline.json").write_text("[]\n")
    refused = run_cli("analyze", video, "--out", out, "--format", "json")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2 and len(errors) == 1 and refused.stdout == "", refused.stderr
    assert errors[0].startswith(f"error: --out {out} already holds timeline.json, summary.json, which no earlier "
                                "analysis wrote and this run would overwrite;"), errors
    assert (out / "summary.json").read_text() == '{"budget": 3}\n' and (out / "timeline.json").read_text() == "[]\n"
    (out / "summary.json").unlink()
    proc = run_cli("analyze", video, "--out", out)  # csv, no --annotate: none of the files it writes is there
    assert proc.returncode == 0, proc.stderr
    assert (out / "annotated.mp4").read_bytes() == b"the user's own video"
    assert (out / "timeline.json").read_text() == "[]\n"
    assert "earlier analysis" not in proc.stdout


def charts_drawn(monkeypatch) -> list:
    """The matplotlib Figures edge analyze saves, kept for the test to read (run in-process)."""
    from edge.ops import analyze

    figures, save = [], analyze._save
    monkeypatch.setattr(analyze, "_save", lambda fig, path: (figures.append(fig), save(fig, path)))
    return figures


@pytest.mark.parametrize("sig,how,status", [("SIGINT", "Ctrl-C", 130), ("SIGTERM", "SIGTERM", 143),
                                            ("SIGHUP", "SIGHUP", 129)])
def test_a_stop_signal_writes_the_part_analysed_and_replaces_the_earlier_analysis(tmp_path, monkeypatch, request,
                                                                                  sig, how, status):
    """SIGTERM and SIGHUP (an SSH session dropping) ended the process mid-file, the earlier
    analysis left in a hidden folder; like Ctrl-C they now stop the loop: files for what was
    done, a note saying so, and the shell's status for that signal. The signal is sent from the
    fifth frame, so no timing is involved; what handled it before stands in for the default
    handler, which would end pytest too."""
    import signal

    from click.testing import CliRunner

    from edge.cli import cli
    from edge.pipeline.core import Pipeline

    def default_handler(signum, frame):
        raise AssertionError(f"{sig} reached the handler edge analyze found: the default one ends it mid-file")

    was = signal.signal(getattr(signal, sig), default_handler)
    request.addfinalizer(lambda: signal.signal(getattr(signal, sig), was))
    video = write_video(tmp_path / "clip.mp4", (np.full((H, W, 3), 90, np.uint8) for _ in range(3 * FPS)))
    process, seen = Pipeline.process, []

    def signalled_at_the_fifth_frame(self, frame):
        seen.append(frame)
        if len(seen) == 5:
            os.kill(os.getpid(), getattr(signal, sig))
        return process(self, frame)

    monkeypatch.setattr(Pipeline, "process", signalled_at_the_fifth_frame)
    figures = charts_drawn(monkeypatch)
    out = tmp_path / "out"
    fake_earlier_analysis(out, "annotated.mp4")
    result = CliRunner().invoke(cli, ["analyze", str(video), "--out", str(out)])
    assert result.exit_code == status, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_signal"] == sig and summary["frames_analysed"] == 5
    assert any(n.startswith(f"Stopped by {how} after 5 analysed frames") for n in summary["notes"])
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "summary.png", "timeline.csv", "tracks.csv"]
    # summary.png is what gets passed round: the chart of a part must not pass for the whole recording's
    title = figures[0].axes[1].get_title()  # the shares panel (added after the faces panel)
    assert f"stopped by {how} at 0.3 s: the chart covers only that part" in title, title
    assert signal.getsignal(getattr(signal, sig)) is default_handler  # given back


def test_an_unhappy_queue_held_back_by_the_cooldown_is_shaded_and_said(tmp_path, monkeypatch):
    """After a clear, alert.cooldown_s holds a new alert back: the chart showed the negative share
    over the raise line for minutes with no alert and nothing said why (the live status page
    says it). The frames the policy held an alert back are now a span in summary.json, hatched
    in the chart and a sentence in the report."""
    import dataclasses

    from click.testing import CliRunner

    from edge.cli import cli
    from edge.pipeline.core import Pipeline

    video = write_video(tmp_path / "clip.mp4", (np.full((H, W, 3), 90, np.uint8) for _ in range(2 * FPS)))
    process = Pipeline.process

    def held_back_in_frames_9_to_17(self, frame):
        result = process(self, frame)
        return dataclasses.replace(result, held_back_s=5.0) if 9 <= frame.index < 18 else result

    monkeypatch.setattr(Pipeline, "process", held_back_in_frames_9_to_17)
    figures = charts_drawn(monkeypatch)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["analyze", str(video), "--out", str(out)])
    assert result.exit_code == 0, result.output
    s = json.loads((out / "summary.json").read_text())
    assert s["alerts_held_back"] == [{"from_s": 0.6, "until_s": 1.2}] and s["alert_cooldown_s"] == 120
    assert "unhappy enough for an alert at 0.6-1.2 s, but no new alert is raised within alert.cooldown_s (120 s)" \
        in result.output
    labels = [t.get_text() for t in figures[0].axes[1].get_legend().get_texts()]
    assert any(t.startswith("alert held back") for t in labels), labels


def test_a_video_with_no_face_counts_its_faces_in_whole_numbers(tmp_path, monkeypatch):
    """With no face at all the faces panel's axis ran 0 to 0.054 in steps of 0.006 faces."""
    from click.testing import CliRunner

    from edge.cli import cli

    video = write_video(tmp_path / "empty.mp4", (np.full((H, W, 3), 90, np.uint8) for _ in range(FPS)))
    figures = charts_drawn(monkeypatch)
    result = CliRunner().invoke(cli, ["analyze", str(video), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    faces_axis = figures[0].axes[0]
    assert faces_axis.get_ylabel() == "faces"
    ticks = [t for t in faces_axis.get_yticks() if faces_axis.get_ylim()[0] <= t <= faces_axis.get_ylim()[1]]
    assert ticks == [0, 1]


@pytest.mark.parametrize("link", ["itself", "hard link"])
def test_an_output_that_is_the_input_itself_is_refused(tmp_path, link):
    """The annotated.mp4 of an earlier analysis, analysed again into its folder with --annotate,
    was written over while it was read; so was an image hard-linked as summary.png."""
    out = tmp_path / "out"
    if link == "itself":
        fake_earlier_analysis(out)
        source = write_video(out / "annotated.mp4", (np.full((H, W, 3), 90, np.uint8) for _ in range(3)))
        extra = ["--annotate"]
    else:
        out.mkdir()
        (tmp_path / "images").mkdir()
        source = tmp_path / "images" / "a.png"
        cv2.imwrite(str(source), np.full((H, W, 3), 90, np.uint8))
        os.link(source, out / "summary.png")
        extra = []
    before = source.read_bytes()
    r = run_cli("analyze", source.parent if link == "hard link" else source, "--out", out, *extra)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"over the input {source} (the same file)" in errors[0], errors
    assert source.read_bytes() == before and r.stdout == ""


def fake_earlier_analysis(out: Path, *names: str) -> dict[str, bytes]:
    """A folder that reads as an earlier analysis (its summary.json), with `names` beside it;
    returns every file's bytes."""
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"frames_analysed": 3, "detector": "blazeface", "input": "x.mp4"}))
    for name in names:
        (out / name).write_bytes(f"the earlier {name}".encode())
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_an_annotated_video_that_cannot_be_made_private_is_one_sentence_and_the_earlier_one_stays(tmp_path,
                                                                                                   monkeypatch):
    """fchmod refused (another user's file, as root's in a shared folder): a traceback; now one
    sentence, exit 2, and the earlier analysis as it was."""
    import errno

    from click.testing import CliRunner

    from edge.cli import cli

    def not_the_owner(fd, mode):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    video = write_video(tmp_path / "clip.mp4", (np.full((H, W, 3), 90, np.uint8) for _ in range(3)))
    out = tmp_path / "out"
    before = fake_earlier_analysis(out, "timeline.csv", "annotated.mp4")
    monkeypatch.setattr(os, "fchmod", not_the_owner)
    result = CliRunner().invoke(cli, ["analyze", str(video), "--out", str(out), "--annotate"])
    assert result.exit_code == 2, result.output
    assert f"error: Cannot write the annotated video {out / 'annotated.mp4'} (Operation not permitted)" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing set aside left behind either


def test_an_earlier_analysis_that_cannot_be_moved_is_one_sentence_and_stays_whole(tmp_path, monkeypatch):
    """Another user's analysis in a folder with the sticky bit (as /tmp): the first file it could
    not move was a traceback, with the files moved before it left in the hidden folder."""
    import errno

    from edge.ops.analyze import _replacing_earlier

    out = tmp_path / "out"
    before = fake_earlier_analysis(out, "timeline.csv", "tracks.csv")
    replace = Path.replace

    def sticky(self, target):
        if self.name == "tracks.csv" and self.parent == out:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(self))
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", sticky)
    with pytest.raises(UserError, match=rf"Cannot replace the earlier analysis in {out}: {out / 'tracks.csv'} cannot "
                                        r"be moved \(Operation not permitted\); have its owner remove it"):
        with _replacing_earlier(out, [], [], []):
            pass
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_folders_files_that_are_not_images_are_counted_and_named(tmp_path):
    """Only the unreadable images were listed as skipped: the video and the notes beside them
    were never mentioned, as if the folder held nothing else."""
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((H, W, 3), 90, np.uint8))
    (images / "bad.jpg").write_bytes(b"junk")
    (images / "empty.png").write_bytes(b"")
    write_video(images / "clip.mp4", (np.full((H, W, 3), 90, np.uint8) for _ in range(3)))
    (images / "readme.txt").write_text("the queue at noon\n")
    (images / ".DS_Store").write_bytes(b"\0")  # hidden: no one's data
    r = run_cli("analyze", images, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    reasons = {Path(f["path"]).name: f["reason"] for f in s["failed"]}
    assert reasons.keys() == {"bad.jpg", "empty.png", "clip.mp4", "readme.txt"}, reasons
    assert reasons["clip.mp4"] == reasons["readme.txt"] == "not an image file (.jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp)"
    assert "2 files could not be read and were skipped" in r.stdout
    assert (f"2 files are not images (.jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp) and were left out of {images}: "
            "clip.mp4, readme.txt.") in r.stdout.splitlines()


# Run as `python -c KILLED_AT_THE_FIFTH_FRAME analyze ...`: edge analyze, killed outright (as by
# SIGKILL, the OOM killer or a power cut: no handler runs) at its fifth frame.
KILLED_AT_THE_FIFTH_FRAME = """
import os, signal, sys
from edge.pipeline.core import Pipeline
process, seen = Pipeline.process, []
def killed_at_the_fifth_frame(self, frame):
    seen.append(frame)
    if len(seen) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return process(self, frame)
Pipeline.process = killed_at_the_fifth_frame
from edge.cli import cli
sys.argv[0] = "edge"
cli()
"""


@pytest.mark.slow
@pytest.mark.parametrize("earlier", [True, False], ids=["earlier analysis", "new folder"])
def test_an_analysis_killed_outright_leaves_a_folder_the_next_run_puts_right(tmp_path, earlier):
    """Killed mid-run, edge analyze left the earlier analysis in a hidden .earlier-analysis-*
    folder and its own partial timeline.csv beside it; the next run then refused the folder as
    one no analysis wrote. Now the next run removes the partial files, puts the earlier analysis
    back (saying so) and replaces it as usual; a file of the user's own of a name the killed run
    did not write stays."""
    video = write_video(tmp_path / "clip.mp4", (np.full((H, W, 3), 90, np.uint8) for _ in range(3 * FPS)))
    out = tmp_path / "out"
    if earlier:
        before = fake_earlier_analysis(out, "timeline.json", "tracks.json")
    else:
        out.mkdir()
        (out / "annotated.mp4").write_bytes(b"the user's own video")
        before = {"annotated.mp4": b"the user's own video"}
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_THE_FIFTH_FRAME, "analyze", str(video), "--out", str(out),
                             *(["--annotate"] if earlier else [])], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr
    assert [p.name for p in out.glob(".earlier-analysis-*")] and (out / "timeline.csv").is_file()  # what a kill leaves
    r = run_cli("analyze", video, "--out", out, "--format", "json")
    assert r.returncode == 0, r.stderr
    partial = "timeline.csv, annotated.mp4 were" if earlier else "timeline.csv was"
    said = f"An analysis into {out} was killed before it finished: its partial {partial} removed"
    said += "; the earlier analysis it was replacing (timeline.json, tracks.json, summary.json) was put back." \
        if earlier else "."
    assert said in r.stderr.splitlines() and said in r.stdout.splitlines(), (r.stderr, r.stdout)
    if earlier:
        assert f"{out} held an earlier analysis (timeline.json, tracks.json, summary.json)" in r.stdout
    left = {p.name for p in out.iterdir()}
    assert {"timeline.json", "tracks.json", "summary.json"} <= left and "timeline.csv" not in left, left
    assert not [p for p in out.iterdir() if p.name.startswith(".")], left
    assert json.loads((out / "summary.json").read_text())["frames_analysed"] == 3 * FPS
    if not earlier:
        assert (out / "annotated.mp4").read_bytes() == before["annotated.mp4"]


def test_a_folder_another_analysis_is_writing_is_refused(tmp_path):
    """A second edge analyze into a folder the first one is writing would have taken its hidden
    folder for one a kill left; it is refused in one sentence, and the first one's files stay."""
    from edge.ops.analyze import _finish_interrupted, _replacing_earlier

    out = tmp_path / "out"
    fake_earlier_analysis(out, "timeline.csv")
    with _replacing_earlier(out, [], ["timeline.csv", "summary.json"], []):
        (out / "timeline.csv").write_text("time_s\n")
        with pytest.raises(UserError, match=rf"^--out {out} is being written by another edge analyze that is still "
                                            r"running; wait for it to finish, or pass another --out\.$"):
            _finish_interrupted(out, [], [])
        assert (out / "timeline.csv").read_text() == "time_s\n"
    assert {p.name for p in out.iterdir()} == {"timeline.csv"}  # left by the with-block as a finished run would


def test_a_video_whose_header_gives_an_impossible_frame_rate_says_the_rate_its_times_assume(tmp_path):
    """A header of 5000 fps was replaced by 25 fps without a word: every time in the timeline,
    the alert periods and the media seconds rested on a rate no one was told of."""
    import struct

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(5):
        writer.write(np.full((48, 64, 3), 90, np.uint8))
    writer.release()
    data = bytearray(video.read_bytes())
    rate = data.find(b"strh") + 8 + 24  # the stream header's dwRate (frames per dwScale = 1 s)
    data[rate:rate + 4] = struct.pack("<I", 5000)
    video.write_bytes(bytes(data))
    r = run_cli("analyze", video, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    said = (f"Video {video} gives 5000 frames per second in its header, which cannot be right; its times assume 25 "
            "(if the rate is known, re-encode it with it, e.g. ffmpeg -r 15 -i IN OUT.mp4).")
    assert said in r.stdout.splitlines() and said in r.stderr.splitlines(), (r.stdout, r.stderr)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["media_fps"] == 25 and s["media_seconds"] == 0.2 and said in s["notes"]


def test_subfolders_and_broken_links_of_an_image_folder_are_said(tmp_path):
    """A folder of day1/, day2/ was "Folder ... has no images", and the images of a subfolder
    beside images, or a link to a moved photo, were left out without a word."""
    photos = tmp_path / "photos"
    (photos / "day1").mkdir(parents=True)
    cv2.imwrite(str(photos / "day1" / "a.png"), np.full((H, W, 3), 90, np.uint8))
    only = run_cli("analyze", photos, "--out", tmp_path / "out")
    assert only.returncode == 2 and only.stderr.splitlines()[-1] == (
        f"error: Folder {photos} has no images (.jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp); its subfolders (day1) "
        "are not looked into: pass one of them."), only.stderr
    cv2.imwrite(str(photos / "b.png"), np.full((H, W, 3), 90, np.uint8))
    (photos / "day2").mkdir()
    (photos / "moved.jpg").symlink_to(photos / "gone.jpg")
    r = run_cli("analyze", photos, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert f"The subfolders of {photos} (day1, day2) are not looked into; analyse each on its own." in r.stdout
    assert f"1 file could not be read and was skipped: {photos / 'moved.jpg'} (a link to a file that does not exist)." \
        in r.stdout
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["frames_analysed"] == 1 and [f["path"] for f in s["failed"]] == [str(photos / "moved.jpg")]


def test_an_image_named_in_a_script_the_charts_font_lacks_gives_no_warning_lines(tmp_path):
    """matplotlib warned once per character of 日本.png, each warning with a line of analyze.py,
    as if the run had gone wrong; the chart draws the name as boxes, which is all there is to it."""
    pytest.importorskip("matplotlib")
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((H, W, 3), 90, np.uint8))
    (images / "日本.png").write_bytes((images / "a.png").read_bytes())
    r = run_cli("analyze", images, "--out", tmp_path / "out")
    assert r.returncode == 0 and (tmp_path / "out" / "summary.png").is_file(), r.stderr
    assert "Warning" not in r.stderr and "savefig" not in r.stderr, r.stderr


def test_what_a_killed_analysis_left_that_cannot_be_put_right_is_one_sentence(tmp_path, monkeypatch):
    """Another user's killed analysis in a shared folder: one sentence, not a PermissionError."""
    import errno

    from edge.ops.analyze import _finish_interrupted

    out = tmp_path / "out"
    out.mkdir()
    aside = out / ".earlier-analysis-x1"
    fake_earlier_analysis(aside, "timeline.csv")
    (out / "timeline.csv").write_text("time_s\n")
    replace = Path.replace

    def not_the_owner(self, target):
        if self.parent == aside:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(self))
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", not_the_owner)
    with pytest.raises(UserError, match=rf"^--out {out} holds .earlier-analysis-x1, left by an analysis killed before "
                                        rf"it finished, which cannot be put right \({aside}/.*: Operation not "
                                        r"permitted\); have its owner run the analysis again, or pass another --out\.$"):
        _finish_interrupted(out, [], [])


def test_a_missing_input_is_told_what_analyze_reads(tmp_path):
    """It had edge run's sentence, which offers an rtsp:// URL that edge analyze then refuses."""
    r = run_cli("analyze", tmp_path / "gone.mp4", "--out", tmp_path / "out")
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and line == (f"error: {tmp_path / 'gone.mp4'} does not exist; pass edge analyze a video "
                                          "file, an image or a folder of images."), r.stderr


@pytest.mark.slow
def test_an_out_inside_the_image_folder_is_not_named_as_a_subfolder_left_out(tmp_path):
    """A second run into images/res said "The subfolder of images (res) is not looked into": its own output."""
    images = tmp_path / "images"
    (images / "day2").mkdir(parents=True)
    cv2.imwrite(str(images / "a.png"), np.full((H, W, 3), 90, np.uint8))
    for _ in range(2):
        r = run_cli("analyze", images, "--out", images / "res")
        assert r.returncode == 0, r.stderr
    said = [ln for ln in r.stdout.splitlines() if "not looked into" in ln]
    assert said == [f"The subfolder of {images} (day2) is not looked into; analyse it on its own."], r.stdout


def test_the_summary_names_the_models_fingerprint_and_one_frame_is_one_frame(tmp_path, shipped_model):
    """An engineer comparing analyses of two models could tell them apart only by their paths."""
    from edge.card import sha256_file

    video = write_video(tmp_path / "clip.mp4", (np.full((H, W, 3), 90, np.uint8) for _ in range(1)))
    r = run_cli("analyze", video, "--out", tmp_path / "out", "--model", shipped_model)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["model_sha256"] == sha256_file(shipped_model)
    assert "Analysed 1 frame (" in r.stdout, r.stdout


def test_a_video_with_faces_and_no_alert_says_no_alert_would_have_been_raised():
    from edge.ops.analyze import report_lines

    s = {"kind": "video", "every": 1, "frames_analysed": 30, "media_seconds": 2.0, "processing_s": 1.0,
         "seconds_per_media_minute": 30, "files": {"timeline": "out/timeline.csv"}, "faces": 30, "tracks": 1,
         "tracks_confirmed": 1, "counts": {"tracks_by_dominant": {"happy": 1}}, "alerts": [], "failed": [],
         "notes": []}
    assert "The alert would not have been raised." in report_lines(s)
    s["alerts_held_back"] = [{"from_s": 1, "until_s": 2}]
    s["alert_cooldown_s"] = 120
    assert "The alert would not have been raised." not in report_lines(s)  # the held-back sentence says why


def test_the_report_counts_one_track_and_one_face_sighting_in_the_singular():
    """A clip with one face in one analysed frame was reported as "1 tracks ... in 1 face sightings"."""
    from edge.ops.analyze import report_lines

    s = {"kind": "video", "every": 1, "frames_analysed": 1, "media_seconds": 0.1, "processing_s": 0.1,
         "seconds_per_media_minute": 60, "files": {"timeline": "out/timeline.csv"}, "faces": 1, "tracks": 1,
         "tracks_confirmed": 0, "counts": {"tracks_by_dominant": {"happy": 1}}, "alerts": [], "failed": [],
         "notes": []}
    assert "1 track (0 long enough to count in the live monitor) in 1 face sighting; dominant emotions: happy 1." \
        in report_lines(s)
    s.update(tracks=2, faces=3)
    assert any(line.startswith("2 tracks (0 long enough") and "in 3 face sightings;" in line for line in report_lines(s))
