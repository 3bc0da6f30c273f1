"""`edge analyze`: a recording (video, image, or folder of images) through the same Pipeline
as `edge run`, written out as files instead of alerts.

OUT/timeline.csv|json  one row per face per analysed frame: time, box, this frame's calibrated
                       probabilities (columns named by the model card's labels), top emotion and
                       confidence, plus the track's smoothed top emotion (what the monitor's mood
                       and alerts use) and whether the live monitor would count the track yet
OUT/tracks.csv|json    one row per track: first/last seen, frames, dominant emotion (argmax of
                       the mean probabilities) and the mean probabilities
OUT/summary.png        video: share of faces per emotion over time, the negative share, the
                       periods the alert policy was raised and those its cooldown held an alert
                       back (a part stopped by a signal says so in the title); images: one bar
                       per image (only where matplotlib is installed; without it, a note says
                       how to get it)
OUT/summary.json       counts, face widths (for camera placement), alert periods, the files left
                       out (unreadable, or not images), elapsed time and speed
OUT/annotated.mp4      only with --annotate (frames otherwise never leave memory)

No alert is sent anywhere: sinks and the status server belong to `edge run`.
matplotlib (the chart) and tqdm (the progress bar) are imported only here, lazily.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import contextlib
import logging
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.card import sha256_file
from edge.config import Config, ScheduleConfig
from edge.errors import UserError, install_hint, missing_modules
from edge.files import no_core_dumps
from edge.paths import check_out_folder, expand_path, same_file
from edge.pipeline import face_width
from edge.pipeline.annotate import AnnotatedVideo
from edge.pipeline.core import Pipeline, StageTimer, load_parts
from edge.pipeline.sources import (IMAGE_SUFFIXES, NOT_AN_IMAGE, ImageFolderSource, names_camera_device, open_source,
                                   subfolder_names)
from edge.redact import redact_url
from edge.signals import StopFlag
from edge.words import plural

log = logging.getLogger(__name__)

# Fixed chart geometry (inches at DPI), so the PNG's pixel size is predictable.
DPI = 100
VIDEO_FIGSIZE = (12.0, 6.0)
IMAGES_WIDTH_IN, IMAGES_BASE_IN, IMAGES_ROW_IN = 10.0, 1.6, 0.32
MAX_IMAGE_ROWS = 60  # the image chart shows at most this many images (the files list all)

# One colour per emotion, the same in every chart; other labels get the remaining colours.
EMOTION_COLORS = {"angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#2ca02c",
                  "neutral": "#bdbdbd", "sad": "#1f77b4", "surprise": "#ff7f0e"}
SPARE_COLORS = ("#17becf", "#bcbd22", "#e377c2", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a")


@dataclass
class AnalyzeOptions:
    out: str
    every: int = 1
    fmt: str = "csv"  # csv | json
    annotate: bool = False
    progress: bool | None = None  # None: a progress bar when stderr is a terminal
    notes: list[str] = field(default_factory=list)  # sentences for the user, filled by analyze()


def figure_size_px(kind: str, images: int = 0) -> tuple[int, int]:
    """(width, height) in pixels of summary.png for a video, or for a folder of `images`."""
    if kind == "video":
        w, h = VIDEO_FIGSIZE
    else:
        w, h = IMAGES_WIDTH_IN, IMAGES_BASE_IN + IMAGES_ROW_IN * max(1, min(images, MAX_IMAGE_ROWS))
    return int(round(w * DPI)), int(round(h * DPI))


def _progress(total: int | None, desc: str, enabled: bool | None, notes: list[str]):
    try:
        from tqdm import tqdm
    except ImportError:
        if enabled or (enabled is None and sys.stderr.isatty()):
            notes.append("No progress bar: install tqdm for one (pip install tqdm).")
        return None
    return tqdm(total=total, desc=desc, unit="frame", disable=None if enabled is None else not enabled,
                dynamic_ncols=True)


# -- output files -----------------------------------------------------------------------


class _RowWriter:
    """CSV with a header, or a JSON list of objects, written row by row (constant memory)."""

    def __init__(self, path: Path, columns: list[str], fmt: str):
        self.path, self.columns, self.fmt = path, columns, fmt
        self.fh = open(path, "w", newline="", encoding="utf-8")
        self.rows = 0
        if fmt == "csv":
            self.csv = csv.writer(self.fh)
            self.csv.writerow(columns)
        else:
            self.fh.write("[")

    def write(self, values: list):
        if self.fmt == "csv":
            self.csv.writerow(values)
        else:
            self.fh.write(("," if self.rows else "") + "\n  " + json.dumps(dict(zip(self.columns, values))))
        self.rows += 1

    def close(self):
        if self.fmt == "json":
            self.fh.write("\n]\n" if self.rows else "]\n")
        self.fh.close()


class FrameRows:
    """(t_s, faces, negative_share, counts per label) per analysed frame, for the chart, kept in
    flat arrays: as a list of tuples a frame cost about 370 bytes, 240 MB for a 12-hour recording
    at 15 fps, here 18 + 2 per label."""

    def __init__(self, n_labels: int):
        self.n = n_labels
        self.t, self.faces, self.share, self.counts = array("d"), array("H"), array("d"), array("H")

    def append(self, row: tuple) -> None:
        t, faces, share, counts = row
        self.t.append(t)
        self.faces.append(faces)
        self.share.append(share)
        self.counts.extend(int(c) for c in counts)

    def __len__(self) -> int:
        return len(self.t)

    def __getitem__(self, i: int) -> tuple:
        i = range(len(self))[i]
        return self.t[i], self.faces[i], self.share[i], np.asarray(self.counts[i * self.n:(i + 1) * self.n], np.int64)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


@dataclass
class _TrackStats:
    id: int
    first_s: float
    last_s: float
    image: str = ""
    frames: int = 0
    confirmed: bool = False
    sum_probs: np.ndarray = None


class _Recorder:
    """Turns each FrameResult into timeline rows and per-track, per-frame and per-image tallies.

    Every face of a frame is reported (result.faces), not only the tracks confirmed after
    tracking.min_hits detections: otherwise a face's first min_hits - 1 frames, and any face in a
    single image, would be missing from the timeline. The tracker keeps its configured settings,
    so the mood, the alert periods and the smoothed columns are those `edge run` gives with every
    face classified in every frame (its compute schedule classifies fewer: its alerts can come a
    few tenths of a second apart from these)."""

    def __init__(self, out: Path, labels: list[str], video: bool, fmt: str):
        self.out, self.labels, self.video, self.fmt = out, labels, video, fmt
        # images: which image a row is from; video: whether the live monitor counts the track
        # yet (tracking.min_hits detections), which means nothing for independent images
        self.image_col = [] if video else ["image"]
        self.confirmed_col = ["confirmed"] if video else []
        self.timeline = _RowWriter(out / f"timeline.{fmt}", ["time_s", "frame", *self.image_col, "track_id", "x", "y", "w",
                                   "h", *labels, "top", "confidence", "smoothed_top", "smoothed_confidence",
                                   *self.confirmed_col], fmt)
        self.tracks: dict = {}
        self.numbered = 0  # track numbers given (a person back after a long gap folds into their old number)
        self.by_top = dict.fromkeys(labels, 0)  # face sightings per (smoothed) top emotion
        self.frame_rows = FrameRows(len(labels))  # video: (t_s, faces, negative_share, counts per label)
        self.image_rows: dict[int, tuple] = {}  # images: file index -> (faces, mean probs or None)
        self.alerts: list[dict] = []
        # the queue unhappy enough for an alert while the cooldown after a clear holds a new one back
        # (as the live status page says): else the chart shows a share over the raise line unexplained
        self.held_back: list[dict] = []
        self.face_widths = array("f")  # detector box widths in frame pixels, for camera placement (4 bytes each)
        self.frames = 0
        self.last_index = -1
        self.stopped_by: str | None = None  # the signal (Ctrl-C's SIGINT, SIGTERM): the files cover the part analysed

    def add(self, frame, result, name: str) -> None:
        self.frames += 1
        self.last_index = frame.index
        if result.transition == "raised":
            self.alerts.append({"raised_s": round(result.t_s, 3), "cleared_s": None})
        elif result.transition == "cleared" and self.alerts:
            self.alerts[-1]["cleared_s"] = round(result.t_s, 3)
        held = self.held_back[-1] if self.held_back and self.held_back[-1]["until_s"] is None else None
        if result.held_back_s is not None and held is None and self.video:
            self.held_back.append({"from_s": round(result.t_s, 3), "until_s": None})
        elif result.held_back_s is None and held is not None:
            held["until_s"] = round(result.t_s, 3)
        n = len(self.labels)
        counts, probs_sum = np.zeros(n, np.int64), np.zeros(n, np.float64)
        for new, old in result.refound if self.video else []:  # tracking.refind_s: the same person again
            if new in self.tracks and old in self.tracks:  # timeline rows keep the number the face had then
                back, st = self.tracks.pop(new), self.tracks[old]
                st.frames, st.sum_probs, st.last_s = st.frames + back.frames, st.sum_probs + back.sum_probs, back.last_s
        for tr in result.faces:
            st = self._track(frame, tr.id, name)
            p = np.asarray(tr.latest, np.float64)
            st.last_s, st.frames = frame.t_s, st.frames + 1
            st.sum_probs += p
            st.confirmed = st.confirmed or tr.confirmed
            counts[tr.top] += 1
            probs_sum += p
            self.by_top[self.labels[tr.top]] += 1
            self.face_widths.append(tr.box.w)
            top = int(p.argmax())
            self.timeline.write([round(frame.t_s, 3), frame.index, *([name] if self.image_col else []), st.id,
                                 *[round(float(v), 1) for v in tr.box.as_tuple()],
                                 *[round(float(v), 4) for v in p], self.labels[top], round(float(p[top]), 4),
                                 self.labels[tr.top], round(tr.confidence, 4),
                                 *([int(tr.confirmed)] if self.video else [])])
        faces = len(result.faces)
        if self.video:
            self.frame_rows.append((frame.t_s, faces, result.mood.negative_share, counts))
        else:
            self.image_rows[frame.index] = (faces, probs_sum / faces if faces else None)

    def _track(self, frame, track_id: int, name: str) -> _TrackStats:
        # track ids restart with each image's fresh pipeline; number them across the folder
        key = track_id if self.video else (frame.index, track_id)
        if key not in self.tracks:
            self.numbered += 1
            self.tracks[key] = _TrackStats(self.numbered, frame.t_s, frame.t_s, name,
                                           sum_probs=np.zeros(len(self.labels), np.float64))
        return self.tracks[key]

    def write_tracks(self) -> dict[str, int]:
        """OUT/tracks.*; returns the tracks per dominant emotion."""
        cols = ["track_id", *self.image_col, "first_s", "last_s", "frames", "dominant", "dominant_prob",
                *self.confirmed_col, *[f"mean_{name}" for name in self.labels]]
        writer = _RowWriter(self.out / f"tracks.{self.fmt}", cols, self.fmt)
        by_dominant = dict.fromkeys(self.labels, 0)
        for st in sorted(self.tracks.values(), key=lambda s: s.id):
            mean = st.sum_probs / st.frames
            dom = int(mean.argmax())
            by_dominant[self.labels[dom]] += 1
            writer.write([st.id, *([st.image] if self.image_col else []), round(st.first_s, 3), round(st.last_s, 3),
                          st.frames, self.labels[dom], round(float(mean[dom]), 4),
                          *([int(st.confirmed)] if self.video else []), *[round(float(v), 4) for v in mean]])
        writer.close()
        return by_dominant


# -- the analysis -----------------------------------------------------------------------


def _output_dir(out: str) -> Path:
    path = Path(out)
    check_out_folder(path)
    try:  # a read-only or full disk fails here, before the model loads, not halfway through
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".edge-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"Cannot write the results into --out {path} ({exc.strerror or exc}); pass a folder on a "
                        "writable disk.") from exc
    return path


def _refuse_overwriting(out: Path, files, inputs: list) -> None:
    """One sentence, before the model loads, when a file this run writes is one it reads (the
    annotated.mp4 of an earlier analysis analysed again into its folder, an image named
    summary.png, a link to either): writing it would destroy the input while it is read; or when
    it is a file of the user's own: only an earlier analysis is replaced (as edge bundle replaces
    only an earlier bundle)."""
    there = [f for f in files if f.exists()]
    for f in there:
        for i in inputs:
            if same_file(f, i):
                raise UserError(f"--out {out} would write its {f.name} over the input {i} (the same file); pass "
                                "another --out, or move the input out of that folder first.")
    if there and not _earlier_analysis(out):
        raise UserError(f"--out {out} already holds {', '.join(f.name for f in there)}, which no earlier analysis "
                        "wrote and this run would overwrite; move them elsewhere, or pass another --out (a new "
                        "folder, or one an earlier analysis wrote).")


# Every file an analysis may write: an earlier run's, left beside this run's, would pass for it.
RESULT_FILES = ("timeline.csv", "timeline.json", "tracks.csv", "tracks.json", "summary.png", "summary.json",
                "annotated.mp4")


def _earlier_analysis(out: Path) -> bool:
    """Whether `out` holds what an analysis wrote (its summary.json): a folder of the user's own
    with a timeline.csv in it is not cleared."""
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and {"frames_analysed", "detector", "input"} <= summary.keys()


ASIDE_PREFIX = ".earlier-analysis-"  # the hidden folder a run sets the earlier analysis aside in
WRITES = ".this-run-writes"  # in it: the names of the files the run writes, one a line


def _restore_order(aside: Path) -> list[Path]:
    """The files set aside, summary.json last: until it is back, a kill while they are put back
    leaves a folder _finish_interrupted puts right (its summary.json says what was there)."""
    return sorted((f for f in aside.iterdir() if f.name != WRITES), key=lambda f: f.name == "summary.json")


def _hold(aside: Path) -> int:
    """An open descriptor of `aside` locked (flock) for this process; the system drops the lock
    however the process ends, so an unlocked hidden folder is one a killed run left."""
    import fcntl

    fd = os.open(aside, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    return fd


def _listed(summary: Path) -> set[str]:
    """The names of the files an analysis's summary.json says it wrote."""
    try:
        files = json.loads(summary.read_text()).get("files")
        return {Path(f).name for f in files.values()} if isinstance(files, dict) else set()
    except (OSError, ValueError, AttributeError):
        return set()


def _finish_interrupted(out: Path, inputs: list, notes: list[str]) -> None:
    """A run killed outright (SIGKILL, the OOM killer, a power cut) left its hidden folder in `out`,
    with the earlier analysis it replaced, and maybe part of its own files beside: the next run
    refused the folder as one no analysis wrote. Before this run looks at it: the killed run's
    partial files are removed and the earlier analysis put back (a run killed once its summary.json
    was written left a whole analysis; only its hidden folder goes). A hidden folder another run
    still holds is refused."""
    keep = {Path(f).resolve() for f in inputs}
    for aside in sorted(p for p in out.glob(ASIDE_PREFIX + "*") if p.is_dir() and not p.is_symlink()):
        fd = None
        try:
            fd = _hold(aside)
            partial, earlier = _put_right(out, aside, keep)
        except BlockingIOError:
            raise UserError(f"--out {out} is being written by another edge analyze that is still running; wait for "
                            "it to finish, or pass another --out.") from None
        except OSError as exc:  # another user's, in a shared folder
            raise UserError(f"--out {out} holds {aside.name}, left by an analysis killed before it finished, which "
                            f"cannot be put right ({exc.filename or aside}: {exc.strerror}); have its owner run the "
                            "analysis again, or pass another --out.") from exc
        finally:
            if fd is not None:
                os.close(fd)
        if not partial and not earlier:  # killed before it wrote anything
            continue
        said = f"An analysis into {out} was killed before it finished: " + "; ".join(
            ([f"its partial {', '.join(partial)} {'was' if len(partial) == 1 else 'were'} removed"] if partial else [])
            + ([f"the earlier analysis it was replacing ({', '.join(earlier)}) was put back"] if earlier else []))
        log.warning("%s.", said)
        notes.append(f"{said}.")


def _put_right(out: Path, aside: Path, keep: set[Path]) -> tuple[list[str], list[str]]:
    """What a killed run left (see _finish_interrupted); returns the partial files removed and the
    earlier analysis's files put back."""
    earlier, whole = [f.name for f in _restore_order(aside)], _earlier_analysis(out)
    if whole and "summary.json" in earlier:  # killed after writing its summary.json: a whole analysis
        shutil.rmtree(aside)
        return [], []
    partial = []
    if not whole:  # the files it wrote are partial, but for the earlier ones already put back
        put_back = _listed(aside / "summary.json") - set(earlier)
        wrote = (aside / WRITES).read_text().split("\n") if (aside / WRITES).is_file() else []
        partial = [name for name in RESULT_FILES if name in wrote and name not in put_back
                   and (out / name).is_file() and (out / name).resolve() not in keep]
    for name in partial:
        (out / name).unlink()
    for name in earlier:
        (aside / name).replace(out / name)
    shutil.rmtree(aside)
    return partial, earlier


@contextlib.contextmanager
def _replacing_earlier(out: Path, inputs: list, writes: list[str], notes: list[str]):
    """Around this run's writing into `out`: an earlier analysis's files are moved into a hidden
    folder there (saying so), and put back, this run's own files removed, if the run fails, so a
    failed analysis never costs the last good one; dropped once it succeeds. Never one of the
    `inputs` (an image named summary.png in the folder analysed), and nothing from a folder no
    analysis wrote. The hidden folder is made (and held) in any case, with the names of the files
    this run `writes`: left by a kill, it tells the next run which files beside it are partial
    (_finish_interrupted)."""
    keep = {Path(f).resolve() for f in inputs}
    earlier = [name for name in RESULT_FILES if (out / name).is_file() and (out / name).resolve() not in keep] \
        if _earlier_analysis(out) else []
    aside = Path(tempfile.mkdtemp(prefix=ASIDE_PREFIX, dir=out))
    held = _hold(aside)
    try:
        (aside / WRITES).write_text("\n".join(writes) + "\n")
        try:
            for name in earlier:
                (out / name).replace(aside / name)
        except OSError as exc:  # another user's file in a shared folder with the sticky bit, as /tmp
            for f in _restore_order(aside):
                f.replace(out / f.name)
            raise UserError(f"Cannot replace the earlier analysis in {out}: {exc.filename} cannot be moved "
                            f"({exc.strerror}); have its owner remove it, or pass another --out.") from exc
        if earlier:
            notes.append(f"{out} held an earlier analysis ({', '.join(earlier)}); it was removed, and the files below "
                         "are this run's.")
        try:
            yield
        except BaseException:
            for name in RESULT_FILES:
                if (out / name).is_file() and (out / name).resolve() not in keep:
                    (out / name).unlink()
            for f in _restore_order(aside):
                f.replace(out / f.name)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
        os.close(held)


def _replay(cfg: Config, parts, source, name_of, rec: _Recorder, timer: StageTimer, annotator, bar,
            notes: list[str], stop: StopFlag) -> None:
    """Every frame of the source through the pipeline into the recorder; a stop signal keeps what was done."""
    classifier, detector = parts
    pipeline = None
    try:
        with source:
            for frame in source:
                if not rec.video or pipeline is None:
                    # Images are independent: a fresh Pipeline per image, so no tracking or mood
                    # carries over from one image to the next.
                    pipeline = Pipeline(cfg, classifier, detector)
                result = pipeline.process(frame)
                timer.add(result.stage_s, result.classified, result.detected)
                rec.add(frame, result, name_of(frame))
                if annotator:
                    annotator.add(frame.image, result)
                if bar is not None:
                    bar.update(1)
                if stop.event.is_set():  # keep what was analysed and write the files for it
                    rec.stopped_by = stop.name
                    notes.append(f"Stopped by {_stopped_by(stop.name)} after {plural(rec.frames, 'analysed frame')}; the files "
                                 "cover only that part.")
                    break
        if rec.video and pipeline is not None:
            _cut_short_raise(pipeline.policy, rec.frame_rows, notes)
    finally:
        if bar is not None:
            bar.close()
        rec.timeline.close()
        if annotator:
            annotator.close()


def _cut_short_raise(policy, frame_rows: FrameRows, notes: list[str]) -> None:
    """The recording ends while the raise timer runs: said, else a share over the raise line at the
    end of the chart sits beside "would not have been raised" unexplained."""
    since = policy.raising_since()
    if since is None or not len(frame_rows):
        return
    end = frame_rows.t[-1]
    notes.append(f"When the analysis ended at {end:.1f} s, the queue had been unhappy enough for an alert for "
                 f"{end - since:.1f} s (since {since:.1f} s), short of alert.raise_after_s "
                 f"({policy.cfg.raise_after_s:g} s): it would have been raised had the queue stayed so "
                 f"{policy.cfg.raise_after_s - (end - since):.1f} s longer.")


def _stopped_by(signal_name: str) -> str:
    return "Ctrl-C" if signal_name == "SIGINT" else signal_name


def analyze(cfg: Config, path: str, opts: AnalyzeOptions) -> dict:
    """Analyse a recording; writes the files into opts.out and returns the summary (also in summary.json)."""
    started = time.monotonic()
    # no matplotlib (a Pi's install.sh does not add it): the tables without the chart
    draw = not missing_modules("matplotlib")
    if not draw:
        opts.notes.append(f"summary.png was not drawn: it needs matplotlib, which is not installed; "
                          f"{install_hint(['matplotlib'])}.")
    if opts.fmt not in ("csv", "json"):
        raise UserError(f"Unknown format '{opts.fmt}'; choose csv or json.")
    every = max(1, int(opts.every))
    if not path:  # open_source's own message names edge run's --camera and --source
        raise UserError("No input given; pass edge analyze a video file, an image or a folder of images "
                        "(e.g. edge analyze queue.mp4).")
    if path.lower().startswith("file://"):  # OpenCV would read it as a stream that never ends
        raise UserError(f"{path} is a file:// URL; pass the file's own path (e.g. edge analyze /home/pi/queue.mp4).")
    # a stream or a camera never ends: edge run watches those (before the model loads, as below)
    if "://" in path or names_camera_device(path):
        raise UserError(f"edge analyze reads recordings, and {redact_url(path)} is a live camera or stream; record it "
                        "first, or watch it with edge run --source.")
    if Path(path).is_dir() and Path(opts.out).resolve() == Path(path).resolve():
        raise UserError(f"--out {opts.out} is the folder being analysed: its next run would analyse this one's chart; "
                        "pass another --out.")
    given = expand_path(path)
    if not given.exists():  # edge run's own sentence offers an rtsp:// URL, refused above
        what = "is a link to a file that does not exist" if given.is_symlink() else "does not exist"
        raise UserError(f"{path} {what}; pass edge analyze a video file, an image or a folder of images.")
    no_core_dumps()  # as edge run does: a crash or SIGABRT must not copy the customers' frames into a core file
    # an unreadable input fails here, before the model loads; images are one second apart
    source = open_source(None, path, fps=1.0, every=every, rotate=cfg.source.rotate)
    video = not isinstance(source, ImageFolderSource)
    kind = "video" if video else "images"
    out = _output_dir(opts.out)
    files = {"timeline": out / f"timeline.{opts.fmt}", "tracks": out / f"tracks.{opts.fmt}",
             **({"chart": out / "summary.png"} if draw else {}), "summary": out / "summary.json",
             **({"annotated": out / "annotated.mp4"} if opts.annotate else {})}
    inputs = [expand_path(path), *getattr(source, "files", [])]
    _finish_interrupted(out, inputs, opts.notes)
    _refuse_overwriting(out, files.values(), inputs)
    # Offline, the timeline has a row for every face in every analysed frame: no compute schedule.
    cfg = dataclasses.replace(cfg, schedule=ScheduleConfig.every_frame())

    classifier, detector = load_parts(cfg)
    labels = list(classifier.labels)
    fps = source.fps
    if getattr(source, "fps_assumed", None):
        opts.notes.append(source.fps_assumed)
    # their images are not analysed: said, not passed over (this analysis's own --out is no such folder)
    if subfolders := [f for f in getattr(source, "subfolders", None) or [] if not same_file(f, out)]:
        many = len(subfolders) > 1
        opts.notes.append(f"The subfolder{'s' if many else ''} of {path} ({subfolder_names(subfolders)}) "
                          f"{'are' if many else 'is'} not looked into; analyse {'each' if many else 'it'} on its own.")
    step_s = every / fps
    if video and step_s > cfg.tracking.max_gap_s:
        opts.notes.append(f"--every {every} leaves {step_s:.2f} s between analysed frames, more than "
                          f"tracking.max_gap_s ({cfg.tracking.max_gap_s:g} s), so faces cannot be followed from one "
                          "analysed frame to the next and every sighting starts a new track.")
    # Ctrl-C, SIGTERM and SIGHUP (an SSH session dropping) stop the loop, not the process: never half
    # the files with the earlier analysis still set aside
    with StopFlag() as stop, _replacing_earlier(out, inputs, [f.name for f in files.values()], opts.notes):
        rec = _Recorder(out, labels, video, opts.fmt)
        annotator = AnnotatedVideo(out / "annotated.mp4", fps / every if video else 1.0, labels,
                                   cfg.source.roi) if opts.annotate else None
        total = getattr(source, "frame_count", None)
        bar = _progress(math.ceil(total / every) if total else None, Path(path).name, opts.progress, opts.notes)
        timer = StageTimer()
        t_loop = time.monotonic()
        name_of = (lambda frame: "") if video else (lambda frame: Path(source.files[frame.index]).name)
        _replay(cfg, (classifier, detector), source, name_of, rec, timer, annotator, bar, opts.notes, stop)
        processing_s = time.monotonic() - t_loop
        opts.notes.extend(n for n in (getattr(source, "ended_early", None), getattr(source, "uneven_rate", None)) if n)

        failed = [{"path": p, "reason": r} for p, r in getattr(source, "failed", [])] + \
            [{"path": str(p), "reason": NOT_AN_IMAGE} for p in getattr(source, "not_images", [])]
        by_dominant = rec.write_tracks()
        media_s = _chart(out / "summary.png" if draw else None, path, source, rec, every, step_s, cfg.alert)
        frames = rec.frames
        read_px = face_width.read_px_for(classifier.card, detector.key)  # the model's crop, not a fixed 40 px
        summary = {
            "input": str(path),
            "kind": kind,
            "model": str(classifier.path),
            "model_sha256": sha256_file(classifier.path),  # which model made it, as edge run logs it
            "detector": detector.describe(),
            "runtime": classifier.runtime.describe(),
            "every": every,
            "frames_analysed": frames,
            "stopped_by_signal": rec.stopped_by,
            "media_seconds": round(media_s, 3) if media_s is not None else None,
            "media_fps": round(fps, 3) if video else None,
            "faces": rec.timeline.rows,
            "tracks": len(rec.tracks),
            "face_width_px": face_width.summarize(rec.face_widths, read_px),
            "tracks_confirmed": sum(st.confirmed for st in rec.tracks.values()) if video else None,
            "counts": {"tracks_by_dominant": by_dominant, "faces_by_smoothed_top": rec.by_top},
            "alerts": rec.alerts,
            "alerts_held_back": rec.held_back if video else None,
            "alert_cooldown_s": cfg.alert.cooldown_s,
            "failed": failed,
            "elapsed_s": None,  # filled in below, after the files are written
            "processing_s": round(processing_s, 3),
            "frames_per_s": round(frames / processing_s, 2) if processing_s > 0 else None,
            "seconds_per_media_minute": round(processing_s / (media_s / 60), 2) if media_s else None,
            "seconds_per_image": round(processing_s / frames, 4) if not video and frames else None,
            "stage_ms": {k: round(v, 2) for k, v in timer.medians_ms().items()},
            "files": {key: str(f) for key, f in files.items()},
            "notes": opts.notes,
            # how to make these files again: the command line and the folder its relative paths start from
            "command": shlex.join(sys.argv),
            "working_folder": os.getcwd(),
        }
        summary["elapsed_s"] = round(time.monotonic() - started, 3)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def _chart(png: Path | None, path: str, source, rec: _Recorder, every: int, step_s: float, alert):
    """summary.png (none when png is None); returns the media seconds analysed (None for images)."""
    if rec.video:
        count = getattr(source, "frame_count", None)
        whole = count and not rec.stopped_by and not getattr(source, "ended_early", None)
        media_s = (count if whole else rec.last_index + 1) / source.fps
        for a in rec.alerts:
            if a["cleared_s"] is None:
                a["open_at_end"] = True
        if png:
            stopped = f"stopped by {_stopped_by(rec.stopped_by)} at {media_s:.1f} s" if rec.stopped_by else ""
            plot_timeline(png, Path(path).name, rec.labels, rec.frame_rows, rec.alerts, media_s, step_s,
                          alert.raise_share, rec.held_back, alert.cooldown_s, stopped)
        return media_s
    if not png:
        return None
    # every image asked for, in name order: (name, faces or -1 when unreadable, mean probs or None)
    rows = [(Path(f).name, *rec.image_rows.get(i, (-1, None))) for i, f in enumerate(source.files) if i % every == 0]
    _plot_images(png, Path(path).name, rec.labels, rows)
    return None


# -- charts ---------------------------------------------------------------------------


def _colors(labels: list[str]) -> list[str]:
    return [EMOTION_COLORS.get(name, SPARE_COLORS[i % len(SPARE_COLORS)]) for i, name in enumerate(labels)]


def _figure(size_in: tuple[float, float]):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot and no global backend switch

    return Figure(figsize=size_in, dpi=DPI)


def _save(fig, path: Path) -> None:
    with warnings.catch_warnings():
        # a name in a script the font lacks (日本.jpg) is drawn as boxes, and matplotlib's warning
        # for each of its characters, with a line of this file, would pass for an error
        warnings.filterwarnings("ignore", message="Glyph .* missing from")  # "font(s) ..." or "current font"
        fig.savefig(path, dpi=DPI)


def time_bins(frame_rows: list[tuple], step_s: float, n_labels: int):
    """Per-second bins (or per analysed frame when frames are a second or more apart) of the
    face sightings per emotion: (bin starts, bin width, counts (bins, labels))."""
    width = 1.0 if step_s < 1.0 else step_s
    if not frame_rows:
        return np.zeros(0), width, np.zeros((0, n_labels))
    n = int(math.floor(frame_rows[-1][0] / width + 1e-9)) + 1
    counts = np.zeros((n, n_labels), np.float64)
    for t, _, _, c in frame_rows:
        counts[min(n - 1, int(math.floor(t / width + 1e-9)))] += c
    return np.arange(n) * width, width, counts


def plot_timeline(path: Path, title: str, labels, frame_rows, alerts, end_s: float, step_s: float, raise_share: float,
                  held_back=(), cooldown_s: float = 0.0, stopped: str = ""):
    """stopped: how and where an analysis stopped early, said in the title: the chart of a part
    must not pass for the whole recording's."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(VIDEO_FIGSIZE)
    gs = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    ax2 = fig.add_subplot(gs[1])
    ax = fig.add_subplot(gs[0], sharex=ax2)
    starts, width, counts = time_bins(frame_rows, step_s, len(labels))
    if len(starts):
        totals = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        x = np.append(starts, starts[-1] + width)
        ys = np.vstack([shares, shares[-1:]]).T
        ax.stackplot(x, ys, labels=labels, colors=_colors(labels), step="post", alpha=0.9, linewidth=0)
        t = np.array([r[0] for r in frame_rows])
        ax.plot(t, [r[2] for r in frame_rows], color="black", linewidth=1.2, drawstyle="steps-post",
                label="negative share (mood window)")
        ax2.plot(t, [r[1] for r in frame_rows], color="#444444", linewidth=1, drawstyle="steps-post")
    ax.axhline(raise_share, color="black", linestyle=":", linewidth=1, label=f"alert raise share {raise_share:g}")
    for i, a in enumerate(alerts):
        stop = a["cleared_s"] if a["cleared_s"] is not None else end_s
        for axis in (ax, ax2):
            axis.axvspan(a["raised_s"], stop, color="red", alpha=0.15, linewidth=0,
                         label="alert raised" if (axis is ax and i == 0) else None)
    for i, h in enumerate(held_back):
        stop = h["until_s"] if h["until_s"] is not None else end_s
        for axis in (ax, ax2):
            axis.axvspan(h["from_s"], stop, facecolor="none", edgecolor="#555555", hatch="//", linewidth=0,
                         label=f"alert held back\n({cooldown_s:g} s cooldown after a clear)" if (axis is ax and i == 0)
                         else None)
    ax.set_ylim(0, 1)
    ax.set_xlim(0, max(end_s, width))
    ax.set_ylabel("share of faces")
    per = "second" if width == 1.0 else f"{width:g} s"
    ax.set_title(f"{title}: emotions of the tracked faces (smoothed top emotion, per {per})"
                 + (f"\n{stopped}: the chart covers only that part" if stopped else ""))
    ax.tick_params(labelbottom=False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax2.set_ylabel("faces")
    ax2.set_xlabel("media time (s)")
    ax2.set_ylim(0, max(1.0, ax2.get_ylim()[1]))  # no face at all: 0-1, not ticks of 0.006 faces
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.subplots_adjust(left=0.07, right=0.80, top=0.89 if stopped else 0.93, bottom=0.1)  # room for its 2nd line
    _save(fig, path)


def _plot_images(path: Path, title: str, labels, rows):
    """One horizontal bar per image: the mean probabilities of its faces, stacked."""
    shown = rows[:MAX_IMAGE_ROWS]
    fig = _figure((figure_size_px("images", len(rows))[0] / DPI, figure_size_px("images", len(rows))[1] / DPI))
    ax = fig.add_subplot(1, 1, 1)
    colors = _colors(labels)
    y = np.arange(len(shown))
    left = np.zeros(len(shown))
    means = np.array([m if m is not None else np.zeros(len(labels)) for _, _, m in shown]).reshape(len(shown), len(labels))
    for j, name in enumerate(labels):
        ax.barh(y, means[:, j], left=left, color=colors[j], label=name, height=0.8)
        left += means[:, j]
    for i, (_, faces, m) in enumerate(shown):
        text = "unreadable" if faces < 0 else ("no face" if faces == 0 else plural(faces, "face"))
        ax.text(1.01 if m is not None else 0.01, i, text, va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels([n if len(n) <= 28 else n[:25] + "..." for n, _, _ in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean probability of the faces in the image")
    more = f" (first {MAX_IMAGE_ROWS} of {len(rows)})" if len(rows) > MAX_IMAGE_ROWS else ""
    ax.set_title(f"{title}: emotions per image{more}", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.12, 1.0), fontsize=8, frameon=False)
    h_in = figure_size_px("images", len(rows))[1] / DPI
    fig.subplots_adjust(left=0.22, right=0.76, top=1 - 0.5 / h_in, bottom=0.75 / h_in)
    _save(fig, path)


# -- what the CLI prints ------------------------------------------------------------------


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def report_lines(s: dict) -> list[str]:
    """A few sentences about a finished analysis."""
    lines = []
    if s["kind"] == "video":
        which = "every frame" if s["every"] == 1 else f"every {_ordinal(s['every'])} frame"
        lines.append(f"Analysed {plural(s['frames_analysed'], 'frame')} "
                     f"({s['media_seconds']:.1f} s of video, {which}) in "
                     f"{s['processing_s']:.1f} s: "
                     f"{s['seconds_per_media_minute']} s per minute of video.")
    else:
        lines.append(f"Analysed {plural(s['frames_analysed'], 'image')} in "
                     f"{s['processing_s']:.2f} s ({s['seconds_per_image']} s per image).")
    name = Path(s["files"]["timeline"]).name
    if not s["faces"]:
        held = "has only its header" if name.endswith(".csv") else "is an empty list"  # JSON has no header
        lines.append(f"No faces were found in {s['input']}, so {name} {held}.")
    else:
        dom = ", ".join(f"{k} {v}" for k, v in s["counts"]["tracks_by_dominant"].items() if v)
        if s["kind"] == "video":
            lines.append(f"{plural(s['tracks'], 'track')} ({s['tracks_confirmed']} long enough to count in the live monitor) in "
                         f"{plural(s['faces'], 'face sighting')}; dominant emotions: {dom}.")
        else:
            lines.append(f"{plural(s['faces'], 'face')}; dominant emotions: {dom}.")
    if s.get("face_width_px"):
        lines.append(face_width.advice(s["face_width_px"]))
    if s["alerts"]:
        spans = ", ".join(f"{a['raised_s']:g}-{a['cleared_s']:g} s" if a["cleared_s"] is not None
                          else f"{a['raised_s']:g} s-end" for a in s["alerts"])
        times = "once" if len(s["alerts"]) == 1 else f"{len(s['alerts'])} times"
        lines.append(f"The alert would have been raised {times}: {spans}.")
    elif s["kind"] == "video" and s["faces"] and not s.get("alerts_held_back"):
        lines.append("The alert would not have been raised.")
    if s.get("alerts_held_back"):  # a share over the raise line with no alert, explained
        held = [f"{h['from_s']:g}-{h['until_s']:g} s" if h["until_s"] is not None else f"{h['from_s']:g} s-end"
                for h in s["alerts_held_back"]]
        more = f" and {len(held) - 5} more (all in summary.json)" if len(held) > 5 else ""
        lines.append(f"The queue looked unhappy enough for an alert at {', '.join(held[:5])}{more}, but no new alert "
                     f"is raised within alert.cooldown_s ({s['alert_cooldown_s']:g} s) of a clear.")
    unread = [f for f in s["failed"] if f["reason"] != NOT_AN_IMAGE]
    others = [Path(f["path"]).name for f in s["failed"] if f["reason"] == NOT_AN_IMAGE]
    if unread:
        lines.append(f"{plural(len(unread), 'file')} could not be read and "
                     f"{'were' if len(unread) > 1 else 'was'} skipped: "
                     + "; ".join(f"{f['path']} ({f['reason']})" for f in unread) + ".")
    if others:  # a video or notes beside the images: said, not passed over
        many = len(others) > 1
        more = f" and {len(others) - 3} more (all in summary.json)" if len(others) > 3 else ""
        lines.append(f"{len(others)} file{'s are' if many else ' is'} not {'images' if many else 'an image'} "
                     f"({', '.join(IMAGE_SUFFIXES)}) and {'were' if many else 'was'} left out of {s['input']}: "
                     f"{', '.join(others[:3])}{more}.")
    lines.extend(s["notes"])
    lines.append("Wrote " + ", ".join(s["files"].values()) + ".")
    return lines

