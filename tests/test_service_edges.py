"""The status service at its edges: a clock stepped by NTP after the boot, a damaged row in the
history file, a handler that fails, a camera that stays unplugged, the chart's last seconds at a
stop and a quick restart, and a part that fails to close at the stop."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import time
from datetime import datetime

import numpy as np
import pytest

from edge.errors import UserError
from edge.pipeline.sources import LiveSource
from edge.service.history import History
from edge.service.status import Stats
from tests.test_sinks import wait_for
from tests.test_status import get, result, serve  # noqa: F401


def test_times_stamped_before_ntp_sets_the_clock_move_with_it(monkeypatch):
    """A Pi boots with its clock 3 days behind (fake-hwclock) and NTP steps it later: the page
    must not say "clear since 27 Nov (72 h)" until the state changes."""
    clock, off = [1000.0], [-3 * 86400.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0 + clock[0] + off[0])
    stats = Stats("rt", "m", "video")
    stats.update(result(2, 0, happy=2), 0, {})  # starting -> clear
    clock[0] += 60
    stats.update(result(4, 3, "raised", "raised", angry=3, happy=1), 0, {})
    clock[0] += 60
    off[0] = 0.0  # NTP steps the clock
    stats.update(result(4, 3, "raised", angry=3, happy=1), 0, {})
    s = stats.snapshot()

    def ago(key):
        return (datetime.fromisoformat(s["now"]) - datetime.fromisoformat(s[key])).total_seconds()

    assert (ago("started_at"), ago("alert_state_since"), ago("alert_raised_at")) == (120, 60, 60)
    stats.camera_down()
    clock[0] += 30
    off[0] = 3600.0  # stepped again, an hour on
    s = stats.snapshot()
    assert (ago("started_at"), ago("alert_state_since")) == (150, 30)


def test_a_damaged_row_in_the_history_file_is_left_out_and_status_still_answers(tmp_path, caplog, serve):  # noqa: F811
    """A flipped bit can make a row's TEXT or REAL a blob that PRAGMA quick_check passes: that
    row is left out, with one warning, and /status is whole JSON."""
    caplog.set_level(logging.WARNING)
    db = tmp_path / "history.sqlite"
    now = time.time() // 10 * 10 - 100
    h = History(db_path=str(db))
    for s in range(0, 40, 5):
        h.add(now + s, 0.2, 2, False)
    h.add_alert(now + 10, "raised", 0.5, 3)
    h.add_alert(now + 20, "cleared", 0.1, 3)
    h.close()
    con = sqlite3.connect(db)
    con.execute("UPDATE alerts SET kind = CAST(kind AS BLOB) WHERE kind = 'raised'")
    con.execute("UPDATE samples SET negative_share = x'3fc999999999999a' WHERE t = ?", (now + 10,))
    con.commit()
    con.close()

    stats = Stats("rt", "m", "video", history=History(db_path=str(db)))
    base, _ = serve(stats)
    code, _, body = get(base + "/status")
    assert code == 200 and [a["kind"] for a in json.loads(body)["recent_alerts"]] == ["cleared"]
    code, _, body = get(base + "/history")
    assert code == 200 and [p["t"] for p in json.loads(body)["points"]] == [now, now + 20, now + 30]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and "left out 1 saved alerts" in warnings[1], warnings


def test_a_handler_that_fails_answers_500_in_plain_text_and_says_so_once(serve, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING)
    stats = Stats("rt", "m", "video")
    stats.data["frame_size"] = b"\x00\x01"  # what the bad row did: bytes json cannot write
    base, _ = serve(stats)
    for _ in range(3):
        code, headers, body = get(base + "/status")
        assert code == 500 and headers["Content-Type"].startswith("text/plain") and b"journal" in body
    assert get(base + "/")[0] == 200  # the rest is served
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("status page: /status failed (TypeError: "), errors


class UnpluggedCamera(LiveSource):
    """Opens once, delivers nothing, and every reopen fails: unplugged after the start."""

    stall_s = 0.05

    def __init__(self):
        super().__init__(max_backoff_s=0.05)
        self.opens = 0

    def _open(self):
        self.opens += 1
        if self.opens > 1:
            raise UserError("Cannot open unplugged test camera: check that it is connected.")

    def _read(self):
        time.sleep(0.01)
        return None

    def describe(self):
        return "unplugged test camera"


def test_camera_reopens_count_attempts_while_the_camera_stays_unplugged():
    """`camera_reopens` (queue_mood_camera_reopens_total) counts reopen attempts, as the README
    says: an unplugged camera shows a count that grows, not 0."""
    cam = UnpluggedCamera()
    with cam:
        assert wait_for(lambda: cam.reopens >= 3, timeout=30)
    assert wait_for(lambda: not cam._thread.is_alive())
    assert cam.reopens == cam.opens - 1  # every failed open counted


def test_the_step_in_progress_is_saved_at_the_stop(tmp_path):
    db = tmp_path / "history.sqlite"
    now = time.time() // 10 * 10 - 100
    h = History(db_path=str(db))
    for s in range(26):
        h.add(now + s, 0.2, 2, False)
    h.close()
    assert [p["t"] for p in History(db_path=str(db)).series()] == [now, now + 10, now + 20]  # was: the last lost


def test_a_point_saved_just_before_a_quick_restart_is_joined_not_replaced(tmp_path):
    """A restart within a 10-s step: the point is what was seen in those 10 s by both runs,
    in memory, in the file and after the next restart."""
    db = tmp_path / "history.sqlite"
    t = time.time() // 10 * 10 - 100
    h = History(db_path=str(db))
    for s in range(4):
        h.add(t + s / 2, 0.5, 3, True)  # 4 frames, half of the faces unhappy, an alert raised
    h.close()
    h = History(db_path=str(db))
    for s in range(12):
        h.add(t + 4 + s / 2, 0.0, 1, False)  # 12 frames of a calm queue after the restart
    joined = {"t": t, "negative_share": 0.125, "faces": 3, "alert": True, "n": 16}
    assert h.series()[-1] == joined  # the step under way too
    h.add(t + 10, 0.0, 1, False)
    assert h.series()[-2] == joined and len(h.series()) == 2
    h.close()
    row = sqlite3.connect(db).execute("SELECT negative_share, faces, alert, n FROM samples JOIN sample_frames USING (t) "
                                      "WHERE t = ?", (t,))
    assert row.fetchone() == (0.125, 3, 1, 16)  # was: (0.0, 1, 0) in place of the saved point
    assert History(db_path=str(db)).series()[0] == joined


def test_a_history_file_from_before_the_frame_count_is_read_and_joined(tmp_path):
    db = tmp_path / "history.sqlite"
    t = time.time() // 10 * 10 - 100
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE samples (t REAL PRIMARY KEY, negative_share REAL, faces INTEGER, alert INTEGER)")
    con.execute("INSERT INTO samples VALUES (?, 0.5, 2, 0)", (t,))
    con.commit()
    con.close()
    h = History(db_path=str(db))
    assert h.series() == [{"t": t, "negative_share": 0.5, "faces": 2, "alert": False, "n": 1}]
    h.add(t + 5, 0.0, 4, False)
    h.close()
    assert sqlite3.connect(db).execute("SELECT negative_share, faces, n FROM samples JOIN sample_frames USING (t)"
                                       ).fetchall() == [(0.25, 4, 2)]


def test_a_history_file_stays_writable_by_the_release_before_the_frame_count(tmp_path):
    """install.sh's rollback (bundle.previous) may run a release that writes a point as four values
    (42e8faf: INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)): the file this version leaves
    must take them, else that release keeps its chart and alerts in memory only."""
    db = tmp_path / "history.sqlite"
    t = time.time() // 10 * 10 - 100
    h = History(db_path=str(db))
    for s in range(4):
        h.add(t + s / 2, 0.5, 3, True)
    h.add_alert(t + 1, "raised", 0.5, 3)
    h.close()
    con = sqlite3.connect(db)
    con.execute("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)", (t + 10, 0.25, 2, 0))  # was: 5 columns, 4 values
    con.execute("INSERT INTO alerts VALUES (?, ?, ?, ?)", (t + 11, "cleared", 0.1, 2))
    con.commit()
    con.close()
    h = History(db_path=str(db))
    assert h.series() == [{"t": t, "negative_share": 0.5, "faces": 3, "alert": True, "n": 4},
                          {"t": t + 10, "negative_share": 0.25, "faces": 2, "alert": False, "n": 1}]
    assert [a["kind"] for a in h.recent_alerts()] == ["cleared", "raised"]
    h.add(t + 15, 0.0, 2, False)  # joins the older release's point as one frame
    h.close()
    assert History(db_path=str(db)).series()[1] == {"t": t + 10, "negative_share": 0.125, "faces": 2, "alert": False,
                                                    "n": 2}


def test_a_history_file_with_the_frame_count_in_its_samples_is_made_writable_by_older_releases(tmp_path):
    """A file written between 0191b8f and the fix holds n as a fifth column of samples: it moves
    to its own table, so a rollback can write the file again, and no point loses its weight."""
    db = tmp_path / "history.sqlite"
    t = time.time() // 10 * 10 - 100
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE samples (t REAL PRIMARY KEY, negative_share REAL, faces INTEGER, alert INTEGER, "
                "n INTEGER NOT NULL DEFAULT 1)")
    con.execute("INSERT INTO samples VALUES (?, 0.5, 2, 1, 30)", (t,))
    con.commit()
    con.close()
    h = History(db_path=str(db))
    assert h.series() == [{"t": t, "negative_share": 0.5, "faces": 2, "alert": True, "n": 30}]
    h.close()
    con = sqlite3.connect(db)
    con.execute("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)", (t + 10, 0.25, 2, 0))  # as the older release does
    con.commit()
    con.close()
    assert [p["n"] for p in History(db_path=str(db)).series()] == [30, 1]


class _Camera(LiveSource):
    def __init__(self):
        super().__init__(max_backoff_s=0.05)
        self.image = np.full((120, 160, 3), 90, np.uint8)

    def _open(self):
        pass

    def _read(self):
        time.sleep(0.02)
        return self.image

    def describe(self):
        return "test camera"


def test_a_sink_that_fails_to_close_costs_neither_the_history_nor_the_signal_handlers(tmp_path, monkeypatch):
    from edge.config import load_config
    from edge.service.app import RunOptions, run
    from edge.sinks import Fanout

    monkeypatch.setattr("edge.pipeline.sources.open_source", lambda *a, **kw: _Camera())
    real_close, closed = Fanout.close, []

    def failing_close(self):
        real_close(self)
        raise RuntimeError("a sink failed at the stop")

    monkeypatch.setattr(Fanout, "close", failing_close)
    monkeypatch.setattr(History, "close", lambda self: closed.append(self))
    before = signal.getsignal(signal.SIGTERM)
    cfg = load_config(None, {"source.camera": 0, "status.enabled": False, "status.history_db": str(tmp_path / "h.db"),
                             "sinks.jsonl.path": str(tmp_path / "ev.jsonl"), "sinks.spool_dir": str(tmp_path / "sp")})
    with pytest.raises(RuntimeError, match="a sink failed at the stop"):
        run(cfg, RunOptions(max_frames=3))
    assert len(closed) == 1  # was: skipped
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_status_port_held_at_the_start_is_tried_again_and_the_page_comes_up(tmp_path, monkeypatch, caplog):
    """Another program on the port at the start (or the address not up yet at boot) left edge run
    without its page until the next restart: months, for a service that runs unattended."""
    import socket

    from edge.config import load_config
    from edge.service import app

    monkeypatch.setattr("edge.pipeline.sources.open_source", lambda *a, **kw: _Camera())
    monkeypatch.setattr(app, "LISTEN_RETRY_S", 0.0)  # at every pass of the loop: no waiting in a test
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    answers, frames = [], []

    def on_result(frame, result):
        frames.append(frame)
        if len(frames) == 1:
            holder.close()  # the other program goes away after the first frame
        elif not answers:
            try:
                answers.append(get(f"http://127.0.0.1:{port}/status", timeout=5)[0])
            except OSError:
                pass

    cfg = load_config(None, {"source.camera": 0, "status.port": port, "sinks.spool_dir": str(tmp_path / "sp"),
                             "sinks.jsonl.path": str(tmp_path / "ev.jsonl")})
    with caplog.at_level(logging.INFO, logger="edge"):
        app.run(cfg, app.RunOptions(max_frames=50), on_result)
    assert answers == [200]
    said = [r for r in caplog.records if "cannot listen" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(said) == 1 and "tries again" in said[0].getMessage()


def test_a_page_file_missing_from_the_install_is_named_with_the_reinstall_not_as_a_port_that_cannot_listen(
        monkeypatch, caplog, tmp_path):
    """A web/*.js deleted from the installed package read "cannot listen on 127.0.0.1:8765 (No such
    file or directory)": the IT person looked for a port problem that was not there."""
    from edge.config import StatusConfig
    from edge.ops import bundle
    from edge.ops.bundle import package_repair_advice
    from edge.service import app, status

    monkeypatch.setitem(status.ASSETS, "/static/gone.js", ("gone.js", "text/javascript; charset=utf-8"))
    with caplog.at_level(logging.WARNING, logger="edge"):
        assert app._start_status_server(Stats("rt", "m", "v"), StatusConfig(port=0)) is None
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "cannot listen" not in said[0], said
    assert "web/gone.js cannot be read (No such file or directory)" in said[0] and "pip install" in said[0]
    on_the_pi = package_repair_advice("/opt/queue-mood/venv/lib/python3.11/site-packages/edge/service/web/app.js")
    assert "sudo /opt/queue-mood/bundle/install.sh" in on_the_pi and "pip" not in on_the_pi
    # an install under another PREFIX (known by the MANIFEST.json install.sh leaves beside model/)
    prefix = tmp_path / "qm"
    (prefix / "model").mkdir(parents=True)
    (prefix / "MANIFEST.json").write_text("{}")
    elsewhere = package_repair_advice(prefix / "venv/lib/python3.11/site-packages/edge/service/web/app.js")
    assert f"sudo PREFIX={prefix} {prefix}/bundle/install.sh" in elsewhere and "pip" not in elsewhere
    # installed from a wheel, no checkout to restore it in
    monkeypatch.setattr(bundle, "default_source", lambda: tmp_path / "site-packages")
    from_a_wheel = package_repair_advice(tmp_path / "site-packages/edge/service/web/app.js")
    assert "pip install --force-reinstall" in from_a_wheel and "git checkout" not in from_a_wheel


def test_a_second_edge_run_on_a_held_spool_is_refused_before_the_camera_in_one_sentence(tmp_path, shipped_model):
    """`sudo edge run` by hand while the service runs: both would deliver and delete each other's
    spooled events. The second is one sentence and exit 2, the first's spool untouched, and the
    hold (the service's own, in another process) gone with its process; the doctor warns of it."""
    import subprocess
    import sys

    from benchmarks.scenes import background, write_video
    from edge.config import load_config
    from edge.ops.doctor.context import WARN, DoctorSettings, _Context
    from edge.ops.doctor.disk import check_disk
    from tests.conftest import run_cli

    video = write_video(tmp_path / "v.mp4", [background(i) for i in range(3)], 10)
    spool = tmp_path / "state" / "spool"
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'[source]\npath = "{video}"\n[model]\npath = "{shipped_model}"\n'
                        f'[sinks]\nspool_dir = "{spool}"\n[status]\nenabled = false\n')
    spooled = spool / "webhook" / "0001-queued.json"
    spooled.parent.mkdir(parents=True)
    spooled.write_text('{"kind": "raised"}')
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom edge.config import load_config\n"
                               "from edge.service.app import spool_held\n"
                               f"with spool_held(load_config({str(cfg_path)!r})):\n"
                               "    print('held', flush=True)\n    sys.stdin.read()\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        r = run_cli("run", "--config", cfg_path, "--max-frames", 2)
        ctx = _Context(DoctorSettings())
        check_disk(ctx, load_config(cfg_path))
    finally:
        holder.kill()  # as a killed service: the system drops its hold
        holder.wait()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert (f"The spool folder {spool} is in use by another edge run (PID {holder.pid}), which would deliver and "
            "delete this run's spooled alerts: the service is probably running, so stop it first (sudo systemctl "
            "stop queue-mood), or run with a copy of the config whose sinks.spool_dir is another folder.") in r.stderr
    assert "model " not in r.stderr  # refused before the model and camera were opened
    assert spooled.read_text() == '{"kind": "raised"}' and sorted(spool.rglob("*")) == [spooled.parent, spooled]
    assert [c.status for c in ctx.checks if "held by a running edge run" in c.detail] == [WARN]
    r = run_cli("run", "--config", cfg_path, "--max-frames", 2)
    assert r.returncode == 0, r.stderr


def test_a_spool_whose_lock_file_cannot_be_made_still_runs_unheld(tmp_path):
    """A spool this user cannot write (read-only, another user's; here under a file) is held in
    memory by the sinks, and the run goes on: its hold must not turn that into a failed start."""
    from edge.config import load_config
    from edge.service.app import spool_held

    (tmp_path / "a-file").write_text("")
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'[sinks]\nspool_dir = "{tmp_path / "a-file" / "spool"}"\n')
    with spool_held(load_config(cfg_path)):
        pass
