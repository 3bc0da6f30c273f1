"""`edge run` as a real process on a long looping video, for the tests that look at it from
outside (a browser, Prometheus): one person in the queue, and a config under which she
raises an alert at once, so the page and the metrics have something to show."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

TOKEN = "page-test-token-0123456789"  # the people's: the page, /status
METRICS_TOKEN = "fleet-test-token-0123456789"  # head office's scrape: /metrics only
CONFIG = """
device_name = "{device}"
[source]
path = "{video}"
[mood]
min_confidence = 0.0
score = "expected"  # every face counts as fully negative from the start (the default "change" waits for a change)
negative = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
[alert]
min_faces = 1
raise_share = 0.01
clear_share = 0.0
raise_after_s = 0.0
[schedule]  # every face of every frame: a file is read as fast as it is processed, so this keeps the run long enough to watch
classify_hz = 0
classify_max_per_frame = 0
detect_hz = 0
scan_hz = 0
scan_still_s = 0
[status]
port = {port}
token = "{token}"
metrics_token = "{metrics_token}"
history_db = "{history}"
"""


@pytest.fixture(scope="session")
def long_video(tmp_path_factory) -> Path:
    """1500 frames (at 10 fps media time; `edge run` reads a file as fast as it can, which
    here lasts long enough for a browser or a scraper to look): the astronaut walking slowly
    back and forth, so she stays one tracked person."""
    pytest.importorskip("skimage", reason="the test scene uses scikit-image's astronaut")
    from benchmarks.scenes import astronaut_face, background, place, write_video

    face = astronaut_face()
    frames = []
    for i in range(40):
        f = background(i)
        place(f, face, 100 + 4 * (i if i < 20 else 40 - i), 120, 200)
        frames.append(f)
    path = tmp_path_factory.mktemp("live") / "queue.mp4"
    return write_video(path, (frames[i % len(frames)] for i in range(1500)), 10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(port: int) -> dict | None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/status", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


class EdgeRun:
    """`python -m edge.cli run --config ...` in the background, stopped with SIGTERM."""

    def __init__(self, video: Path, workdir: Path, device: str, extra: str = "", package: Path | None = None):
        """package: the folder to import edge from (an installed copy) instead of this checkout."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = workdir / "edge.toml"
        self.config.write_text(CONFIG.format(device=device, video=video, port=self.port, token=TOKEN, metrics_token=METRICS_TOKEN,
                                             history=workdir / "history.sqlite") + extra)  # extra: more sections
        self.log = workdir / "edge.log"
        env = {**os.environ, "HOME": str(workdir)}  # the spool stays in tmp
        if package:  # run from the workdir: `-m` puts the current folder, this checkout, first on sys.path
            env["PYTHONPATH"] = str(package)
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("wb"), env=env,
                                     cwd=workdir if package else None)

    def wait_until(self, cond, timeout_s: float = 120) -> dict:
        """The first /status for which cond(status) holds; fails with the log when the run ends first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            s = status(self.port)
            if s is not None and cond(s):
                return s
            assert self.proc.poll() is None, f"edge run ended early:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"edge run never reached the state:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def edge_runs(long_video, tmp_path):
    made: list[EdgeRun] = []

    def start(device: str, extra: str = "") -> EdgeRun:
        made.append(EdgeRun(long_video, tmp_path / device, device, extra))
        return made[-1]

    yield start
    for r in made:
        r.stop()
