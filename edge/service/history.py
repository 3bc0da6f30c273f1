"""The last hour of the queue's mood for the status page's chart: one point per `step_s`
(mean negative share, most faces, whether an alert was raised), and the recent alerts and camera outages.

Bounded in memory; with a `db_path` the same points also go to a small SQLite file, bounded
by row count, so the chart survives a restart. Points go to it together every `write_s` (an
alert at once, the rest at the stop): an SD card is worn by each commit (whole WAL pages, the
WAL index, the ext4 journal), not by the 30-byte rows, so a power cut may cost the last
minute of the chart and the card sees a commit a minute instead of one per 10-s point.
Disk trouble never stops the monitor nor holds up its frame loop for long: the in-memory
history carries on, what the file did not take is written when it takes writes again, and a
damaged file is moved aside for a new one."""

from __future__ import annotations

import codecs
import functools
import logging
import math
import os
import sqlite3
import time
from collections import deque

from edge.outages import FLAP_WINDOW_S
from edge.service.health import wall_iso

log = logging.getLogger(__name__)

BUSY_S = 0.05  # the longest a write waits for another program's lock on the file; the frame loop waits with it
RETRY_S = 300.0  # a file that failed for another reason is tried again this often
_WITH_SIDE_FILES = ("", "-wal", "-shm")  # a database file's name, then those of its WAL and shared memory
KEPT_ASIDE = 3  # damaged files kept for a look; a card that keeps damaging them must not fill up with them
WRITE_S = 60.0  # points are written to the file together this often (an alert at once, the rest at the stop)
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
# A point's frame count (n) has a table of its own: a release from before it writes a point as four
# values into samples, and install.sh's rollback runs such a release on this file. A point without a
# count there is one frame. Likewise an alert stamped by a clock NTP had not set (a Pi has no
# real-time clock) is named in a table of its own, until this run stamps it again (History.settle).
SCHEMA = ("CREATE TABLE IF NOT EXISTS samples (t REAL PRIMARY KEY, negative_share REAL, faces INTEGER, alert INTEGER)",
          "CREATE TABLE IF NOT EXISTS sample_frames (t REAL PRIMARY KEY, n INTEGER NOT NULL)",
          "CREATE TABLE IF NOT EXISTS alerts (t REAL, kind TEXT, negative_share REAL, faces INTEGER)",
          "CREATE TABLE IF NOT EXISTS alerts_clock_unset (t REAL, kind TEXT)",
          "CREATE TABLE IF NOT EXISTS outages (t REAL, kind TEXT, clock_set INTEGER)")
# A flapping camera (a loose cable) makes dozens of short outages an hour, each a "down" and an "up":
# they are kept by a bound of their own, not the alerts' (which left the page's joined line counting
# the last 10), so the line counts those of the hour. The file keeps one change more, the newest no
# longer kept, which tells whether the oldest line had outages before it (periods: joins_dropped).
OUTAGES_KEPT = 200
KINDS = ("raised", "cleared")
OUTAGE_KINDS = ("down", "up")  # apart from KINDS: a restamp (t, kind) finds its row in one table only
SAMPLES = ("SELECT s.t, s.negative_share, s.faces, s.alert, coalesce(f.n, 1) FROM samples s "
           "LEFT JOIN sample_frames f USING (t)")
ALERTS = ("SELECT a.t, a.kind, a.negative_share, a.faces, NOT EXISTS (SELECT 1 FROM alerts_clock_unset u "
          "WHERE u.t = a.t AND u.kind = a.kind) FROM alerts a")


def _code(exc: sqlite3.Error) -> int:
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary code of an extended one


def _unreachable(path: str) -> OSError | None:
    """What stops SQLite opening the file before it is tried (SQLite says only "unable to open
    database file" for each): the path a folder, its folder missing, closed or a file."""
    if os.path.isdir(path):
        return IsADirectoryError(f"it is a folder; set status.history_db to a file, e.g. "
                                 f"{os.path.join(path, 'history.sqlite')}")
    folder = os.path.dirname(path) or "."
    try:
        os.stat(folder)
    except FileNotFoundError:
        return FileNotFoundError(f"its folder {folder} does not exist; make it, or set status.history_db to a file "
                                 "in a folder that does")
    except OSError as exc:  # a folder above it closed to this user: it may well exist
        return PermissionError(f"its folder {folder} cannot be reached by this user ({exc.strerror}); run as the "
                               "service's user, or set status.history_db to a file in a folder this user may write")
    if not os.path.isdir(folder):
        return NotADirectoryError(f"{folder} is a file, not a folder; set status.history_db to a file in a folder")
    return None


def unusable(path: str) -> str:
    """Why History could not keep its points in this file, as far as can be told without opening
    (and so making) it: what `edge doctor` says of status.history_db; "" when nothing is seen."""
    if exc := _unreachable(path):
        return str(exc)
    return _unwritable(path, os.path.dirname(path) or ".") or ""


def _connect(path: str) -> sqlite3.Connection:
    if exc := _unreachable(path):
        raise exc
    folder = os.path.dirname(path) or "."
    try:
        return _open(path)
    except sqlite3.OperationalError as exc:  # "unable to open database file" for a disk or folder it may not write too
        why = _unwritable(path, folder) if _code(exc) in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY) else None
        if why is None:
            raise
        raise PermissionError(why) from None


def _unwritable(path: str, folder: str) -> str | None:
    """Why this user cannot write the file (or the -wal and -shm files WAL makes beside it), if so."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return (f"the disk of {folder} is mounted read-only, as Linux does to an SD card with errors and the "
                    "service's sandbox to every folder but /var/lib/queue-mood")
    except OSError:
        return None
    for p in (folder, path):
        if os.path.exists(p) and not os.access(p, os.W_OK):
            return (f"this user may not write {p}; run as the service's user, or set status.history_db to a file "
                    "in a folder this user may write")
    return None


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {col for _, col, *_ in db.execute(f"PRAGMA table_info({table})")}


@functools.cache
def _schema_columns() -> dict[str, set[str]]:
    """Each table's columns as SCHEMA makes them, which a file's tables must have (a later release may
    add more): a damaged byte in a column's name leaves a schema that parses, and every write failing."""
    db = sqlite3.connect(":memory:")
    try:
        for stmt in SCHEMA:
            db.execute(stmt)
        return {t: _columns(db, t) for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()


def _open(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_S)
    db.text_factory = lambda b: b.decode(errors="replace")  # a damaged byte costs its row (or name), not the load
    try:
        # WAL without a sync per write: a point lost to a power cut costs nothing, an SD card
        # fsync every 10 s on the frame loop's thread would
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for stmt in SCHEMA:
            db.execute(stmt)
        if "n" in _columns(db, "samples"):  # n in samples (0191b8f)
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO sample_frames (t, n) SELECT t, n FROM samples")
            db.execute("ALTER TABLE samples DROP COLUMN n")
            db.execute("COMMIT")
        (check,) = db.execute("PRAGMA quick_check(1)").fetchone()  # a damaged page shows here, not at the open
        if check != "ok":
            raise _corrupt(next((line for line in check.splitlines() if not line.startswith("***")), check))
        if missing := [f"{t}.{c}" for t, cols in _schema_columns().items() for c in sorted(cols - _columns(db, t))]:
            raise _corrupt(f"its tables lack the columns {', '.join(missing)}")
        return db
    except UnicodeDecodeError as exc:  # SQLite's error quotes a damaged name in the file, bytes Python cannot decode
        db.close()
        raise _corrupt(exc.object.decode(errors="replace")) from None
    except BaseException:
        db.close()
        raise


def _corrupt(why: str) -> sqlite3.DatabaseError:
    """The error SQLite raises for a damaged file, for damage it shows otherwise."""
    exc = sqlite3.DatabaseError(why)
    exc.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
    return exc


def _holds_text(path: str) -> bool:
    """Whether the file starts as text: then it is not a damaged database (SQLite's header, a zeroed
    or half-written page all hold NUL bytes) but some other file, such as the config or the alerts
    file that status.history_db names by mistake, which must not be moved away."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        codecs.getincrementaldecoder("utf-8")().decode(head)  # a character cut at 4096 bytes is still text
    except (OSError, UnicodeDecodeError):
        return False
    return bool(head) and b"\0" not in head


def _move_aside(path: str) -> str:
    """A damaged file out of the way, with its WAL, kept for a look; the name it has now."""
    aside = f"{path}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    for ext in _WITH_SIDE_FILES:
        if os.path.exists(path + ext):
            os.replace(path + ext, aside + ext)
    _keep_newest_aside(path, aside)
    return aside


def _keep_newest_aside(path: str, aside: str) -> None:
    """Only the KEPT_ASIDE newest damaged copies of path stay, `aside` (the one just made) among them."""
    folder, name = os.path.split(os.path.abspath(path))
    older = [os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(f"{name}.corrupt-")
             and not f.endswith(_WITH_SIDE_FILES[1:]) and f != os.path.basename(aside)]
    older.sort(key=os.path.getmtime)
    for old in older[:max(0, len(older) - (KEPT_ASIDE - 1))]:
        for ext in _WITH_SIDE_FILES:
            try:
                os.unlink(old + ext)
            except OSError:
                pass


def _number(v) -> float | None:
    """A finite number read from the file, else None: a flipped bit can turn a REAL into a blob or
    text that PRAGMA quick_check passes, and that /status could not put into JSON."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _sample(row: tuple) -> dict | None:
    t, share, faces, alert, n = map(_number, row)
    if None in (t, share, faces, alert, n) or not 0 <= share <= 1 or faces < 0 or alert not in (0, 1) or n < 1:
        return None
    return {"t": t, "negative_share": share, "faces": int(faces), "alert": bool(alert), "n": int(n)}


def _alert(row: tuple) -> dict | None:
    t, kind, share, faces, clock_set = row
    t, share, faces = _number(t), _number(share), _number(faces)
    if None in (t, share, faces) or kind not in KINDS or not 0 <= share <= 1 or faces < 0:
        return None
    try:
        time_ = wall_iso(t)
    except (OverflowError, OSError, ValueError):  # a time no calendar has
        return None
    return {"t": t, "time": time_, "kind": kind, "negative_share": share, "faces": int(faces),
            "clock_set": bool(clock_set), "mono": None}


def _outage(row: tuple) -> dict | None:
    t, kind, clock_set = row
    t = _number(t)
    if t is None or kind not in OUTAGE_KINDS:
        return None
    try:
        time_ = wall_iso(t)
    except (OverflowError, OSError, ValueError):  # a time no calendar has
        return None
    return {"t": t, "time": time_, "kind": kind, "clock_set": bool(clock_set), "mono": None}


def _merged(a: dict, b: dict) -> dict:
    """Two points of the same step joined: a point is what was seen in those seconds, so the share is
    the mean over all their frames (n, weighted), the faces the most, and raised if either was."""
    n = a["n"] + b["n"]
    return {"t": a["t"], "negative_share": round((a["negative_share"] * a["n"] + b["negative_share"] * b["n"]) / n, 4),
            "faces": max(a["faces"], b["faces"]), "alert": a["alert"] or b["alert"], "n": n}


class History:
    """Not thread-safe on its own: Stats calls it under its lock."""

    def __init__(self, step_s: float = 10.0, span_s: float = 3600.0, alerts_kept: int = 20, db_path: str = "",
                 write_s: float = WRITE_S, outages_kept: int = OUTAGES_KEPT):
        self.step_s, self.span_s, self.write_s = step_s, span_s, write_s
        self.points: deque[dict] = deque(maxlen=max(1, int(span_s // step_s)))
        # Points later than the clock, set aside: a Pi without RTC boots with its clock behind
        # (the unit does not wait for NTP), and then the points saved before the restart are real.
        # They join the chart when the clock passes them; a clock that was ahead is the other
        # case, and then the steps recorded since at the same times are merged with them.
        self._ahead: deque[dict] = deque(maxlen=self.points.maxlen)
        # Each alert also says whether NTP had set the clock that stamped it (clock_set) and, for
        # one this run raised while it had not, its time.monotonic() (mono), to stamp it again by
        # once it has (settle); else mono is None.
        self.alerts: deque[dict] = deque(maxlen=alerts_kept)
        # The camera's outages as the status showed them (kind "down", then "up"), stamped as the alerts are.
        self.outages: deque[dict] = deque(maxlen=outages_kept)
        self._outage_dropped: dict | None = None  # the newest outage change no longer kept, if any
        self._step: dict | None = None  # the step being accumulated
        self._path = db_path
        self._db: sqlite3.Connection | None = None
        # Points (this run's frames) and alert rows not in the file yet, apart: a file failing for
        # hours must not push an alert out behind the points that came after it. Each keeps what
        # the file would.
        self._pending_points: deque[dict] = deque(maxlen=self.points.maxlen)
        self._pending_alerts: deque[tuple] = deque(maxlen=alerts_kept)  # (t, kind, share, faces, clock_set)
        self._pending_outages: deque[tuple] = deque(maxlen=outages_kept + 1)  # (t, kind, clock_set), as the file
        self._pending_restamps: deque[tuple] = deque(maxlen=alerts_kept + outages_kept + 1)  # (new t, old t, kind): settle
        self._retry_at = 0.0  # time.monotonic() from which a file that failed is tried again
        self._write_at = time.monotonic() + write_s  # time.monotonic() from which closed points are written
        self._trouble = False  # said, until the file takes a write again
        self._why = ""  # why the file failed last
        self._loaded = False  # the saved hour read; else read at the first write the file takes
        if db_path and self._reopen():
            try:
                self._load(self._db)
            except sqlite3.Error as exc:
                self._failed(exc)

    # -- the on-disk ring
    def _reopen(self) -> bool:
        try:
            try:
                self._db = _connect(self._path)
            except sqlite3.DatabaseError as exc:
                if _code(exc) not in _DAMAGED:
                    raise
                if _holds_text(self._path):
                    raise OSError(f"it holds text, not the chart's SQLite database; it is left as it is: set "
                                  "status.history_db to a file of its own") from exc
                aside = _move_aside(self._path)
                log.warning("status history file %s was damaged (%s); moved it to %s and started a new one",
                            self._path, exc, aside)
                self._db = _connect(self._path)
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
        return self._db is not None

    def _load(self, db: sqlite3.Connection) -> None:
        """The saved hour, merged with what this run recorded (a load the file held back at the start)."""
        self._load_points(db)
        # in the order they were written (rowid), not by time: a clock that was ahead stamped some later
        rows = db.execute(f"{ALERTS} ORDER BY a.rowid DESC LIMIT ?", (self.alerts.maxlen,)).fetchall()[::-1]
        self._merge_saved(self.alerts, rows, _alert, "alerts")
        rows = db.execute("SELECT t, kind, clock_set FROM outages ORDER BY rowid DESC LIMIT ?",
                          (self.outages.maxlen + 1,)).fetchall()[::-1]
        if dropped := self._merge_saved(self.outages, rows, _outage, "outages"):
            self._outage_dropped = dropped[-1]
        self._loaded = True

    def _merge_saved(self, kept: deque, rows: list, read, what: str) -> list:
        """The saved alerts or outages (`rows`, oldest first), then this run's that the file does not hold;
        those older than `kept` holds are returned."""
        saved = [a for a in map(read, rows) if a is not None]
        self._say_dropped(what, len(rows) - len(saved))
        # this run's own as it holds them: one recorded before NTP set the clock keeps its monotonic time
        recorded = {(a["t"], a["kind"]): a for a in kept}
        saved = [recorded.pop((a["t"], a["kind"]), a) for a in saved]
        merged = saved + list(recorded.values())
        kept.clear()
        kept.extend(merged)
        return merged[:-kept.maxlen]

    def _load_points(self, db: sqlite3.Connection) -> None:
        now = time.time()
        rows = db.execute(f"{SAMPLES} WHERE s.t >= ? ORDER BY s.t", (now - self.span_s,)).fetchall()
        by_t = {p["t"]: p for p in map(_sample, rows) if p is not None}
        self._say_dropped("points", len(rows) - len(by_t))
        # this run's where the file has none: a row it has holds this run's point too (written before a
        # late load), joined with any saved at that time before the restart
        by_t.update((p["t"], p) for p in (*self.points, *self._ahead) if p["t"] not in by_t)
        rows = sorted(by_t.values(), key=lambda p: p["t"])
        start = self._step["t"] if self._step else math.inf  # a saved point of the step under way joins it at its close
        past = [p for p in rows if p["t"] <= now and p["t"] < start]
        self.points.clear()
        self.points.extend(past)
        self._ahead.clear()
        self._ahead.extend(rows[len(past):][:self._ahead.maxlen])  # the nearest, should the clock be behind

    def _say_dropped(self, what: str, count: int) -> None:
        if count:
            log.warning("status history file %s: left out %d saved %s that are not what the file should hold "
                        "(damaged rows)", self._path, count, what)

    @property
    def _pending(self) -> list:
        return [*self._pending_points, *self._pending_alerts, *self._pending_outages, *self._pending_restamps]

    def _write(self, pending: deque, *items, at_once: bool = True) -> None:
        """The points or alerts, and any waiting or the file did not take before, in one transaction;
        never more than BUSY_S of waiting for the file. Not `at_once`: it waits for the next write,
        or for write_s from the last one."""
        if not self._path:
            return
        pending.extend(items)
        now = time.monotonic()
        if not at_once and now < self._write_at:
            return
        self._write_at = now + self.write_s
        if self._db is None and (time.monotonic() < self._retry_at or not self._reopen()):
            return
        try:
            self._flush(self._db)
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        if self._trouble:
            log.info("status history file %s is written again", self._path)
            self._trouble = False
        if not self._loaded:
            self._load_late()

    def _load_late(self) -> None:
        """The saved hour a lock or a failed file kept from being read at the start: tried once."""
        self._loaded = True
        try:
            self._load(self._db)
        except sqlite3.Error as exc:
            log.warning("status history file %s: the saved hour could not be read (%s); the chart starts "
                        "from this run", self._path, exc)

    def _flush(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")  # the write lock first: a file another program holds fails here
            for point in self._pending_points:
                self._merge_point(db, point)
            db.executemany("INSERT INTO alerts VALUES (?, ?, ?, ?)", [a[:4] for a in self._pending_alerts])
            db.executemany("INSERT INTO alerts_clock_unset VALUES (?, ?)",
                           [a[:2] for a in self._pending_alerts if not a[4]])
            db.executemany("UPDATE alerts SET t = ? WHERE t = ? AND kind = ?", self._pending_restamps)
            db.executemany("DELETE FROM alerts_clock_unset WHERE t = ? AND kind = ?",
                           [r[1:] for r in self._pending_restamps])
            db.executemany("INSERT INTO outages VALUES (?, ?, ?)", self._pending_outages)
            db.executemany("UPDATE outages SET t = ?, clock_set = 1 WHERE t = ? AND kind = ?", self._pending_restamps)
            # Bounded by count, the newest written kept, never by the clock: it may be behind (the rows
            # ahead of it are real) or have been ahead. Room for the span and as many more.
            db.execute("DELETE FROM samples WHERE rowid <= (SELECT max(rowid) FROM samples) - ?",
                       (2 * self.points.maxlen,))
            db.execute("DELETE FROM sample_frames WHERE t NOT IN (SELECT t FROM samples)")
            # the newest written stay (rowid only grows: only the lowest are ever deleted)
            db.execute("DELETE FROM alerts WHERE rowid <= (SELECT max(rowid) FROM alerts) - ?", (self.alerts.maxlen,))
            db.execute("DELETE FROM alerts_clock_unset WHERE (t, kind) NOT IN (SELECT t, kind FROM alerts)")
            db.execute("DELETE FROM outages WHERE rowid <= (SELECT max(rowid) FROM outages) - ?", (self.outages.maxlen + 1,))
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.rollback()
            raise
        self._pending_points.clear()
        self._pending_alerts.clear()
        self._pending_outages.clear()
        self._pending_restamps.clear()

    @staticmethod
    def _merge_point(db: sqlite3.Connection, p: dict) -> None:
        """A point whose time is in the file already (a restart within its step, a clock stepped back
        over it) joins it (_merged); a damaged row there is replaced."""
        saved = db.execute(f"{SAMPLES} WHERE s.t = ?", (p["t"],)).fetchone()
        saved = saved and _sample(saved)
        if saved:
            p = _merged(saved, p)
        db.execute("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)",
                   (p["t"], p["negative_share"], p["faces"], int(p["alert"])))
        db.execute("INSERT OR REPLACE INTO sample_frames VALUES (?, ?)", (p["t"], p["n"]))

    def _failed(self, exc: sqlite3.Error | OSError) -> None:
        """Another program's lock: tried again at the next write. Anything else: the file is
        closed and opened again every RETRY_S (a damaged one is moved aside then). Said once."""
        busy = isinstance(exc, sqlite3.Error) and _code(exc) in _BUSY
        if not busy and self._db is not None:
            self._db.close()
            self._db = None
        self._retry_at = time.monotonic() + (0.0 if busy else RETRY_S)
        self._why = str(exc)
        if not self._trouble:
            self._trouble = True
            log.warning("status history file %s not usable (%s); keeping the history in memory only and "
                        "trying the file again %s", self._path, exc,
                        "at the next point" if busy else f"every {RETRY_S / 60:.0f} minutes")

    # -- recording
    def add(self, t_wall: float, negative_share: float, faces: int, raised: bool) -> None:
        start = t_wall - t_wall % self.step_s  # aligned, so points from before a restart line up
        s = self._step
        if s is not None and start != s["t"]:
            self._close()
            s = None
        if s is None:
            self._keep_span_before(start)
            s = self._step = {"t": start, "n": 0, "share_sum": 0.0, "faces": 0, "alert": False}
        s["n"] += 1
        s["share_sum"] += negative_share
        s["faces"] = max(s["faces"], faces)
        s["alert"] = s["alert"] or raised

    def _keep_span_before(self, start: float) -> None:
        """Only the points of the span before a step starting at `start`, in time order. The
        wall clock can step (NTP setting a Pi without RTC that started with a wrong time)."""
        if (self.points and self.points[-1]["t"] >= start) or (self._ahead and self._ahead[0]["t"] < start):
            self._resort(start)
        while self.points and self.points[0]["t"] < start - self.span_s:
            self.points.popleft()

    def _resort(self, start: float) -> None:
        """After a step of the clock: points at or after `start` are set aside, those set aside that
        the clock has passed come back; where two share a time, the one recorded last wins."""
        by_t = {p["t"]: p for p in self._ahead}
        by_t.update((p["t"], p) for p in self.points)  # recorded after any set aside at the same time
        ordered = sorted(by_t.values(), key=lambda p: p["t"])
        before = [p for p in ordered if p["t"] < start]
        self.points.clear()
        self.points.extend(before)
        self._ahead.clear()
        self._ahead.extend(ordered[len(before):][:self._ahead.maxlen])

    @staticmethod
    def _own(s: dict) -> dict:
        """The point of the step's frames in this run."""
        return {"t": s["t"], "negative_share": round(s["share_sum"] / s["n"], 4), "faces": s["faces"],
                "alert": s["alert"], "n": s["n"]}

    def _point(self, s: dict) -> dict:
        """The step's point, joined with one of the same time set aside (from before a restart)."""
        p = self._own(s)
        same = self._ahead[0] if self._ahead and self._ahead[0]["t"] == s["t"] else None  # set aside at its start
        return _merged(same, p) if same else p

    def _close(self) -> None:
        s = self._step
        p = self._point(s)
        if self._ahead and self._ahead[0]["t"] == s["t"]:
            self._ahead.popleft()  # in p now
        self.points.append(p)
        # this run's frames only: the file joins them with its own row at that time, as p did
        self._write(self._pending_points, self._own(s), at_once=False)

    def add_alert(self, t_wall: float, kind: str, negative_share: float, faces: int, clock_set: bool = True,
                  mono: float | None = None) -> None:
        """An alert raised or cleared at `t_wall`. Not `clock_set`: NTP had not set the clock then (a
        Pi has no real-time clock: 1970, or the last shutdown's time), and `mono`, its time.monotonic(),
        places it once the clock is set (settle)."""
        a = {"t": t_wall, "time": wall_iso(t_wall), "kind": kind, "negative_share": round(negative_share, 4), "faces": faces,
             "clock_set": clock_set, "mono": None if clock_set else mono}
        self.alerts.append(a)
        self._write(self._pending_alerts, (t_wall, kind, a["negative_share"], faces, clock_set))

    def add_outage(self, t_wall: float, kind: str, clock_set: bool = True, mono: float | None = None) -> None:
        """The camera declared down ("down") or delivering again ("up") at `t_wall`; the clock as in add_alert."""
        if len(self.outages) == self.outages.maxlen:
            self._outage_dropped = self.outages[0]
        self.outages.append({"t": t_wall, "time": wall_iso(t_wall), "kind": kind, "clock_set": clock_set,
                             "mono": None if clock_set else mono})
        self._write(self._pending_outages, (t_wall, kind, clock_set), at_once=False)  # a flapping camera: not a commit each

    @property
    def unsettled(self) -> bool:
        """Whether alerts (or outages) this run recorded before NTP set the clock wait for settle."""
        return any(a["mono"] is not None for a in self._stamped)

    @property
    def _stamped(self) -> list[dict]:
        """The alerts and outage changes held, each stamped by the clock when it came."""
        return [*self.alerts, *self.outages, *filter(None, [self._outage_dropped])]

    def settle(self, wall: float, mono: float) -> None:
        """The clock is set now (`wall`, at time.monotonic() `mono`): the alerts (and outages) this run recorded before
        are stamped again at their true time, by how long ago they came, in memory and in the file."""
        restamps = []
        for a in self._stamped:
            if a["mono"] is not None:
                t = wall - (mono - a["mono"])
                restamps.append((t, a["t"], a["kind"]))
                a.update(t=t, time=wall_iso(t), clock_set=True, mono=None)
        moved = {(old, kind): t for t, old, kind in restamps}
        for waiting in (self._pending_alerts, self._pending_outages):  # not in the file yet
            pending = [(moved[t, kind], kind, *rest, True) if (t, kind) in moved else (t, kind, *rest, clock_set)
                       for t, kind, *rest, clock_set in waiting]
            waiting.clear()
            waiting.extend(pending)
        self._write(self._pending_restamps, *restamps)

    # -- reading
    def series(self, now: float | None = None) -> list[dict]:
        """Closed points of the span, then the step in progress; with `now` (the wall clock), only
        those of the span before it: points are sorted by the clock only as frames come (add), so
        while the camera is down a clock stepped back leaves points later than it (kept, and shown
        once the clock has passed them), and one stepped forward points older than the span."""
        points = list(self.points) + ([self._point(self._step)] if self._step else [])
        if now is None:
            return points
        return [p for p in points if now - self.span_s - self.step_s <= p["t"] <= now]

    def recent_alerts(self, wall: float | None = None, mono: float | None = None) -> list[dict]:
        """Newest first, each with `clock_set`. One stamped before NTP set the clock is given, while
        this run has its monotonic time, at `wall` (the clock now, at time.monotonic() `mono`) less
        how long ago it came, which holds whatever the clock says; else (raised before a restart)
        with no time (t and time None): the clock that stamped it said nothing true."""
        wall = time.time() if wall is None else wall
        mono = time.monotonic() if mono is None else mono
        return [self._shown(a, wall, mono) for a in reversed(self.alerts)]

    def periods(self, wall: float | None = None, mono: float | None = None, raised: bool = False,
                down: bool = False) -> list[dict]:
        """The recent alerts and camera outages as periods, newest first, as a manager reads them:
        `kind` "unhappy" (raised, then cleared) or "camera_down"; `start` and `end` each {t, time,
        clock_set} as in recent_alerts, `end` None while it lasts (`ongoing`, as `raised` and `down`
        say of now) or where none was recorded (the monitor stopped first). An unhappy one also has
        the share and faces when it was raised, and its highest 10-s mean the chart holds (`peak_share`,
        `peak_faces`; the share when raised, where its points are older than the chart's hour). A camera_down
        one also says whether outages older than those kept would have joined it on the page (`joins_dropped`:
        its start within FLAP_WINDOW_S of their end), so that the count of the page's joined line is a lower bound."""
        wall = time.time() if wall is None else wall
        mono = time.monotonic() if mono is None else mono
        points = [p for p in self.series() if p["alert"]]
        out = []
        for kind, events, opens, now in (("unhappy", self.alerts, "raised", raised),
                                         ("camera_down", self.outages, "down", down)):
            last = None
            for a in events:  # in the order recorded
                if a["kind"] == opens:
                    last = {"kind": kind, "start": self._stamp(a, wall, mono), "end": None, "ongoing": False}
                    if kind == "unhappy":
                        last.update(negative_share=a["negative_share"], faces=a["faces"])
                    else:
                        last["joins_dropped"] = False
                    out.append(last)
                elif last is not None and last["end"] is None:  # a clear whose raise is older than those kept is left out
                    last["end"] = self._stamp(a, wall, mono)
            if last is not None and last["end"] is None:
                last["ongoing"] = now
        # the oldest line the page dates, as it sorts them: not the first recorded, which may have no time (stamped
        # before NTP set the clock, before a restart) while the page puts it last and joins the dropped to the next
        dated = [p for p in out if p["kind"] == "camera_down" and p["start"]["t"] is not None]
        if oldest := min(dated, key=lambda p: p["start"]["t"], default=None):
            oldest["joins_dropped"] = self._joins_dropped(oldest["start"]["t"], wall, mono)
        for p in (p for p in out if p["kind"] == "unhappy"):
            t0, t1 = p["start"]["t"], p["end"]["t"] if p["end"] and p["end"]["t"] is not None else wall
            during = [q for q in points if t0 is not None and t0 - self.step_s < q["t"] <= t1]
            top = max([p, *during], key=lambda q: q["negative_share"])  # the first of equals: the raise's own
            p.update(peak_share=top["negative_share"], peak_faces=top["faces"])
        # a start without a time (stamped before NTP set the clock, before a restart) is the oldest
        return sorted(out, key=lambda p: -math.inf if p["start"]["t"] is None else p["start"]["t"], reverse=True)

    def _joins_dropped(self, start: float | None, wall: float, mono: float) -> bool:
        """Whether outages no longer kept ended within FLAP_WINDOW_S before `start`, the oldest kept one's, as
        the page joins them (not where either time is unknown): the newest of them ends at the oldest change
        kept where that is an "up" (its "down" was dropped), else at the newest change dropped; where that
        is a "down" (the monitor stopped during that outage) no end was recorded, and the page joins no such one."""
        if self._outage_dropped is None:
            return False
        first = self.outages[0]
        last = first if first["kind"] == "up" else self._outage_dropped
        if last["kind"] != "up":
            return False
        end = self._stamp(last, wall, mono)["t"]
        return start is not None and end is not None and start - end <= FLAP_WINDOW_S

    @classmethod
    def _stamp(cls, a: dict, wall: float, mono: float) -> dict:
        shown = cls._shown(a, wall, mono)
        return {k: shown[k] for k in ("t", "time", "clock_set")}

    @staticmethod
    def _shown(a: dict, wall: float, mono: float) -> dict:
        shown = {k: v for k, v in a.items() if k != "mono"}
        if a["mono"] is not None:
            t = wall - (mono - a["mono"])
            shown.update(t=t, time=wall_iso(t))
        elif not a["clock_set"]:
            shown.update(t=None, time=None)
        return shown

    def close(self) -> None:
        """The step in progress closed (else every stop loses the chart's last seconds), the rows
        the file did not take written if it takes them now; then closed."""
        if self._step is not None:
            self._close()
            self._step = None
        if self._pending:
            self._save_pending()
        if self._db is not None:
            self._db.close()
            self._db = None

    def _save_pending(self) -> None:
        """At the stop no next write comes: the file, failed but due a retry, is opened once more;
        what it still does not take is said with its count."""
        if self._db is None and time.monotonic() >= self._retry_at:
            self._reopen()
        if self._db is not None:
            try:
                self._flush(self._db)
                return
            except sqlite3.Error as exc:
                self._why = str(exc)
        log.warning("status history file %s: the last %d points and alerts were not saved (%s)", self._path,
                    len(self._pending), self._why)
