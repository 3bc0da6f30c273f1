"""Setting up the camera at a new checkout: what `edge doctor --camera N` tells the person aiming
it (what the camera delivers against what the config asks for, the light, the faces in view and
how wide), measured through the monitor's own source; no frame leaves the probe."""

from __future__ import annotations

import re
import socket
import threading
import time

import cv2
import numpy as np
import pytest

from benchmarks.scenes import astronaut_face, background
from edge.config import load_config
from edge.ops.doctor.camera import camera_verdicts, check_camera, faces_verdict, probe_camera
from edge.ops.doctor.context import FAIL, OK, WARN, DoctorSettings, _Context
from edge.pipeline.sources import LiveSource
from tests.conftest import run_cli


def queue_frame(w: int, h: int, head_w: int, light: float = 1.0) -> np.ndarray:
    """A background with the astronaut's head and shoulders head_w px wide, its light scaled."""
    img = cv2.resize(background(0), (w, h))
    face = astronaut_face()
    fh = int(round(face.shape[0] * head_w / face.shape[1]))
    img[h // 5 : h // 5 + fh, w // 3 : w // 3 + head_w] = cv2.resize(face, (head_w, fh), interpolation=cv2.INTER_AREA)
    return np.clip(img * light, 0, 255).astype(np.uint8)


class SlowWideCamera(LiveSource):
    """Asked for 640x480 at 15 fps, it delivers 1280x720 at 5 fps (a USB camera in dim light)."""

    asked_size = (640, 480)

    def __init__(self, image):
        super().__init__()
        self.image = image

    def _open(self):
        pass

    def _read(self):
        time.sleep(0.2)
        return self.image

    def describe(self):
        return "camera 0"


@pytest.mark.slow
def test_the_probe_measures_size_rate_light_and_faces_through_the_monitors_source(monkeypatch):
    cam = SlowWideCamera(queue_frame(1280, 720, 320))
    monkeypatch.setattr("edge.pipeline.sources.open_source", lambda *a, **kw: cam)
    got = probe_camera(load_config(None, {}), 0, seconds=1.5)
    assert got["source"] == "camera 0" and got["size"] == [1280, 720] and 3.5 < got["fps"] < 5.5
    assert 60 < got["mean"] < 190 and len(got["faces"]) == 1 and got["faces"][0] > 80
    assert got["focus"] is None  # a USB camera: no focus of ours to report
    assert set(got) == {"source", "size", "fps", "mean", "white", "faces", "focus", "flicker", "stream"}  # never the frame
    assert got["stream"] is False


def _rows(got: dict, **cfg) -> dict:
    return {name: (status, detail) for name, status, detail in camera_verdicts(got, load_config(None, cfg))}


def test_doctor_says_when_the_camera_delivers_another_size_or_a_slow_rate():
    good = {"source": "camera 0", "size": [640, 480], "fps": 14.9, "mean": 110, "white": 0.01, "faces": []}
    assert _rows(good)["camera"][0] == OK and "640x480 at 14.9 fps measured" in _rows(good)["camera"][1]
    status, detail = _rows({**good, "size": [1920, 1080], "fps": 5.0})["camera"]
    assert status == WARN and "not the 640x480 asked for" in detail and "6.8x the pixels" in detail
    assert "not the 15 fps asked for" in detail and "dim light" in detail
    assert _rows({**good, "size": [1920, 1080]}, **{"source.width": 1920, "source.height": 1080})["camera"][0] == OK


def test_doctor_says_too_dark_and_over_exposed():
    good = {"source": "camera 0", "size": [640, 480], "fps": 15.0, "mean": 110, "white": 0.01, "faces": []}
    assert _rows(good)["camera light"][0] == OK
    assert _rows({**good, "mean": 25})["camera light"][0] == WARN and "too dark" in _rows({**good, "mean": 25})["camera light"][1]
    assert "over-exposed" in _rows({**good, "white": 0.4})["camera light"][1]


def test_doctor_gives_the_width_of_the_faces_in_view_against_the_40_px_target():
    assert faces_verdict([], 640, False)[1] == OK  # nobody in the queue while installing: not a fault
    _, status, detail = faces_verdict([31, 45], 640, False)
    assert status == WARN and "2 faces, 31-45 px wide" in detail and "under the 40 px" in detail
    assert faces_verdict([52], 640, True)[1:] == (OK, "1 face in the roi, 52 px wide (aim for 40 px or more)")
    assert "under the 80 px" in faces_verdict([60], 1280, False)[2]  # the target scales with the frame


def test_doctor_runs_the_probe_in_a_child_and_a_missing_camera_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setattr("edge.ops.doctor.camera.service_active", lambda: False)
    ctx = _Context(DoctorSettings(camera=63))
    check_camera(ctx, load_config(None, {}))
    (row,) = [c for c in ctx.checks if c.name == "camera"]
    assert row.status == FAIL and row.detail.startswith("Cannot open camera 63: there is no /dev/video63"), row.detail


def test_doctor_checks_the_camera_when_the_config_names_a_camera_and_a_path(monkeypatch, tmp_path):
    """`edge run` uses the camera then (source.path is read only when camera is unset): the doctor
    checked the path instead."""
    monkeypatch.setattr("edge.ops.doctor.camera.service_active", lambda: False)
    ctx = _Context(DoctorSettings())
    check_camera(ctx, load_config(None, {"source.camera": 63, "source.path": str(tmp_path)}))
    (row,) = [c for c in ctx.checks if c.name == "camera"]
    assert row.status == FAIL and row.detail.startswith("Cannot open camera 63"), row.detail


def test_doctor_does_not_say_a_config_that_did_not_load_names_no_camera(tmp_path):
    """A typo in one key of a config with `camera = 0` (or one read without sudo): the checks run on the
    built-in defaults, which name no camera, and the camera line said the config named none."""
    from edge.ops.doctor.config import check_config

    config = tmp_path / "store.toml"
    config.write_text("[source]\ncamera = 0\n[alert]\nraise_shar = 0.5\n")
    ctx = _Context(DoctorSettings(config=str(config)))
    check_camera(ctx, check_config(ctx))
    rows = {c.name: c for c in ctx.checks}
    assert rows["config"].status == FAIL and "alert.raise_shar" in rows["config"].detail
    assert rows["camera"].status == WARN and "no camera" not in rows["camera"].detail, rows["camera"].detail
    assert rows["camera"].detail.startswith("skipped: the config did not load"), rows["camera"].detail


def _camera_row(cfg) -> tuple[str, str]:
    ctx = _Context(DoctorSettings())
    check_camera(ctx, cfg)
    (row,) = [c for c in ctx.checks if c.name == "camera"]
    return row.status, row.detail


def test_doctor_fails_a_recording_edge_run_would_refuse_at_once(tmp_path):
    """A config whose [source] path was no video OpenCV decodes, or an image folder without images,
    got "OK skipped: the config reads ... (it exists)", and `edge run` then stopped at its first line."""
    (tmp_path / "queue.mp4").write_text("not a video: a file saved under the wrong name\n")
    (tmp_path / "frames").mkdir()
    status, detail = _camera_row(load_config(None, {"source.path": str(tmp_path / "queue.mp4")}))
    assert status == FAIL and detail == (f"edge run would stop at once: Cannot read video {tmp_path / 'queue.mp4'}: "
                                         "the file is missing, damaged or in a format OpenCV cannot decode."), detail
    status, detail = _camera_row(load_config(None, {"source.path": str(tmp_path / "frames")}))
    assert status == FAIL and detail.startswith(f"edge run would stop at once: Folder {tmp_path / 'frames'} has no "
                                                "images"), detail
    cv2.imwrite(str(tmp_path / "frames" / "0001.png"), queue_frame(320, 240, 60))
    status, detail = _camera_row(load_config(None, {"source.path": str(tmp_path / "frames"), "source.rotate": 90}))
    assert (status, detail) == (OK, f"skipped: the config reads the recording {tmp_path / 'frames'} (its first frame "
                                    "read, 240x320)")


def test_doctor_watches_a_usb_camera_named_by_its_device_not_skips_it_as_a_file(monkeypatch, tmp_path):
    """[source] path = /dev/v4l/by-id/usb-...-video-index0 (the name docs/config.md suggests) is a camera
    to edge run, but the doctor said "skipped: the config reads ... (it exists)" and never opened it."""
    device = tmp_path / "usb-Cam-video-index0"  # stands for the udev link to /dev/video63
    device.write_text("")
    monkeypatch.setattr("edge.config.video_device_index", lambda path: 63 if path == str(device) else None)
    monkeypatch.setattr("edge.ops.doctor.camera.service_active", lambda: False)
    status, detail = _camera_row(load_config(None, {"source.path": str(device)}))
    assert status == FAIL and detail.startswith("Cannot open camera 63: there is no /dev/video63"), detail
    # unplugged, udev removes the link: said as a camera's, not as a recording that was never there
    status, detail = _camera_row(load_config(None, {"source.path": "/dev/v4l/by-id/usb-Cam-video-index0"}))
    assert status == FAIL and "is the camera plugged in? ls /dev/v4l/by-id" in detail, detail


def _watch_stream(monkeypatch, url: str, timeout_s: float = 15.0, service: bool = False) -> tuple[list, list[list[str]]]:
    """The doctor's rows for [source] path = url, and the argv of each process it started."""
    import subprocess

    started, real_run = [], subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: started.append(list(args)) or real_run(args, **kw))
    monkeypatch.setattr("edge.ops.doctor.camera.service_active", lambda: service)
    ctx = _Context(DoctorSettings(camera_timeout_s=timeout_s))
    check_camera(ctx, load_config(None, {"source.path": url, "source.width": 160, "source.height": 120,
                                         "source.fps": 10}))
    return ctx.checks, started


@pytest.mark.slow
def test_doctor_watches_a_network_stream_and_says_its_size_and_rate(monkeypatch):
    """It said "OK skipped: the config reads the stream ...", so a wrong URL or password was found
    only when the service showed the camera down for good."""
    from tests.test_reliability import MjpegStream

    stream = MjpegStream(frames=400)  # 20 s of frames, sent 20 a second
    try:
        rows, started = _watch_stream(monkeypatch, f"http://viewer:hunter2secret@127.0.0.1:{stream.port}/video.mjpg")
    finally:
        stream.stop()
    camera = next(r for r in rows if r.name == "camera")
    assert camera.status == OK, camera.detail
    assert re.fullmatch(rf"stream http://\*\*\*@127\.0\.0\.1:{stream.port}/video\.mjpg: 160x120 at [\d.]+ fps "
                        r"measured over 2 s", camera.detail), camera.detail
    assert [r.name for r in rows] == ["camera", "camera light", "faces now"]  # the picture's too, as a camera's
    assert "hunter2secret" not in " ".join(r.detail for r in rows) + repr(started) and len(started) == 1


def _silent_server() -> tuple[socket.socket, list]:
    """A host that accepts the connection and never answers (a camera whose firmware hangs), and
    the connections it holds open (one dropped is a refusal FFmpeg sees at once)."""
    server, held = socket.create_server(("127.0.0.1", 0)), []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    return server, held


@pytest.mark.parametrize("silent", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["nothing-listens", "never-answers"])
def test_doctor_fails_a_stream_it_cannot_open_with_edge_runs_sentence_and_no_password(monkeypatch, silent):
    """A wrong port, or a host that never answers (given up at --camera-timeout, which the test sets
    short: the doctor never waits longer); the password in neither the report nor the child's argv."""
    from tests.test_sinks import free_port

    server, held = _silent_server() if silent else (None, [])
    port = server.getsockname()[1] if server else free_port()
    try:
        rows, started = _watch_stream(monkeypatch, f"rtsp://admin:hunter2secret@127.0.0.1:{port}/stream1",
                                      timeout_s=3 if silent else 15)
    finally:
        for s in [*held, *([server] if server else [])]:
            s.close()
    (row,) = rows
    assert row.status == FAIL and row.detail.startswith(f"Cannot open stream rtsp://***@127.0.0.1:{port}/stream1: ")
    assert row.detail.endswith("and the user name and password in the URL."), row.detail
    assert ("no answer within 3 s" in row.detail) is silent, row.detail
    assert len(started) == 1 and "hunter2secret" not in repr(started) + row.detail


def test_a_stream_the_doctor_cannot_open_while_the_service_reads_it_points_to_the_services_status(monkeypatch):
    """A camera that serves one viewer at a time refuses the doctor's second connection."""
    from tests.test_sinks import free_port

    (row,), _ = _watch_stream(monkeypatch, f"rtsp://127.0.0.1:{free_port()}/stream1", service=True)
    assert row.status == FAIL and row.detail.endswith("service is reading it too: its status shows whether it gets "
                                                      "frames."), row.detail


def test_what_a_failed_child_says_is_redacted():
    """Its last line of stderr is reported: a traceback may quote the stream URL."""
    from edge.ops.doctor.camera import _child

    got, why = _child("import sys; sys.exit('cannot read rtsp://admin:hunter2secret@cam:554/s')", 30)
    assert got is None and why == "cannot read rtsp://***@cam:554/s"


PICAMERA2_STUB = '''
import time, numpy as np

class _Job:
    def get_result(self, timeout=None):
        time.sleep(1 / 15)
        return np.full((480, 640, 4), 120, np.uint8)

class Picamera2:
    camera_controls = {"FrameRate": (1.0, 120.0, 30.0), "AfMode": (0, 2, 0), "LensPosition": (0.0, 15.0, 1.0)}

    @staticmethod
    def global_camera_info():
        return [{"Model": "imx708", "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}]
    def __init__(self, index=0):
        pass
    def create_video_configuration(self, **kw):
        return kw
    def configure(self, cfg):
        pass
    def start(self):
        pass
    def capture_array(self, name="main", wait=None):
        return _Job()
    def stop(self):
        pass
    def close(self):
        pass
'''


@pytest.mark.slow
def test_doctor_watches_the_pi_camera_too_not_only_lists_it(monkeypatch, tmp_path):
    """It said "camera 0 is the Pi camera imx708" without taking a single frame from it."""
    (tmp_path / "picamera2.py").write_text(PICAMERA2_STUB)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the probe's child process imports the stand-in
    monkeypatch.setattr("edge.ops.doctor.camera.service_active", lambda: False)
    ctx = _Context(DoctorSettings(camera=0))
    check_camera(ctx, load_config(None, {}))
    rows = {c.name: c for c in ctx.checks}
    assert rows["picamera2"].detail == "Pi cameras: 0: imx708"
    camera = rows["camera"]
    assert camera.status == OK and camera.detail.startswith(
        "Pi camera 0 (picamera2, 640x480, continuous autofocus): 640x480 at "), camera.detail
    assert rows["camera light"].status == OK and "mean brightness 120 of 255" in rows["camera light"].detail
    assert rows["faces now"].status == OK and rows["faces now"].detail.startswith("no face now")


@pytest.mark.slow
def test_doctor_says_the_focus_the_pi_camera_holds(monkeypatch, tmp_path):
    """An IT person checks with `edge doctor` that [source] focus_m reached the camera."""
    (tmp_path / "picamera2.py").write_text(PICAMERA2_STUB)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr("edge.ops.doctor.camera.service_active", lambda: False)
    config = tmp_path / "config.toml"
    config.write_text("[source]\ncamera = 0\nfocus_m = 2.5\n")
    ctx = _Context(DoctorSettings(config=str(config)))
    check_camera(ctx, load_config(str(config), {}))
    camera = {c.name: c for c in ctx.checks}["camera"]
    assert camera.status == OK and camera.detail.startswith(
        "Pi camera 0 (picamera2, 640x480, focus fixed at 2.5 m): 640x480 at "), camera.detail


def test_doctor_warns_when_focus_m_has_no_focus_motor_to_drive():
    """A v2 or HQ Pi camera, or a USB camera: focus_m does nothing there, and the doctor says so."""
    fixed_lens = {"source": "Pi camera 0 (picamera2, 640x480)", "size": [640, 480], "fps": 15.0, "mean": 110,
                  "white": 0.01, "faces": [], "focus": None}
    assert _rows(fixed_lens)["camera"][0] == OK  # nothing asked: nothing to say
    status, detail = _rows(fixed_lens, **{"source.focus_m": 2.5})["camera"]
    assert status == WARN and detail.endswith("; [source] focus_m = 2.5 does nothing here: only a Pi camera with a "
                                              "focus motor (Camera Module 3) takes it; set it to 0, and focus a "
                                              "fixed-focus lens by turning it"), detail
    held = {**fixed_lens, "source": "Pi camera 0 (picamera2, 640x480, focus fixed at 2.5 m)",
            "focus": "focus fixed at 2.5 m"}
    assert _rows(held, **{"source.focus_m": 2.5})["camera"][0] == OK
    status, detail = _rows(fixed_lens, **{"source.mains_hz": 50})["camera"]  # no flicker avoidance there
    assert status == WARN and detail.endswith("; [source] mains_hz = 50 does nothing here: only a Pi camera with a "
                                              "libcamera that avoids flicker (Raspberry Pi OS Bookworm or Trixie) "
                                              "takes it"), detail
    assert _rows({**fixed_lens, "flicker": "50 Hz light flicker avoided"}, **{"source.mains_hz": 50})["camera"][0] == OK


FOCUS_ALLOWED = "0 (continuous autofocus) or a distance in metres from 0.1 to 100 to hold the focus at, e.g. 2.5"
MAINS_ALLOWED = ("0 (not set), 50 or 60, the mains frequency where the store is: 50 in Europe, Africa, Australia and "
                 "most of Asia, 60 in North America; South America and Japan have both")  # not "60: the Americas"


@pytest.mark.parametrize("key, value, said", [("focus_m", 0.05, 0.05), ("focus_m", -1, -1.0), ("focus_m", 150, 150.0),
                                              ("focus_m", "2.5 m", None), ("mains_hz", 55, 55),
                                              ("mains_hz", -50, -50), ("mains_hz", "50Hz", None)])
def test_a_bad_focus_distance_or_mains_frequency_is_one_sentence(tmp_path, key, value, said):
    config = tmp_path / "config.toml"
    config.write_text(f"[source]\n{key} = {value!r}\n".replace("'", '"'))
    r = run_cli("run", "--config", config, "--print-config")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert f"'source.{key}'" in line, line
    if said is not None:  # a number out of range (a string is the loader's type sentence)
        allowed = FOCUS_ALLOWED if key == "focus_m" else MAINS_ALLOWED
        assert line.endswith(f"bad value {said!r}; allowed: {allowed}."), line
    assert load_config(None, {"source.focus_m": 2.5, "source.mains_hz": 60}).source.mains_hz == 60


def test_the_service_hands_focus_m_to_the_camera(monkeypatch, tmp_path):
    from edge.service.app import RunOptions, run
    from tests.test_reliability import _live_cfg

    asked: dict = {}
    monkeypatch.setattr("edge.pipeline.sources.open_source", lambda *a, **kw: asked.update(kw) or BGRACamera())
    run(_live_cfg(tmp_path, **{"source.focus_m": 2.5, "source.mains_hz": 60}), RunOptions(max_frames=1))
    assert asked["focus_m"] == 2.5 and asked["mains_hz"] == 60


class BGRACamera(LiveSource):
    """A camera at 10 fps whose frames come with an alpha channel (BGRA), as a plugin's may."""

    fps = 10.0

    def _open(self):
        pass

    def _read(self):
        time.sleep(1 / self.fps)
        return np.full((480, 640, 4), 128, np.uint8)


def test_the_preview_to_aim_by_shows_the_roi_plays_at_the_cameras_rate_and_takes_bgra(monkeypatch, tmp_path):
    """--preview wrote nothing at all for BGRA frames (OpenCV's writer skips them), drew no roi,
    and was always 15 fps (a 5-fps camera's preview ran three times too fast)."""
    from edge.service.app import RunOptions, run
    from tests.test_reliability import _live_cfg

    monkeypatch.setattr("edge.pipeline.sources.open_source", lambda *a, **kw: BGRACamera())
    preview = tmp_path / "aim.mp4"
    run(_live_cfg(tmp_path, **{"source.roi": [0.25, 0.25, 0.5, 0.5]}), RunOptions(duration_s=1.0, preview=str(preview)))
    cap = cv2.VideoCapture(str(preview))
    ok, img = cap.read()
    assert ok and cap.get(cv2.CAP_PROP_FPS) == 10.0 and cap.get(cv2.CAP_PROP_FRAME_COUNT) >= 3
    cap.release()
    b, _, r = (img[240, 158:162].astype(int).mean(axis=0))  # the roi's left edge, at x = 160
    assert b - r > 80 and abs(int(img[240, 320, 0]) - int(img[240, 320, 2])) < 20  # blue line, grey inside
