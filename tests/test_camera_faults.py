"""Live sources when the camera misbehaves: a Pi camera that stops inside a capture, one whose
start fails, a driver that raises, a grabber that dies or hangs, a stream that cannot be
reached. picamera2 is replaced by a stand-in that keeps its contract (the camera is held from
the constructor until close(); captures are jobs on concurrent futures, and capture_array with
wait=None waits on its job for as long as it takes). Nothing here asserts a time; waits poll
with generous timeouts."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
import types
from concurrent.futures import Future

import numpy as np
import pytest

from edge.errors import UserError
from edge.pipeline.sources import LiveSource, OpenCVCamera, PiCamera, open_source
from tests.test_sinks import free_port, wait_for


class Job(Future):
    """picamera2's Job: a future whose get_result takes a timeout."""

    def get_result(self, timeout=None):
        return self.result(timeout=timeout)


class Rig:
    """The libcamera side of the stand-in: which cameras are held, what each one delivers."""

    def __init__(self):
        self.held: set[int] = set()
        self.opened: list = []
        self.plan: list[int | None] = []  # per camera opened: frames before it stops (None: forever)
        self.start_failures = 0  # the next start() calls that fail
        self.stop_fails = False
        self.error: Exception | None = None  # raised by every capture while set
        self.captures = 0
        self.never_done: list[Job] = []
        self.controls: dict = {"FrameRate": (1.0, 120.0, 30.0)}  # the camera's camera_controls (no focus motor)

    def picamera2(self):
        rig = self

        class Picamera2:
            @staticmethod
            def global_camera_info():
                return [{"Model": "imx708"}]

            def __init__(self, index=0):
                if index in rig.held:
                    raise RuntimeError("Failed to acquire camera: Device or resource busy")
                rig.held.add(index)
                self.index = index
                n = len(rig.opened)
                self.left = rig.plan[n] if n < len(rig.plan) else None
                rig.opened.append(self)

            @property
            def camera_controls(self):
                return rig.controls

            def create_video_configuration(self, **kw):
                return kw

            def configure(self, cfg):
                # picamera2 refuses a control the camera does not advertise (a v2 camera and AfMode)
                unknown = set(cfg.get("controls", {})) - set(rig.controls)
                if unknown:
                    raise RuntimeError(f"Control {unknown.pop()} is not advertised by libcamera")
                self.config = cfg

            def start(self):
                if rig.start_failures:
                    rig.start_failures -= 1
                    raise RuntimeError("Failed to start camera: Input/output error")

            def stop(self):
                if rig.stop_fails:
                    raise RuntimeError("Camera frontend has timed out!")

            def close(self):
                rig.held.discard(self.index)

            def capture_array(self, name="main", wait=None):
                rig.captures += 1
                job = Job()
                if rig.error is not None:
                    job.set_exception(rig.error)
                elif self.left == 0:  # stopped delivering: the job never completes
                    rig.never_done.append(job)
                else:
                    self.left = None if self.left is None else self.left - 1
                    job.set_result(np.zeros((48, 64, 4), np.uint8))
                if wait is False:
                    return job
                return job.get_result(timeout=None if wait in (None, True) else wait)

        return Picamera2


@pytest.fixture
def rig(monkeypatch):
    r = Rig()
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=r.picamera2()))
    yield r
    for job in r.never_done:  # frees a grabber still waiting on one
        job.set_result(np.zeros((48, 64, 4), np.uint8))


def take(source, n: int, timeout: float = 30.0) -> int:
    """Frames read from a started source until n arrived or the timeout passed."""
    got, end = 0, time.monotonic() + timeout
    for frame in source.poll(0.1):
        got += frame is not None
        if got >= n or time.monotonic() > end:
            break
    return got


# ---------------------------------------------------------------- the Pi camera


def test_pi_camera_that_stops_inside_a_capture_is_reopened(rig):
    rig.plan = [5]  # the first camera delivers 5 frames, then no capture ever completes
    cam = PiCamera(0, max_backoff_s=0.05)
    cam.stall_s, cam.read_timeout_s = 0.3, 0.05
    with cam:
        got = take(cam, 10)
    assert got == 10 and cam.reopens >= 1 and len(rig.opened) >= 2


def test_pi_camera_whose_start_fails_is_closed_so_the_next_open_works(rig):
    rig.start_failures = 1
    cam = PiCamera(0)
    with pytest.raises(UserError, match="Cannot start Pi camera 0"):
        cam._open()
    assert rig.held == set()
    cam._open()  # not "Device or resource busy"
    assert rig.held == {0}
    rig.stop_fails = True  # a wedged camera: stop() raises, and close() must still run
    cam._release()
    assert rig.held == set() and cam.cam is None


def test_pi_camera_failures_are_logged_once_per_outage(rig, caplog):
    caplog.set_level(logging.INFO, logger="edge.pipeline.sources")
    rig.error = RuntimeError("Camera frontend has timed out!")
    cam = PiCamera(0)
    cam.stall_s = 3600.0  # no reopen: the failed reads alone are counted
    with cam:
        assert wait_for(lambda: rig.captures >= 100, 60)
        failing = [r for r in caplog.records if r.levelno >= logging.WARNING]
        rig.error = None
        assert take(cam, 1) == 1
    assert len(failing) == 1 and "Camera frontend has timed out!" in failing[0].getMessage()
    back = [m for r in caplog.records if (m := re.search(r"again after (\d+) failed reads", r.getMessage()))]
    assert len(back) == 1 and int(back[0][1]) >= 100


# ---------------------------------------------------------------- the Pi camera's focus

CAMERA_MODULE_3 = {"FrameRate": (1.0, 120.0, 30.0), "AfMode": (0, 2, 0), "LensPosition": (0.0, 15.0, 1.0)}


def test_a_pi_camera_with_a_focus_motor_focuses_continuously_by_default(rig):
    """picamera2 leaves a Camera Module 3's lens where its tuning file puts it: the queue was soft
    at 1280x960 unless it stood at that distance."""
    rig.controls = CAMERA_MODULE_3
    cam = PiCamera(0)
    assert cam.describe() == "Pi camera 0 (picamera2, 640x480)"  # not known before it is opened
    cam._open()
    assert rig.opened[0].config["controls"] == {"FrameRate": 15.0, "AfMode": 2}  # AfModeContinuous
    assert cam.describe() == "Pi camera 0 (picamera2, 640x480, continuous autofocus)"


def test_a_fixed_focus_distance_holds_the_lens_there_in_dioptres(rig):
    rig.controls = CAMERA_MODULE_3
    cam = open_source(0, "", focus_m=2.5)
    assert isinstance(cam, PiCamera)
    cam._open()
    assert rig.opened[0].config["controls"] == {"FrameRate": 15.0, "AfMode": 0, "LensPosition": 0.4}  # 1 / 2.5 m
    assert cam.describe() == "Pi camera 0 (picamera2, 640x480, focus fixed at 2.5 m)"


def test_a_fixed_focus_lens_gets_no_focus_controls_and_one_line_if_a_distance_was_asked(rig, caplog):
    """A v1/v2/HQ camera: picamera2 would refuse AfMode; the camera works as before, and
    focus_m is said to do nothing there once, not at every reopen of the service's camera."""
    caplog.set_level(logging.INFO, logger="edge.pipeline.sources")
    cam = open_source(0, "", focus_m=2.5, wait_for_camera=True)  # the service's camera, chosen at each open
    for _ in range(3):
        cam._open()
        cam._release()
    assert [c.config["controls"] for c in rig.opened] == [{"FrameRate": 15.0}] * 3
    said = [r for r in caplog.records if "focus" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, [r.getMessage() for r in said]
    assert said[0].getMessage().startswith("Pi camera 0 has a fixed-focus lens (no focus motor), so [source] "
                                           "focus_m = 2.5 does nothing there")
    cam._open()
    assert cam.describe() == "Pi camera 0 (picamera2, 640x480)"  # no focus to speak of
    caplog.clear()
    still = PiCamera(0)  # focus_m = 0: nothing asked, nothing said
    cam._release()
    still._open()
    assert rig.opened[-1].config["controls"] == {"FrameRate": 15.0} and not caplog.records


# ---------------------------------------------------------------- the lights' flicker

FLICKER_AVOIDING = {**CAMERA_MODULE_3, "AeFlickerMode": (0, 2, 0), "AeFlickerPeriod": (100, 1000000, 10000)}


@pytest.mark.parametrize("hz, period_us", [(50, 10000), (60, 8333)])
def test_mains_hz_keeps_the_exposure_to_whole_flicker_periods(rig, hz, period_us):
    """Lights on mains flicker at twice its frequency; a short exposure left dark bands across faces."""
    rig.controls = FLICKER_AVOIDING
    cam = open_source(0, "", mains_hz=hz, wait_for_camera=True)
    cam._open()
    assert rig.opened[0].config["controls"] == {"FrameRate": 15.0, "AfMode": 2, "AeFlickerMode": 1,
                                                "AeFlickerPeriod": period_us}
    assert cam.describe() == f"Pi camera 0 (picamera2, 640x480, continuous autofocus, {hz} Hz light flicker avoided)"
    still = PiCamera(0)  # mains_hz not set: the camera's own choice, as before
    cam._release()
    still._open()
    assert rig.opened[-1].config["controls"] == {"FrameRate": 15.0, "AfMode": 2}


def test_mains_hz_on_a_libcamera_without_flicker_avoidance_is_said_once(rig, caplog):
    caplog.set_level(logging.INFO, logger="edge.pipeline.sources")
    rig.controls = CAMERA_MODULE_3
    cam = open_source(0, "", mains_hz=50, wait_for_camera=True)
    for _ in range(3):
        cam._open()
        cam._release()
    assert [c.config["controls"] for c in rig.opened] == [{"FrameRate": 15.0, "AfMode": 2}] * 3
    said = [r.getMessage() for r in caplog.records if "mains_hz" in r.getMessage()]
    assert said == ["Pi camera 0: this libcamera has no flicker avoidance (AeFlickerMode), so [source] mains_hz = 50 "
                    "does nothing; update the Pi (sudo apt full-upgrade) for it"]


# ---------------------------------------------------------------- the grabber


class FaultyCamera(LiveSource):
    """Frames, and every 5th read raises the next of read_faults, after which nothing arrives
    until a reopen; reopens raise open_faults in turn before one works."""

    stall_s = 0.1

    def __init__(self, read_faults, open_faults=()):
        super().__init__(max_backoff_s=0.05)
        self.read_faults, self.open_faults = list(read_faults), list(open_faults)
        self.broken, self.n = False, 0

    def _open(self):
        if self._thread is not None and self.open_faults:  # the first open, in __enter__, works
            raise self.open_faults.pop(0)
        self.broken = False

    def _read(self):
        time.sleep(0.002)
        self.n += 1
        if self.broken:
            return None
        if self.n % 5 == 0 and self.read_faults:
            self.broken = True
            raise self.read_faults.pop(0)
        return np.zeros((8, 8), np.uint8)


@pytest.mark.slow
def test_grabber_survives_any_exception_from_the_device():
    import cv2

    cam = FaultyCamera([RuntimeError("driver hiccup"), cv2.error("V4L2: select() timeout"),
                        OSError(5, "Input/output error"), MemoryError()],
                       [OSError(16, "Device or resource busy"), RuntimeError("no such camera")])
    with cam:
        got = take(cam, 30)
        alive = cam._thread.is_alive()
    assert got == 30 and alive and not cam.read_faults and not cam.open_faults and cam.reopens >= 4


class HangingCamera(LiveSource):
    """A few frames, then a read that never returns (a driver stuck in the kernel)."""

    def __init__(self):
        super().__init__()
        self.n, self.release = 0, threading.Event()

    def _open(self):
        pass

    def _read(self):
        self.n += 1
        if self.n > 3:
            self.release.wait()
        time.sleep(0.01)
        return np.zeros((8, 8), np.uint8)


def test_a_grabber_stuck_in_one_call_is_not_alive():
    cam = HangingCamera()
    cam.hung_s = 0.3
    with cam:
        assert take(cam, 3) == 3 and cam.alive()
        assert wait_for(lambda: not cam.alive(), 30)
        cam.release.set()


class DyingCamera(HangingCamera):
    """Frames from a grabber thread that ends: what no guard in the loop can prevent."""

    def _grab_loop(self):
        return


def test_run_stops_pinging_the_watchdog_when_the_grabber_is_gone(tmp_path, monkeypatch, caplog):
    from edge.service.app import RunOptions, run
    from tests.test_reliability import _live_cfg, systemd_notify

    monkeypatch.setattr("edge.pipeline.sources.open_source", lambda *a, **kw: DyingCamera())
    with systemd_notify(tmp_path, monkeypatch) as got:
        run(_live_cfg(tmp_path), RunOptions(duration_s=1.0))
    assert got[0] == "READY=1" and got[-1] == "STOPPING=1" and "WATCHDOG=1" not in got
    assert len([r for r in caplog.records if "watchdog" in r.getMessage()]) == 1


# ---------------------------------------------------------------- streams


def test_unreachable_stream_gets_a_network_hint_not_a_usb_one():
    cam = OpenCVCamera(f"http://viewer:hunter2secret@127.0.0.1:{free_port()}/video.mjpg")
    with pytest.raises(UserError) as err:
        cam._open()
    msg = str(err.value)
    assert "/dev/video" not in msg and "group 'video'" not in msg and "URL" in msg
    assert "hunter2secret" not in msg


def test_ffmpeg_prints_nothing_when_a_stream_cannot_be_opened():
    """Every reopen attempt of a dead stream made FFmpeg print "Connection refused" to stderr
    (the journal); the module's own line per outage says why instead."""
    code = ("from edge.pipeline.sources import OpenCVCamera\n"
            f"try:\n    OpenCVCamera('http://127.0.0.1:{free_port()}/video.mjpg')._open()\n"
            "except Exception as exc:\n    print(type(exc).__name__)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.stdout.strip() == "UserError", r.stderr
    assert "Connection refused" not in r.stderr and "[tcp @" not in r.stderr, r.stderr


def test_a_stream_is_opened_with_a_timeout_for_opening_and_reading(monkeypatch):
    """FFmpeg waits 30 s for a camera that accepts the connection and never answers, in which
    neither Ctrl-C nor systemd's SIGTERM (it kills at 20 s) is seen."""
    from edge.pipeline import sources

    cv2 = sources.import_cv2()
    seen = []

    class Recording(FakeCapture):
        def __init__(self, *args):
            seen.append(args)
            super().__init__(args[0])

    monkeypatch.setattr(cv2, "VideoCapture", Recording)
    with pytest.raises(UserError):
        OpenCVCamera("rtsp://127.0.0.1:9/stream")._open()
    ms = sources.STREAM_TIMEOUT_MS
    assert seen == [("rtsp://127.0.0.1:9/stream", cv2.CAP_FFMPEG,
                     [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])]
    assert ms < 20_000
    from edge.configdoc import markdown

    assert f"gives nothing for {ms / 1000:g} s on opening" in markdown()  # what the docs tell users


@pytest.mark.slow
def test_a_stream_that_accepts_and_never_answers_fails_before_ffmpegs_own_30_s():
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    held, ended = [], threading.Event()
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    result = []

    def open_it():
        try:
            OpenCVCamera(f"rtsp://127.0.0.1:{server.getsockname()[1]}/stream")._open()
        except UserError as exc:
            result.append(exc)
        ended.set()

    threading.Thread(target=open_it, daemon=True).start()
    try:
        assert ended.wait(25), "the open still waited after 25 s"
        assert result and "Cannot open stream" in str(result[0]) and held
    finally:
        server.close()


# ---------------------------------------------------------------- USB cameras that cannot be opened


class FakeCapture:
    """cv2.VideoCapture of a device that opens (or not) and never gives a frame."""

    opens = True

    def __init__(self, *_):
        pass

    def isOpened(self):
        return self.opens

    def set(self, *_):
        return True

    def read(self):
        return False, None

    def release(self):
        pass


@pytest.fixture
def dev(tmp_path, monkeypatch):
    """/dev and /sys/class/video4linux in tmp_path, with no video devices yet."""
    import cv2

    (tmp_path / "dev").mkdir()
    (tmp_path / "v4l").mkdir()
    monkeypatch.setattr("edge.pipeline.sources.DEV", tmp_path / "dev")
    monkeypatch.setattr("edge.pipeline.sources.V4L_SYS", tmp_path / "v4l")
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    return tmp_path


def _open_error(index: int) -> str:
    with pytest.raises(UserError) as err:
        OpenCVCamera(index)._open()
    return str(err.value)


def test_a_usb_camera_index_that_is_not_there_lists_the_ones_that_are(dev, monkeypatch):
    monkeypatch.setattr(FakeCapture, "opens", False)
    assert "nor any other video device: no camera is connected" in _open_error(0)
    (dev / "dev" / "video0").touch()
    (dev / "v4l" / "video0").mkdir()
    (dev / "v4l" / "video0" / "name").write_text("HD Pro Webcam C920\n")
    msg = _open_error(2)
    assert f"there is no {dev / 'dev' / 'video2'}" in msg and "video0 HD Pro Webcam C920" in msg


@pytest.mark.parametrize("terminal", [True, False])
def test_no_video_device_at_all_points_a_person_at_a_terminal_to_a_recording(dev, monkeypatch, terminal):
    """On a laptop without a camera the way on is --source; the service's journal on a Pi gets the cable only."""
    import io

    monkeypatch.setattr(FakeCapture, "opens", False)
    stdin = io.StringIO()
    stdin.isatty = lambda: terminal
    monkeypatch.setattr("sys.stdin", stdin)
    assert ("edge run --source VIDEO" in _open_error(0)) is terminal


def test_a_usb_camera_this_user_may_not_use_says_permission_and_the_group(dev, monkeypatch):
    monkeypatch.setattr(FakeCapture, "opens", False)
    (dev / "dev" / "video0").touch()
    monkeypatch.setattr("edge.pipeline.sources.os.access", lambda *a: False)  # as root, every mode is allowed
    msg = _open_error(0)
    assert "permission denied" in msg and "usermod -aG video" in msg


def test_a_usb_camera_that_opens_but_gives_no_frame_is_probably_in_use(dev):
    (dev / "dev" / "video0").touch()
    msg = _open_error(0)
    assert "another program is probably using it" in msg and "fuser" in msg


def test_opencv_prints_nothing_when_a_usb_camera_is_not_there():
    """Each attempt at a missing USB camera made OpenCV print two "[ WARN ]" lines to stderr (the
    journal, every back-off while the service waits for it); the error sentence says why instead."""
    code = ("from edge.pipeline.sources import OpenCVCamera\n"
            "try:\n    OpenCVCamera(63)._open()\n"
            "except Exception as exc:\n    print(type(exc).__name__)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.stdout.strip() == "UserError", r.stderr
    assert "WARN" not in r.stderr, r.stderr


def test_libcamera_says_only_its_warnings_and_errors_at_each_pi_camera_open():
    """libcamera prints its INFO lines (its version, the camera registered, the streams and sensor
    format chosen) to stderr, the journal, at each Pi camera open: every reopen of a flapping camera.
    Set before picamera2 loads libcamera, which reads it once; one set by hand is kept."""
    code = "import os, edge.pipeline.sources\nprint(os.environ.get('LIBCAMERA_LOG_LEVELS'))\n"
    env = {k: v for k, v in os.environ.items() if k != "LIBCAMERA_LOG_LEVELS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.stdout.strip() == "*:WARN", r.stderr
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**env, "LIBCAMERA_LOG_LEVELS": "*:DEBUG"})
    assert r.stdout.strip() == "*:DEBUG", r.stderr


# ---------------------------------------------------------------- a USB camera that ignores the size asked for


class FullHDCapture(FakeCapture):
    """A USB camera that ignores the 640x480 asked for and delivers 1920x1080 at its own pace."""

    def read(self):
        time.sleep(0.02)
        return True, np.zeros((1080, 1920, 3), np.uint8)


def test_a_camera_that_delivers_another_size_is_said_once_and_shown_in_the_status(tmp_path, monkeypatch, caplog):
    import cv2

    from edge.service import app
    from edge.service.app import RunOptions, run
    from tests.test_reliability import _live_cfg, _Recorder

    monkeypatch.setattr(cv2, "VideoCapture", FullHDCapture)
    monkeypatch.setattr(app, "SINK_STATS_EVERY_S", 0.05)
    rec = _Recorder(monkeypatch)
    with caplog.at_level(logging.WARNING):
        summary = run(_live_cfg(tmp_path), RunOptions(duration_s=1.0))
    said = [r.getMessage() for r in caplog.records if "asked for" in r.getMessage()]
    assert summary["frames"] > 1 and len(said) == 1, said
    assert "camera 0 delivers 1920x1080 frames, not the 640x480 asked for" in said[0] and "6.8x the pixels" in said[0]
    assert rec.stats.snapshot()["frame_size"] == "1920x1080"


def on_a_fake_clock(monkeypatch, source: LiveSource) -> list[float]:
    """[now] of time.monotonic, which the source's reads advance by hand; its back-off and retry
    pauses pass on it at once."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])

    class FakeStop(threading.Event):
        def wait(self, timeout=None):
            now[0] += timeout or 0.0
            return self.is_set()

    source._stop = FakeStop()
    return now


def grab_until_stopped(source: LiveSource, caplog) -> list[str]:
    """Runs source's grabber until the source stops it; the lines it logged at WARNING."""
    with caplog.at_level(logging.WARNING, logger="edge.pipeline.sources"):
        source.__enter__()
        source._thread.join(30)
        source._stop.set()
    return [r.getMessage() for r in caplog.records if r.name == "edge.pipeline.sources"]


def test_a_stream_that_stalls_after_each_reconnect_is_a_few_journal_lines_a_minute(monkeypatch, caplog):
    """A stream that sends a frame after each reconnect and then nothing (measured: an MJPEG camera
    stalling after its first frames) logged 'read failed', 'stopped delivering' and 'delivers frames
    again' every 9 s, day and night: an outage within a minute of the last one logged is counted."""
    class Stalling(LiveSource):
        fresh = False

        def _open(self):
            self.fresh = True

        def _read(self):
            now[0] += 0.1
            if self.fresh:
                self.fresh = False
                return np.zeros((4, 4, 3), np.uint8)
            if self.reopens >= 100:
                self._stop.set()
            return None

        def describe(self):
            return "stream test"

    cam = Stalling()
    now = on_a_fake_clock(monkeypatch, cam)
    said = grab_until_stopped(cam, caplog)
    minutes = (now[0] - 1000.0) / 60
    assert cam.reopens >= 100 and minutes > 5  # 100 outages of some 3.6 s each
    assert len(said) <= 3 * (minutes + 1), len(said)  # was: 3 lines per outage, 300
    assert "were not logged: it keeps dropping out" in "\n".join(said)


def test_a_source_gone_for_good_after_coming_and_going_is_still_said(monkeypatch, caplog):
    class Dying(LiveSource):
        fresh = False

        def _open(self):
            self.fresh = self.reopens < 5  # a few short outages, then no frame at all

        def _read(self):
            now[0] += 0.1
            if self.fresh:
                self.fresh = False
                return np.zeros((4, 4, 3), np.uint8)
            if now[0] > 1400:
                self._stop.set()
            return None

        def describe(self):
            return "stream test"

    cam = Dying(max_backoff_s=5.0)
    now = on_a_fake_clock(monkeypatch, cam)
    assert "reads have failed for 60 s" in "\n".join(grab_until_stopped(cam, caplog))


def test_a_camera_waited_for_from_the_start_is_one_journal_line_and_a_later_outage_is_said_in_full(monkeypatch,
                                                                                                   caplog):
    """The service (--wait-for-camera) with its camera unplugged at boot logged four WARNING lines
    at once that each said it was missing: 'Cannot open ... Waiting for it', 'read failed', 'stopped
    delivering frames' and 'reopening ... failed: Cannot open ...' again. One says it; its end is
    said, and an outage once the camera has been there is said as before."""
    class Unplugged(LiveSource):
        fresh = False

        def _open(self):
            if self.reopens < 3:  # plugged in at the third reopen
                raise UserError("Cannot open test camera: check the cable.")
            self.fresh = True

        def _read(self):
            now[0] += 0.1
            if self.fresh and now[0] < 1100:  # frames for a while, then out once more
                return np.zeros((4, 4, 3), np.uint8)
            if self.reopens >= 5:
                self._stop.set()
            return None

        def describe(self):
            return "test camera"

    cam = Unplugged()
    cam.wait_first = True
    now = on_a_fake_clock(monkeypatch, cam)
    said = grab_until_stopped(cam, caplog)
    assert "Cannot open test camera: check the cable. Waiting for it" in said[0]
    assert "test camera delivers frames again after" in said[1], said  # was: 3 more lines saying it was missing
    assert "test camera: read failed (no frame)" in said[2] and "stopped delivering" in said[3], said
