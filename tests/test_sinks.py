"""Alert sinks against real receivers: an HTTP server, a mosquitto broker, gpiozero's mock pins,
a real subprocess. Asynchronous delivery is polled for with a generous timeout, never timed."""

from __future__ import annotations

import base64
import errno
import getpass
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from edge.config import SinksConfig, load_config
from edge.sinks.command import CommandSinkConfig
from edge.sinks.jsonl import JsonlSinkConfig
from edge.sinks.webhook import WebhookSinkConfig
from edge.errors import ConfigError, UserError
from edge.sinks import AlertEvent, Fanout, Sink, Spool, build_sinks
from edge.sinks.command import CommandSink
from edge.sinks.jsonl import JsonlSink
from edge.sinks.log import LogSink
from edge.sinks.spool import event_ids
from edge.sinks.webhook import WebhookSink

MOSQUITTO = "/usr/sbin/mosquitto"
needs_mosquitto = pytest.mark.skipif(not os.path.exists(MOSQUITTO),
                                     reason=f"MQTT tests need the mosquitto broker at {MOSQUITTO} (apt install mosquitto)")


def ev(kind: str, i: int) -> AlertEvent:
    return AlertEvent(kind=kind, t_s=float(i), wall_time="2024-05-01T12:00:00Z", negative_share=0.6, faces=5,
                      counts={"sad": 2, "angry": 1, "happy": 2}, device="test-pi", event_id=f"e{i}")


def wait_for(cond, timeout: float = 15.0) -> bool:
    """Poll until cond() is true; a generous timeout, as the machine may be busy."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- spool


def test_spool_keeps_order_across_reopen_and_acks(tmp_path):
    sp = Spool(tmp_path / "sp")
    ids = [sp.put({"n": n}) for n in range(3)]
    sp.ack(ids[1])
    again = Spool(tmp_path / "sp")  # as after a process restart
    again.put({"n": 3})
    assert [item["n"] for _, item in again.pending()] == [0, 2, 3]
    assert not list((tmp_path / "sp").glob(".*.tmp"))


def test_a_dead_letter_half_written_when_the_process_died_is_removed_at_the_next_start(tmp_path):
    (tmp_path / "sp" / "dead").mkdir(parents=True)
    torn = tmp_path / "sp" / "dead" / ".00000000000000000001.json.tmp"
    torn.write_bytes(b'{"n": ')
    Spool(tmp_path / "sp")
    assert not torn.exists()


def test_an_event_a_power_cut_left_whole_in_its_temporary_file_is_sent_in_its_turn_at_the_next_start(tmp_path, caplog):
    """Cut after the .tmp's fsync, before the rename reached the disk: the file holds the whole event,
    and removing it (as one a process died writing) lost an alert."""
    sp = Spool(tmp_path / "sp")
    first = sp.put({"n": 0})
    second = f"{int(first) + 10:020d}"  # the next put's id; then a later put in its own file (a stop)
    (tmp_path / "sp" / f".{second}.json.tmp").write_bytes(json.dumps({"n": 1}).encode())
    (tmp_path / "sp" / f"{int(second) + 10:020d}.json").write_bytes(json.dumps({"n": 2}).encode())
    caplog.set_level(logging.INFO, logger="edge.sinks.spool")
    again = Spool(tmp_path / "sp")
    assert [(i, item["n"]) for i, item in again.pending()][:2] == [(first, 0), (second, 1)]  # in its place, its id
    assert [item["n"] for _, item in again.pending()] == [0, 1, 2]
    assert not list((tmp_path / "sp").glob(".*.tmp"))
    (line,) = [r.getMessage() for r in caplog.records]
    assert "restored 1 whole events, removed 0" in line


def test_temporary_files_that_hold_no_new_event_are_removed_at_the_start_and_counted(tmp_path, caplog):
    sp = Spool(tmp_path / "sp")
    kept = sp.put({"n": 0})
    sp.dead_letter(sp.put({"n": 1}), "test")
    dead_id = event_ids(tmp_path / "sp" / "dead")[0][0]
    whole = json.dumps({"n": 9}).encode()
    files = {"torn": (f"{int(kept) + 5:020d}", b'{"n": '), "empty": (f"{int(kept) + 6:020d}", b""),
             "zeros": (f"{int(kept) + 7:020d}", b"\0" * 8),  # a power cut before the data reached the disk
             "spooled already": (kept, whole), "dead already": (dead_id, whole), "not an event": ("notes", whole)}
    for event_id, data in files.values():
        (tmp_path / "sp" / f".{event_id}.json.tmp").write_bytes(data)
    (tmp_path / "sp" / f".{int(kept) + 8:020d}.part.tmp").write_bytes(whole)  # another program's, not an event's
    caplog.set_level(logging.INFO, logger="edge.sinks.spool")
    caplog.clear()
    again = Spool(tmp_path / "sp")
    assert [item["n"] for _, item in again.pending()] == [0]
    assert sorted(p.name for p in (tmp_path / "sp").iterdir()) == [f"{kept}.json", "dead"]
    assert (tmp_path / "sp" / "dead" / f"{dead_id}.json").read_bytes() != whole
    (line,) = [r for r in caplog.records]
    assert line.levelno == logging.WARNING
    assert "interrupted 7 writes; restored 0 whole events, removed 7 files" in line.getMessage()


def test_a_temporary_name_that_cannot_be_read_is_left_and_the_spool_still_works(tmp_path, caplog):
    """Not ours to judge (a folder of that name): left for the next start, not the disk said to have failed."""
    (tmp_path / "sp" / ".00000000000000000001.json.tmp").mkdir(parents=True)
    sp = Spool(tmp_path / "sp")
    assert not sp.disk_error and list(sp.pending()) == [] and sp.put({"n": 1})
    assert [item["n"] for _, item in sp.pending()] == [1]
    assert (tmp_path / "sp" / ".00000000000000000001.json.tmp").is_dir()


def test_a_dead_letter_a_power_cut_left_whole_in_its_temporary_file_is_kept_in_dead(tmp_path):
    """One held in memory is written to dead/ (write_atomic), not renamed there."""
    (tmp_path / "sp" / "dead").mkdir(parents=True)
    (tmp_path / "sp" / "dead" / ".00000000000000000001.json.tmp").write_bytes(b'{"n":1}')
    sp = Spool(tmp_path / "sp")
    assert json.loads((tmp_path / "sp" / "dead" / "00000000000000000001.json").read_bytes()) == {"n": 1}
    assert len(sp) == 0 and not list((tmp_path / "sp" / "dead").glob(".*"))


def test_ids_after_a_restored_event_sort_after_it(tmp_path):
    """A Pi has no real-time clock: after a reboot the restored event may be later than the clock."""
    ahead = f"{time.time_ns() + 10**15:020d}"  # some 12 days ahead
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / f".{ahead}.json.tmp").write_bytes(b'{"n":0}')
    sp = Spool(tmp_path / "sp")
    new = sp.put({"n": 1})
    assert new > ahead and [item["n"] for _, item in sp.pending()] == [0, 1]


def test_spool_cap_drops_oldest(tmp_path, caplog):
    sp = Spool(tmp_path / "sp", cap=3)
    with caplog.at_level(logging.WARNING):
        for n in range(5):
            sp.put({"n": n})
    assert [item["n"] for _, item in sp.pending()] == [2, 3, 4]
    assert sp.dropped == 2 and len(sp) == 3
    assert len(list((tmp_path / "sp").glob("*.json"))) == 3
    assert "dropped" in caplog.text


def test_spool_skips_unreadable_file(tmp_path):
    sp = Spool(tmp_path / "sp")
    bad = sp.put({"n": 0})
    sp.put({"n": 1})
    (tmp_path / "sp" / f"{bad}.json").write_text("")  # as a power cut can leave it
    torn = sp.put({"n": 2})
    (tmp_path / "sp" / f"{torn}.json").write_text('{"kind": "rais')
    assert [item["n"] for _, item in sp.pending()] == [1]
    assert len(sp) == 1
    # kept for a person to read, and counted (it was deleted with a WARNING only)
    assert sorted(p.name for p in (tmp_path / "sp" / "dead").iterdir()) == [f"{bad}.json", f"{torn}.json"]
    assert (tmp_path / "sp" / "dead" / f"{torn}.json").read_text() == '{"kind": "rais' and sp.dead == 2


def test_spool_forgets_events_whose_files_were_removed_by_hand(tmp_path):
    sp = Spool(tmp_path / "sp", cap=3)
    for n in range(3):
        sp.put({"n": n})
    for p in (tmp_path / "sp").glob("*.json"):
        p.unlink()
    assert list(sp.pending()) == [] and len(sp) == 0  # was: 3 phantom events in /status, forever
    for n in range(3, 6):
        sp.put({"n": n})
    assert [item["n"] for _, item in sp.pending()] == [3, 4, 5] and sp.dropped == 0  # the room is free again


def test_spool_ignores_files_that_are_not_its_own(tmp_path, caplog):
    sp = Spool(tmp_path / "sp")
    sp.put({"n": 0})
    (tmp_path / "sp" / "notes.json").write_text("{}")  # left by an operator: crashed every start
    (tmp_path / "sp" / "0001 copy.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        again = Spool(tmp_path / "sp")
    again.put({"n": 1})
    assert [item["n"] for _, item in again.pending()] == [0, 1] and len(again) == 2
    assert len([r for r in caplog.records if "not spooled events" in r.getMessage()]) == 1
    assert (tmp_path / "sp" / "notes.json").exists()  # not the spool's to delete


def test_spool_dead_letter_folder_keeps_the_newest_cap_events(tmp_path, caplog):
    sp = Spool(tmp_path / "sp", cap=3)
    ids = []
    with caplog.at_level(logging.WARNING):
        for n in range(5):
            ids.append(sp.put({"n": n}))
            sp.dead_letter(ids[-1], "HTTP 422")
    dead = sorted(p.stem for p in (tmp_path / "sp" / "dead").glob("*.json"))
    assert dead == ids[2:] and sp.dead == 5 and len(sp) == 0  # was: all 5, growing without end
    assert caplog.text.count("removed the 1 oldest") == 2
    assert caplog.text.count("the dead-letter folder keeps") == 2  # not at the 3rd, which filled it


def test_spool_dead_letters_an_event_held_in_memory_as_its_files_are_written(tmp_path, monkeypatch):
    from edge.sinks.spool import encode

    sp = Spool(tmp_path / "sp")
    monkeypatch.setattr(sp, "_write_file", lambda event_id, data: read_only(None, data))
    event_id = sp.put({"n": 0, "kind": "raised"})
    assert sp.in_memory == 1
    sp.dead_letter(event_id, "HTTP 422")
    assert (tmp_path / "sp" / "dead" / f"{event_id}.json").read_bytes() == encode({"n": 0, "kind": "raised"})


def test_spool_writable_again_after_its_held_events_were_delivered_says_so_without_moving_none(tmp_path, monkeypatch,
                                                                                              caplog):
    sp = Spool(tmp_path / "sp")
    monkeypatch.setattr(sp, "_write_file", lambda event_id, data: read_only(None, data))
    event_id = sp.put({"n": 0, "kind": "raised"})
    sp.ack(event_id)  # delivered from memory while the disk refused it
    monkeypatch.undo()
    caplog.set_level(logging.INFO, logger="edge.sinks.spool")
    sp.put({"n": 1, "kind": "cleared"})  # the disk takes writes again
    said = [r for r in caplog.records if "writable again" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in said] == [(logging.INFO, f"Spool {sp.dir} is writable again.")]

def test_spool_counts_are_read_while_a_write_waits_on_the_disk(tmp_path, monkeypatch):
    import edge.sinks.spool as spool_mod

    sp = Spool(tmp_path / "sp")
    in_write, release = threading.Event(), threading.Event()
    real_write = spool_mod.write_atomic

    def slow_write(path, data):  # an SD card whose fsync takes seconds
        in_write.set()
        release.wait(30)
        real_write(path, data)

    monkeypatch.setattr(spool_mod, "write_atomic", slow_write)
    writer = threading.Thread(target=sp.put, args=({"n": 0},), daemon=True)
    writer.start()
    assert in_write.wait(10)
    counts: list = []
    reader = threading.Thread(target=lambda: counts.append((len(sp), sp.in_memory)), daemon=True)
    reader.start()
    reader.join(10)
    read_during_write = not reader.is_alive()  # the frame loop's Fanout.stats() did not wait
    release.set()
    writer.join(10)
    reader.join(10)
    assert read_during_write and counts == [(1, 0)]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])  # a full disk, or this user's quota
def test_spool_on_a_disk_that_drops_do_not_free_drops_one_event_not_all(tmp_path, monkeypatch, caplog, code):
    sp = Spool(tmp_path / "sp")
    for n in range(10):
        sp.put({"n": n})

    def full(fd, data):  # the root reserve, or another writer: no spool file deleted makes room
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "write", full)
    with caplog.at_level(logging.WARNING):
        sp.put({"n": 10})
        sp.put({"n": 11})  # the disk still failing: no drop at all
    monkeypatch.undo()
    assert sp.dropped == 1 and sp.in_memory == 2  # was: all 10 dropped by one put
    assert len(list((tmp_path / "sp").glob("*.json"))) == 9
    assert [item["n"] for _, item in sp.pending()] == list(range(1, 12))
    assert caplog.text.count("the disk is full") == 1 and caplog.text.count("cannot be written") == 1


def test_spool_completes_a_short_write_or_keeps_no_partial_file(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:16])))  # a filling disk
    sp = Spool(tmp_path / "sp")
    sp.put({"kind": "raised", "counts": {f"label{i}": i for i in range(20)}})
    calls = []

    def part_then_refuse(fd, data):  # a file-size limit: part of it, then EFBIG
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.EFBIG, "File too large")
        return real_write(fd, bytes(data[:16]))

    monkeypatch.setattr(os, "write", part_then_refuse)
    sp.put({"kind": "cleared", "counts": {f"label{i}": i for i in range(20)}})
    monkeypatch.undo()
    assert sp.in_memory == 1 and sp.disk_error  # was: a truncated file renamed into place as complete
    again = Spool(tmp_path / "sp")  # the next start: was the first event deleted as unreadable
    ((_, first),) = list(again.pending())
    assert first["kind"] == "raised" and len(first["counts"]) == 20
    assert not list((tmp_path / "sp").glob(".*.tmp"))


def test_spool_keeps_a_file_it_cannot_read_now_and_reads_it_later(tmp_path, monkeypatch, caplog):
    from edge.sinks import spool as spool_module

    sp = Spool(tmp_path / "sp")
    for n in range(3):
        sp.put({"n": n})
    real_read = Path.read_bytes

    def out_of_descriptors(self):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(Path, "read_bytes", out_of_descriptors)
    with caplog.at_level(logging.WARNING):
        assert list(sp.pending()) == []
        assert list(sp.pending()) == []
    monkeypatch.setattr(Path, "read_bytes", real_read)
    assert len(list((tmp_path / "sp").glob("*.json"))) == 3 and len(sp) == 3  # was: all 3 deleted as corrupt
    assert [item["n"] for _, item in sp.pending()] == [0, 1, 2]
    assert caplog.text.count("Too many open files") == 1  # one line, not one per try
    # later, the same cause again for the first file: said again, and held for a new UNREADABLE_HOLD_S
    monkeypatch.setattr(spool_module, "UNREADABLE_HOLD_S", 0.2)
    time.sleep(0.25)
    first = sp._ids[0]
    monkeypatch.setattr(Path, "read_bytes", lambda self: out_of_descriptors(self) if self.stem == first else real_read(self))
    with caplog.at_level(logging.WARNING):
        assert list(sp.pending()) == []
    assert caplog.text.count("Too many open files") == 2


def test_a_file_unreadable_for_long_stops_holding_up_the_events_behind_it(tmp_path, monkeypatch, caplog):
    from edge.sinks import spool as spool_module

    sp = Spool(tmp_path / "sp")
    for n in range(3):
        sp.put({"n": n})
    real_read = Path.read_bytes
    bad = {sp._ids[0]}

    def bad_sector(self):
        if self.stem in bad:
            raise OSError(errno.EIO, "Input/output error")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", bad_sector)
    monkeypatch.setattr(spool_module, "UNREADABLE_HOLD_S", 0.2)
    with caplog.at_level(logging.WARNING):
        assert list(sp.pending()) == []  # held: the others wait for it, in order
        time.sleep(0.25)
        assert [item["n"] for _, item in sp.pending()] == [1, 2]  # was: held up for good
        for event_id, _ in list(sp.pending()):
            sp.ack(event_id)
        assert len(sp) == 1 and list(sp.pending()) == []  # kept, and retried
    assert caplog.text.count("Input/output error") == 1 and caplog.text.count("sent without it") == 1
    bad.clear()  # readable again: sent late rather than never
    assert [item["n"] for _, item in sp.pending()] == [0]


def test_spool_removes_delivered_files_once_the_folder_takes_writes_again(tmp_path, monkeypatch, caplog):
    sp = Spool(tmp_path / "sp")
    for n in range(3):
        sp.put({"n": n})
    real_unlink = Path.unlink

    def read_only(self, missing_ok=False):  # a remount read-only while the backlog is delivered
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "unlink", read_only)
    with caplog.at_level(logging.INFO):
        for event_id, _ in list(sp.pending()):
            sp.ack(event_id)
        sp.retry(now=True)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert len(sp) == 0 and caplog.text.count("Read-only file system") == 1  # was: one line per event
    assert "takes writes again" not in caplog.text  # still read-only: nothing removed
    sp.retry(now=True)  # the sink's idle flush, the folder writable again
    assert not list((tmp_path / "sp").glob("*.json"))  # was: left for the next start to send again
    assert list(Spool(tmp_path / "sp").pending()) == []


def test_spool_on_a_full_disk_with_nothing_spooled_holds_the_new_event_and_drops_none(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    sp = Spool(tmp_path / "sp")
    monkeypatch.setattr(os, "write", full)
    sp.put({"n": 0})  # nothing older to drop for room: the event itself is not dropped
    monkeypatch.undo()
    assert sp.dropped == 0 and sp.in_memory == 1 and [item["n"] for _, item in sp.pending()] == [0]


def test_spool_reopened_with_more_events_than_its_cap_counts_each_event_it_drops(tmp_path):
    """dropped feeds head office's AlertsLost: every event dropped at once is counted."""
    sp = Spool(tmp_path / "sp", cap=10)
    for n in range(5):
        sp.put({"n": n})
    again = Spool(tmp_path / "sp", cap=2)
    again.put({"n": 5})
    assert again.dropped == 4 and [item["n"] for _, item in again.pending()] == [4, 5]
    with pytest.raises(ValueError):
        Spool(tmp_path / "sp", cap=0)


def test_spool_ids_keep_increasing_when_the_clock_is_behind_the_spooled_files(tmp_path, monkeypatch):
    """A Pi has no real-time clock: after a reboot the wall clock can be behind the spooled files."""
    Spool(tmp_path / "sp").put({"n": 0})
    monkeypatch.setattr(time, "time_ns", lambda: 1)
    again = Spool(tmp_path / "sp")
    again.put({"n": 1})
    again.put({"n": 2})
    monkeypatch.undo()
    assert [item["n"] for _, item in Spool(tmp_path / "sp").pending()] == [0, 1, 2]


def test_a_dead_letter_made_after_a_restart_with_the_clock_stepped_back_is_kept_as_the_newest(tmp_path, monkeypatch):
    """An empty spool at a restart left the ids to the clock, which on a Pi without RTC can be
    behind the dead letters: the new one sorted as the oldest, and the cap removed it at once."""
    sp = Spool(tmp_path / "sp", cap=2)
    old = [sp.put({"n": n}) for n in range(2)]
    for event_id in old:
        sp.dead_letter(event_id, "HTTP 422")
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() - 3600 * 10**9)  # an hour behind
    again = Spool(tmp_path / "sp", cap=2)
    new = again.put({"n": 2})
    again.dead_letter(new, "HTTP 422")
    assert sorted(p.stem for p in (tmp_path / "sp" / "dead").glob("*.json")) == [old[1], new]


def test_spool_idle_flush_tries_the_disk_at_most_every_retry_s(tmp_path, monkeypatch):
    """Each try is an SD-card write: the sink's idle flush runs far more often than RETRY_S."""
    import edge.sinks.spool as spool_mod

    now, tries = [1000.0], []
    monkeypatch.setattr(spool_mod.time, "monotonic", lambda: now[0])

    def read_only(path, data):
        tries.append(now[0])
        raise OSError(errno.EROFS, "Read-only file system")

    sp = Spool(tmp_path / "sp")
    monkeypatch.setattr(spool_mod, "write_atomic", read_only)
    sp.put({"n": 0})  # held in memory
    for t in (1000.0, 1000.5, 1009.0, 1010.0, 1010.5):
        now[0] = t
        sp.retry()
    assert tries == [1000.0, 1000.0, 1010.0]

# ---------------------------------------------------------------- log, jsonl, command


def test_log_sink_logs_one_line(caplog):
    with caplog.at_level(logging.INFO, logger="edge.alerts"):
        LogSink().send(ev("raised", 1))
    assert len(caplog.records) == 1
    assert "raised" in caplog.text and "sad=2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edge.alerts"):
        LogSink().send(AlertEvent(kind="camera_down", t_s=3.0, wall_time="", negative_share=0.0, faces=0))
    assert caplog.records[0].levelno == logging.WARNING
    assert caplog.records[0].getMessage().startswith("camera down") and "share" not in caplog.text


def test_jsonl_writes_lines(tmp_path):
    path = tmp_path / "deep" / "dir" / "alerts.jsonl"
    sink = JsonlSink(path=str(path))
    sink.send(ev("raised", 1))
    assert json.loads(path.read_text()) == ev("raised", 1).to_dict()  # flushed per line
    sink.send(ev("cleared", 2))
    sink.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["event_id"] for x in lines] == ["e1", "e2"]
    assert "writes" in sink.check()


def test_jsonl_file_is_not_readable_by_every_user(tmp_path):
    """Under a umask of 022 a new file was 0644: other users of the Pi could read the store's
    alerts. Created 0640; a file an admin made beforehand keeps its mode."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "alerts.jsonl"
        sink = JsonlSink(path=str(path))
        sink.send(ev("raised", 1))
        sink.close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        made = tmp_path / "made.jsonl"
        made.touch(mode=0o644)
        sink = JsonlSink(path=str(made))
        sink.send(ev("raised", 1))
        sink.close()
        assert stat.S_IMODE(made.stat().st_mode) == 0o644
    finally:
        os.umask(old)


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_a_jsonl_file_made_beforehand_keeps_its_mode_past_rotation(tmp_path, mode):
    """An admin made the file 0600 (the store's alerts for the service alone) or 0644 (for a reader
    of their own): the file begun at each rotation, months in, has that mode too, not MODE."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "alerts.jsonl"
        path.touch(mode=mode)
        sink = JsonlSink(path=str(path), max_mb=1000 / (1 << 20), keep=2)  # 1000 bytes: 4 or 5 events a file
        for i in range(12):
            sink.send(ev("status", i))
        sink.close()
        files = [path, tmp_path / "alerts.jsonl.1", tmp_path / "alerts.jsonl.2"]
        assert all(f.exists() for f in files)  # rotated twice
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == dict.fromkeys((f.name for f in files), mode)
    finally:
        os.umask(old)


def test_jsonl_path_that_is_a_folder_disables_the_sink_and_fails_the_doctor(tmp_path, caplog):
    """A folder there would lose every event at its first write. The config still loads (edge
    bundle reads it on a machine where that folder may exist and the Pi's will not): the sink
    cannot start where it runs, with one ERROR, and the doctor FAILs it."""
    from edge.config import load_config
    from edge.ops.doctor.context import FAIL
    from edge.ops.doctor.sinks import sink_verdict
    from edge.sinks.fanout import build_sinks

    (tmp_path / "adir").mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[sinks]\nspool_dir = "spool"\n[sinks.jsonl]\npath = "adir"\n')
    sinks = load_config(cfg).sinks
    with caplog.at_level(logging.ERROR):
        fanout = build_sinks(sinks, "dev")
    try:
        (jsonl,) = [s for s in fanout.sinks if s.key == "jsonl"]
        line = jsonl.check()  # the doctor's line for the sink
        assert sink_verdict(line) == FAIL and "is a folder" in line
        assert "Sink jsonl cannot start" in caplog.text and "adir is a folder" in caplog.text
    finally:
        fanout.close()


def test_jsonl_rotates_by_size_and_keeps_the_newest_files(tmp_path):
    path = tmp_path / "alerts.jsonl"
    sink = JsonlSink(path=str(path), max_mb=1000 / (1 << 20), keep=2)  # 1000 bytes: 4 events a file
    for i in range(30):
        sink.send(ev("status", i))
    sink.close()
    files = [tmp_path / "alerts.jsonl.2", tmp_path / "alerts.jsonl.1", path]
    ids = [json.loads(line)["event_id"] for f in files for line in f.read_text().splitlines()]
    assert ids == [f"e{i}" for i in range(30 - len(ids), 30)] and len(ids) >= 9  # the newest, in order
    assert all(f.stat().st_size <= 1000 for f in files) and not (tmp_path / "alerts.jsonl.3").exists()
    assert sink.delivered == 30 and sink.failed == 0


def disk_full(fd, data):
    """jsonl.write_all on a disk that fills up part-way through the write."""
    os.write(fd, data[:50])
    raise OSError(errno.ENOSPC, "No space left on device")


def test_jsonl_holds_lines_it_cannot_write_and_writes_them_whole_later(tmp_path, monkeypatch, caplog):
    import edge.sinks.jsonl as jsonl_mod

    path = tmp_path / "alerts.jsonl"
    sink = JsonlSink(path=str(path))
    sink.send(ev("raised", 1))
    monkeypatch.setattr(jsonl_mod, "write_all", disk_full)
    monkeypatch.setattr(jsonl_mod, "RETRY_S", 0.0)
    with caplog.at_level(logging.INFO):
        sink.send(ev("cleared", 2))  # was: raised, and the event was gone
        sink.send(ev("raised", 3))
        sink.flush()
        assert sink.failed == 3 and sink.delivered == 1
        monkeypatch.undo()  # space is back
        sink.flush()
    sink.send(ev("cleared", 4))
    assert [json.loads(line)["event_id"] for line in path.read_text().splitlines()] == ["e1", "e2", "e3", "e4"]
    assert sink.delivered == 4 and sink.given_up == 0
    assert len([r for r in caplog.records if "cannot be written" in r.getMessage()]) == 1
    assert "writable again: wrote 2 held events" in caplog.text


def test_jsonl_holds_a_bounded_number_of_lines_and_counts_the_rest(tmp_path, monkeypatch):
    import edge.sinks.jsonl as jsonl_mod

    path = tmp_path / "alerts.jsonl"
    sink = JsonlSink(path=str(path))
    monkeypatch.setattr(jsonl_mod, "HOLD_MAX", 2)
    monkeypatch.setattr(jsonl_mod, "write_all", disk_full)
    for i in range(5):
        sink.send(ev("status", i))
    assert sink.given_up == 3 and sink.failed == 5
    fan = Fanout([sink])
    assert fan.stats()["jsonl"]["lost"] == 3  # /status and /metrics count them as lost
    monkeypatch.undo()  # space is back
    fan.close()  # closes the sink, which writes what it holds
    assert [json.loads(line)["event_id"] for line in path.read_text().splitlines()] == ["e3", "e4"]


@pytest.mark.parametrize("torn", [b'{"kind":"clea', b'{"kind":"cleared"}\n' + b"\0" * 100])
def test_jsonl_ends_a_torn_last_line_before_the_next_event(tmp_path, torn, caplog):
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(b'{"kind":"raised"}\n' + torn)  # a power cut mid-write; ext4 may leave NULs instead
    sink = JsonlSink(path=str(path))
    with caplog.at_level(logging.WARNING):
        sink.send(ev("raised", 1))
        sink.send(ev("cleared", 2))
    sink.close()
    kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]  # was: a line glued onto the torn one
    assert kinds[0] == "raised" and kinds[-2:] == ["raised", "cleared"]
    assert len([r for r in caplog.records if "partial line" in r.getMessage()]) == 1


@pytest.mark.parametrize("refused", ["mode 0200", "a read-write open"])
def test_jsonl_appends_to_a_file_it_may_write_but_not_read(tmp_path, monkeypatch, refused):
    import edge.sinks.jsonl as jsonl_mod

    path = tmp_path / "alerts.jsonl"
    path.write_bytes(b'{"kind":"raised"}\n')
    if refused == "mode 0200":
        if os.geteuid() == 0:
            pytest.skip("root reads a file of mode 0200 anyway; the other case refuses the open itself")
        path.chmod(0o200)
    else:
        real_open = os.open

        def no_read(file, flags, *args):
            if file == path and flags & os.O_RDWR:
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, flags, *args)

        monkeypatch.setattr(jsonl_mod.os, "open", no_read)
    sink = JsonlSink(path=str(path))
    sink.send(ev("cleared", 1))
    sink.close()
    path.chmod(0o600)
    assert sink.failed == 0 and sink.delivered == 1  # was: EACCES, the event held and retried for ever
    assert [json.loads(line)["kind"] for line in path.read_text().splitlines()] == ["raised", "cleared"]


def test_command_gets_json_on_stdin(tmp_path):
    out = tmp_path / "got.json"
    CommandSink(argv=["sh", "-c", f"cat > '{out}'"], timeout_s=10).send(ev("raised", 1))
    assert json.loads(out.read_text()) == ev("raised", 1).to_dict()


def test_command_failures_are_logged_counted_not_raised(tmp_path, caplog):
    sinks = [CommandSink(argv=["sh", "-c", "echo boom >&2; exit 3"]), CommandSink(argv=["sleep", "10"], timeout_s=0.2),
             CommandSink(argv=[str(tmp_path / "no-such-program")])]
    with caplog.at_level(logging.WARNING):
        for i, sink in enumerate(sinks):
            sink.send(ev("raised", i))
    assert "exited with 3: boom" in caplog.text
    assert "timed out" in caplog.text
    assert "could not run" in caplog.text
    assert [s.failed for s in sinks] == [1, 1, 1] and [s.delivered for s in sinks] == [0, 0, 0]
    assert "not found" in CommandSink(argv=[str(tmp_path / "no-such-program")]).check()


def test_a_command_that_is_not_there_is_said_at_the_start_not_first_at_an_alert(tmp_path, caplog):
    """A typo in [sinks.command] argv was said only when the first alert failed, hours after the IT
    person had left; edge doctor FAILs it, edge run now says it as it starts."""
    with caplog.at_level(logging.WARNING, logger="edge.sinks.command"):
        CommandSink(["notify-staf", "--till", "3"])
        CommandSink([str(tmp_path / "notify-staff")])
        CommandSink([sys.executable, "-c", "pass"])
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and said[0].startswith("Alert command notify-staf is not found or not executable")
    assert f"Alert command {tmp_path / 'notify-staff'} is not found" in said[1]


def test_a_commands_stderr_is_one_log_line_without_escapes(caplog):
    """What the program says (maybe a server's answer passed on) cannot forge the monitor's own
    journal lines nor send a terminal escape."""
    forged = r"curl: (22) 500\n2024-05-01 12:00:00,000 INFO edge.alerts: alert cleared\033[2J"
    with caplog.at_level(logging.WARNING):
        CommandSink(argv=["sh", "-c", f"printf '{forged}' >&2; exit 1"]).send(ev("raised", 1))
    (record,) = [r for r in caplog.records if "exited with 1" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message and "\x1b" not in message
    assert "curl: (22) 500 | 2024-05-01" in message and "alert cleared\\x1b[2J" in message


def test_a_command_printing_without_end_is_not_held_in_memory(caplog):
    import tracemalloc

    # 64 MiB of errors, then the last line, then a failure: only the end matters for the log line
    script = "head -c 67108864 /dev/zero | tr '\\0' e >&2; echo >&2; echo 'gateway down' >&2; exit 4"
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING):
            CommandSink(argv=["sh", "-c", script], timeout_s=60).send(ev("raised", 1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # was: all 64 MiB (a program in a tight loop: GBs before timeout_s, the Pi out of memory)
    assert "exited with 4: " in caplog.text and caplog.text.rstrip().endswith("gateway down")


def running(pid: int) -> bool:
    """pid exists and is not a zombie (a container's init may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (OSError, IndexError):
        return False


def send_in_thread(sink, event) -> threading.Thread:
    t = threading.Thread(target=sink.send, args=(event,), daemon=True)
    t.start()
    return t


@pytest.mark.slow
def test_command_timeout_kills_what_the_program_started(tmp_path):
    pids = tmp_path / "pids"
    # An alert script's child keeps stderr open (it held send() until the child ended); a
    # second child leaves the process group (setsid), so only the bounded wait can end send().
    script = f"sleep 300 & echo $! >> '{pids}'; setsid sleep 300 & echo $! >> '{pids}'; wait"
    sink = CommandSink(argv=["sh", "-c", script], timeout_s=0.5)
    t = send_in_thread(sink, ev("raised", 1))
    t.join(60)  # well past timeout_s plus the reap wait, well short of the children's 300 s
    started = [int(x) for x in pids.read_text().split()]
    try:
        assert not t.is_alive() and sink.failed == 1
        assert wait_for(lambda: not running(started[0]))  # the child in the group was killed with sh
    finally:
        for pid in started:
            if running(pid):
                os.kill(pid, 9)


def test_command_abort_kills_the_program_and_its_children(tmp_path, caplog):
    pids = tmp_path / "pids"
    sink = CommandSink(argv=["sh", "-c", f"sleep 300 & echo $! > '{pids}'; wait"], timeout_s=250)
    t = send_in_thread(sink, ev("raised", 1))
    assert wait_for(lambda: pids.exists() and pids.read_text().strip())
    child = int(pids.read_text())
    try:
        with caplog.at_level(logging.WARNING, logger="edge.sinks.command"):
            sink.abort()  # shutdown's deadline passed
            t.join(60)
        assert not t.is_alive()
        assert wait_for(lambda: not running(child))
        assert [r.getMessage() for r in caplog.records] == [
            "Alert command sh still running at shutdown: killed, its event lost."]
        assert sink.given_up == 1  # counted as lost: edge run exits 1 naming the sink
    finally:
        if running(child):
            os.kill(child, 9)


def test_command_abort_while_the_program_is_starting_still_kills_it(tmp_path, caplog, monkeypatch):
    """abort() between the program's start and send() recording it (a busy machine): send kills it
    as soon as it has it, instead of waiting out timeout_s."""
    import edge.sinks.command as command

    sink = CommandSink(argv=["sleep", "300"], timeout_s=250)
    real_popen = subprocess.Popen

    def popen_then_abort(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        sink.abort()  # shutdown's deadline passes here: send() has not recorded the process yet
        return proc

    monkeypatch.setattr(command.subprocess, "Popen", popen_then_abort)
    t = send_in_thread(sink, ev("raised", 1))
    with caplog.at_level(logging.WARNING, logger="edge.sinks.command"):
        t.join(30)
    alive = t.is_alive()
    if alive and sink._proc is not None:  # without the fix: do not leave sleep 300 behind
        command.kill_group(sink._proc)
    assert not alive
    assert [r.getMessage() for r in caplog.records] == [
        "Alert command sleep still running at shutdown: killed, its event lost."]
    assert sink.given_up == 1


# ---------------------------------------------------------------- webhook


class Receiver:
    """A real HTTP server on 127.0.0.1 recording each POSTed JSON body."""

    def __init__(self, port: int = 0):
        self.requests: list[dict] = []  # every attempt
        self.headers: list[dict] = []  # each attempt's headers
        self.accepted: list[dict] = []  # answered 2xx
        self.status = 200
        self.location = ""  # sent as Location (a redirect) when set
        self.retry_after = ""  # sent as Retry-After when set
        self.gets = 0  # GETs answered (a redirect followed)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.requests.append(body)
                receiver.headers.append(dict(self.headers))
                if 200 <= receiver.status < 300:
                    receiver.accepted.append(body)
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                if receiver.retry_after:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                receiver.gets += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    """Factory: receivers(port=0) starts one; all are stopped at the end."""
    made: list[Receiver] = []

    def make(port: int = 0) -> Receiver:
        made.append(Receiver(port))
        return made[-1]

    yield make
    for r in made:
        r.stop()


def test_webhook_delivers(tmp_path, receivers):
    rx = receivers()
    sink = WebhookSink(url=rx.url, timeout_s=5, headers={"X-Token": "t"}, spool=Spool(tmp_path / "sp"))
    sink.send(ev("raised", 1))
    sink.send(ev("cleared", 2))
    assert rx.accepted == [ev("raised", 1).to_dict(), ev("cleared", 2).to_dict()]
    assert len(sink.spool) == 0
    assert "reachable" in sink.check() and "not" not in sink.check()


def test_webhook_url_credentials_are_sent_as_basic_auth_and_never_logged(tmp_path, receivers, caplog):
    rx = receivers()
    url = rx.url.replace("http://", "http://alice:pw%3Asecret%40x@")  # urllib took them for part of the host
    sink = WebhookSink(url=url, spool=Spool(tmp_path / "sp"))
    sink.send(ev("raised", 1))
    assert [b["event_id"] for b in rx.accepted] == ["e1"] and sink.failed == 0
    assert rx.headers[-1]["Authorization"] == "Basic " + base64.b64encode(b"alice:pw:secret@x").decode()
    # An Authorization header in the config wins over the URL's.
    WebhookSink(url=url, headers={"authorization": "Bearer T"}, spool=Spool(tmp_path / "sp2")).send(ev("raised", 2))
    assert rx.headers[-1]["Authorization"] == "Bearer T"
    with caplog.at_level(logging.DEBUG):  # a failure's log line names the host, not the password
        down = WebhookSink(url=f"http://alice:pw-secret@127.0.0.1:{free_port()}/hook", spool=Spool(tmp_path / "sp3"))
        down.send(ev("raised", 3))
    assert len(down.spool) == 1 and "127.0.0.1" in caplog.text and "secret" not in caplog.text


def test_one_spooled_event_or_message_is_said_in_the_singular(tmp_path):
    """edge doctor's sink line said "1 events spooled" / "1 messages spooled"."""
    sink = WebhookSink(url=f"http://127.0.0.1:{free_port()}/hook", spool=Spool(tmp_path / "hook"))
    sink.spool.put({"event_id": "e1"})
    assert sink.check().endswith("; 1 event spooled")
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from edge.sinks.mqtt import MqttSink

    mqtt = MqttSink("127.0.0.1", free_port(), spool=Spool(tmp_path / "mqtt"), reconnect_min_s=60, reconnect_max_s=60)
    try:
        mqtt.spool.put({"topic": "qm/alerts", "payload": {}, "retain": False})
        assert mqtt.check().endswith("; 1 message spooled")
    finally:
        mqtt.close()


def test_webhook_dead_port_spools_then_flush_delivers_in_order(tmp_path, receivers):
    port = free_port()  # nothing listens here yet
    sink = WebhookSink(url=f"http://127.0.0.1:{port}/hook", timeout_s=2, spool=Spool(tmp_path / "sp"),
                       retry_min_s=0, retry_max_s=0)  # no back-off: each call retries
    for i in range(1, 4):
        sink.send(ev("status", i))
    assert len(sink.spool) == 3
    assert "not reachable" in sink.check()
    rx = receivers(port)
    sink.flush()
    assert [b["event_id"] for b in rx.accepted] == ["e1", "e2", "e3"]
    assert len(sink.spool) == 0
    sink.send(ev("status", 4))  # and direct sending resumes
    assert [b["event_id"] for b in rx.accepted] == ["e1", "e2", "e3", "e4"]


def test_webhook_non_2xx_spools_and_backs_off(tmp_path, receivers):
    rx = receivers()
    rx.status = 500
    sink = WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp"), retry_min_s=3600)
    sink.send(ev("raised", 1))
    sink.send(ev("status", 2))
    sink.flush()
    assert len(rx.requests) == 1  # the back-off kept later calls off the failing server
    assert len(sink.spool) == 2 and sink.failed == 1
    rx.status = 200
    sink.close()  # shutdown tries once more regardless of the back-off
    assert [b["event_id"] for b in rx.accepted] == ["e1", "e2"]
    assert len(sink.spool) == 0


@pytest.mark.parametrize("header", ["90", "http-date"])
def test_webhook_waits_as_long_as_a_rate_limits_retry_after_asks(tmp_path, receivers, header):
    from email.utils import formatdate

    rx = receivers()
    rx.status = 429
    rx.retry_after = formatdate(time.time() + 90, usegmt=True) if header == "http-date" else header
    sink = WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp"), retry_min_s=2, retry_max_s=120)
    sink.send(ev("raised", 1))
    assert len(rx.requests) == 1 and len(sink.spool) == 1
    assert sink._next_try - time.monotonic() > 60  # was: 1-2 s (the back-off alone), then 2-4 s, ...
    rx.retry_after = "86400"  # a day: capped at retry_max_s, the longest an alert may wait
    sink.close()  # the stop's last try, whatever the back-off
    assert 0 < sink._next_try - time.monotonic() <= 120


@pytest.mark.parametrize("pi_off_s", [-86400.0, 86400.0])
def test_webhook_waits_a_retry_after_date_by_the_receivers_clock_when_the_pis_is_off(tmp_path, receivers, monkeypatch,
                                                                                   pi_off_s):
    """A Pi without RTC can be a day behind the receiver (waited the longest back-off, 120 s) or
    ahead (waited nothing: each early try earns another 429); the answer's Date says how far off."""
    from email.utils import formatdate
    from types import SimpleNamespace

    import edge.sinks.webhook as webhook_mod

    rx = receivers()
    rx.status = 429
    rx.retry_after = formatdate(time.time() + 30, usegmt=True)  # the receiver's clock, as is its Date
    real = time.time
    monkeypatch.setattr(webhook_mod, "time", SimpleNamespace(time=lambda: real() + pi_off_s, monotonic=time.monotonic))
    sink = WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp"), retry_min_s=2, retry_max_s=120)
    sink.send(ev("raised", 1))
    assert len(rx.requests) == 1 and 20 < sink._next_try - time.monotonic() <= 31


def test_webhook_back_off_leaves_the_global_random_generator_alone(tmp_path, receivers):
    """A sink thread drawing its jitter from Python's global `random` shifted what a seeded
    process drew next: a training run in the same Python built different Dropout seeds."""
    import random

    rx = receivers()
    rx.status = 500
    sink = WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp"), retry_min_s=3600)
    random.seed(7)
    expected = random.random()
    random.seed(7)
    sink.send(ev("raised", 1))
    sink.flush()
    assert sink.failed == 1  # it failed, so it drew a back-off delay
    assert random.random() == expected
    sink.close()


def test_webhook_expired_token_or_moved_endpoint_is_retried_with_one_error_each(tmp_path, receivers, caplog):
    rx = receivers()
    sink = WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp"), retry_min_s=0, retry_max_s=0)  # no back-off
    with caplog.at_level(logging.WARNING):
        for i, status in enumerate([401, 401, 403, 404, 404, 410], start=1):
            rx.status = status
            sink.send(ev("raised", i))  # each send retries the whole spool
    assert sink.spool.dead == 0 and len(sink.spool) == 6 and sink.failed == 6
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 4, errors  # one per outage and status, not one per event or retry
    assert "HTTP 401" in errors[0] and "credentials" in errors[0] and "HTTP 403" in errors[1]
    assert "HTTP 404" in errors[2] and "sinks.webhook.url" in errors[2] and "HTTP 410" in errors[3]
    rx.status = 200  # the token is renewed: everything arrives, in order
    sink.flush()
    assert [b["event_id"] for b in rx.accepted] == [f"e{i}" for i in range(1, 7)] and len(sink.spool) == 0


@pytest.mark.parametrize("status, level, hint", [(500, logging.WARNING, ""), (429, logging.WARNING, ""),
                                                 (406, logging.ERROR, "check the receiver and the [sinks.webhook]")])
def test_webhook_receivers_passing_trouble_is_one_warning_not_an_error_to_check_settings(tmp_path, receivers, caplog,
                                                                                        status, level, hint):
    """A 5xx or a rate limit clears by itself: the journal says so once, as a warning, without
    sending the operator to check the URL or the credentials. Any other 4xx is an error that
    says what to check. Delivered again: said once."""
    rx = receivers()
    rx.status = status
    sink = WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp"), retry_min_s=0, retry_max_s=0)  # no back-off
    with caplog.at_level(logging.WARNING):
        sink.send(ev("raised", 1))
        sink.send(ev("raised", 2))
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "edge.sinks.webhook"]
    assert len(said) == 1 and said[0][0] == level and f"HTTP {status}" in said[0][1], said
    assert (hint in said[0][1]) if hint else ("check" not in said[0][1])
    assert len(sink.spool) == 2
    rx.status = 200
    again = lambda: len([r for r in caplog.records if "reachable again" in r.getMessage()])  # noqa: E731
    with caplog.at_level(logging.INFO):
        sink.flush()
        assert len(rx.accepted) == 2 and again() == 1
        sink.send(ev("raised", 3))  # delivered at once: nothing more to say
    assert len(rx.accepted) == 3 and len(sink.spool) == 0 and again() == 1


def test_webhook_back_off_doubles_from_retry_min_s_each_50_to_100_percent_of_it(tmp_path, receivers):
    from edge.sinks.webhook import jittered

    draws = [jittered(100.0) for _ in range(200)]
    assert all(50.0 <= d <= 100.0 for d in draws) and min(draws) < 75.0 < max(draws)  # spread, not in step
    rx = receivers()
    rx.status = 500
    sink = WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp"), retry_min_s=2, retry_max_s=120)
    sink.send(ev("raised", 1))
    waits = []
    for _ in range(3):
        sink.close()  # the stop's try, whatever the back-off: one more failure
        waits.append(sink._next_try - time.monotonic())
    assert len(rx.requests) == 4
    assert [0 < w <= d for w, d in zip(waits, (4, 8, 16))] == [True] * 3, waits  # 2 s doubled at each failure
    assert [w > d / 2 - 1 for w, d in zip(waits, (4, 8, 16))] == [True] * 3, waits  # not sooner than half


def test_a_retry_after_date_is_the_seconds_until_it_and_a_past_one_none():
    from email.utils import formatdate

    from edge.sinks.webhook import retry_after_s

    assert 80 < retry_after_s(formatdate(time.time() + 90, usegmt=True)) <= 90
    assert retry_after_s(formatdate(time.time() - 90, usegmt=True)) == 0.0


def test_webhook_redirect_is_not_followed_as_a_get(tmp_path, receivers, caplog):
    rx, moved = receivers(), receivers()
    rx.status, rx.location = 301, moved.url  # e.g. http:// redirected to https://
    sink = WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp"), retry_min_s=3600)
    with caplog.at_level(logging.ERROR):
        sink.send(ev("raised", 1))
    assert moved.gets == 0 and sink.delivered == 0 and len(sink.spool) == 1  # was: a GET, counted delivered
    assert "HTTP 301" in caplog.text and f":{moved.port}/hook" in caplog.text and "sinks.webhook.url" in caplog.text


def test_webhook_spool_survives_restart(tmp_path, receivers):
    port = free_port()
    WebhookSink(url=f"http://127.0.0.1:{port}/", spool=Spool(tmp_path / "sp")).send(ev("raised", 1))
    rx = receivers(port)
    sink = WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp"))  # a new process, same spool
    sink.send(ev("cleared", 2))
    assert [b["event_id"] for b in rx.accepted] == ["e1", "e2"]


def test_webhook_spool_file_that_is_not_an_object_is_dead_lettered_not_retried_forever(tmp_path, receivers, caplog):
    rx = receivers()
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "00000000000000000001.json").write_text("null")  # valid JSON, not an event
    (tmp_path / "sp" / "00000000000000000002.json").write_text(json.dumps(ev("raised", 2).to_dict()))
    sink = WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp"), retry_min_s=0.01, retry_max_s=0.02)
    with caplog.at_level(logging.ERROR):
        sink.close()
    assert [b["event_id"] for b in rx.accepted] == ["e2"]  # was: blocked behind it at every start
    assert (tmp_path / "sp" / "dead" / "00000000000000000001.json").exists() and len(sink.spool) == 0
    assert len([r for r in caplog.records if "does not hold a JSON object" in r.getMessage()]) == 1


def test_webhook_whole_answer_read_just_before_the_deadline_counts_delivered(tmp_path, receivers, monkeypatch):
    import http.client

    import edge.sinks.webhook as webhook_mod

    deadlines = []

    class Kept(webhook_mod.Deadline):
        def __init__(self, seconds):
            super().__init__(seconds)
            deadlines.append(self)

    real_read = http.client.HTTPResponse.read

    def read_then_expire(resp, *args):  # the deadline's timer fires right after the read returned
        body = real_read(resp, *args)
        for d in deadlines:
            d._expire()
        return body

    monkeypatch.setattr(webhook_mod, "Deadline", Kept)
    monkeypatch.setattr(http.client.HTTPResponse, "read", read_then_expire)
    rx = receivers()
    sink = WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp"), retry_min_s=0.01, retry_max_s=0.02)
    sink.send(ev("raised", 1))
    sink.close()
    assert deadlines and all(d.expired for d in deadlines)
    assert sink.delivered == 1 and sink.failed == 0 and len(sink.spool) == 0  # was: failed, and sent again
    assert [b["event_id"] for b in rx.requests] == ["e1"]


class Trickler:
    """A receiver that answers one header byte at a time, never finishing (a stuck proxy)."""

    def __init__(self):
        self.stop = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        with self.server:
            conn, _ = self.server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not self.stop.wait(0.1):
                    try:
                        conn.sendall(b"a")
                    except OSError:
                        return


def test_webhook_timeout_bounds_the_whole_request_not_each_read(tmp_path, caplog):
    rx = Trickler()
    sink = WebhookSink(url=rx.url, timeout_s=0.5, spool=Spool(tmp_path / "sp"))
    try:
        with caplog.at_level(logging.WARNING):
            sender = send_in_thread(sink, ev("raised", 1))
            sender.join(10)
        returned = not sender.is_alive()
    finally:
        rx.stop.set()
    assert returned  # was: blocked for as long as the receiver trickled
    assert sink.failed == 1 and sink.delivered == 0 and len(sink.spool) == 1  # retried later, as any failure
    assert "no complete answer within timeout_s (0.5 s)" in caplog.text


class Streamer:
    """A receiver that accepts the POST (200) and then streams a body as fast as it can, without
    a length, up to `limit` bytes (a URL that names a download, a misbehaving proxy)."""

    def __init__(self, limit: int = 1 << 30):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.limit = limit
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        with self.server:
            conn, _ = self.server.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:  # all of it: a close with unread bytes resets the connection
                    request += conn.recv(65536)
                head, _, body = request.partition(b"\r\n\r\n")
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                chunk = b"x" * (1 << 20)
                try:
                    for _ in range(self.limit // len(chunk)):
                        conn.sendall(chunk)
                except OSError:
                    return  # the sink stopped reading


def test_webhook_reads_a_bounded_part_of_a_huge_answer_and_counts_the_2xx_delivered(tmp_path):
    rx = Streamer()
    sink = WebhookSink(url=rx.url, timeout_s=3, spool=Spool(tmp_path / "sp"))
    sender = send_in_thread(sink, ev("raised", 1))
    sender.join(30)
    # was: the whole stream was read into memory (GBs in seconds, past timeout_s: the deadline's
    # shutdown does not stop a sender that keeps the socket full), then retried as a timeout,
    # so the receiver got the event again at every try
    assert not sender.is_alive()
    assert sink.delivered == 1 and sink.failed == 0 and len(sink.spool) == 0


def test_webhook_answer_cut_off_before_its_length_is_retried(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))

    def serve():  # 200 with a Content-Length it does not send: the receiver died mid-answer
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass

    threading.Thread(target=serve, daemon=True).start()
    sink = WebhookSink(url=f"http://127.0.0.1:{server.getsockname()[1]}/hook", timeout_s=5, spool=Spool(tmp_path / "sp"))
    sink.send(ev("raised", 1))
    assert sink.delivered == 0 and sink.failed == 1 and len(sink.spool) == 1


def self_signed(folder: Path, starts: str = "") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key: valid for 2 days from now, or for a
    year from `starts` (YYYYMMDDHHMMSSZ), which only `openssl ca` sets."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    name = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key)]
    if not starts:
        subprocess.run(["openssl", "req", "-x509", *name, "-out", str(cert), "-days", "2"], check=True,
                       capture_output=True)
        return cert, key
    (folder / "index.txt").touch()
    (folder / "serial").write_text("01\n")
    (folder / "ca.cnf").write_text(f"[ca]\ndefault_ca = d\n[d]\ndatabase = {folder}/index.txt\nnew_certs_dir = {folder}\n"
                                   f"serial = {folder}/serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n"
                                   "[p]\ncommonName = supplied\n")
    subprocess.run(["openssl", "req", "-new", *name, "-out", str(folder / "csr.pem")], check=True, capture_output=True)
    subprocess.run(["openssl", "ca", "-batch", "-selfsign", "-notext", "-config", str(folder / "ca.cnf"), "-keyfile",
                    str(key), "-in", str(folder / "csr.pem"), "-out", str(cert), "-startdate", starts, "-enddate",
                    f"{int(starts[:4]) + 1}{starts[4:]}"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def https_receiver(tmp_path, request):
    """An https receiver on 127.0.0.1 with a self-signed certificate: (url, the certificate's file).
    Parametrized (indirect) with a start date, the certificate is valid from then."""
    import ssl

    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    cert, key = self_signed(tmp_path, getattr(request, "param", ""))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}/hook", cert
    server.shutdown()


def test_webhook_check_fails_a_certificate_the_posts_would_not_trust(tmp_path, https_receiver, monkeypatch):
    from edge.ops.doctor.context import FAIL, OK
    from edge.ops.doctor.sinks import sink_verdict

    url, cert = https_receiver
    sink = WebhookSink(url=url, timeout_s=5, spool=Spool(tmp_path / "sp"))
    line = sink.check()  # was: "reachable" (a TCP connect), while every POST failed on the certificate
    assert sink_verdict(line) == FAIL and "certificate not trusted" in line
    sink.send(ev("raised", 1))
    assert sink.delivered == 0 and len(sink.spool) == 1
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted here, as a store's own CA would be
    assert sink_verdict(sink.check()) == OK
    sink.flush()
    sink.close()
    assert sink.delivered == 1 and len(sink.spool) == 0


@pytest.mark.parametrize("https_receiver", ["20990101000000Z"], indirect=True)
def test_a_certificate_not_yet_valid_by_this_machines_clock_says_to_check_the_clock(tmp_path, https_receiver,
                                                                                   monkeypatch, caplog):
    """A Pi without RTC whose NTP is blocked keeps a clock days behind: a certificate renewed
    since is "not yet valid" to it, and edge doctor said to trust the certificate, which it was."""
    from edge.ops.doctor.context import FAIL
    from edge.ops.doctor.sinks import sink_verdict

    url, cert = https_receiver
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted: only its dates fail, by this machine's clock
    sink = WebhookSink(url=url, timeout_s=5, spool=Spool(tmp_path / "sp"))
    line = sink.check()
    assert sink_verdict(line) == FAIL and "not yet valid by this machine's clock" in line and "timedatectl" in line
    assert "trusted on this machine" not in line
    with caplog.at_level(logging.WARNING):
        sink.send(ev("raised", 1))
    assert sink.delivered == 0 and len(sink.spool) == 1
    said = [r for r in caplog.records if r.name == "edge.sinks.webhook"]
    assert len(said) == 1 and said[0].levelno == logging.ERROR and "timedatectl" in said[0].getMessage()


def test_a_certificate_refused_for_its_dates_is_said_after_a_network_error_began_the_outage(tmp_path, caplog):
    """At boot the first alert can go out before the network is up (one WARNING), and then meet a
    certificate "not yet valid" by a clock NTP has not set: that was never said, the outage's
    no-answer cause being said already."""
    import ssl
    import urllib.error

    sink = WebhookSink(url="https://hooks.example/x", spool=Spool(tmp_path / "sp"))
    dated = ssl.SSLCertVerificationError(1, "certificate verify failed: certificate is not yet valid")
    dated.verify_code = 9
    with caplog.at_level(logging.WARNING, logger="edge.sinks.webhook"):
        sink._failed(urllib.error.URLError(OSError(101, "Network is unreachable")))
        for _ in range(3):
            sink._failed(urllib.error.URLError(dated))
        sink._failed(urllib.error.URLError(OSError(101, "Network is unreachable")))
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in said] == [logging.WARNING, logging.ERROR], said
    assert "not yet valid by this machine's clock" in said[1][1] and "timedatectl" in said[1][1]


# ---------------------------------------------------------------- fanout, build_sinks


class Boom(Sink):
    key = "boom"

    def send(self, event):
        raise RuntimeError("sink on fire")

    def flush(self):
        raise OSError("still on fire")


def test_failing_sink_does_not_stop_the_others(tmp_path, caplog):
    path = tmp_path / "a.jsonl"
    fan = Fanout([Boom(), JsonlSink(path=str(path))], device_name="pi-7", flush_every_s=3600)
    event = AlertEvent(kind="raised", t_s=1.0, wall_time="2024-05-01T12:00:00Z", negative_share=0.7, faces=3)
    with caplog.at_level(logging.ERROR):
        fan.send(event)
        fan.send(ev("cleared", 2))
        fan.flush()
        fan.close()
    assert fan.failures["boom"] == 4  # two sends, flush, close (which flushes), each in the worker
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 2
    assert lines[0]["device"] == "pi-7" and lines[0]["event_id"]  # filled in by Fanout
    assert lines[1]["event_id"] == "e2"
    assert "sink on fire" in caplog.text


def test_a_sink_failure_is_one_line_in_the_journal_with_the_traceback_at_debug(caplog):
    fan = Fanout([Boom()], flush_every_s=3600)
    with caplog.at_level(logging.DEBUG, logger="edge.sinks.fanout"):
        fan.send(ev("raised", 1))
        fan.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors][0] == "Sink boom failed in send (1 failures so far): sink on fire"
    assert not any(r.exc_info for r in errors)
    assert any(r.exc_info and r.levelno == logging.DEBUG for r in caplog.records)


def test_failures_name_every_sink_from_the_start_zeros_included(tmp_path):
    """/metrics' sink_failures counters exist at 0, so Prometheus's increase() sees the first failure."""
    fan = Fanout([Boom(), JsonlSink(path=str(tmp_path / "a.jsonl"))], flush_every_s=3600)

    def failures():
        return {k: s["failures"] for k, s in fan.stats().items()}

    try:
        assert failures() == {"boom": 0, "jsonl": 0}
        fan.send(ev("raised", 1))
        assert wait_for(lambda: failures() == {"boom": 1, "jsonl": 0})
    finally:
        fan.close()


class Stuck(Sink):
    """A spooling sink whose send blocks until released."""

    key = "stuck"

    def __init__(self, spool: Spool):
        self.spool, self.release, self.busy = spool, threading.Event(), threading.Event()

    def send(self, event):
        self.busy.set()
        self.release.wait(30)

    def keep(self, event):
        self.spool.put(event.to_dict())
        return True


def queue_two_behind_a_busy_send(fan: Fanout, sink: Stuck) -> None:
    fan.send(ev("raised", 1))
    assert sink.busy.wait(15)
    fan.send(ev("cleared", 2))
    fan.send(ev("raised", 3))


def test_a_sink_busy_at_the_stop_says_its_queued_events_went_to_its_spool(tmp_path, caplog):
    sink = Stuck(Spool(tmp_path / "spool"))
    fan = Fanout([sink], flush_every_s=3600, close_timeout_s=0.1)
    try:
        queue_two_behind_a_busy_send(fan, sink)
        with caplog.at_level(logging.WARNING):
            fan.close()
    finally:
        sink.release.set()
    (line,) = [r.getMessage() for r in caplog.records if "still busy" in r.getMessage()]
    # the event its send() was working on is named: only that call can still deliver or spool it
    assert line == ("Sink stuck still busy 0.1 s after the stop; raised e1 was in hand, delivered or spooled only if "
                    "that call ends before the process does; its 2 queued events were put in its spool.")
    assert len(sink.spool) == 2 and fan.stats()["stuck"]["lost"] == 0


def test_events_a_stop_could_not_spool_in_time_are_counted_lost_once_when_the_write_fails_later(tmp_path,
                                                                                               monkeypatch):
    import edge.sinks.fanout as fanout_mod

    class FailingLate(Stuck):  # a disk that stalls, then refuses the write
        def keep(self, event):
            self.release.wait(30)
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fanout_mod, "RESCUE_TIMEOUT_S", 0.1)
    sink = FailingLate(Spool(tmp_path / "spool"))
    fan = Fanout([sink], flush_every_s=3600, close_timeout_s=0.1)
    try:
        queue_two_behind_a_busy_send(fan, sink)
        fan.close()  # both events late: counted lost here
        saver = next(t for t in threading.enumerate() if t.name == "sink-stuck-stop")
    finally:
        sink.release.set()
    saver.join(15)  # the writes fail after the deadline
    assert not saver.is_alive() and fan.stats()["stuck"]["lost"] == 2  # was 4: counted again by the saver


def test_events_held_in_memory_at_the_stop_are_counted_lost_with_one_error(tmp_path, caplog):
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from edge.sinks.mqtt import MqttSink

    (tmp_path / "file").write_text("")  # the spool's folder cannot be made: events stay in memory
    sink = MqttSink(host="127.0.0.1", port=free_port(), spool=Spool(tmp_path / "file" / "spool"))
    fan = Fanout([sink], flush_every_s=3600)
    fan.send(ev("raised", 1))  # an event and its retained state message
    fan.send(ev("status", 2))
    assert wait_for(lambda: sink.spool.in_memory == 3)
    with caplog.at_level(logging.ERROR, logger="edge.sinks.fanout"):
        fan.close()
    stats = fan.stats()["mqtt"]
    assert stats["lost"] == 2 and stats["in_memory"] == 0 and stats["spooled"] == 0  # lost, not also still spooled
    (line,) = [r.getMessage() for r in caplog.records if r.name == "edge.sinks.fanout"]
    assert line.startswith("Sink mqtt: 2 undelivered alerts held in memory are lost with this stop: its spool ")
    assert "cannot be written (Not a directory)" in line


def test_mqtt_counts_what_it_holds_in_memory_while_a_stalled_write_holds_its_spool(tmp_path):
    """At a stop, unsaved() must not wait behind a write in progress (a stalled SD card)."""
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from edge.sinks.mqtt import MqttSink

    (tmp_path / "file").write_text("")  # the spool's folder cannot be made: events stay in memory
    sink = MqttSink(host="127.0.0.1", port=free_port(), spool=Spool(tmp_path / "file" / "spool"))
    try:
        sink.keep(ev("raised", 1))  # an event and its retained state message
        assert sink.spool.in_memory == 2
        counted = []
        with sink.spool._lock:  # a write in progress that does not end
            t = threading.Thread(target=lambda: counted.append(sink.unsaved()), daemon=True)
            t.start()
            t.join(5)
        assert counted == [1]
    finally:
        sink.close()


def read_only(path, data):
    """spool.write_atomic on a file system remounted read-only."""
    raise OSError(errno.EROFS, "Read-only file system")


def two_events_held_in_memory(tmp_path, monkeypatch, flush_every_s: float):
    """A webhook sink whose spool's file system is read-only, holding two events in memory."""
    import edge.sinks.spool as spool_mod

    monkeypatch.setattr(spool_mod, "write_atomic", read_only)
    sink = WebhookSink(url=f"http://127.0.0.1:{free_port()}/", spool=Spool(tmp_path / "sp"), retry_min_s=60)
    fan = Fanout([sink], flush_every_s=flush_every_s)
    fan.send(ev("raised", 1))
    fan.send(ev("cleared", 2))
    assert wait_for(lambda: sink.spool.in_memory == 2)
    return sink, fan


def test_events_held_in_memory_go_back_to_disk_on_the_idle_flush(tmp_path, monkeypatch):
    import edge.sinks.spool as spool_mod

    real_write = spool_mod.write_atomic
    monkeypatch.setattr(spool_mod, "RETRY_S", 0.05, raising=False)

    sink, fan = two_events_held_in_memory(tmp_path, monkeypatch, flush_every_s=0.05)
    try:
        monkeypatch.setattr(spool_mod, "write_atomic", real_write)  # remounted read-write; no new alert comes
        assert wait_for(lambda: sink.spool.in_memory == 0, timeout=5)  # was: only at the next alert
        assert not sink.spool.disk_error
    finally:
        fan.close()
    assert fan.stats()["webhook"]["lost"] == 0 and len(list((tmp_path / "sp").glob("*.json"))) == 2


@pytest.mark.slow
@pytest.mark.parametrize("stalled", ["the worker's write", "every write"])
def test_close_is_bounded_while_the_spool_disk_stalls(tmp_path, monkeypatch, caplog, stalled):
    import edge.sinks.spool as spool_mod

    release = threading.Event()
    real_fsync = os.fsync

    def stalling_fsync(fd):  # a failing SD card: fsync takes far longer than systemd's stop timeout
        if stalled == "every write" or threading.current_thread().name == "sink-webhook":
            release.wait(60)
        real_fsync(fd)

    monkeypatch.setattr(spool_mod.os, "fsync", stalling_fsync)
    sink = WebhookSink(url=f"http://127.0.0.1:{free_port()}/", spool=Spool(tmp_path / "sp"))
    fan = Fanout([sink], flush_every_s=3600)
    try:
        fan.send(ev("raised", 1))  # the worker stalls writing it
        fan.send(ev("cleared", 2))  # queued behind it
        assert wait_for(lambda: fan.stats()["webhook"]["queued"] == 1)
        start = time.monotonic()
        with caplog.at_level(logging.WARNING):
            fan.close()
        took = time.monotonic() - start
        on_disk = [json.loads(f.read_bytes())["event_id"] for f in sorted((tmp_path / "sp").glob("*.json"))]
    finally:
        release.set()
    assert took < 5  # was: as long as the stalled writes, 40 s for two 20 s stalls
    if stalled == "every write":
        assert "events cleared e2 could not be written to its spool in time" in caplog.text  # lost, by name
        assert fan.stats()["webhook"]["lost"] == 1 and on_disk == []
    else:  # written beside the stalled one, for the next start
        assert on_disk == ["e2"] and fan.stats()["webhook"]["lost"] == 0


def test_close_is_bounded_while_a_stalled_write_holds_events_kept_in_memory(tmp_path, monkeypatch, caplog):
    import edge.sinks.spool as spool_mod

    release = threading.Event()

    def stalled(path, data):  # remounted, but the SD card stalls the first write back
        release.wait(20)

    sink, fan = two_events_held_in_memory(tmp_path, monkeypatch, flush_every_s=3600)
    try:
        monkeypatch.setattr(spool_mod, "write_atomic", stalled)  # the worker's retry at the stop holds the spool
        start = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="edge.sinks.fanout"):
            fan.close()
        took = time.monotonic() - start
    finally:
        release.set()
    assert took < 5  # was: as long as the stalled writes, 40 s
    assert fan.stats()["webhook"]["lost"] == 2
    (line,) = [r.getMessage() for r in caplog.records if "held in memory" in r.getMessage()]
    assert line.endswith("unless the write in progress there ends before the process does.")


def test_build_sinks(tmp_path, monkeypatch):
    cfg = SinksConfig(spool_dir=str(tmp_path / "spool"), jsonl=JsonlSinkConfig(path=str(tmp_path / "a.jsonl")),
                      webhook=WebhookSinkConfig(url="http://127.0.0.1:9/"),
                      command=CommandSinkConfig(argv=["true"]))
    fan = build_sinks(cfg, "pi-1")
    assert [s.key for s in fan.sinks] == ["log", "jsonl", "webhook", "command"]
    assert fan.sinks[2].spool.dir == tmp_path / "spool" / "webhook"
    assert set(fan.check()) == {"log", "jsonl", "webhook", "command"}

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    fan = build_sinks(SinksConfig(webhook=WebhookSinkConfig(url="http://127.0.0.1:9/")), "pi-1")
    assert fan.sinks[1].spool.dir == tmp_path / "home" / ".local/state/queue-mood/spool/webhook"
    assert [s.key for s in build_sinks(SinksConfig(), "pi-1").sinks] == ["log"]


def test_missing_libraries_name_the_extra(monkeypatch):
    from edge.sinks.base import SinkUnavailable
    from edge.sinks.gpio import GpioSink
    from edge.sinks.mqtt import MqttSink

    for mod in ("paho", "paho.mqtt", "paho.mqtt.client", "gpiozero"):
        monkeypatch.setitem(sys.modules, mod, None)  # makes `import mod` fail
    # SinkUnavailable: build_sinks disables that sink, the monitor runs on
    with pytest.raises(SinkUnavailable, match=r"queue-mood\[mqtt\]"):
        MqttSink(host="127.0.0.1")
    with pytest.raises(SinkUnavailable, match=r"queue-mood\[gpio\]"):
        GpioSink(pin=17)


# ---------------------------------------------------------------- gpio


@pytest.fixture
def mock_pins():
    pytest.importorskip("gpiozero", reason="GPIO tests need the gpio extra")
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    old = Device.pin_factory
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = old


def test_gpio_led_follows_alert_state(mock_pins):
    from edge.sinks.gpio import GpioSink

    sink = GpioSink(pin=17, device="led", active_high=True)
    pin = mock_pins.pin(17)
    assert pin.state is False
    sink.send(ev("raised", 1))
    assert pin.state is True
    sink.send(ev("status", 2))  # status leaves it as it is
    assert pin.state is True
    sink.send(ev("cleared", 3))
    assert pin.state is False
    sink.send(ev("raised", 4))
    # the camera down: the alert is not asserted, and a buzzer must not sound until it is back
    sink.send(ev("camera_down", 5))
    assert pin.state is False
    sink.send(ev("camera_up", 6))  # the alert still raised: on again
    assert pin.state is True
    sink.send(ev("camera_down", 7))
    sink.send(ev("cleared", 8))
    sink.send(ev("camera_up", 9))
    assert pin.state is False
    sink.send(ev("raised", 10))
    sink.close()  # off when the monitor stops
    assert pin.state is False


def test_gpio_buzzer_active_low(mock_pins):
    from edge.sinks.gpio import GpioSink

    sink = GpioSink(pin=22, device="buzzer", active_high=False)
    pin = mock_pins.pin(22)
    assert pin.state is True  # active low: high is off
    sink.send(ev("raised", 1))
    assert pin.state is False
    sink.send(ev("cleared", 2))
    assert pin.state is True
    sink.close()


def test_gpio_on_s_sounds_once_per_alert_then_stays_off(mock_pins):
    from edge.sinks.gpio import GpioSink

    sink = GpioSink(pin=23, device="buzzer", on_s=0.2)
    pin = mock_pins.pin(23)
    sink.send(ev("raised", 1))
    assert pin.state is True
    assert wait_for(lambda: pin.state is False)  # off after on_s though the alert holds
    sink.send(ev("status", 2))
    sink.send(ev("camera_down", 3))
    sink.send(ev("camera_up", 4))  # the same alert: it has sounded, not again
    assert pin.state is False
    sink.send(ev("cleared", 5))
    sink.send(ev("raised", 6))  # a new alert sounds again
    assert pin.state is True
    sink.send(ev("cleared", 7))  # a clear within on_s ends the sound at once
    assert pin.state is False
    sink.close()


def test_gpio_on_s_is_checked_at_config_load(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[sinks.gpio]\non_s = -1\n')
    with pytest.raises(ConfigError, match=r"'sinks.gpio.on_s' has the bad value -1"):
        load_config(cfg)


def test_a_gpio_pin_in_use_disables_that_sink_and_the_others_run_on(mock_pins, tmp_path, caplog):
    from gpiozero import LED

    from edge.sinks.gpio import GpioSinkConfig

    held = LED(17)  # another program has the pin
    cfg = SinksConfig(jsonl=JsonlSinkConfig(path=str(tmp_path / "a.jsonl")), gpio=GpioSinkConfig(pin=17))
    with caplog.at_level(logging.ERROR):
        fan = build_sinks(cfg, "pi-1")
    try:
        assert [s.key for s in fan.sinks] == ["log", "jsonl", "gpio"]
        (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert line.startswith("Sink gpio cannot start and is disabled; the monitor and the other sinks run on: "
                               "Cannot use GPIO pin 17 for the led (")
        assert fan.check()["gpio"].startswith("cannot start, disabled: Cannot use GPIO pin 17")
        fan.send(ev("raised", 1))
        assert wait_for(lambda: fan.stats()["gpio"]["sent"] == 1 and fan.stats()["jsonl"]["delivered"] == 1)
        assert fan.stats()["gpio"]["disabled"].startswith("Cannot use GPIO pin 17")
        assert fan.stats()["gpio"]["failures"] == 2  # the start, then the event
    finally:
        fan.close()
        held.close()


def test_gpio_on_a_machine_without_gpio_is_one_sentence_without_fallback_warnings(monkeypatch):
    pytest.importorskip("gpiozero", reason="GPIO tests need the gpio extra")
    import warnings

    from gpiozero import Device

    from edge.sinks.base import SinkUnavailable
    from edge.sinks.gpio import GpioSink

    monkeypatch.setattr(Device, "pin_factory", None)  # gpiozero tries every pin library it knows
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            GpioSink(pin=17).close()
            pytest.skip("this machine has GPIO")
        except SinkUnavailable as exc:
            message = str(exc)
    assert not caught
    assert "\n" not in message and message.startswith("Cannot use GPIO pin 17 for the led (")
    # no pin library could load: what a Pi whose venv lacks apt's lgpio needs, not "is the pin free?"
    assert message.endswith("On a Raspberry Pi, install its pin library: sudo apt install python3-lgpio "
                            "(install.sh does); other machines have no GPIO.")


# ---------------------------------------------------------------- mqtt


class Broker:
    """A real mosquitto on 127.0.0.1; persistent, so a subscriber's session survives a restart."""

    def __init__(self, workdir: Path, settings: str = "allow_anonymous true\n"):
        self.port = free_port()
        self.dir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\n{settings}"
                             f"persistence true\npersistence_location {workdir}/\nuser {getpass.getuser()}\n")
        self.proc: subprocess.Popen | None = None

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=(self.dir / "mosquitto.log").open("ab"))
        up = wait_for(lambda: self.proc.poll() is not None or _connects(self.port), timeout=10)
        assert up and self.proc.poll() is None, (self.dir / "mosquitto.log").read_text()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its sessions to disk
            self.proc.wait(timeout=10)


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def broker(tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


class Subscriber:
    """A paho client recording (topic, payload, qos, retain) for each message received."""

    def __init__(self, port: int, topics: list[str], client_id: str = "", persistent: bool = False):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict, int, bool]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, json.loads(m.payload), m.qos, bool(m.retain)))
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(15), "test subscriber could not subscribe"

    def ids(self, topic: str) -> list[str]:
        """Event ids on topic in first-arrival order (QoS 1 may repeat a message)."""
        return list(dict.fromkeys(p["event_id"] for t, p, _, _ in self.messages if t == topic))

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribers():
    made: list[Subscriber] = []

    def make(*args, **kw) -> Subscriber:
        made.append(Subscriber(*args, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def mqtt_sinks():
    """Factory for MqttSinks on a test broker with short reconnect delays; all closed at the end."""
    from edge.sinks.mqtt import MqttSink

    made: list[MqttSink] = []

    def make(port: int, spool_dir: Path) -> MqttSink:
        made.append(MqttSink(host="127.0.0.1", port=port, topic="qm/alerts", state_topic="qm/state",
                             spool=Spool(spool_dir), device_name="test-pi", reconnect_min_s=0.1,
                             reconnect_max_s=0.5))
        return made[-1]

    yield make
    for s in made:
        s.close()


@needs_mosquitto
def test_mqtt_delivers_qos1_and_retains_state(broker, subscribers, mqtt_sinks, tmp_path):
    sub = subscribers(broker.port, ["qm/alerts"])
    sink = mqtt_sinks(broker.port, tmp_path / "spool")
    sink.send(ev("raised", 1))
    sink.send(ev("status", 2))
    assert wait_for(lambda: sub.ids("qm/alerts") == ["e1", "e2"])
    assert {qos for _, _, qos, _ in sub.messages} == {1}
    assert sub.messages[0][1] == ev("raised", 1).to_dict()
    assert wait_for(lambda: len(sink.spool) == 0)  # every PUBACK arrived

    late = subscribers(broker.port, ["qm/state"])  # subscribes after the fact: gets the retained state
    assert wait_for(lambda: late.messages)
    topic, payload, qos, retain = late.messages[0]
    assert retain and qos == 1
    assert payload["state"] == "raised" and payload["event"]["event_id"] == "e1"
    assert "reachable" in sink.check() and "not" not in sink.check()


@needs_mosquitto
def test_mqtt_broker_down_spools_then_delivers_after_restart(broker, subscribers, mqtt_sinks, tmp_path):
    sub = subscribers(broker.port, ["qm/alerts", "qm/state"], client_id="sub-a", persistent=True)
    sink = mqtt_sinks(broker.port, tmp_path / "spool")
    sink.send(ev("raised", 1))
    assert wait_for(lambda: sub.ids("qm/alerts") == ["e1"] and len(sink.spool) == 0)

    broker.stop()
    assert wait_for(lambda: not sink.connected)
    sink.send(ev("status", 2))
    sink.send(ev("cleared", 3))
    assert len(sink.spool) == 3  # two events and the new state, on disk
    assert "not reachable" in sink.check()

    broker.start()  # same port
    assert wait_for(lambda: sub.ids("qm/alerts") == ["e1", "e2", "e3"]), sub.messages
    assert wait_for(lambda: len(sink.spool) == 0)
    assert wait_for(lambda: sub.messages[-1][1].get("state") == "cleared")


def test_a_broker_down_for_days_spools_every_alert_and_only_the_newest_state(mqtt_sinks, tmp_path):
    """The retained state is only ever read as the newest one: the states an outage made before it are
    no reason to write a file each, nor to drop alerts at the spool's cap while they stay."""
    from edge.sinks.mqtt import MqttSink

    sink = MqttSink(host="127.0.0.1", port=free_port(), topic="qm/alerts", state_topic="qm/state",
                    spool=Spool(tmp_path / "spool", cap=7), device_name="test-pi", reconnect_min_s=0.1,
                    reconnect_max_s=0.5)  # nothing listens there
    try:
        for i in range(1, 7):  # three alerts raised and cleared: six events, six states
            sink.keep(ev("raised" if i % 2 else "cleared", i))
        msgs = [m for _, m in sink.spool.pending()]
        assert sink.spool.dropped == 0
        assert [m["payload"]["event_id"] for m in msgs if not m["retain"]] == ["e1", "e2", "e3", "e4", "e5", "e6"]
        assert [(m["payload"]["state"], m["payload"]["event"]["event_id"]) for m in msgs if m["retain"]] == \
            [("cleared", "e6")]
        assert msgs[-1]["retain"]  # after its event, as before
        assert len(list((tmp_path / "spool").glob("*.json"))) == 7
    finally:
        sink.close()


def test_a_state_superseded_while_a_stalled_write_holds_the_spool_at_the_stop_is_left_not_waited_for(tmp_path):
    """At the stop a stalled SD-card write may hold the spool for many seconds (wait_s): the events
    and the new state are written beside it, and the state they supersede stays rather than hold them up."""
    from edge.sinks.mqtt import MqttSink

    sink = MqttSink(host="127.0.0.1", port=free_port(), topic="qm/alerts", state_topic="qm/state",
                    spool=Spool(tmp_path / "spool"), device_name="test-pi")  # nothing listens there
    held, release = threading.Event(), threading.Event()

    def stalled_write():
        with sink.spool._lock:
            held.set()
            release.wait(60)

    try:
        sink.keep(ev("raised", 1))
        threading.Thread(target=stalled_write, daemon=True).start()
        assert held.wait(15)
        sink.spool.wait_s = 0.05  # as Fanout.close sets it
        saver = threading.Thread(target=sink.keep, args=(ev("cleared", 2),), daemon=True)
        saver.start()
        saver.join(30)  # a guard against a hang, not a measure: it returns while the write still stalls
        returned = not saver.is_alive()
        msgs = [json.loads(f.read_bytes()) for f in sorted((tmp_path / "spool").glob("*.json"))]
    finally:
        release.set()
        sink.close()
    assert returned
    assert [m["payload"]["event_id"] for m in msgs if not m["retain"]] == ["e1", "e2"]
    assert [m["payload"]["state"] for m in msgs if m["retain"]] == ["raised", "cleared"]


@needs_mosquitto
def test_mqtt_spool_survives_process_restart(broker, subscribers, mqtt_sinks, tmp_path):
    sub = subscribers(broker.port, ["qm/alerts", "qm/state"], client_id="sub-b", persistent=True)
    broker.stop()

    first = mqtt_sinks(broker.port, tmp_path / "spool")  # never reaches the broker
    first.send(ev("raised", 1))
    first.send(ev("status", 2))
    first.close()
    assert len(Spool(tmp_path / "spool")) == 3

    broker.start()
    second = mqtt_sinks(broker.port, tmp_path / "spool")  # a new process, same spool dir
    assert wait_for(lambda: sub.ids("qm/alerts") == ["e1", "e2"]), sub.messages
    assert wait_for(lambda: any(t == "qm/state" and p["state"] == "raised" for t, p, _, _ in sub.messages))
    assert wait_for(lambda: len(second.spool) == 0)


@needs_mosquitto
def test_mqtt_spool_file_that_is_not_a_message_is_dead_lettered_and_the_rest_delivered(broker, subscribers, mqtt_sinks,
                                                                                        tmp_path, caplog):
    sub = subscribers(broker.port, ["qm/alerts"])
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "00000000000000000001.json").write_text("null")  # valid JSON, not a message
    (spool / "00000000000000000002.json").write_text('{"topic": "qm/alerts", "payload": {}}')  # no "retain"
    (spool / "00000000000000000003.json").write_text(
        json.dumps({"topic": "qm/alerts", "retain": False, "payload": ev("raised", 3).to_dict()}))
    with caplog.at_level(logging.ERROR):
        sink = mqtt_sinks(broker.port, spool)
        assert wait_for(lambda: sub.ids("qm/alerts") == ["e3"]), sub.messages  # was: paho's thread died on connect
        assert wait_for(lambda: len(sink.spool) == 0)
    assert sorted(p.name for p in (spool / "dead").glob("*.json")) == ["00000000000000000001.json",
                                                                        "00000000000000000002.json"]
    assert len([r for r in caplog.records if "does not hold an MQTT message" in r.getMessage()]) == 2
    sink.send(ev("status", 4))  # and delivery goes on
    assert wait_for(lambda: sub.ids("qm/alerts") == ["e3", "e4"]), sub.messages


def _records(caplog, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


@needs_mosquitto
def test_mqtt_unreachable_broker_warns_once_counts_each_try_and_says_when_it_is_back(tmp_path, caplog):
    from edge.sinks.mqtt import MqttSink

    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker")  # not started yet: nothing listens on its port
    sink = MqttSink(host="127.0.0.1", port=b.port, spool=Spool(tmp_path / "spool"), reconnect_min_s=0.05,
                    reconnect_max_s=0.1)
    fan = Fanout([sink], flush_every_s=3600)
    try:
        with caplog.at_level(logging.INFO, logger="edge.sinks.mqtt"):
            assert wait_for(lambda: sink.failed >= 3)
            assert fan.stats()["mqtt"]["failures"] >= 3  # /status and /metrics sink_failures
            assert _records(caplog, logging.WARNING, "not reachable") == [
                f"MQTT broker 127.0.0.1:{b.port} not reachable (Connection refused); spooling events, retrying."]
            b.start()
            assert wait_for(lambda: sink.connected)
            assert len(_records(caplog, logging.INFO, "reachable again")) == 1
            assert len(_records(caplog, logging.WARNING, "")) == 1
    finally:
        fan.close()
        b.stop()


def test_mqtt_broker_closing_before_accepting_counts_each_try_and_warns_once(tmp_path, caplog):
    """A broker at its connection limit (mosquitto's max_connections) or refusing the client id
    closes the connection before any CONNACK: paho then calls only on_disconnect, which counted
    nothing, so events piled up in the spool with failures 0 and no log line."""
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from edge.sinks.mqtt import MqttSink

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    closer = threading.Thread(target=_close_every_connection, args=(server,), daemon=True)
    closer.start()
    sink = MqttSink(host="127.0.0.1", port=port, spool=Spool(tmp_path / "spool"), reconnect_min_s=0.05,
                    reconnect_max_s=0.1)
    fan = Fanout([sink], flush_every_s=3600)
    try:
        with caplog.at_level(logging.INFO, logger="edge.sinks.mqtt"):
            fan.send(ev("raised", 1))
            assert wait_for(lambda: sink.failed >= 3)
            assert fan.stats()["mqtt"]["failures"] >= 3  # /status and /metrics sink_failures
    finally:
        fan.close()
        server.close()
    assert _records(caplog, logging.WARNING, "") == [
        f"MQTT broker 127.0.0.1:{port} closed the connection before accepting it (its client limit reached, the "
        "client id refused, or a TLS port: this sink speaks plain MQTT); spooling events, retrying."]


def test_the_last_will_a_stopping_broker_sends_this_connection_is_not_called_an_earlier_ones(caplog):
    """A stopping mosquitto sends this connection's own last will to it just before closing it
    (seen with mosquitto 2: the "offline" arrives while paho still calls it connected, then the
    disconnect): the line must not say it was an earlier connection's. paho's callbacks are
    called here as its network thread would; nothing listens on the port."""
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from types import SimpleNamespace

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from edge.sinks import homeassistant

    sink = homeassistant.HomeAssistantSink("127.0.0.1", free_port(), device_name="till-6", reconnect_min_s=3600,
                                           reconnect_max_s=3600)
    try:
        assert wait_for(lambda: sink.failed >= 1)  # the first try failed; the next one is an hour away
        with caplog.at_level(logging.DEBUG, logger="edge.sinks"):  # INFO only with an outage said (OutageLog.due)
            sink._on_connect(sink._client, None, SimpleNamespace(session_present=False),
                             ReasonCode(PacketTypes.CONNACK, "Success"), None)
            sink._on_message(sink._client, None, SimpleNamespace(topic=sink.topics.availability, payload=b"offline"))
            sink._on_disconnect(sink._client, None, SimpleNamespace(session_present=False),
                                ReasonCode(PacketTypes.DISCONNECT, "Unspecified error"), None)
        (line,) = [r.getMessage() for r in caplog.records if "last will" in r.getMessage()]
        assert "this connection's own" in line and "saying online again" in line, line
    finally:
        sink.close()


@pytest.mark.parametrize("kind", ["mqtt", "homeassistant"])
def test_a_broker_that_comes_and_goes_is_said_once_a_minute_and_counted_between(kind, tmp_path, monkeypatch, caplog):
    """A broker restarted every 30 s (a cron job, a flaky Wi-Fi link) made two journal lines per
    outage and sink (HA discovery three, with the broker's own last will), day and night: the
    journal's flap rule (edge.outages) applies, as for a camera. paho's callbacks are called here
    as its network thread would, on a fake clock; nothing listens on the port."""
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from types import SimpleNamespace

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from edge import outages
    from edge.sinks import homeassistant, mqtt

    now = [1000.0]
    fake = SimpleNamespace(monotonic=lambda: now[0], sleep=time.sleep)
    monkeypatch.setattr(outages, "time", fake)
    monkeypatch.setattr(mqtt, "time", fake)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()  # nothing listens: the first try fails, the next one is an hour away
    if kind == "mqtt":
        sink = mqtt.MqttSink(host="127.0.0.1", port=port, spool=Spool(tmp_path / "spool"), reconnect_min_s=3600,
                             reconnect_max_s=3600)
    else:
        sink = homeassistant.HomeAssistantSink("127.0.0.1", port, device_name="till-6", reconnect_min_s=3600,
                                               reconnect_max_s=3600)
    up, down = ReasonCode(PacketTypes.CONNACK, "Success"), ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
    flags = SimpleNamespace(session_present=False)
    offline = SimpleNamespace(topic=getattr(sink, "topics", None) and sink.topics.availability, payload=b"offline")

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("edge.sinks")]

    try:
        with caplog.at_level(logging.DEBUG, logger="edge.sinks"):
            assert wait_for(lambda: sink.failed >= 1)  # the first outage, said
            for _ in range(29):  # 15 minutes of a broker restarted every 30 s
                now[0] += 10
                sink._on_connect(sink._client, None, flags, up, None)
                now[0] += 20
                if kind == "homeassistant":  # a stopping broker sends the will to its subscribers
                    sink._on_message(sink._client, None, offline)
                sink._on_disconnect(sink._client, None, flags, down, None)
            assert len(said()) <= 3 * 15, said()  # was: 59 (mqtt), 88 (homeassistant)
            assert sum("were not logged: it keeps dropping out" in line for line in said()) >= 10
            if kind == "homeassistant":  # the will a stopping broker sends is said only with the outage after it
                assert sum("last will" in line for line in said()) == sum("disconnected" in line for line in said())
            assert not sink.outages.said  # the last one started within a minute of the last one said
            caplog.clear()
            for _ in range(3):  # then gone for good: said once it has lasted a minute
                now[0] += 30
                sink._on_connect_fail(sink._client, None)
            now[0] += 30
            sink._on_connect(sink._client, None, flags, up, None)
            lines = said()
            assert len(lines) == 2 and "not reachable" in lines[0] and "reachable again" in lines[1], lines
    finally:
        monkeypatch.undo()
        sink.close()


def _close_every_connection(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        conn.recv(1024)  # the CONNECT packet, then closed without a CONNACK
        conn.close()


@needs_mosquitto
def test_mqtt_refused_login_counts_each_try_once(tmp_path):
    """A refused CONNACK is followed by a disconnect: the try is counted at the refusal only."""
    from edge.sinks.mqtt import MqttSink

    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker", "allow_anonymous false\n")
    b.start()
    sink = MqttSink(host="127.0.0.1", port=b.port, spool=Spool(tmp_path / "spool"), reconnect_min_s=0.05,
                    reconnect_max_s=0.1)
    try:
        assert wait_for(lambda: sink.failed >= 3)
    finally:
        sink.close()
        b.stop()
    tries = (b.dir / "mosquitto.log").read_text().count("New connection from") - 1  # less Broker.start's probe
    assert tries - 1 <= sink.failed <= tries  # the last try may have been cut short by the stop


@needs_mosquitto
def test_doctor_fails_a_broker_that_refuses_the_login(tmp_path):
    from edge.ops.doctor.context import FAIL
    from edge.ops.doctor.sinks import sink_verdict
    from edge.sinks.mqtt import MqttSink, MqttSinkConfig

    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker", "allow_anonymous false\n")
    b.start()
    section = MqttSink.doctor_config(MqttSinkConfig(host="127.0.0.1", port=b.port, username="store",
                                                    password="wrong-pw"), service_running=False)
    fan = build_sinks(SinksConfig(spool_dir=str(tmp_path / "spool"), mqtt=section), "pi-1")
    try:
        line = fan.check()["mqtt"]  # was: "reachable" (the port opened), while every connect was refused
    finally:
        fan.close()
        b.stop()
    assert sink_verdict(line) == FAIL and "refused the connection: Not authorized" in line
    assert "wrong-pw" not in line


@needs_mosquitto
def test_mqtt_client_id_is_made_from_a_safe_device_name(broker, tmp_path):
    """mosquitto closes the connection of a client id with a control character, at every try."""
    from edge.sinks.mqtt import MqttSink

    sink = MqttSink(host="127.0.0.1", port=broker.port, spool=Spool(tmp_path / "spool"), device_name="Kasse\nzwei",
                    reconnect_min_s=0.05, reconnect_max_s=0.1)
    try:
        assert wait_for(lambda: sink.connected, timeout=5)
        assert sink.failed == 0
    finally:
        sink.close()


def test_safe_ids_of_different_names_differ_and_safe_names_keep_theirs():
    from edge.sinks.homeassistant import node_id
    from edge.sinks.mqtt import safe_id

    names = ["Kasse 1", "Kasse.1", "Kasse/1", "Kasse_1", "Kasse\t1", "Kassé 1"]
    assert len({node_id(n) for n in names}) == len(names)  # Home Assistant's unique ids and topics differ
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]+", node_id(n)) for n in names)
    assert node_id("Kasse 1") == "Kasse_1_" + hashlib.sha1(b"Kasse 1").hexdigest()[:6]  # stable across runs
    assert [node_id(n) for n in ("Kasse_1", "till-9", "raspberrypi")] == ["Kasse_1", "till-9", "raspberrypi"]
    assert node_id("") == "queue_mood" and safe_id("till-9") == "till-9"


def test_home_assistant_state_while_the_camera_is_down_is_unknown_not_clear():
    """Every template renders null as "None", Home Assistant's payload for unknown (the binary
    sensor's docs: on, off or None); OFF and 0 faces would read as a clear queue."""
    from edge.sinks.homeassistant import state_payload

    counts = {"angry": 0, "happy": 0}
    assert state_payload(0, None, counts, False) == {"faces": None, "negative_share": None,
                                                     "counts": {"angry": None, "happy": None}, "alert": None}
    assert state_payload(2, 0.5, {"angry": 1, "happy": 1}, True) == {
        "faces": 2, "negative_share": 50.0, "counts": {"angry": 1, "happy": 1}, "alert": "ON"}
    assert state_payload(0, 0.0, counts, False)["alert"] == "OFF"


def ha_errors(caplog) -> list:
    """The Home Assistant sink's ERROR lines: the connect thread's WARNING about the absent broker
    may come at any moment of a test (it failed one run in CI's Pi lane)."""
    return [r for r in caplog.records if r.name == "edge.sinks.homeassistant" and r.levelno == logging.ERROR]


def test_home_assistant_remembers_a_bounded_number_of_other_instances(caplog):
    """A second Pi of the same name gets a new instance id at each start: one restarting every few
    minutes for months (a crash loop, the watchdog) made this Pi keep every id it ever heard.
    Each new one is still said and answered; only the most recent ones are remembered."""
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from types import SimpleNamespace

    from edge.sinks.homeassistant import HomeAssistantSink
    from edge.sinks.mqtt import OTHERS_KEPT

    sink = HomeAssistantSink("127.0.0.1", 1, device_name="raspberrypi", reconnect_min_s=60, reconnect_max_s=60)
    answered = []
    try:
        sink.connected = True
        sink._client.publish = lambda topic, payload, qos=0, retain=False: answered.append(payload)

        def hear(instance: bytes):
            sink._on_message(sink._client, None, SimpleNamespace(topic=sink.topics.instance, payload=instance))

        with caplog.at_level(logging.ERROR, logger="edge.sinks.homeassistant"):
            for n in range(10 * OTHERS_KEPT):  # the other Pi restarted that often
                hear(f"queue-mood-ha-raspberrypi-{n:06x}".encode())
            assert len(sink._others) == OTHERS_KEPT
            assert len(ha_errors(caplog)) == len(answered) == 10 * OTHERS_KEPT  # each new one said and answered once
            hear(f"queue-mood-ha-raspberrypi-{10 * OTHERS_KEPT - 1:06x}".encode())  # the one running now, again
            assert len(ha_errors(caplog)) == len(answered) == 10 * OTHERS_KEPT
    finally:
        sink.connected = False
        sink.close()


def test_mqtt_remembers_a_bounded_number_of_other_monitors(tmp_path, caplog):
    """Anyone on the store's network may publish made-up device names on the state topic: this sink
    kept every name it ever heard. Each new one is still said once; only the most recent ones are
    remembered, as many as the Home Assistant sink keeps."""
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from types import SimpleNamespace

    from edge.sinks.mqtt import OTHERS_KEPT, MqttSink

    sink = MqttSink("127.0.0.1", 1, spool=Spool(tmp_path / "spool"), device_name="till-1",
                    reconnect_min_s=60, reconnect_max_s=60)
    try:
        def hear(name: str):
            payload = json.dumps({"state": "cleared", "event": None, "device": name})
            sink._on_message(sink._client, None, SimpleNamespace(payload=payload, retain=False))

        def said() -> int:
            return sum(r.name == "edge.sinks.mqtt" and r.levelno == logging.ERROR for r in caplog.records)

        with caplog.at_level(logging.ERROR, logger="edge.sinks.mqtt"):
            for n in range(10 * OTHERS_KEPT):
                hear(f"till-{n + 2}")
            assert len(sink._others) == OTHERS_KEPT
            assert said() == 10 * OTHERS_KEPT  # each new one said once
            hear(f"till-{10 * OTHERS_KEPT + 1}")  # the newest, again
            assert said() == 10 * OTHERS_KEPT
    finally:
        sink.close()


def test_mqtt_host_that_does_not_resolve_is_one_warning(tmp_path, caplog):
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from edge.sinks.mqtt import MqttSink

    with caplog.at_level(logging.WARNING, logger="edge.sinks.mqtt"):
        sink = MqttSink(host="broker.invalid", spool=Spool(tmp_path / "spool"), reconnect_min_s=0.05,
                        reconnect_max_s=0.1)
        try:
            assert wait_for(lambda: sink.failed >= 2)
        finally:
            sink.close()
    (line,) = _records(caplog, logging.WARNING, "")
    assert line.startswith("MQTT broker broker.invalid:1883 not reachable (") and "retrying" in line


@needs_mosquitto
def test_mqtt_clean_stop_does_not_warn(broker, tmp_path, caplog):
    from edge.sinks.mqtt import MqttSink

    sink = MqttSink(host="127.0.0.1", port=broker.port, spool=Spool(tmp_path / "spool"))
    assert wait_for(lambda: sink.connected)
    with caplog.at_level(logging.INFO, logger="edge.sinks.mqtt"):
        sink.close()
    assert not _records(caplog, logging.WARNING, "")


def test_mqtt_stop_does_not_wait_for_a_connect_attempt_to_an_unreachable_broker(tmp_path, caplog):
    """paho's loop_stop() joins its thread, which may be in a connect attempt or asleep between
    retries; here it is held there until the test ends. The stop must not wait for it (it made
    every `edge doctor` and every stop log 'Sink mqtt still busy')."""
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from edge.sinks.mqtt import MqttSink

    sink = MqttSink(host="127.0.0.1", port=free_port(), spool=Spool(tmp_path / "spool"))
    release = threading.Event()
    loop_stop = sink._client.loop_stop
    sink._client.loop_stop = lambda: (release.wait(30), loop_stop())
    fan = Fanout([sink], flush_every_s=3600)
    try:
        with caplog.at_level(logging.WARNING):
            fan.close()
    finally:
        release.set()
    assert not _records(caplog, logging.WARNING, "still busy")


def test_doctor_on_an_unreachable_broker_logs_nothing_of_a_running_service(tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from tests.conftest import run_cli

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[sinks]\nspool_dir = "{tmp_path / "spool"}"\n[sinks.mqtt]\nhost = "127.0.0.1"\n'
                   f"port = {free_port()}\n")
    r = run_cli("doctor", "--config", cfg, "--json", timeout=300)
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["sink mqtt"]["status"] == "WARN" and "not reachable" in checks["sink mqtt"]["detail"]
    assert "spooling" not in r.stderr and "still busy" not in r.stderr, r.stderr


def _retained(port: int, topic: str) -> list[dict]:
    """The retained messages on topic, as a dashboard subscribing now gets them."""
    import paho.mqtt.client as mqtt

    marker = f"qm-test/marker/{free_port()}"  # retained too: once it arrives, so have the others
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    pub.publish(marker, "{}", qos=1, retain=True).wait_for_publish(15)
    pub.disconnect()
    pub.loop_stop()
    sub = Subscriber(port, [topic, marker])
    try:
        assert wait_for(lambda: any(t == marker for t, _, _, _ in sub.messages))
        return [p for t, p, _, _ in sub.messages if t != marker]
    finally:
        sub.close()


@needs_mosquitto
def test_mqtt_restart_while_raised_publishes_the_retained_state_cleared(broker, mqtt_sinks, tmp_path):
    first = mqtt_sinks(broker.port, tmp_path / "spool")
    first.send(ev("raised", 1))
    assert wait_for(lambda: len(first.spool) == 0)
    first.close()  # the process stops (crash, upgrade) while the alert is raised
    assert [p["state"] for p in _retained(broker.port, "qm/state")] == ["raised"]

    second = mqtt_sinks(broker.port, tmp_path / "spool")  # the new process starts clear
    assert wait_for(lambda: second.connected and not second._inflight)
    assert _retained(broker.port, "qm/state") == [{"state": "cleared", "event": None, "device": "test-pi"}]
    assert second.delivered == 0  # a state message, not an event


@needs_mosquitto
def test_mqtt_retained_state_is_published_again_to_a_broker_that_forgot_it(broker, mqtt_sinks, tmp_path):
    sink = mqtt_sinks(broker.port, tmp_path / "spool")
    sink.send(ev("raised", 1))
    assert wait_for(lambda: len(sink.spool) == 0)
    broker.stop()
    for saved in broker.dir.glob("*.db"):  # as a broker without persistence, or a new one, restarts
        saved.unlink()
    broker.start()  # same port
    assert wait_for(lambda: sink.connected)
    # was: none until the next alert, while this one was still raised
    assert wait_for(lambda: [p.get("state") for p in _retained(broker.port, "qm/state")] == ["raised"])
    assert sink.delivered == 1 and len(sink.spool) == 0  # a state message, not an event again


@needs_mosquitto
def test_mqtt_retained_state_is_unknown_while_the_camera_is_down(broker, mqtt_sinks, tmp_path):
    """It kept saying "raised" through a camera outage, while /status and Home Assistant said unknown."""
    sink = mqtt_sinks(broker.port, tmp_path / "spool")
    sink.send(ev("raised", 1))
    sink.send(ev("camera_down", 2))
    assert wait_for(lambda: len(sink.spool) == 0)
    (down,) = _retained(broker.port, "qm/state")
    assert down["state"] == "unknown" and down["event"]["event_id"] == "e2"
    sink.send(ev("camera_up", 3))  # back: the alert is still raised
    assert wait_for(lambda: len(sink.spool) == 0)
    (up,) = _retained(broker.port, "qm/state")
    assert up["state"] == "raised" and up["event"]["event_id"] == "e1"


@needs_mosquitto
def test_mqtt_start_state_never_overtakes_this_runs_first_alert(broker, mqtt_sinks, tmp_path):
    broker.stop()
    sink = mqtt_sinks(broker.port, tmp_path / "spool")
    sink.send(ev("raised", 1))  # before the broker is reachable
    broker.start()
    assert wait_for(lambda: len(sink.spool) == 0)
    assert [p["state"] for p in _retained(broker.port, "qm/state")] == ["raised"]


@needs_mosquitto
def test_two_monitors_on_one_state_topic_each_say_so_once(broker, tmp_path, caplog):
    """Pis left at the default state_topic overwrite each other's retained state: a clear at one
    checkout hid an alert raised at another, without a word. Each names the other once; a
    retained state a renamed Pi left there earlier is no other monitor."""
    import paho.mqtt.client as mqtt

    from edge.sinks.mqtt import MqttSink

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    pub.publish("qm/state", json.dumps({"state": "cleared", "event": None, "device": "old-name"}), qos=1,
                retain=True).wait_for_publish(15)
    pub.disconnect()
    pub.loop_stop()

    def sink(name):
        return MqttSink(host="127.0.0.1", port=broker.port, topic="qm/alerts", state_topic="qm/state",
                        discovery=False, spool=Spool(tmp_path / name), device_name=name,
                        reconnect_min_s=0.1, reconnect_max_s=0.5)

    with caplog.at_level(logging.ERROR, logger="edge.sinks.mqtt"):
        till1 = sink("till-1")
        try:
            assert wait_for(lambda: till1.connected and not till1._inflight)
            time.sleep(0.3)
            assert not caplog.records  # the retained old-name state is not a monitor running now
            till2 = sink("till-2")
            try:
                said = lambda: sorted(r.getMessage() for r in caplog.records)  # noqa: E731
                assert wait_for(lambda: len(said()) == 2)
                heard_by_till1, heard_by_till2 = said()[1], said()[0]
                assert "'till-2', publishes its alert state to this one's state_topic 'qm/state'" in heard_by_till1
                assert "queue-mood/till-1/state" in heard_by_till1
                assert "'till-1', publishes" in heard_by_till2 and "queue-mood/till-2/state" in heard_by_till2
                till1.send(ev("raised", 1))
                till2.send(ev("cleared", 2))
                assert wait_for(lambda: not till1.spool and not till2.spool)
                time.sleep(0.3)
                assert len(said()) == 2  # once per other monitor, not per message
            finally:
                till2.close()
        finally:
            till1.close()


@contextmanager
def publisher(port: int):
    """A plain paho client on the test broker, as anyone on the store's network may run one."""
    import paho.mqtt.client as mqtt

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        yield pub
    finally:
        pub.disconnect()
        pub.loop_stop()


@needs_mosquitto
def test_a_deeply_nested_message_on_the_state_topic_does_not_end_mqtt_delivery(broker, mqtt_sinks, tmp_path):
    """Whoever may publish on the broker put "[[[[..." on the state topic: reading it raised RecursionError
    in paho's network thread, which ended it, and no alert was delivered (nor said undelivered) until a restart."""
    sink = mqtt_sinks(broker.port, tmp_path / "spool")
    assert wait_for(lambda: sink.connected and not sink._inflight)
    with publisher(broker.port) as pub:
        pub.publish("qm/state", "[" * 100_000, qos=1).wait_for_publish(15)
        time.sleep(0.5)  # heard by the sink meanwhile
    sink.send(ev("raised", 1))
    assert wait_for(lambda: not sink.spool), "the broker's PUBACKs were never read"


@needs_mosquitto
def test_a_fault_in_a_callback_is_logged_and_mqtt_delivery_goes_on(broker, mqtt_sinks, tmp_path, monkeypatch, caplog):
    """Any exception out of a paho callback (a bug of ours, an input not foreseen) ended paho's network
    thread: alerts held in the spool until a restart, nothing said. It is logged, and delivery goes on."""
    import types

    import edge.sinks.mqtt as mqtt_sink

    def broken(payload):
        raise RuntimeError("a reader that fails")

    monkeypatch.setattr(mqtt_sink, "json", types.SimpleNamespace(loads=broken, dumps=mqtt_sink.json.dumps))
    sink = mqtt_sinks(broker.port, tmp_path / "spool")
    assert wait_for(lambda: sink.connected and not sink._inflight)
    with publisher(broker.port) as pub:
        pub.publish("qm/state", b'{"device": "other-pi"}', qos=1).wait_for_publish(15)
        assert wait_for(lambda: any("Caught exception in on_message: a reader that fails" in r.getMessage()
                                    for r in caplog.records if r.levelname == "ERROR"))
    sink.send(ev("raised", 1))
    assert wait_for(lambda: not sink.spool), "paho's network thread ended: the broker's PUBACKs were never read"


def test_the_home_assistant_sink_takes_the_same_guarded_client():
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from edge.sinks.homeassistant import HomeAssistantSink

    sink = HomeAssistantSink("127.0.0.1", port=1, reconnect_min_s=60, reconnect_max_s=60, close_wait_s=0.1)
    try:
        assert sink._client.suppress_exceptions and sink._client.on_log is not None
    finally:
        sink.close()


@needs_mosquitto
def test_doctor_does_not_touch_the_retained_state(broker, tmp_path):
    from edge.sinks.mqtt import MqttSink, MqttSinkConfig

    section = MqttSink.doctor_config(MqttSinkConfig(host="127.0.0.1", port=broker.port), service_running=True)
    fan = build_sinks(SinksConfig(spool_dir=str(tmp_path / "spool"), mqtt=section), "pi-1")
    try:
        assert [s.key for s in fan.sinks] == ["log", "mqtt"]
        assert wait_for(lambda: fan.sinks[1].connected)
        assert "reachable" in fan.check()["mqtt"]
    finally:
        fan.close()
    assert _retained(broker.port, "#") == []


@needs_mosquitto
def test_mqtt_delivered_counts_events_not_state_messages(broker, mqtt_sinks, tmp_path):
    sink = mqtt_sinks(broker.port, tmp_path / "spool")
    fan = Fanout([sink], flush_every_s=3600)
    fan.send(ev("raised", 1))  # the event and the retained state
    fan.send(ev("status", 2))
    assert wait_for(lambda: fan.stats()["mqtt"]["sent"] == 2 and len(sink.spool) == 0 and not sink._inflight)
    assert fan.stats()["mqtt"]["delivered"] == 2
    fan.close()


def test_mqtt_a_stale_puback_does_not_ack_a_later_message_that_reuses_its_id(tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from types import SimpleNamespace

    from edge.sinks.mqtt import MqttSink

    sink = MqttSink(host="127.0.0.1", port=free_port(), spool=Spool(tmp_path / "spool"), announce_state=False)
    sink.close()  # paho's own thread out of the way: the test plays the broker
    mids = iter([8, 7])  # the second publish gets id 7 again, as after paho's ids wrap at 65535
    sink._client.publish = lambda *a, **k: SimpleNamespace(rc=0, mid=next(mids))
    sink.connected = True
    sink._on_publish(None, None, 7, None, None)  # a PUBACK for an id this sink has no record of
    sink.send(ev("status", 1))
    sink.send(ev("status", 2))
    assert len(sink.spool) == 2 and sink.delivered == 0  # nothing acknowledged the two events
    sink._on_publish(None, None, 8, None, None)
    assert len(sink.spool) == 1 and sink.delivered == 1


def test_mqtt_a_pump_while_a_puback_is_handled_does_not_publish_that_message_again(tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the mqtt extra (paho-mqtt)")
    from types import SimpleNamespace

    from edge.sinks.mqtt import MqttSink

    sink = MqttSink(host="127.0.0.1", port=free_port(), spool=Spool(tmp_path / "spool"), announce_state=False)
    sink.close()  # paho's own thread out of the way: the test plays the broker
    published = []
    sink._client.publish = lambda *a, **k: (published.append(a[1]), SimpleNamespace(rc=0, mid=len(published)))[1]
    sink.connected = True
    sink.send(ev("status", 1))
    ack = sink.spool.ack
    sink.spool.ack = lambda event_id: (sink.flush(), ack(event_id))  # the worker's flush, in paho's PUBACK
    sink._on_publish(None, None, 1, None, None)
    assert len(published) == 1 and len(sink.spool) == 0 and sink.delivered == 1


@pytest.mark.parametrize("value, seconds", [("30", 30.0), ("²", 0.0), ("", 0.0), ("soon", 0.0), ("-5", 0.0),
                                            ("Wed, 21 Oct 2015 07:28:00 -0000", 0.0)])  # a date in no zone
def test_a_retry_after_that_is_not_a_number_of_seconds_or_a_date_counts_as_none(value, seconds):
    """str.isdigit() took "²", and float() of it raised inside the sink."""
    from edge.sinks.webhook import retry_after_s

    assert retry_after_s(value) == seconds


# ---------------------------------------------------------------- events stamped before NTP set the clock

MADE_AT = "2023-11-02T08:00:00+00:00"  # the clock fake-hwclock left: days behind
NOW = 1714565400.0  # time.time() once NTP has set the clock: 2024-05-01T12:10:00Z
LATER_S = 600.0  # time.monotonic() since the event was made


@pytest.fixture
def clock(monkeypatch):
    """The kernel's word (NTP's clock_synced, the boot id) and the clocks restamp reads, set by the test:
    clock.made(...) makes an event as edge run does, then clock.ntp_sets_it() sets the clock LATER_S later."""
    from types import SimpleNamespace

    from edge.service import app, health
    from edge.sinks import restamp

    state = SimpleNamespace(synced=False, boot="boot-1", mono=0.0)
    monkeypatch.setattr(health, "clock_synced", lambda: state.synced)
    monkeypatch.setattr(health, "boot_id", lambda: state.boot)
    monkeypatch.setattr(restamp, "time", SimpleNamespace(time=lambda: NOW, monotonic=lambda: state.mono))

    def made(kind: str, i: int) -> AlertEvent:
        event = app._event(kind, float(i), "test-pi", 0.6, 5, {"sad": 3})
        assert event.mono_s is not None  # edge run stamps each event by time.monotonic() too
        event.event_id, event.mono_s = f"e{i}", 1000.0
        if state.synced is False:
            event.wall_time = MADE_AT
        state.mono = 1000.0 + LATER_S  # restamp's clock, LATER_S after the event was made
        return event

    def ntp_sets_it() -> None:
        state.synced = True

    state.made, state.ntp_sets_it = made, ntp_sets_it
    return state


def corrected(payload: dict) -> dict:
    """What a receiver gets for an event made before NTP set the clock and delivered after, LATER_S later."""
    return {**payload, "wall_time": "2024-05-01T12:00:00+00:00", "clock_synced": True,
            "wall_time_uncorrected": MADE_AT}


def test_a_spooled_event_made_before_ntp_set_the_clock_is_delivered_at_its_true_time(tmp_path, receivers, clock):
    port = free_port()  # the store's network is down
    sink = WebhookSink(url=f"http://127.0.0.1:{port}/hook", spool=Spool(tmp_path / "sp"), retry_min_s=0, retry_max_s=0)
    old_boot = clock.made("raised", 1)
    sink.send(old_boot)
    clock.boot = "boot-2"  # a reboot, the network still down: the stamp of the event before it means nothing now
    stale = clock.made("cleared", 2)
    sink.send(stale)
    assert len(sink.spool) == 2 and "_restamp" in json.loads(next((tmp_path / "sp").glob("*.json")).read_text())
    clock.ntp_sets_it()  # the network is back: NTP steps the clock
    after = clock.made("raised", 3)
    sink.send(after)
    rx = receivers(port)
    sink.flush()
    assert rx.accepted == [old_boot.to_dict(), corrected(stale.to_dict()), after.to_dict()]
    assert old_boot.to_dict()["clock_synced"] is False and after.to_dict()["clock_synced"] is True


def test_an_event_sent_while_the_clock_is_not_set_goes_as_made_without_the_spools_stamp(tmp_path, receivers, clock):
    rx = receivers()
    sink = WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp"))
    event = clock.made("raised", 1)
    sink.send(event)
    assert rx.accepted == [event.to_dict()] and rx.accepted[0]["wall_time"] == MADE_AT


def test_an_event_spooled_before_a_restart_is_still_stamped_again_in_the_same_boot(tmp_path, receivers, clock):
    port = free_port()
    event = clock.made("raised", 1)
    WebhookSink(url=f"http://127.0.0.1:{port}/hook", spool=Spool(tmp_path / "sp")).send(event)
    clock.ntp_sets_it()
    rx = receivers(port)
    WebhookSink(url=rx.url, spool=Spool(tmp_path / "sp")).flush()  # a new process, same spool, same boot
    assert rx.accepted == [corrected(event.to_dict())]


@pytest.mark.parametrize("stamp", [None, "x", {}, {"mono_s": "1", "boot_id": "boot-1"}, {"mono_s": 1.0},
                                   {"mono_s": True, "boot_id": "boot-1"}, {"mono_s": 1e300, "boot_id": "boot-1"}])
def test_a_hand_edited_stamp_is_removed_and_the_event_sent_as_it_was(tmp_path, clock, stamp):
    sp = Spool(tmp_path / "sp")
    payload = clock.made("raised", 1).to_dict()
    clock.ntp_sets_it()
    sp.put({**payload, "_restamp": stamp})
    assert [item for _, item in sp.pending()] == [payload]


@needs_mosquitto
def test_mqtt_delivers_an_event_made_before_ntp_and_its_state_at_their_true_time(broker, subscribers, mqtt_sinks,
                                                                                   tmp_path, clock):
    sub = subscribers(broker.port, ["qm/alerts", "qm/state"], client_id="sub-c", persistent=True)
    broker.stop()
    sink = mqtt_sinks(broker.port, tmp_path / "spool")
    event = clock.made("raised", 1)
    sink.send(event)
    clock.ntp_sets_it()
    broker.start()
    assert wait_for(lambda: sub.ids("qm/alerts") == ["e1"] and len(sink.spool) == 0), sub.messages
    want = corrected(event.to_dict())
    assert [p for t, p, _, _ in sub.messages if t == "qm/alerts"] == [want]
    # the spooled state message, then the reconnect's (from memory: a broker may have forgotten it)
    states = lambda: [p["event"] for t, p, _, _ in sub.messages if t == "qm/state" and p["event"]]  # noqa: E731
    assert wait_for(lambda: len(states()) == 2), sub.messages
    assert states() == [want, want]


@needs_mosquitto
def test_mqtt_a_camera_up_after_ntp_republishes_an_alert_made_before_it_at_its_true_time(broker, subscribers,
                                                                                          mqtt_sinks, tmp_path, clock):
    """The alert was delivered before NTP set the clock (as made); the state a later camera_up
    republishes holds it again, and then at its true time, without the spool's stamp."""
    sub = subscribers(broker.port, ["qm/alerts", "qm/state"], client_id="sub-up", persistent=True)
    sink = mqtt_sinks(broker.port, tmp_path / "spool")
    event = clock.made("raised", 1)
    sink.send(event)
    assert wait_for(lambda: sub.ids("qm/alerts") == ["e1"] and len(sink.spool) == 0), sub.messages
    clock.ntp_sets_it()
    for kind, i in (("camera_down", 2), ("camera_up", 3)):
        sink.send(clock.made(kind, i))
    states = lambda: [p for t, p, _, _ in sub.messages if t == "qm/state" and p["event"]]  # noqa: E731
    assert wait_for(lambda: len(states()) == 3), sub.messages
    assert [p for t, p, _, _ in sub.messages if t == "qm/alerts"][0] == event.to_dict()  # sent as made
    assert [s["state"] for s in states()] == ["raised", "unknown", "raised"]
    assert states()[0]["event"] == event.to_dict() and states()[2]["event"] == corrected(event.to_dict())
    assert "_restamp" not in json.dumps(sub.messages)


def test_an_event_never_carries_a_time_read_before_ntp_set_the_clock_marked_synced(monkeypatch):
    """The clock's state is read before the time: NTP setting the clock between the two reads
    then leaves a true time marked unsynced, never a stale one marked synced, which no one corrects."""
    import time as time_module

    from edge.service import app, health

    reads = []
    monkeypatch.setattr(health, "clock_synced", lambda: reads.append("synced") or True)
    real_time = time_module.time
    monkeypatch.setattr(time_module, "time", lambda: reads.append("time") or real_time())
    event = app._event("raised", 12.0, "till-1")
    assert reads[:2] == ["synced", "time"] and event.clock_synced is True
