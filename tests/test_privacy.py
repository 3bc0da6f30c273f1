"""Frames never leave the device unasked (README): what a hostile reviewer tried, each leak
reproduced with the real parts."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_reliability import MjpegStream

REPO = Path(__file__).resolve().parents[1]


def _core_limit(pid: int) -> int:
    """The soft RLIMIT_CORE of a running process, from /proc (0: no core file)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft = line.split()[4]
            return -1 if soft == "unlimited" else int(soft)
    raise AssertionError("no core limit in /proc/PID/limits")


# As systemd starts a service (its default core limit is infinity): cores allowed up to the hard limit.
UNLIMITED_CORES = ["sh", "-c", 'ulimit -c "$(ulimit -H -c)" && exec "$@"', "sh"]


def needs_core_files() -> None:
    if resource.getrlimit(resource.RLIMIT_CORE)[1] == 0:
        pytest.skip("this machine allows no core file at all (hard limit 0)")


@pytest.mark.slow
def test_a_watchdog_abort_of_edge_run_leaves_no_core_file_with_frames(tmp_path):
    """The camera stream goes silent mid-read, the grabber hangs, and systemd's watchdog kills the
    service with SIGABRT (its WatchdogSignal): with core dumps allowed, as systemd allows them,
    the process's memory, camera frames included, would land in a core file in the working folder."""
    needs_core_files()
    stream = MjpegStream(frames=20)
    (tmp_path / "c.toml").write_text("[status]\nport = 0\n")
    proc = subprocess.Popen([*UNLIMITED_CORES, sys.executable, "-m", "edge.cli", "run", "--config", "c.toml", "--source",
                             f"http://127.0.0.1:{stream.port}/video.mjpg"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)})
    try:
        assert stream.silent.wait(120), "the stream was never read"
        time.sleep(1.0)  # frames are in memory, the read blocks
        assert proc.poll() is None, proc.stderr.read()
        limit = _core_limit(proc.pid)
        proc.send_signal(signal.SIGABRT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        stream.stop()
    assert proc.returncode == -signal.SIGABRT
    assert limit == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("core")]


def test_doctors_camera_probe_leaves_no_core_file():
    """`edge doctor` reads a camera frame in a child process (in /tmp): a driver crash there must
    not write the frame to a core file either, whatever core limit the doctor's shell has."""
    from edge.ops.doctor import camera

    needs_core_files()
    before = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (before[1], before[1]))
    try:
        got, why = camera._child("import json, resource\n"
                                 "print(json.dumps({'core': resource.getrlimit(resource.RLIMIT_CORE)[0]}))", 60)
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, before)
    assert got == {"core": 0}, why


def test_edge_analyze_leaves_no_core_file_with_the_recordings_frames(tmp_path):
    """A recording of the queue is the customers' faces too: a crash or SIGABRT of `edge analyze`
    wrote a core file of its memory, frames included, into the working folder (132 MB, for the demo)."""
    import cv2
    import numpy as np

    needs_core_files()
    cv2.imwrite(str(tmp_path / "queue.png"), np.full((120, 160, 3), 90, np.uint8))
    code = ("import resource, sys\nfrom edge.cli import cli\ntry:\n    cli(sys.argv[1:])\n"
            "finally:\n    print('core limit', resource.getrlimit(resource.RLIMIT_CORE)[0])")
    r = subprocess.run([*UNLIMITED_CORES, sys.executable, "-c", code, "analyze", "queue.png", "--out", "out"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "core limit 0"


def test_edge_doctor_reads_a_recordings_frame_with_core_dumps_off(tmp_path):
    """With a recording as [source] path, `edge doctor` reads its first frame in its own process (the
    camera row, the detector's and the compute budget's frame size), not in a child as a camera's:
    a crash while decoding it, or Ctrl-\\, wrote a core file of that frame into the working folder."""
    import cv2
    import numpy as np

    needs_core_files()
    (tmp_path / "stills").mkdir()
    cv2.imwrite(str(tmp_path / "stills" / "queue.png"), np.full((120, 160, 3), 90, np.uint8))
    (tmp_path / "c.toml").write_text('[source]\npath = "stills"\n')
    code = ("import resource, sys\nimport edge.pipeline.sources as sources\nopen_source = sources.open_source\n"
            "def opened(*args, **kwargs):\n    print('core limit', resource.getrlimit(resource.RLIMIT_CORE)[0])\n"
            "    return open_source(*args, **kwargs)\nsources.open_source = opened\nfrom edge.cli import cli\n"
            "cli(sys.argv[1:])")
    r = subprocess.run([*UNLIMITED_CORES, sys.executable, "-c", code, "doctor", "--config", "c.toml"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)})
    assert "stills (its first frame read, 160x120)" in r.stdout, r.stdout + r.stderr
    limits = [line for line in r.stdout.splitlines() if line.startswith("core limit")]
    assert limits and set(limits) == {"core limit 0"}, limits


@pytest.mark.slow
def test_the_pipeline_benchmark_on_a_recording_leaves_no_core_file_with_its_frames(tmp_path):
    """`edge bench pipeline --video` runs the whole monitor on a store's recording in its own
    process, as `edge analyze` does: a crash or SIGABRT wrote a core file of it, frames included."""
    import cv2
    import numpy as np

    needs_core_files()
    writer = cv2.VideoWriter(str(tmp_path / "queue.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for _ in range(5):
        writer.write(np.full((120, 160, 3), 90, np.uint8))
    writer.release()
    code = ("import resource, sys\nfrom edge.cli import cli\ntry:\n    cli(sys.argv[1:])\n"
            "finally:\n    print('core limit', resource.getrlimit(resource.RLIMIT_CORE)[0])")
    r = subprocess.run([*UNLIMITED_CORES, sys.executable, "-c", code, "bench", "pipeline", "--video", "queue.mp4",
                        "--runs", "1", "--warmup", "0", "--out", "out"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "core limit 0"


def test_doctor_never_shows_the_camera_streams_password():
    """install.sh prints `edge doctor` (into the journal, for an install at first boot), and a
    report gets pasted into tickets: the stream URL's password would hand out the camera's picture."""
    from edge.config import load_config
    from edge.ops.doctor.camera import check_camera
    from edge.ops.doctor.context import DoctorSettings, _Context

    from tests.test_sinks import free_port

    ctx = _Context(DoctorSettings())
    port = free_port()  # nothing listens: the doctor tries the stream, and says it cannot open it
    cfg = load_config(None, {"source.path": f"rtsp://admin:Secr3tPass@127.0.0.1:{port}/stream1?token=abc"})
    check_camera(ctx, cfg)
    (check,) = ctx.checks
    assert "Secr3tPass" not in check.detail and "abc" not in check.detail
    assert f"rtsp://***@127.0.0.1:{port}/stream1" in check.detail


def test_the_service_unit_allows_no_core_file_either():
    """The unit's own limit covers what edge run's cannot: a crash before Python has set it."""
    unit = (REPO / "deploy" / "queue-mood.service").read_text()
    service = unit[unit.index("[Service]"):]
    assert "\nLimitCORE=0\n" in service


@pytest.mark.parametrize("key", ["status.token", "status.password", "sinks.mqtt.password"])
def test_a_secret_of_the_wrong_type_is_not_shown_in_the_config_error(tmp_path, key):
    """An unquoted numeric password is a TOML integer: the error names the key, never the value."""
    from edge.config import ConfigError, load_config

    table, name = key.rsplit(".", 1)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[{table}]\n{name} = 8675309123456789\n' + ('host = "b"\n' if "mqtt" in key else ""))
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert str(err.value) == f"Config key '{key}' has the bad value (hidden); expected a string in quotes."


@pytest.mark.slow
@pytest.mark.parametrize("password", ["Ab'Secr3t", 'Ab"Secr3t', "p@ss'Secr3t"])
def test_a_camera_password_with_a_quote_is_hidden_whole(tmp_path, password):
    """RFC 3986 allows ' unencoded in a URL's user:password, and URLs in text were cut at quotes:
    `edge config` (pasted into tickets) and the journal's warning about a camera and a path both
    set showed the password's part after the quote."""
    from edge.config import both_sources, load_config

    url = f"rtsp://admin:{password}@192.0.2.7:554/stream1"
    cfg = tmp_path / "config.toml"
    quoted = url.replace('"', '\\"')
    cfg.write_text(f'[source]\ncamera = 0\npath = "{quoted}"\n')
    assert load_config(cfg).source.path == url
    r = run_cli("config", "--config", cfg)
    assert r.returncode == 0, r.stderr
    said = both_sources(load_config(cfg).source)
    for shown in (r.stdout, r.stderr, said):
        assert "Secr3t" not in shown
    assert "rtsp://***@192.0.2.7:554/stream1" in r.stdout and "rtsp://***@192.0.2.7:554/stream1" in said


@pytest.mark.parametrize("host", ["mqtt://till3:Br0kerSecret@broker.local:1883", "till3:Br0kerSecret@broker.local"])
def test_a_broker_url_pasted_as_the_mqtt_host_is_refused_without_its_password(tmp_path, host):
    """Many tools take the broker as mqtt://user:password@host: pasted into sinks.mqtt.host it was
    refused with the password in the error, which lands in the journal and in tickets."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[sinks.mqtt]\nhost = "{host}"\n')
    r = run_cli("config", "--config", cfg)
    assert r.returncode != 0
    assert "Br0kerSecret" not in r.stdout + r.stderr
    assert "Config key 'sinks.mqtt.host' has the bad value '" in r.stderr and "***@broker.local" in r.stderr


def test_a_camera_url_refused_for_a_space_in_its_password_is_shown_without_it(tmp_path):
    """A password typed into the URL as it is, space and all, is refused (spaces must be %20);
    the error, which the journal keeps, showed what followed the space."""
    cfg = tmp_path / "config.toml"
    cfg.write_text('[source]\npath = "rtsp://admin:Till three Secr3t@192.0.2.7:554/stream1"\n')
    r = run_cli("config", "--config", cfg)
    assert r.returncode != 0
    assert "Secr3t" not in r.stdout + r.stderr and "three" not in r.stdout + r.stderr
    assert "'rtsp://***@192.0.2.7:554/stream1'" in r.stderr and "no spaces: write them %20" in r.stderr
