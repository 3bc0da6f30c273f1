"""Months unattended (issue 13): each failure the operator found, reproduced with real parts
(an HTTP server that hangs, the real mosquitto broker stopped and restarted, small or
read-only tmpfs mounts, a source that stalls, an MJPEG stream that goes silent), asserting
delivery counts: sent, delivered, spooled, dead-lettered, lost. Nothing here asserts a time;
waits poll with generous timeouts."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from edge.config import load_config
from edge.errors import UserError
from edge.pipeline.sources import LiveSource
from edge.service.app import RunOptions, run
from edge.sinks import Fanout, Spool, build_sinks
from edge.sinks.command import CommandSink
from edge.sinks.jsonl import JsonlSink
from edge.sinks.webhook import WebhookSink
from tests.conftest import run_cli
from tests.test_sinks import (broker, ev, free_port, mqtt_sinks, needs_mosquitto, receivers,  # noqa: F401
                              subscribers, wait_for)

# ---------------------------------------------------------------- real parts


class HangingServer:
    """Accepts each POST, reads it, and never answers until released."""

    def __init__(self):
        self.requests: list[dict] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                server.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                server.release.wait(60)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook/SECRET-TOKEN?key=SECRET-KEY"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hanging():
    h = HangingServer()
    yield h
    h.stop()


@contextmanager
def tmpfs(path: Path, options: str):
    """A real tmpfs at path (size limit or read-only); skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"disk-trouble tests mount a tmpfs, which is not permitted here ({r.stderr.strip()}); "
                    "run them as root or with CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, mode: str):
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def no_tmp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- 1. dead camera


class StallingCamera(LiveSource):
    """Our LiveSource driven by frames that stop: after `frames` reads, _read blocks (as a
    stream read does when the network dies) until `resume` is set."""

    stall_s = 3600.0  # never reopen during a test: the stall itself is what is tested

    def __init__(self, frames: int):
        super().__init__(max_backoff_s=0.05)
        self.frames, self.n = frames, 0
        self.resume = threading.Event()
        self.image = np.full((120, 160, 3), 90, np.uint8)

    def _open(self):
        pass

    def _read(self):
        self.n += 1
        if self.n > self.frames and not self.resume.is_set():
            self.resume.wait()
        time.sleep(0.02)
        return self.image

    def describe(self):
        return "stalling test camera"


class _Recorder:
    """Keeps the Stats object run() makes, to read what /status would show."""

    def __init__(self, monkeypatch):
        from edge.service import status

        self.stats = None
        recorder, Base = self, status.Stats

        class Stats(Base):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                recorder.stats = self

        monkeypatch.setattr(status, "Stats", Stats)


def _live_cfg(tmp_path, **extra):
    return load_config(None, {"source.camera": 0, "source.down_after_s": 0.5, "status.enabled": False,
                              "sinks.jsonl.path": str(tmp_path / "ev.jsonl"), "sinks.spool_dir": str(tmp_path / "sp"),
                              **extra})


def _kinds(path: Path) -> list[str]:
    return [json.loads(x)["kind"] for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_dead_camera_is_reported_down_and_a_signal_still_stops(sig, tmp_path, monkeypatch):
    cam = StallingCamera(frames=5)
    monkeypatch.setattr("edge.pipeline.sources.open_source", lambda *a, **kw: cam)
    rec = _Recorder(monkeypatch)
    seen: dict = {}

    def killer():  # once the camera is reported down, read the status and send the signal
        if wait_for(lambda: "camera_down" in _kinds(tmp_path / "ev.jsonl"), timeout=60):
            seen.update(rec.stats.snapshot())
        os.kill(os.getpid(), getattr(signal, sig))

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    summary = run(_live_cfg(tmp_path), RunOptions())
    t.join()
    # It returned although no frame came after the 5th (latest frame wins: some may be dropped).
    assert summary["frames"] + summary["dropped_frames"] == 5
    assert seen["camera"] == "down" and seen["fps"] == 0 and seen["faces"] == 0
    assert seen["alert_state"] == "unknown" and seen["negative_share"] is None
    from edge.service.exposition import render

    text = render(lambda: seen)[0].decode()  # what /metrics serves while the camera is down
    assert "queue_mood_camera_up 0.0" in text and "queue_mood_negative_share NaN" in text
    # nothing is known while it is down: not "0 faces, no alert" (dashboards leave NaN out)
    assert "queue_mood_alert_raised NaN" in text and "queue_mood_faces NaN" in text
    assert _kinds(tmp_path / "ev.jsonl") == ["camera_down"]
    assert summary["sinks"]["jsonl"]["delivered"] == 1 and summary["sinks"]["jsonl"]["lost"] == 0
    cam.resume.set()


@pytest.mark.slow
def test_duration_ends_a_run_on_a_silent_camera_and_camera_up_is_sent(tmp_path, monkeypatch):
    cam = StallingCamera(frames=3)
    monkeypatch.setattr("edge.pipeline.sources.open_source", lambda *a, **kw: cam)
    rec = _Recorder(monkeypatch)
    threading.Thread(target=lambda: wait_for(lambda: "camera_down" in _kinds(tmp_path / "ev.jsonl"), 60)
                     and cam.resume.set(), daemon=True).start()
    frames_after = []
    summary = run(_live_cfg(tmp_path), RunOptions(duration_s=4.0),
                  on_result=lambda f, r: frames_after.append(f.index) if cam.resume.is_set() else None)
    assert summary["frames"] >= 3
    if frames_after:  # the camera came back within the run: up again
        assert _kinds(tmp_path / "ev.jsonl") == ["camera_down", "camera_up"]
        assert rec.stats.snapshot()["camera"] == "up"
    else:  # a loaded machine: the duration still ended the run while the camera was silent
        assert _kinds(tmp_path / "ev.jsonl")[:1] == ["camera_down"]
    from edge.service.exposition import render

    text = render(rec.stats.snapshot)[0].decode()
    assert "queue_mood_camera_down_total 1.0" in text and 'queue_mood_sink_delivered_total{sink="jsonl"}' in text


@pytest.mark.parametrize("outage_s, kept", [(40.0, True), (300.0, False)])
def test_a_camera_outage_is_left_out_of_the_monitors_clock_so_people_and_the_alert_carry_on(monkeypatch, outage_s,
                                                                                           kept):
    """Four people turn unhappy and the alert is raised; the camera is out for 40 s. Each was a new
    person when it was back (refind_s is 20 s), with their unhappy face as their own level, and the
    alert cleared 3 s after it, while the queue was as unhappy as before. An outage past
    BRIDGE_MAX_S is a new start."""
    from edge.models import default_model_path
    from edge.pipeline.classifier import Classifier
    from edge.pipeline.core import Pipeline
    from edge.pipeline.sources import Frame
    from tests.test_schedule import CountingDetector, still_faces

    clf = Classifier(default_model_path())
    n = len(clf.labels)  # sure, but not certain (a certain face counts whatever its own level: mood.unhappy_above)
    calm, angry = np.eye(n)[clf.labels.index("neutral")] * 0.9 + 0.1 / n, np.eye(n)[clf.labels.index("angry")] * 0.8 + 0.2 / n
    now = {"probs": calm}
    monkeypatch.setattr(clf, "predict", lambda crops, *a, **k: np.tile(now["probs"], (len(crops), 1)))
    pipe = Pipeline(load_config(None), clf, CountingDetector(still_faces))
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    states, ids = [], []

    def play(start, seconds, probs, after_outage=False):
        now["probs"] = probs
        if after_outage:  # as edge run does at the first frame after the camera was down
            pipe.outage_ended(start)
        for i in range(int(seconds * 10)):
            r = pipe.process(Frame(image, start + i / 10, 0))
            states.append(r.alert_state)
            ids.append(sorted(tr.id for tr in r.tracks))

    play(1000.0, 6, calm)
    play(1006.0, 15, angry)
    assert states[-1] == "raised"
    before = ids[-1]
    play(1021.0 + outage_s, 10, angry, after_outage=True)
    if kept:
        assert set(states[-100:]) == {"raised"} and ids[-1] == before
    else:  # a new start: new people, whose angry faces are their own levels
        assert states[-1] == "clear" and not set(ids[-1]) & set(before)


def test_a_flapping_camera_tells_the_sinks_once_per_window_and_a_long_outage_still_at_once(monkeypatch, caplog):
    """A loose cable (5 s out, a frame, out again) sent a camera_down and a camera_up to every sink
    each time: an alert command (an SMS) 600 times an hour."""
    from edge.service import app

    now = [1000.0]
    monkeypatch.setattr(app.time, "monotonic", lambda: now[0])
    sent = []
    downs = []

    class Sinks:
        def send(self, event):
            sent.append((event.kind, now[0]))

    class Stats:
        def camera_down(self, last_frame=None):
            downs.append((now[0], last_frame))

        def camera_up(self):
            pass

    watch = app._CameraWatch("test camera", 5.0, Stats(), Sinks(), "pi")

    def outage(seconds):
        end = now[0] + seconds
        while now[0] < end:
            now[0] += 0.25
            watch.idle()
        watch.frame()

    outage(6)  # the first: told at once
    assert sent == [("camera_down", 1005.0), ("camera_up", 1006.0)]
    assert downs == [(1005.0, 1000.0)]  # the status's outage starts at the last frame, as the chart's blank stretch
    for _ in range(50):  # 50 more within the window: none told
        outage(6)
    assert len(sent) == 2 and len(downs) == 51  # the status counted each
    outage(70)  # one that lasts: told after a minute of silence, and its end
    assert sent[2:] == [("camera_down", sent[1][1] + 50 * 6 + 60), ("camera_up", sent[1][1] + 50 * 6 + 70)]
    told_up = sent[-1][1]
    now[0] = told_up + app.FLAP_WINDOW_S - 10  # frames until 10 s before the window's end
    watch.frame()
    outage(30)  # it started inside the window: a flap, though the window ended while it lasted
    assert len(sent) == 4
    now[0] += app.FLAP_WINDOW_S  # a quiet window later, the next short outage is told at once
    outage(6)
    assert [k for k, _ in sent] == ["camera_down", "camera_up"] * 3
    assert "short outages within 10 min of the last the sinks were told of" in caplog.text


def test_edge_run_leaves_a_camera_outage_out_of_the_pipelines_clock(tmp_path, monkeypatch):
    from edge.pipeline.core import BRIDGE_STEP_S, Pipeline

    cam = StallingCamera(frames=3)
    monkeypatch.setattr("edge.pipeline.sources.open_source", lambda *a, **kw: cam)
    threading.Thread(target=lambda: wait_for(lambda: "camera_down" in _kinds(tmp_path / "ev.jsonl"), 60)
                     and cam.resume.set(), daemon=True).start()
    ended, real = [], Pipeline.outage_ended
    monkeypatch.setattr(Pipeline, "outage_ended",
                        lambda self, t_s, **kw: ended.append((self, t_s)) or real(self, t_s, **kw))
    seen = []  # the source's time of each frame the loop took
    # Frames come again without end once resumed: 5 frames end the run after the outage (the loop may
    # drop some of the 3 before it, as it drops any it had no time for; the duration only bounds a run
    # whose camera never came back)
    run(_live_cfg(tmp_path), RunOptions(max_frames=5, duration_s=120.0), on_result=lambda f, r: seen.append(r.t_s))
    assert len(seen) == 5 and len(ended) == 1, (seen, ended)
    back = seen.index(ended[0][1])  # the first frame after the outage
    gap = seen[back] - seen[back - 1]
    assert 1 <= back <= 3 and gap >= 0.5  # down_after_s is 0.5 here
    assert ended[0][0].paused_s == pytest.approx(gap - BRIDGE_STEP_S)


class LateCamera(LiveSource):
    """A camera that is not there at the start: every open fails until `plugged` is set."""

    def __init__(self):
        super().__init__(max_backoff_s=0.05)
        self.plugged, self.opened = threading.Event(), False
        self.image = np.full((120, 160, 3), 90, np.uint8)

    def _open(self):
        if not self.plugged.is_set():
            raise UserError("Cannot open late test camera: check that it is connected.")
        self.opened = True

    def _read(self):
        if not self.opened:
            return None
        time.sleep(0.02)
        return self.image

    def _release(self):
        self.opened = False

    def describe(self):
        return "late test camera"


def test_a_camera_missing_at_the_start_is_an_error_at_a_terminal_and_waited_for_by_the_service():
    cam = LateCamera()
    with pytest.raises(UserError, match="Cannot open late test camera"):
        cam.__enter__()
    cam = LateCamera()
    cam.wait_first = True
    with cam:
        time.sleep(0.3)
        cam.plugged.set()  # plugged in later
        frame = next(f for f in cam.poll(0.1) if f is not None)
    assert frame.image.shape == (120, 160, 3) and cam.reopens >= 1


def test_a_camera_waited_for_is_looked_for_as_a_pi_camera_again_at_each_open(monkeypatch):
    """At boot libcamera may not list the Pi camera yet: the first open tries a USB camera, a
    later one the Pi camera once it is listed."""
    from edge.pipeline import sources

    listed = threading.Event()

    class FakePi(LateCamera):
        available = staticmethod(lambda index: listed.is_set())

        def __init__(self, *args):
            super().__init__()
            self.plugged.set()

        def describe(self):
            return "fake Pi camera"

    class NoUsb(LateCamera):
        def __init__(self, *args):
            super().__init__()

    monkeypatch.setattr(sources, "PiCamera", FakePi)
    monkeypatch.setattr(sources, "OpenCVCamera", NoUsb)
    cam = sources.open_source(0, "", wait_for_camera=True, max_backoff_s=0.05)
    with cam:
        time.sleep(0.3)
        listed.set()
        deadline, frame = time.monotonic() + 10, None
        for f in cam.poll(0.1):
            if f is not None or time.monotonic() > deadline:
                frame = f
                break
    assert frame is not None and frame.image.shape == (120, 160, 3)
    assert cam.describe() == "camera 0"  # released at the close
    assert isinstance(sources.open_source(0, "", wait_for_camera=False), FakePi)


@pytest.mark.slow
def test_the_service_reports_a_camera_missing_at_boot_down_then_up(tmp_path, monkeypatch):
    cam = LateCamera()
    monkeypatch.setattr("edge.pipeline.sources.open_source",
                        lambda *a, **kw: setattr(cam, "wait_first", kw["wait_for_camera"]) or cam)
    threading.Thread(target=lambda: wait_for(lambda: "camera_down" in _kinds(tmp_path / "ev.jsonl"), 60)
                     and cam.plugged.set(), daemon=True).start()
    summary = run(_live_cfg(tmp_path, **{"source.wait_for_camera": True}), RunOptions(duration_s=6.0))
    assert summary["frames"] > 0  # it ran, and frames came once the camera was there
    assert _kinds(tmp_path / "ev.jsonl") == ["camera_down", "camera_up"]


def test_edge_run_goes_on_without_a_gpio_sink_whose_pin_is_in_use(tmp_path, monkeypatch):
    pytest.importorskip("gpiozero", reason="GPIO tests need the gpio extra")
    from gpiozero import LED, Device
    from gpiozero.pins.mock import MockFactory

    monkeypatch.setattr(Device, "pin_factory", MockFactory())
    held = LED(17)  # another program has the pin
    monkeypatch.setattr("edge.pipeline.sources.open_source", lambda *a, **kw: StallingCamera(frames=10))
    try:
        summary = run(_live_cfg(tmp_path, **{"sinks.gpio.pin": 17}), RunOptions(max_frames=3))
    finally:
        held.close()
    assert summary["frames"] == 3
    assert summary["sinks"]["gpio"]["disabled"].startswith("Cannot use GPIO pin 17 for the led")
    assert "jsonl" in summary["sinks"]


class MjpegStream:
    """A real MJPEG-over-HTTP camera that sends `frames` frames and then goes silent with the
    connection left open (what a camera does when its network or firmware dies)."""

    def __init__(self, frames: int):
        import cv2

        ok, jpg = cv2.imencode(".jpg", np.full((120, 160, 3), 90, np.uint8))
        data = jpg.tobytes()
        self.silent = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=f")
                self.end_headers()
                for _ in range(frames):
                    self.wfile.write(b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                     % (len(data), data))
                    time.sleep(0.05)
                stream.silent.set()
                time.sleep(120)

            def log_message(self, *args):
                pass

        stream = self
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
def test_edge_run_on_a_stream_that_dies_stops_on_a_signal(sig, tmp_path):
    """`edge run` as the service runs it, on a real stream that goes silent; the signal arrives
    while the stream read blocks. The URL's password never reaches the output."""
    stream = MjpegStream(frames=20)
    url = f"http://viewer:hunter2secret@127.0.0.1:{stream.port}/video.mjpg"
    (tmp_path / "c.toml").write_text("[status]\nport = 0\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", "c.toml", "--source", url,
                             "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)
    try:
        assert stream.silent.wait(120), "the stream was never read"
        time.sleep(1.0)  # into the stall
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)  # without the fix it hangs here
    finally:
        if proc.poll() is None:
            proc.kill()
        stream.stop()
    assert proc.returncode == 0, err
    assert json.loads(out)["frames"] >= 1
    assert "hunter2secret" not in out + err and "***@127.0.0.1" in err


# ---------------------------------------------------------------- 2. spool retried while running


def test_spool_is_flushed_while_running_without_new_events(tmp_path, receivers):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    # A previous process died (kill -9) with 7 events spooled.
    old = WebhookSink(url=url, spool=Spool(tmp_path / "sp"))
    for i in range(7):
        old.spool.put(ev("raised" if i % 2 == 0 else "cleared", i).to_dict())
    sink = WebhookSink(url=url, spool=Spool(tmp_path / "sp"), retry_min_s=0.05, retry_max_s=0.2)
    fan = Fanout([sink], flush_every_s=0.1)
    fan.send(ev("status", 7))  # fails: nothing listens yet
    assert wait_for(lambda: fan.stats()["webhook"]["spooled"] == 8)
    rx = receivers(port)  # the server is back; no new event is sent
    # the receiver records a POST before it answers: wait for the sink to have seen the answers too
    assert wait_for(lambda: len(rx.accepted) == 8 and fan.stats()["webhook"]["spooled"] == 0)
    stats = fan.stats()["webhook"]
    fan.close()
    assert [b["event_id"] for b in rx.accepted] == [f"e{i}" for i in range(8)]
    assert stats["delivered"] == 8 and stats["spooled"] == 0 and stats["lost"] == 0 and stats["dead_lettered"] == 0


# ---------------------------------------------------------------- 3. sinks never block


def test_a_hanging_webhook_and_a_sleeping_command_block_nothing(tmp_path, hanging, caplog):
    jsonl = JsonlSink(path=str(tmp_path / "ev.jsonl"))
    hook = WebhookSink(url=hanging.url, timeout_s=30, spool=Spool(tmp_path / "sp"), retry_min_s=3600)
    cmd = CommandSink(argv=["sleep", "30"], timeout_s=60)
    fan = Fanout([jsonl, hook, cmd], flush_every_s=0.1, close_timeout_s=0.5)
    with caplog.at_level(logging.WARNING):
        for i in range(50):
            fan.send(ev("status", i))  # returns at once: each sink has its own queue
        # The local sink got all 50 while the webhook still holds its first request open.
        assert wait_for(lambda: jsonl.delivered == 50)
        assert wait_for(lambda: len(hanging.requests) == 1)
        assert not hanging.release.is_set()
        fan.close()  # bounded, although both sinks are stuck
    stats = fan.stats()
    assert len(hanging.requests) == 1  # the first event was POSTed once, not once per frame
    assert stats["webhook"]["delivered"] == 0 and stats["webhook"]["lost"] == 0
    assert stats["webhook"]["spooled"] == 50  # every event kept for the next start
    assert len(Spool(tmp_path / "sp")) == 50
    assert stats["command"]["lost"] >= 48  # no spool: what never ran is counted, not hidden
    assert "SECRET" not in caplog.text  # the token in the URL is never logged
    proc = cmd._proc
    assert proc is None or wait_for(lambda: proc.poll() is not None)  # the sleeping command was killed


@pytest.mark.slow
def test_the_frame_loop_keeps_going_while_sinks_are_stuck(tmp_path, hanging, monkeypatch):
    """The camera stalls after 10 frames, so a camera_down event goes to a webhook that never
    answers and a command that sleeps 30 s; then it resumes. The loop must reach 40 frames
    long before the 25 s --duration, which a loop waiting on either sink could not."""
    cam = StallingCamera(frames=10)
    monkeypatch.setattr("edge.pipeline.sources.open_source", lambda *a, **kw: cam)
    threading.Thread(target=lambda: wait_for(lambda: "camera_down" in _kinds(tmp_path / "ev.jsonl"), 60)
                     and cam.resume.set(), daemon=True).start()
    cfg = _live_cfg(tmp_path, **{"sinks.webhook.url": hanging.url, "sinks.webhook.timeout_s": 30.0,
                                 "sinks.command.argv": ["sleep", "30"], "sinks.command.timeout_s": 60.0})
    summary = run(cfg, RunOptions(max_frames=40, duration_s=25.0))
    cam.resume.set()
    assert summary["frames"] == 40
    assert _kinds(tmp_path / "ev.jsonl") == ["camera_down", "camera_up"]
    assert len(hanging.requests) == 1  # camera_down, POSTed once; camera_up waits behind it
    hook = summary["sinks"]["webhook"]
    assert hook["lost"] == 0 and hook["spooled"] + hook["queued"] == 2


# ---------------------------------------------------------------- 4. disk trouble


def test_spool_on_a_full_disk_drops_oldest_counts_them_and_leaves_no_tmp(tmp_path, receivers, caplog):
    with tmpfs(tmp_path / "small", "size=16k") as disk:
        port = free_port()
        sink = WebhookSink(url=f"http://127.0.0.1:{port}/", spool=Spool(disk / "webhook"), retry_min_s=0.05,
                           retry_max_s=0.1)
        (disk / "filler").write_bytes(b"x" * 8 * 1024)  # someone else's files: room for 2 pages is left
        fan = Fanout([sink], flush_every_s=3600)
        with caplog.at_level(logging.WARNING):
            for i in range(23):
                fan.send(ev("status", i))
            fan.close()
        st = fan.stats()["webhook"]
        assert st["sent"] == 23
        assert st["dropped"] > 0 and "disk is full" in caplog.text
        assert st["spooled"] + st["dropped"] == 23 and st["lost"] == 0
        assert no_tmp_files(disk)
        rx = receivers(port)
        again = WebhookSink(url=rx.url, spool=Spool(disk / "webhook"))
        again.close()
        assert len(rx.accepted) == st["spooled"] - st["in_memory"]  # disk-held ones survive a restart
        assert [b["event_id"] for b in rx.accepted] == sorted((b["event_id"] for b in rx.accepted),
                                                               key=lambda e: int(e[1:]))


def test_jsonl_on_a_full_disk_holds_events_and_writes_them_whole_when_space_is_back(tmp_path, caplog):
    def big(i):  # larger than a page, so it cannot slip into the slack of the file's last page
        return dataclasses.replace(ev("status", i), counts={f"k{j}": j for j in range(500)})

    with tmpfs(tmp_path / "small", "size=64k") as disk:
        sink = JsonlSink(path=str(disk / "alerts.jsonl"))
        sink.send(big(0))
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # something else fills the card
        try:
            while True:
                os.write(fd, b"\0" * 512)
        except OSError:
            pass
        finally:
            os.close(fd)
        with caplog.at_level(logging.ERROR):
            for i in range(1, 4):
                sink.send(big(i))  # was: OSError, the event lost and its bytes left in a buffer
        assert sink.failed == 3 and sink.delivered == 1 and "cannot be written" in caplog.text
        (disk / "filler").unlink()
        sink.send(big(4))
        sink.close()
        lines = (disk / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == ["e0", "e1", "e2", "e3", "e4"]  # whole, in order
    assert sink.delivered == 5 and sink.given_up == 0


def test_read_only_spool_holds_events_in_memory_with_one_error(tmp_path, receivers, caplog):
    with tmpfs(tmp_path / "ro", "size=64k,ro") as disk:
        port = free_port()
        cfg = load_config(None, {"sinks.spool_dir": str(disk / "spool"),  # cannot even be created
                                 "sinks.webhook.url": f"http://127.0.0.1:{port}/hook"})
        with caplog.at_level(logging.ERROR):
            fan = build_sinks(cfg.sinks, "pi", flush_every_s=0.1)
            hook = fan.sinks[1]
            hook.retry_min_s = hook.retry_max_s = 0.05
            for i in range(8):
                fan.send(ev("raised", i))
            assert wait_for(lambda: hook.spool.in_memory == 8)
        errors = [r for r in caplog.records if "at risk" in r.getMessage()]
        assert len(errors) == 1
        rx = receivers(port)
        assert wait_for(lambda: len(rx.accepted) == 8 and fan.stats()["webhook"]["spooled"] == 0)
        st = fan.stats()["webhook"]
        fan.close()
        assert st["delivered"] == 8 and st["lost"] == 0 and st["dropped"] == 0 and st["in_memory"] == 0


def test_spool_moves_memory_events_to_disk_when_it_is_writable_again(tmp_path):
    with tmpfs(tmp_path / "d", "size=64k") as disk:
        sp = Spool(disk / "sp")
        sp.put({"n": 0})
        remount(disk, "ro")
        sp.put({"n": 1})
        sp.put({"n": 2})
        assert sp.in_memory == 2 and sp.disk_error
        remount(disk, "rw")
        sp.put({"n": 3})
        assert sp.in_memory == 0 and not sp.disk_error
        assert [item["n"] for _, item in Spool(disk / "sp").pending()] == [0, 1, 2, 3]  # as after a restart
        assert no_tmp_files(disk)


def test_doctor_fails_a_spool_that_takes_no_writes(tmp_path):
    with tmpfs(tmp_path / "ro", "size=64k") as disk:
        (disk / "spool").mkdir()
        remount(disk, "ro")
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[sinks]\nspool_dir = "{disk / "spool"}"\n')
        r = run_cli("doctor", "--config", cfg, "--json", timeout=300)
        checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
        assert checks["spool"]["status"] == "FAIL" and "Read-only" in checks["spool"]["detail"]


# ---------------------------------------------------------------- poison messages


def test_webhook_4xx_is_dead_lettered_and_the_rest_delivered(tmp_path, receivers, caplog):
    rx = receivers()
    spool = Spool(tmp_path / "sp")
    sink = WebhookSink(url=rx.url, spool=spool, retry_min_s=3600)
    rx.status = 422  # the receiver rejects this event for good
    with caplog.at_level(logging.ERROR):
        sink.send(ev("raised", 1))
    rx.status = 200
    sink.send(ev("cleared", 2))
    assert [b["event_id"] for b in rx.accepted] == ["e2"]
    assert spool.dead == 1 and len(spool) == 0 and sink.delivered == 1 and sink.failed == 1
    dead = list((tmp_path / "sp" / "dead").glob("*.json"))
    assert [json.loads(p.read_text())["event_id"] for p in dead] == ["e1"]
    assert len([r for r in caplog.records if "rejected for good" in r.getMessage()]) == 1


def test_dead_lettered_and_dropped_counts_outlive_an_empty_spool(tmp_path, receivers):
    """The counters HQ's QueueMonitorAlertsLost reads are totals: an event rejected for good, or one
    dropped from a full spool, still counts once the spool is empty again (a Spool with no events
    is falsy; reading 0 then hid the dead letter, and the count returning with the next spooled
    event looked to Prometheus like a reset followed by new losses)."""
    rx = receivers()
    rx.status = 400  # rejected for good
    fan = Fanout([WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp", cap=1), retry_min_s=0.05, retry_max_s=0.1)],
                 flush_every_s=0.05)
    try:
        fan.send(ev("raised", 1))
        assert wait_for(lambda: len(rx.requests) == 1 and fan.stats()["webhook"]["spooled"] == 0)
        assert fan.stats()["webhook"]["dead_lettered"] == 1
        rx.status = 503  # down: the cap of 1 drops the older of two
        fan.send(ev("cleared", 2))
        fan.send(ev("raised", 3))
        assert wait_for(lambda: fan.stats()["webhook"]["dropped"] == 1)
        rx.status = 200
        assert wait_for(lambda: fan.stats()["webhook"]["spooled"] == 0 and rx.accepted)
        st = fan.stats()["webhook"]
        assert (st["dead_lettered"], st["dropped"]) == (1, 1), st
    finally:
        fan.close()


@needs_mosquitto
def test_mqtt_invalid_topic_in_spool_is_dead_lettered_and_delivery_continues(broker, subscribers, mqtt_sinks,
                                                                             tmp_path):
    sub = subscribers(broker.port, ["qm/alerts"])
    spool = Spool(tmp_path / "spool")  # written by a run whose config had topic "qm/#"
    spool.put({"topic": "qm/#", "retain": False, "payload": ev("raised", 1).to_dict()})
    spool.put({"topic": "qm/alerts", "retain": False, "payload": ev("status", 2).to_dict()})
    sink = mqtt_sinks(broker.port, tmp_path / "spool")
    assert wait_for(lambda: sub.ids("qm/alerts") == ["e2"])
    sink.send(ev("cleared", 3))  # paho's network thread survived
    assert wait_for(lambda: sub.ids("qm/alerts") == ["e2", "e3"])
    assert wait_for(lambda: len(sink.spool) == 0)
    assert sink.spool.dead == 1


@needs_mosquitto
def test_mqtt_broker_restart_under_the_fanout_loses_nothing(broker, subscribers, tmp_path):
    from edge.sinks.mqtt import MqttSink

    sub = subscribers(broker.port, ["qm/alerts"], client_id="sub-r", persistent=True)
    sink = MqttSink(host="127.0.0.1", port=broker.port, topic="qm/alerts", state_topic="qm/state",
                    spool=Spool(tmp_path / "spool"), reconnect_min_s=0.1, reconnect_max_s=0.5)
    fan = Fanout([sink], flush_every_s=0.1)
    sent = 0
    for phase in range(3):
        for _ in range(3):
            fan.send(ev("status", sent))
            sent += 1
        if phase == 0:
            assert wait_for(lambda: len(sub.ids("qm/alerts")) == 3)
            broker.stop()
            assert wait_for(lambda: not sink.connected)
        elif phase == 1:
            broker.start()
    assert wait_for(lambda: len(sub.ids("qm/alerts")) == sent), sub.messages
    assert wait_for(lambda: fan.stats()["mqtt"]["spooled"] == 0)
    st = fan.stats()["mqtt"]
    fan.close()
    assert sub.ids("qm/alerts") == [f"e{i}" for i in range(sent)]
    assert st["sent"] == sent and st["delivered"] == sent and st["lost"] == 0 and st["dead_lettered"] == 0


# ---------------------------------------------------------------- 5. settings and model card

BAD_SETTINGS = [
    ('[sinks.webhook]\nurl = "http://h/"\ntimeout_s = 0', "sinks.webhook.timeout_s"),
    ('[sinks.webhook]\nurl = "http://h/"\ntimeout_s = -1', "sinks.webhook.timeout_s"),
    ('[sinks.command]\nargv = ["true"]\ntimeout_s = 0', "sinks.command.timeout_s"),
    ("[sinks.jsonl]\nmax_mb = -1", "sinks.jsonl.max_mb"),
    ("[sinks.jsonl]\nkeep = 1000", "sinks.jsonl.keep"),
    ('[sinks.webhook]\nurl = "http://h/"\nheaders = {X-Token = "a\\r\\nX-Evil: 1"}', "sinks.webhook.headers.X-Token"),
    ('[sinks.mqtt]\nhost = "h"\ntopic = "a/#"', "sinks.mqtt.topic"),
    ('[sinks.mqtt]\nhost = "h"\nstate_topic = "a/+/b"', "sinks.mqtt.state_topic"),
    ('[sinks.mqtt]\nhost = "h"\nkeepalive_s = -5', "sinks.mqtt.keepalive_s"),
    ("[model]\nthreads = 100000", "model.threads"),
    ('[sinks]\nspool_dir = "FILE"', "sinks.spool_dir"),
    ("[mood]\nwindow_s = inf", "mood.window_s"),
    ("[source]\nfps = inf", "source.fps"),
    ("[source]\nfps = nan", "source.fps"),
    ("[source]\nwidth = 100000000", "source.width"),
    ("[source]\nwidth = 1e8", "source.width"),
    ("[tracking]\nmin_hits = 9223372036854775807", "tracking.min_hits"),
    ("[source]\ndown_after_s = 0", "source.down_after_s"),
    ('device_name = "Kasse 1\\nzwei"', "device_name"),  # a line break would split the alert's journal line
    ('device_name = "Kasse\\u001b[2J1"', "device_name"),
]


@pytest.mark.parametrize("text,key", BAD_SETTINGS)
def test_bad_settings_fail_at_load_with_the_key(text, key, tmp_path):
    (tmp_path / "FILE").write_text("x")
    cfg = tmp_path / "c.toml"
    cfg.write_text(text.replace("FILE", str(tmp_path / "FILE")))
    with pytest.raises(UserError, match=f"'{key}'") as err:
        load_config(cfg)
    message = str(err.value)
    assert "\n" not in message and ("allowed" in message or "expected" in message)
    assert "a\r\nX-Evil" not in str(err.value)  # a header value may be a secret: never echoed


def test_non_utf8_config_is_one_sentence(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b'device_name = "caf\xe9"\n')
    r = run_cli("run", "--config", cfg, "--print-config")
    assert r.returncode == 2 and "not UTF-8" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture
def card_copy(tmp_path):
    from edge.models import default_model_path

    src = default_model_path()
    dst = tmp_path / "m"
    dst.mkdir()
    (dst / src.name).write_bytes(src.read_bytes())
    card = json.loads(src.with_name("model.json").read_text())
    return dst / src.name, card


@pytest.mark.parametrize("key,value", [("temperature", 0), ("temperature", -1.0), ("temperature", "hot"),
                                       ("temperature", float("nan")), ("labels", 5), ("labels", ["a"] * 7),
                                       ("input_size", 0), ("input_quant", {"scale": 0, "zero_point": 0}),
                                       ("crop", {"scale": -1, "shift_y": 0}), ("flip_average", "yes")])
def test_bad_model_card_is_one_sentence_naming_the_key(key, value, card_copy):
    from edge.card import load_card

    model, card = card_copy
    card[key] = value
    model.with_name("model.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match=f"key '{key}") as err:
        load_card(model)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("key", ["max_drop_pp", "min_agreement"])
def test_a_parity_threshold_that_is_not_a_number_is_one_sentence(key, card_copy):
    """The gate's thresholds are compared with the defaults wherever a card is read: a hand edit
    must fail as one sentence, not as a TypeError there."""
    from edge.card import load_card

    model, card = card_copy
    card["parity"][key] = "lots"
    model.with_name("model.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match=f"key 'parity.{key}' has the bad value 'lots'; allowed: a number"):
        load_card(model)


def test_temperature_zero_never_runs(card_copy, tmp_path):
    model, card = card_copy
    card["temperature"] = 0
    model.with_name("model.json").write_text(json.dumps(card))
    r = run_cli("run", "--source", tmp_path, "--model", model, "--max-frames", "1")
    assert r.returncode == 2 and "temperature" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- 6. bad input to analyze / run


@pytest.mark.slow
def test_analyze_and_run_bad_paths_are_one_sentence(tmp_path):
    import cv2

    (tmp_path / "broken.mp4").symlink_to(tmp_path / "gone.mp4")
    folder = tmp_path / "imgs"
    (folder / "x.jpg").mkdir(parents=True)  # a folder named like an image
    (folder / "dangling.png").symlink_to(tmp_path / "gone.png")
    cv2.imwrite(str(folder / "a.png"), np.full((64, 64, 3), 128, np.uint8))
    for args, needle in [(("analyze", tmp_path / "broken.mp4"), "link to a file that does not exist"),
                         (("run", "--source", tmp_path / "broken.mp4"), "link to a file that does not exist"),
                         (("analyze", folder / "x.jpg"), "has no images")]:
        r = run_cli(*args)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_cli("analyze", folder, "--out", tmp_path / "out")  # the odd entries are skipped
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["frames_analysed"] == 1


def test_analyze_out_on_a_read_only_disk_is_one_sentence(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.full((64, 64, 3), 128, np.uint8))
    with tmpfs(tmp_path / "ro", "size=64k,ro") as disk:
        r = run_cli("analyze", tmp_path / "a.png", "--out", disk / "out")
    assert r.returncode == 2 and "Read-only file system" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- systemd notify


class Notes(list):
    """The messages systemd's notify socket received: all of them when the block ends, and
    those up to one starting with `prefix` while it runs (wait_for)."""

    def __init__(self, sock: socket.socket):
        super().__init__()
        self.sock = sock

    def wait_for(self, prefix: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.append(self.sock.recv(4096).decode())
            except OSError:  # the socket's 0.1-s timeout
                continue
            if self[-1].startswith(prefix):
                return self[-1]
        raise AssertionError(f"no {prefix} message within {timeout_s:g} s; got {list(self)}")


@contextmanager
def systemd_notify(tmp_path, monkeypatch):
    """systemd's notify socket, with a watchdog of 0.2 s; yields the list of the messages
    received, filled in when the block ends (Notes.wait_for reads them while it runs)."""
    addr = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    sock.settimeout(0.1)
    monkeypatch.setenv("NOTIFY_SOCKET", addr)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    got = Notes(sock)
    try:
        yield got
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except OSError:
                break
    finally:
        sock.close()


def test_run_tells_systemd_ready_watchdog_and_stopping(tmp_path, monkeypatch):
    cam = StallingCamera(frames=5)
    monkeypatch.setattr("edge.pipeline.sources.open_source", lambda *a, **kw: cam)
    with systemd_notify(tmp_path, monkeypatch) as got:
        run(_live_cfg(tmp_path), RunOptions(duration_s=1.5))  # mostly a silent camera: pings continue
    cam.resume.set()
    assert got[0] == "READY=1" and got[-1] == "STOPPING=1"
    assert got.count("WATCHDOG=1") >= 2


def test_a_start_that_fails_under_systemd_says_why_and_waits_for_a_stop_signal(tmp_path, monkeypatch):
    """A start error that lasts (here an empty config) had systemd restart edge run into it every
    5 s for good (RestartSec=5, StartLimitIntervalSec=0), each start seconds of CPU on a Pi and
    journal lines that rotated away the one saying why. Under systemd it is said once, shown by
    `systemctl status` (STATUS=), and the exit comes FAILED_START_WAIT_S (60 s) later, or at once at
    SIGTERM (`systemctl stop`, or a restart after the fix). At a terminal the exit is immediate."""
    from edge.service.notify import FAILED_START_WAIT_S

    cfg = tmp_path / "config.toml"
    cfg.write_text("")
    bound = FAILED_START_WAIT_S / 2  # well inside the wait: an exit before it was not waited out
    r = run_cli("run", "--config", cfg, timeout=bound)  # no NOTIFY_SOCKET
    assert r.returncode == 2 and r.stderr.count("error:") == 1 and "is empty" in r.stderr
    with systemd_notify(tmp_path, monkeypatch) as got:
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)],
                                stderr=subprocess.PIPE, text=True)
        try:
            status = got.wait_for("STATUS=", timeout_s=bound)
            assert proc.poll() is None  # waiting, not exited into the next restart
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=bound)
        finally:
            proc.kill()
    assert proc.returncode == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert "is empty (0 bytes)" in status and "\n" not in status and "READY=1" not in got


def test_a_failed_start_ends_after_the_wait_and_an_error_after_ready_is_not_waited_on(tmp_path, monkeypatch):
    """The wait ends by itself (then systemd starts edge run again, and a fixed config runs); an
    error after READY=1, when systemd's watchdog is running, ends edge run at once."""
    from edge.cli import cli
    from edge.service import notify as sd

    monkeypatch.setattr(sd, "FAILED_START_WAIT_S", 0.2)
    monkeypatch.setattr(sd, "_ready", False)
    cfg = tmp_path / "config.toml"
    cfg.write_text("[source]\ndown_after_s = 0\n")
    for ready in (False, True):
        (tmp_path / str(ready)).mkdir()
        with systemd_notify(tmp_path / str(ready), monkeypatch) as got:
            if ready:
                sd.notify("READY=1")
            with pytest.raises(SystemExit) as end:
                cli.main(["run", "--config", str(cfg)])
        assert end.value.code == 2
        statuses = [m for m in got if m.startswith("STATUS=")]
        assert len(statuses) == (0 if ready else 1) and all("source.down_after_s" in m for m in statuses)


# ---------------------------------------------------------------- redaction


def test_redact_url_hides_credentials_and_tokens():
    from edge.redact import redact_url

    assert redact_url("rtsp://admin:pw@10.0.0.2:554/stream1") == "rtsp://***@10.0.0.2:554/stream1"
    assert redact_url("https://hooks.example.com/services/T0/B0/XyZ") == "https://hooks.example.com/services/***"
    assert redact_url("http://h/hook?token=abc") == "http://h/hook?***"
    assert redact_url("https://h/abcdefghijklmnopqrstuvwxyz0123") == "https://h/***"
    assert redact_url("/dev/video0") == "/dev/video0"
    assert "pw" not in redact_url("http://u:pw@h:99999999/")


# ---------------------------------------------------------------- the soak's bookkeeping


def test_soak_schedule_and_rss_fit():
    from benchmarks.soak import WARMUP_MIN, faults_at, rss_growth_mb_per_h, schedule

    assert [name for name, _, _ in schedule(300)] == ["webhook_down", "webhook_hang", "broker_down", "camera_stall"]
    assert faults_at(0, 300) == set() and faults_at(50, 300) == {"webhook_down"}
    assert faults_at(300 + 260, 300) == {"camera_stall"} and faults_at(130 / 5, 60) == {"webhook_hang"}
    flat = [{"t_s": 60.0 * m, "rss_mb": 140.0} for m in range(10)]
    growing = [{"t_s": 60.0 * m, "rss_mb": 140.0 + 0.1 * m} for m in range(10)]  # 0.1 MB a minute
    assert rss_growth_mb_per_h(flat) == 0.0
    assert rss_growth_mb_per_h(growing) == pytest.approx(6.0)
    assert rss_growth_mb_per_h(growing[:WARMUP_MIN + 2]) is None  # too few points after warm-up


def test_the_soak_says_when_other_work_loaded_the_machine_during_the_run():
    """The header warned of load only at the start: audits started later halved the service's
    frame rate and the table showed thousands of dropped frames as if they were the service's."""
    from benchmarks.soak import load_line

    quiet = [{"t_s": 60.0 * m, "load1": 1.1} for m in range(5)]
    busy = quiet[:2] + [{"t_s": 60.0 * m, "load1": 6.5} for m in (2, 3)] + quiet[4:]
    assert load_line(quiet, 2) == ("- the machine's 1-minute load average (the service's own included): 1.1-1.1 "
                                   "on 2 cores")
    assert "above 2 in 2 of 5 samples (minutes 2-3): other work competed" in load_line(busy, 2)
    assert load_line([{"t_s": 0.0, "rss_mb": 90.0}], 2) is None  # results from before the load was recorded


def test_memtrace_into_a_folder_is_one_line_before_the_command_starts(tmp_path):
    """It was an IsADirectoryError traceback."""
    r = subprocess.run([sys.executable, "benchmarks/memtrace.py", str(tmp_path), "--", "config"],
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 1 and r.stderr.strip() == (f"memtrace: cannot write {tmp_path} (Is a directory); give a "
                                                      "file path for the samples.")
    assert r.stdout == ""  # the edge command never ran


def test_memtrace_finds_the_line_that_grew_and_the_soak_reports_it(tmp_path):
    import tracemalloc

    from benchmarks import memtrace
    from benchmarks.soak import memory_markdown, memory_split

    tracemalloc.start(memtrace.FRAMES)
    try:
        base = tracemalloc.take_snapshot()
        line = sys._getframe().f_lineno + 1
        kept = [bytearray(64 * 1024) for _ in range(32)]  # 2 MiB held past the second snapshot
        rows = memtrace.growth(base, tracemalloc.take_snapshot())
        s = memtrace.sample(0.0)
    finally:
        tracemalloc.stop()
    assert len(kept) == 32
    assert rows[0]["where"][-1].endswith(f"test_reliability.py:{line}")
    assert rows[0]["size_diff_kb"] >= 2048 and rows[0]["count_diff"] >= 32
    assert s["python_heap_mb"] >= 2 and s["rss_mb"] > 0 and s["gc_objects"] > 0
    assert s["malloc_in_use_mb"] > 0  # glibc here, as on the Pi

    path = tmp_path / "memtrace-main.jsonl"
    path.write_text("".join(json.dumps({"t_s": 60.0 * m, "rss_mb": 100.0 + 0.05 * m, "python_heap_mb": 20.0,
                                        "malloc_held_mb": 40.0 + 0.05 * m}) + "\n" for m in range(12)))
    (tmp_path / "memtrace-main-top.json").write_text(json.dumps({"since_s": 180, "at_s": 660, "top": rows[:1]}))
    m = memory_split(path)
    assert m["per_hour"]["rss_mb"] == pytest.approx(3.0) and m["per_hour"]["python_heap_mb"] == 0.0
    assert m["per_hour"]["malloc_held_mb"] == pytest.approx(3.0) and m["per_hour"]["gc_objects"] is None
    text = memory_markdown(m)
    assert "| Python heap (tracemalloc) | 20.00 | 20.00 | 0.00 |" in text and "test_reliability.py:" in text


def test_a_flapping_camera_is_a_few_journal_lines_a_minute_and_a_long_outage_still_said(monkeypatch, caplog):
    """A stream stalling after each reconnect was down 5 s, up, down again, every 9 s: an ERROR and
    a WARNING each time (with the grabber's, some 40 lines a minute). An outage within a minute of
    the last one logged is counted instead, and one that lasts is said all the same."""
    from types import SimpleNamespace

    from edge.service import app

    now = [1000.0]
    monkeypatch.setattr(app.time, "monotonic", lambda: now[0])
    watch = app._CameraWatch("test camera", 5.0, SimpleNamespace(camera_down=lambda last_frame=None: None, camera_up=lambda: None),
                             SimpleNamespace(send=lambda event: None), "pi")

    def outage(seconds):
        for _ in range(int(seconds / 0.25)):
            now[0] += 0.25
            watch.idle()
        now[0] += 3  # a few frames, then out again
        watch.frame()

    def lines():
        return [r for r in caplog.records if r.name == "edge" and r.levelno >= logging.WARNING]

    with caplog.at_level(logging.INFO, logger="edge"):
        for _ in range(60):  # 9 minutes of an outage every 9 s
            outage(6)
        assert len(lines()) <= 2 * 10, len(lines())  # was: 120
        assert "were not logged: it keeps dropping out" in caplog.text
        caplog.clear()
        outage(20)  # inside the minute: counted
        assert not lines()
        outage(300)  # gone for good: said once it has lasted a minute, and its end
        said = [r.getMessage() for r in lines()]
        assert len(said) == 2 and "delivered no frame for 65 s" in said[0] and "camera up" in said[1]


def test_outage_log_says_one_outage_a_minute_counts_the_rest_and_says_a_long_one(monkeypatch):
    """The rule both journal watchers share (edge.outages): an outage starting EVERY_S or more
    after the last one said is said (WARNING), those between are counted (DEBUG) and named once
    by the next one said; one not said that lasts EVERY_S is said all the same."""
    from edge import outages

    now = [10.0]  # a service started 10 s after boot: its first outage is said all the same
    monkeypatch.setattr(outages.time, "monotonic", lambda: now[0])
    o = outages.OutageLog()

    def start(t):
        now[0] = t
        o.start()
        return o.said, o.level

    assert start(10.0) == (True, logging.WARNING) and o.more() == ""
    assert start(69.9) == (False, logging.DEBUG) and o.more() == ""  # 59.9 s after the last said
    assert start(70.0) == (True, logging.WARNING)
    assert o.more().startswith(" (1 more outage since the last one logged, each starting within 60 s") and o.more() == ""
    assert start(71.0) == (False, logging.DEBUG) and start(72.0) == (False, logging.DEBUG)
    assert not o.overdue(outages.EVERY_S - 0.1)
    assert o.overdue(outages.EVERY_S) and (o.said, o.level) == (True, logging.WARNING)
    assert not o.overdue(outages.EVERY_S + 1)  # said once
    assert o.more().startswith(" (2 more outages since")
    assert start(131.9) == (False, logging.DEBUG)  # the minute runs from when the long one was said
    assert start(132.0)[0]
