"""Frame sources: context-managed iterators of Frame(image, t_s, index).

Recordings (video files, image folders) are read frame by frame with media timestamps
(index / fps), so a run raises the same alerts at the same media times on any machine; or,
with `realtime`, at their own rate as a camera would deliver them (to try the status page on a
recording, and so the benchmark can time the whole monitor at a camera's pace).
Live sources (cameras, streams) run a grabber thread where the latest frame wins: a slow
consumer gets the newest frame, stale ones are dropped and counted, and a source that
stops delivering is reopened with back-off. Whatever a driver raises is a failed read, logged
once per outage; alive() says whether the grabber still runs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Iterator

import numpy as np

from edge.errors import UserError, import_cv2
from edge.outages import OutageLog
from edge.paths import check_readable, expand_path
from edge.pipeline.face_width import READ_PX, read_px_at
from edge.redact import redact_url
from edge.words import plural

# FFmpeg (OpenCV's backend for streams and files) prints a line to stderr on every failed
# open: a dead stream's reopen attempts would fill the journal with them, while this module
# logs one line per outage saying why. Read when OpenCV first uses FFmpeg; set it to 24 to see them.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
# The same for OpenCV's own "[ WARN ] ... can't open camera by index" lines, two per attempt at a
# USB camera that is not there (read at OpenCV's first log line; an error sentence here says why).
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
# And libcamera's INFO lines to stderr (its version, "Registered camera", "configuring streams",
# "Selected sensor format"), four or so at each Pi camera open: its warnings and errors still come.
# Read when picamera2 first loads libcamera, which this module imports late.
os.environ.setdefault("LIBCAMERA_LOG_LEVELS", "*:WARN")

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # what OpenCV decodes
NOT_AN_IMAGE = f"not an image file ({', '.join(IMAGE_SUFFIXES)})"  # why a folder's other files are left out
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mjpeg", ".mjpg")


class Frame:
    """image: BGR (h, w, 3) or grayscale (h, w) uint8; t_s: seconds (media time for recordings,
    time.monotonic() for live sources); index. A recording may hand over a frame whose pixels
    are converted only when first asked for (`pixels`, a callable): with the compute schedule
    most frames are never looked at, and converting a decoded frame to BGR adds about half again
    to the cost of decoding it (docs/compute-budget.md)."""

    __slots__ = ("_image", "_pixels", "t_s", "index")

    def __init__(self, image: np.ndarray | None, t_s: float, index: int, pixels=None):
        self._image, self._pixels, self.t_s, self.index = image, pixels, t_s, index

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            self._image, self._pixels = self._pixels(), None
        return self._image

    def at(self, t_s: float) -> "Frame":
        """This frame at another time; its pixels are made once, for both."""
        return Frame(self._image, t_s, self.index, None if self._image is not None else (lambda: self.image))


class Source:
    dropped = 0  # frames discarded because processing was slower than the source
    realtime = False  # a recording played at its own rate (see paced)
    rotate = 0  # degrees clockwise every frame is turned by (a camera mounted upside down: 180)

    def _frame(self, image: np.ndarray | None, t_s: float, index: int, pixels=None) -> Frame:
        """A frame of this source, turned by `rotate` when its pixels are first asked for (most
        frames are never looked at: turning them all would cost as much as converting them)."""
        if not self.rotate:
            return Frame(image, t_s, index, pixels)
        cv2 = import_cv2()
        code, get = getattr(cv2, _ROTATE_CODES[self.rotate]), pixels if image is None else (lambda: image)
        return Frame(None, t_s, index, lambda: cv2.rotate(get(), code))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def poll(self, timeout_s: float) -> Iterator[Frame | None]:
        """The frames, plus None whenever none arrived for timeout_s (live sources only), so
        a caller can check its stop conditions and notice a silent camera. A recording never
        waits on anything outside, so it simply yields its frames (at its own rate if realtime)."""
        yield from self.paced() if self.realtime else self

    def paced(self) -> Iterator[Frame]:
        """The frames at the recording's own rate, as a camera delivers them: none before its
        time, and one that comes a whole frame interval late (the consumer was slower than the
        recording) is dropped and counted in `dropped`, as a camera's stale frames are."""
        start, interval = time.monotonic(), getattr(self, "every", 1) / self.fps
        for frame in self:
            late = time.monotonic() - start - frame.t_s
            if late >= interval:
                self.dropped += 1
                continue
            if late < 0:
                time.sleep(-late)
            yield frame

    def close(self) -> None:
        pass

    def alive(self) -> bool:
        """False when the source can deliver no more frames of itself (a live source's grabber
        ended or is stuck); edge run then stops pinging the systemd watchdog."""
        return True

    def describe(self) -> str:
        return type(self).__name__


class VideoFileSource(Source):
    """A recording, frame by frame; timestamps are index / the file's fps."""

    def __init__(self, path: str | os.PathLike, every: int = 1):
        cv2 = import_cv2()
        self.path, self.every = path, max(1, every)
        self.cap = cv2.VideoCapture(os.fspath(path))  # OpenCV < 4.10 (a Pi's 4.6) takes no Path
        opened = self.cap.isOpened()
        ok, first = self.cap.read() if opened else (False, None)
        if not ok:
            # opened, no frame, none in the header: a whole file that holds no frame (a recording
            # stopped before its first), not a damaged one
            empty = opened and not self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
            self.cap.release()
            check_readable(path, "Video")  # OpenCV says nothing of permissions: the service's own user
            if empty:
                raise UserError(f"Video {path} has no frames: the file opens but holds no picture (a recording "
                                "stopped before its first frame?); give a recording with frames in it.")
            raise UserError(f"Cannot read video {path}: the file is missing, damaged or in a format OpenCV cannot decode.")
        self._first = first
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else 25.0
        # every time, the tracker's gaps and the mood window rest on it: a rate made up is said
        self.fps_assumed: str | None = None if self.fps == fps else (
            f"Video {path} gives {fps:g} frames per second in its header, which cannot be right; its times assume "
            f"{self.fps:g} (if the rate is known, re-encode it with it, e.g. ffmpeg -r 15 -i IN OUT.mp4).")
        if self.fps_assumed:
            log.warning(self.fps_assumed)
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 else None
        self.ended_early: str | None = None  # set when decoding stops well before the header's frame count
        self.uneven_rate: str | None = None  # set when the frames' own times stray from index / fps
        self._at: int | None = None  # the frame the capture holds, whose pixels may still be converted

    def __iter__(self):
        # grab() demuxes and decodes; the conversion to BGR waits until a frame's pixels are
        # asked for, which must happen before the next frame is read.
        yield self._frame(self._first, 0.0, 0)
        index, pos_msec = 0, import_cv2().CAP_PROP_POS_MSEC
        stray = (0.0, 0, 0.0)  # (seconds, frame, its own time): where index / fps strays most from the file's times
        while self.cap.grab():
            index += 1
            own_s = self.cap.get(pos_msec) / 1000  # 0 (unknown) from backends without timestamps
            if own_s > 0 and abs(own_s - index / self.fps) > stray[0]:
                stray = (abs(own_s - index / self.fps), index, own_s)
            if index % self.every == 0:
                yield self._frame(None, index / self.fps, index, self._pixels_of(index))
        self._at = None
        read = index + 1
        if self.frame_count and self.frame_count - read > max(1, self.frame_count // 100):  # headers may round
            self.ended_early = (f"Video {self.path} ended at frame {read} of the {self.frame_count} its header "
                                "lists: the rest could not be decoded (the file is cut short or damaged).")
            log.warning(self.ended_early)
        # a phone's variable frame rate: times kept as index / fps (the same on any machine), but said,
        # else every time in the results is off from a player's clock without a word
        if stray[0] > max(0.5, 2 / self.fps):
            _, at, own_s = stray
            self.uneven_rate = (f"Video {self.path} has a variable frame rate: its frame {at} is at {own_s:.1f} s in "
                                f"the file but {at / self.fps:.1f} s here, where times assume a steady {self.fps:.4g} "
                                "frames per second; for times that match a player's, re-encode it at a constant rate "
                                "(e.g. ffmpeg -i IN -vsync cfr -r 15 OUT.mp4).")
            log.warning(self.uneven_rate)

    def _pixels_of(self, index: int):
        self._at = index

        def pixels() -> np.ndarray:
            if self._at != index:
                raise RuntimeError(f"frame {index} of {self.path}: its pixels were asked for after the next frame was read")
            ok, img = self.cap.retrieve()
            if not ok or img is None:
                raise UserError(f"Cannot decode frame {index} of video {self.path}: the file is damaged there; "
                                "re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4).")
            return img

        return pixels

    def close(self):
        self.cap.release()

    def describe(self):
        return f"video {self.path} ({self.fps:g} fps)"


class ImageFolderSource(Source):
    """Images in name order as frames at `fps` media frames per second; unreadable files
    are skipped and listed in `failed`, the folder's other files (a video, notes; not hidden
    ones) in `not_images`, its subfolders (not looked into) in `subfolders`."""

    def __init__(self, path: str, fps: float = 1.0, every: int = 1, files: list[Path] | None = None):
        self.path, self.fps, self.every = Path(path), fps, max(1, every)
        try:  # is_file: a folder named x.jpg is not an image; a broken link is one that cannot be read
            entries = [] if files else sorted(self.path.iterdir())
            listed = [p for p in entries if p.is_file() or (p.is_symlink() and not p.exists())]
            self.files = files or [p for p in listed if p.suffix.lower() in IMAGE_SUFFIXES]
            self.not_images = [p for p in listed if p.suffix.lower() not in IMAGE_SUFFIXES
                               and not p.name.startswith(".")]
            self.subfolders = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
        except OSError as exc:
            raise UserError(f"Cannot list folder {path} ({exc.strerror}); check that it exists and this user may "
                            "read it.") from exc
        if not self.files:
            inside = f"; its subfolders ({subfolder_names(self.subfolders)}) are not looked into: pass one of " \
                     "them" if self.subfolders else ""
            raise UserError(f"Folder {path} has no images ({', '.join(IMAGE_SUFFIXES)}){inside}.")
        self.failed: list[tuple[str, str]] = []
        self.frame_count = len(self.files)

    def __iter__(self):
        cv2 = import_cv2()
        read = 0
        for index, f in enumerate(self.files):
            if index % self.every:
                continue
            try:
                data = np.fromfile(f, np.uint8)
            except OSError as exc:  # removed, unreadable or a dangling link
                data, why = None, "a link to a file that does not exist" if f.is_symlink() and not f.exists() else \
                    exc.strerror or str(exc)
            else:
                why = "not a readable image"
            img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
            if img is None:
                self.failed.append((str(f), why))
                log.warning("skipping unreadable image %s (%s)", f, why)
                continue
            read += 1
            yield self._frame(img, index / self.fps, index)
        if not read:  # else edge run ends as if the folder were done, and analyze writes empty results
            tried = plural(len(self.failed), "image") + \
                ("" if self.every == 1 else f" tried (one in {self.every} of {len(self.files)})")
            raise UserError(f"None of the {tried} in {self.path} could be read (damaged or not images).")

    @classmethod
    def single(cls, image: Path) -> "ImageFolderSource":
        """One image; one that cannot be decoded fails here, before any model loads."""
        cv2 = import_cv2()
        data = np.fromfile(str(image), np.uint8)
        if not data.size or cv2.imdecode(data, cv2.IMREAD_COLOR) is None:
            raise UserError(f"Cannot read image {image}: the file is empty, damaged or not an image OpenCV can decode.")
        return cls(str(image.parent), files=[image])

    def describe(self):
        return f"image folder {self.path} ({plural(len(self.files), 'image')})"


def subfolder_names(folders: list[Path], most: int = 3) -> str:
    """"day1, day2, day3 and 4 more": the subfolders an image folder's analysis leaves out."""
    more = f" and {len(folders) - most} more" if len(folders) > most else ""
    return ", ".join(p.name for p in folders[:most]) + more


class LiveSource(Source):
    """A grabber thread keeps only the newest frame; reopens with back-off when delivery stops."""

    stall_s = 3.0  # no frame for this long counts as a stopped source
    hung_s = 120.0  # one device call this long is stuck for good (a stream's read gives up after STREAM_TIMEOUT_MS)
    asked_size: tuple[int, int] | None = None  # (w, h) requested of the device ([source] width, height)
    frame_size: tuple[int, int] | None = None  # (w, h) it delivers, from its first frame after each open

    def __init__(self, max_backoff_s: float = 30.0):
        self.max_backoff_s = max_backoff_s
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._stop = threading.Event()
        self._index = 0
        self.reopens = 0  # reopen attempts, failed ones too: an unplugged camera's count keeps growing
        self.read_failures = 0  # failed reads since the start; logged once per outage
        self.dropped = 0
        self._thread: threading.Thread | None = None
        self._busy_since: float | None = None  # when the device call under way began
        # A camera that cannot be opened at the start: False, one sentence (a user at a terminal
        # named a wrong camera); True, waited for as one lost later (a service started at boot
        # before its camera is ready, or with it unplugged, must not restart in a loop).
        self.wait_first = False
        self._opened = False
        self._new_open = False  # the next frame is the first since an open: its size is looked at
        self.outages = OutageLog()  # a source dropping out every few seconds: a few lines a minute

    # Subclasses: open the device (raise UserError if absent), read one frame (None or an
    # exception = failed), release.
    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> np.ndarray | None:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def __enter__(self):
        try:
            self._open()
            self._opened = self._new_open = True
        except UserError as exc:
            if not self.wait_first:
                raise  # the first open fails loudly: a missing camera is a user error
            self.outages.start()  # this line is the outage's start: the grabber's own start lines are left unsaid
            log.warning("%s Waiting for it: reported down, and opened again with back-off (at most %g s apart).",
                        exc, self.max_backoff_s)
        self._thread = threading.Thread(target=self._grab_loop, name="frame-grabber", daemon=True)
        self._thread.start()
        return self

    def _grab_loop(self):
        backoff = 0.5
        last_ok = time.monotonic() if self._opened else -math.inf  # not open yet: reopen at the first failed read
        # An outage runs from a failed read to the next frame. A camera in trouble fails every
        # read (about 100 a second), so an outage is logged once when it starts, with its
        # first reason, and once when it ends, with what it cost; in between reads and
        # reopens are counted (reopens after the first are logged at DEBUG).
        failed_since, failures, attempts = None, 0, 0
        # Not open yet: an outage __enter__ already said, with its reason; its first read, stop and
        # reopen, which would only say that again, are logged at DEBUG like the reopens after them.
        waited = not self._opened
        if waited:
            failed_since = time.monotonic()
        while not self._stop.is_set():
            try:
                img, why = self._device(self._read), "no frame"
            except Exception as exc:  # cv2.error, OSError, ...: a failed read, not the end of the grabber
                img, why = None, _reason(exc)
            if img is not None:
                if self._new_open:
                    self._new_open = False
                    self._note_size(img)
                if failed_since is not None:
                    log.log(self.outages.level, "%s delivers frames again after %d failed reads and %d reopen "
                            "attempts in %.0f s%s", self.describe(), failures, attempts,
                            time.monotonic() - failed_since, self.outages.more())
                    failed_since, failures, attempts, waited = None, 0, 0, False
                backoff, last_ok = 0.5, time.monotonic()
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1  # the consumer never saw it
                    self._latest = self._frame(img, time.monotonic(), self._index)
                    self._index += 1
                    self._cond.notify()
                continue
            self.read_failures += 1
            failures += 1
            if failed_since is None:
                failed_since = time.monotonic()
                self.outages.start()
                log.log(self.outages.level, "%s: read failed (%s); further failures are counted until the next "
                        "frame", self.describe(), why)
            elif self.outages.overdue(time.monotonic() - failed_since):  # coming and going, then gone for good
                log.warning("%s: reads have failed for %.0f s (%s); further failures are counted until the next frame",
                            self.describe(), time.monotonic() - failed_since, why)
            if time.monotonic() - last_ok < self.stall_s:
                self._stop.wait(0.01)  # a failed read; retry without spinning
                continue
            level = logging.DEBUG if attempts or waited else self.outages.level
            log.log(level, "%s stopped delivering frames; reopening in %.1f s", self.describe(), backoff)
            self._release_quietly()
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.max_backoff_s)
            attempts += 1
            self.reopens += 1
            try:
                self._device(self._open)
                self._new_open = True
                last_ok = time.monotonic()
            except Exception as exc:  # not only UserError: whatever the driver raises, try again later
                log.log(level, "reopening %s failed: %s", self.describe(), _reason(exc))
        self._release_quietly()

    def _note_size(self, img: np.ndarray) -> None:
        """Says once per size when the device delivers another size than the one asked for: it
        works, but a USB camera that ignores 640x480 and sends 1920x1080 costs 6.75x the pixels
        in every frame, and its faces are wider than the README's 640x480 figures."""
        size = (int(img.shape[1]), int(img.shape[0]))
        if size == self.frame_size:
            return
        self.frame_size = size
        if self.asked_size is None or size == self.asked_size:
            return
        (w, h), (aw, ah) = size, self.asked_size
        fix = ("set the size in the camera's own stream settings" if self._is_stream() else
               "the camera does not offer that size: set [source] width and height to one it lists "
               "(v4l2-ctl --list-formats-ext)")
        log.warning("%s delivers %dx%d frames, not the %dx%d asked for ([source] width, height); %s. Each frame has "
                    "%.2gx the pixels to decode and look at (CPU), and a face is %.2gx as wide in pixels as at %d px "
                    "(the %d-px target at 640x480 is %.0f px here)", self.describe(), w, h, aw, ah, fix,
                    w * h / (aw * ah), w / aw, aw, READ_PX, read_px_at(w))

    def _is_stream(self) -> bool:
        return False

    def _release_quietly(self):
        try:
            self._device(self._release)
        except Exception as exc:  # the device is given up either way
            log.debug("releasing %s failed: %s", self.describe(), _reason(exc))

    def _device(self, call):
        """call(), timed, so that alive() can tell a driver call that never returns."""
        self._busy_since = time.monotonic()
        try:
            return call()
        finally:
            self._busy_since = None

    def alive(self) -> bool:
        if self._thread is None:  # not started
            return True
        since = self._busy_since
        return self._thread.is_alive() and (since is None or time.monotonic() - since < self.hung_s)

    def poll(self, timeout_s: float):
        while not self._stop.is_set():
            with self._cond:
                if self._latest is None:
                    self._cond.wait(timeout=timeout_s)
                frame, self._latest = self._latest, None
            yield frame

    def __iter__(self):
        return (f for f in self.poll(0.5) if f is not None)

    def close(self):
        self._stop.set()
        if self._thread:
            # Short: a read at the camera's rate ends well within it, and a driver or stream
            # read that blocks (FFmpeg waits 30 s) would not end in any wait worth having; the
            # daemon thread then ends with the process and stopping stays prompt.
            self._thread.join(timeout=0.25)


_ROTATE_CODES = {90: "ROTATE_90_CLOCKWISE", 180: "ROTATE_180", 270: "ROTATE_90_COUNTERCLOCKWISE"}
ROTATIONS = (0, *_ROTATE_CODES)  # source.rotate's values, degrees clockwise


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__  # MemoryError() and friends have no message


# How long a stream may take to open, or to give its next frame, before it counts as failed: a
# camera that accepts the connection and never answers held the start for FFmpeg's 30 s.
STREAM_TIMEOUT_MS = 8000
# What to check when a stream gives no frame (edge run's and edge doctor's sentence)
STREAM_HINT = ("check the URL (path, port), that this machine reaches the camera over the network, "
               "and the user name and password in the URL")


class OpenCVCamera(LiveSource):
    """A USB camera (VideoCapture(N)) or an RTSP/HTTP stream URL."""

    def __init__(self, device: int | str, width: int = 640, height: int = 480, fps: float = 15.0, max_backoff_s: float = 30.0):
        super().__init__(max_backoff_s)
        self.device, self.width, self.height, self.fps = device, width, height, fps
        self.asked_size = (width, height)
        self.cap = None

    def _open(self):
        cv2 = import_cv2()
        if isinstance(self.device, int):
            cap = cv2.VideoCapture(self.device)
        else:  # FFmpeg's own limit is 30 s, in which a stop is not seen (systemd kills at 20)
            cap = cv2.VideoCapture(self.device, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                                                                 cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])
        if isinstance(self.device, int) and cap.isOpened():
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        opened = cap.isOpened()
        if not opened or not cap.read()[0]:
            cap.release()
            if isinstance(self.device, int):
                hint = usb_camera_hint(self.device, opened)
            else:
                hint = STREAM_HINT
            raise UserError(f"Cannot open {self.describe()}: {hint}.")
        self.cap = cap

    def _read(self):
        ok, img = self.cap.read() if self.cap is not None else (False, None)
        return img if ok else None

    def _release(self):
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def _is_stream(self) -> bool:
        return not isinstance(self.device, int)

    def describe(self):
        # a stream URL's user:password or ?token= never reaches the log, /status or an error
        return f"camera {self.device}" if isinstance(self.device, int) else f"stream {redact_url(self.device)}"


DEV = Path("/dev")
V4L_SYS = Path("/sys/class/video4linux")


def usb_camera_hint(index: int, opened: bool) -> str:
    """Why USB camera `index` gives no frame, from what its device node says: missing, not
    this user's to use, or there but giving nothing (in use, or not a camera)."""
    node = DEV / f"video{index}"
    if not node.exists():
        nodes = _video_nodes()
        if nodes:
            return f"there is no {node} ({nodes}); check the cable"
        # At a terminal this is likely someone trying edge on a laptop; the service's journal
        # on a Pi without its camera should say the cable, not a recording.
        elsewhere = "; to try edge without one, run it on a recording: edge run --source VIDEO" if (
            sys.stdin is not None and sys.stdin.isatty()) else ""
        return f"there is no {node}, nor any other video device: no camera is connected; check the cable{elsewhere}"
    if not os.access(node, os.R_OK | os.W_OK):
        return (f"this user may not use {node} (permission denied): add the user to the group video "
                "(sudo usermod -aG video $USER, then log in again)")
    if opened:
        return (f"{node} opens but gives no frame: another program is probably using it (sudo fuser -v {node}; "
                "stop the queue-mood service first: sudo systemctl stop queue-mood)")
    return (f"{node} is there but is not a camera OpenCV can open (a USB camera's second node carries metadata, "
            f"and the Pi's codec nodes are not cameras; {_video_nodes() or 'no video devices'})")


def _video_nodes() -> str:
    """The video devices here with their names, e.g. "video devices: video0 HD Pro Webcam C920"; ''
    when there are none."""
    try:
        nodes = sorted(V4L_SYS.iterdir(), key=lambda p: (len(p.name), p.name))
    except OSError:
        nodes = []
    if not nodes:
        return ""
    named = [f"{p.name} {(_read_text(p / 'name') or '?')}" for p in nodes[:8]]
    return "video devices: " + ", ".join(named) + (", ..." if len(nodes) > 8 else "") + "; pass the index of one"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


# libcamera's AfMode values (control_ids_core.yaml: AfModeManual = 0, AfModeContinuous = 2) and
# AeFlickerMode's FlickerManual (1), as plain integers: picamera2 hands them to libcamera as they
# are, and edge need not import libcamera.
AF_MANUAL, AF_CONTINUOUS = 0, 2
FLICKER_MANUAL = 1


class PiCamera(LiveSource):
    """The Raspberry Pi camera via picamera2.

    The detector reads the main stream in colour ("RGB888" arrives in BGR order, as OpenCV
    expects): BlazeFace finds faces markedly better in colour than in the lores Y plane,
    and at 640x480 the main stream costs the Pi little, so the lores stream is not used.
    """

    def __init__(self, index: int = 0, width: int = 640, height: int = 480, fps: float = 15.0, max_backoff_s: float = 30.0,
                 focus_m: float = 0.0, mains_hz: int = 0):
        super().__init__(max_backoff_s)
        self.index, self.width, self.height, self.fps = index, width, height, fps
        self.asked_size = (width, height)
        self.focus_m = focus_m  # [source] focus_m: 0 = continuous autofocus, else the distance to hold the focus at
        self.focus: str | None = None  # the focus in use, known once opened; None: a fixed-focus lens
        self.mains_hz = mains_hz  # [source] mains_hz: the lights' mains frequency (0: not set)
        self.flicker: str | None = None  # the flicker avoidance in use, known once opened
        self._settings_said = False
        self.cam = None
        self.read_timeout_s = max(1.0, 3.0 / fps)  # a few frame intervals, and well under stall_s at 15 fps
        self._job = None  # a capture that timed out and is still queued in picamera2

    @staticmethod
    def available(index: int) -> bool:
        """picamera2 importable and a libcamera camera `index` present."""
        try:
            from picamera2 import Picamera2  # imported here: importing it probes devices
        except ImportError:
            return False
        try:
            return index < len(Picamera2.global_camera_info())
        except Exception:  # libcamera errors surface as several types
            return False

    def _open(self):
        from picamera2 import Picamera2

        cam = None
        try:
            cam = Picamera2(self.index)
            advertised = cam.camera_controls
            controls = {"FrameRate": self.fps, **self._focus_controls(advertised), **self._flicker_controls(advertised)}
            cfg = cam.create_video_configuration(main={"size": (self.width, self.height), "format": "RGB888"},
                                                 controls=controls, buffer_count=2)
            cam.configure(cfg)
            cam.start()
        except Exception as exc:
            if cam is not None:  # it holds the camera: left open, every later open fails "busy"
                _close_quietly(cam)
            raise UserError(f"Cannot start Pi camera {self.index} ({exc}); check the ribbon cable and "
                            "`rpicam-hello --list-cameras`.") from exc
        self.cam = cam
        self._say_settings()

    def _focus_controls(self, advertised: dict) -> dict:
        """The focus controls for a camera advertising `advertised` (picamera2's camera_controls).
        Picamera2, unlike rpicam-apps, leaves a motorized lens (Camera Module 3) where the tuning
        file puts it, whatever the queue's distance; so: continuous autofocus, or the lens held at
        focus_m (LensPosition is in dioptres, 1 / metres). A fixed-focus lens (v1, v2, HQ) gets
        none: picamera2 refuses a control its camera does not advertise."""
        if "AfMode" not in advertised:
            self.focus = None
            return {}
        if self.focus_m > 0:
            self.focus = f"focus fixed at {self.focus_m:g} m"
            return {"AfMode": AF_MANUAL, "LensPosition": 1.0 / self.focus_m}
        self.focus = "continuous autofocus"
        return {"AfMode": AF_CONTINUOUS}

    def _flicker_controls(self, advertised: dict) -> dict:
        """Lights on 50 or 60 Hz mains flicker at twice that; an exposure that is not a whole number of
        those periods leaves dark bands across the frame (a rolling shutter), across faces too.
        libcamera's flicker avoidance keeps the exposure to whole periods (AeFlickerPeriod, in
        microseconds). A libcamera too old to advertise it gets none (picamera2 would refuse it)."""
        if not self.mains_hz or "AeFlickerMode" not in advertised:
            self.flicker = None
            return {}
        self.flicker = f"{self.mains_hz} Hz light flicker avoided"
        return {"AeFlickerMode": FLICKER_MANUAL, "AeFlickerPeriod": round(1e6 / (2 * self.mains_hz))}

    def _say_settings(self) -> None:
        """The focus and flicker avoidance in use, once (not at every reopen)."""
        if self._settings_said:
            return
        self._settings_said = True
        if self.flicker:
            log.info("Pi camera %d: %s ([source] mains_hz = %d)", self.index, self.flicker, self.mains_hz)
        elif self.mains_hz:
            log.warning("Pi camera %d: this libcamera has no flicker avoidance (AeFlickerMode), so [source] mains_hz = "
                        "%d does nothing; update the Pi (sudo apt full-upgrade) for it", self.index, self.mains_hz)
        if self.focus:
            log.info("Pi camera %d: %s ([source] focus_m = %g)", self.index, self.focus, self.focus_m)
        elif self.focus_m > 0:
            log.warning("Pi camera %d has a fixed-focus lens (no focus motor), so [source] focus_m = %g does nothing "
                        "there; focus it by turning the lens itself (README: Placing the camera)",
                        self.index, self.focus_m)

    def _read(self):
        # A capture waits with a timeout: one without waits forever when the camera stops
        # delivering, and the grabber never gets to reopen it. capture_array(wait=False) gives
        # a job in every picamera2 0.3.x (a numeric wait came only later); a job that timed out
        # stays queued there, so the next read waits on it rather than queueing another.
        if self.cam is None:  # a reopen failed
            return None
        job = self._job if self._job is not None else self.cam.capture_array("main", wait=False)
        self._job = None
        try:
            img = job.get_result(timeout=self.read_timeout_s)
        except (TimeoutError, FutureTimeout):  # the same class from Python 3.11
            self._job = job
            raise TimeoutError(f"no frame within {self.read_timeout_s:g} s") from None
        return np.ascontiguousarray(img[:, :, :3])

    def _release(self):
        self._job = None
        if self.cam is not None:
            _close_quietly(self.cam)
            self.cam = None

    def describe(self):
        said = "".join(f", {x}" for x in (self.focus, self.flicker) if x)  # for edge doctor's camera line
        return f"Pi camera {self.index} (picamera2, {self.width}x{self.height}{said})"


class _ChosenAtOpen(LiveSource):
    """A camera whose device is chosen again at each open (self.inner, made by _open)."""

    inner: LiveSource | None = None

    def _read(self):
        return self.inner._read() if self.inner is not None else None

    def _release(self):
        if self.inner is not None:
            inner, self.inner = self.inner, None
            inner._release()


class BootCamera(_ChosenAtOpen):
    """Camera N waited for: the Pi camera or a USB camera, chosen again at each open, since at
    boot libcamera may not list a Pi camera yet (chosen once, the service would wait on the
    wrong one for ever)."""

    def __init__(self, index: int, width: int = 640, height: int = 480, fps: float = 15.0, max_backoff_s: float = 30.0,
                 focus_m: float = 0.0, mains_hz: int = 0):
        super().__init__(max_backoff_s)
        self.args = (index, width, height, fps, max_backoff_s)
        self.asked_size, self.fps, self.pi_settings = (width, height), fps, (focus_m, mains_hz)
        self.inner: LiveSource | None = None
        self._pi: PiCamera | None = None  # kept from open to open: it says its focus once, not at every reopen
        self._usb_said = False  # the same for a USB camera's unread Pi settings

    def _open(self):
        if PiCamera.available(self.args[0]):
            self._pi = inner = self._pi or PiCamera(*self.args, *self.pi_settings)
        else:
            inner = OpenCVCamera(*self.args)
            if not self._usb_said and (said := usb_ignores(self.args[0], self.pi_settings)):
                log.warning("%s.", said)
            self._usb_said = True
        inner._open()
        self.inner = inner

    def describe(self):
        return self.inner.describe() if self.inner is not None else f"camera {self.args[0]}"


class DeviceCamera(_ChosenAtOpen):
    """A USB camera named by its device: /dev/video2, or a udev link such as
    /dev/v4l/by-id/usb-...-video-index0. The name is looked up again at each open: a camera
    replugged while this process still held its node comes back as another /dev/videoN, and the
    link is there only while the camera is plugged in (at boot, or unplugged, it is waited for as
    a camera, not refused as a missing recording). Opened by OpenCV: the path names a V4L2 device,
    never a Pi camera's libcamera index."""

    def __init__(self, path: str, width: int = 640, height: int = 480, fps: float = 15.0, max_backoff_s: float = 30.0):
        super().__init__(max_backoff_s)
        self.path, self.args = path, (width, height, fps, max_backoff_s)
        self.asked_size, self.fps = (width, height), fps

    def _open(self):
        index = video_device_index(self.path)
        if index is None:
            raise UserError(f"Cannot open camera {self.path}: it is not there; is the camera plugged in? "
                            "(ls /dev/v4l/by-id lists the USB cameras that are)")
        inner = OpenCVCamera(index, *self.args)
        inner._open()
        self.inner = inner

    def describe(self):
        return f"camera {self.path}"


def _close_quietly(cam) -> None:
    """Stop and close a Picamera2; close() runs even when stop() fails (a wedged camera), as
    only close() lets the camera go."""
    with contextlib.suppress(Exception):
        cam.stop()
    with contextlib.suppress(Exception):
        cam.close()


def open_source(camera: int | None, path: str, width: int = 640, height: int = 480, fps: float = 15.0,
                every: int = 1, max_backoff_s: float = 30.0, realtime: bool = False,
                wait_for_camera: bool = False, rotate: int = 0, focus_m: float = 0.0, mains_hz: int = 0) -> Source:
    """The source the arguments name: --camera N or --source PATH_or_URL; realtime: a recording
    plays at its own rate (cameras and streams are live anyway); wait_for_camera: a camera or
    stream that cannot be opened at the start is waited for (LiveSource.wait_first); rotate:
    degrees clockwise every frame is turned by; focus_m, mains_hz: a Pi camera's focus and flicker
    avoidance (PiCamera)."""
    source = _source(camera, path, width, height, fps, every, max_backoff_s, realtime, wait_for_camera,
                     (focus_m, mains_hz))
    source.rotate = rotate
    return source


def video_device_index(path: str) -> int | None:
    """N when path names the camera device /dev/videoN, directly or through a link such as
    /dev/v4l/by-id/usb-...-video-index0 (a name that survives replugging): a live camera, opened
    and watched as --camera N is, not a recording that ends at its first failed read."""
    real = Path(os.path.realpath(expand_path(path)))
    name = real.name
    if real.parent == DEV and name.startswith("video") and name[5:].isdigit():
        return int(name[5:])
    return None


def names_camera_device(path: str) -> bool:
    """Whether path names a camera's device: /dev/videoN, a link to one, or a path under /dev that
    is not there (a /dev/v4l/by-id link of a camera unplugged, or not yet found at boot)."""
    if "://" in path:
        return False
    if video_device_index(path) is not None:
        return True
    p = expand_path(path)
    return p.is_relative_to(DEV) and not os.path.lexists(p)


def _source(camera, path, width, height, fps, every, max_backoff_s, realtime, wait_for_camera, pi_settings) -> Source:
    live: LiveSource
    if camera is None and path and "://" not in path:  # path is read only when camera is unset (SourceConfig.path)
        if not names_camera_device(path):
            source = _recording(path, fps, every)
            source.realtime = realtime
            return source
        live = DeviceCamera(path, width, height, fps, max_backoff_s)
        if said := usb_ignores(path, pi_settings):
            log.warning("%s.", said)
    elif camera is None and path:  # a stream URL
        live = OpenCVCamera(path, width, height, fps, max_backoff_s)
    elif camera is None:
        raise UserError("No source given; set [source] camera or path in the config (--config FILE), or pass "
                        "--camera N or --source PATH_or_URL.")
    elif wait_for_camera:
        live = BootCamera(camera, width, height, fps, max_backoff_s, *pi_settings)
    elif PiCamera.available(camera):
        live = PiCamera(camera, width, height, fps, max_backoff_s, *pi_settings)
    else:
        live = OpenCVCamera(camera, width, height, fps, max_backoff_s)
        if said := usb_ignores(camera, pi_settings):
            log.warning("%s.", said)
    live.wait_first = wait_for_camera
    return live


def usb_ignores(index: int | str, pi_settings: tuple) -> str:
    """What to say when camera `index` turned out a USB camera and the config sets what only a Pi
    camera reads ([source] focus_m, mains_hz; config.MODE_KEYS has the rest of such keys); "" if none."""
    given = [f"{key} = {value:g}" for key, value in zip(("focus_m", "mains_hz"), pi_settings) if value]
    if not given:
        return ""
    return (f"Camera {index} is a USB camera, not a Pi camera: [source] {' and '.join(given)} is read by a Pi camera "
            "only, so it has no effect; remove the line (a USB camera's own controls: v4l2-ctl --list-ctrls)")


def _recording(path: str, fps: float, every: int) -> Source:
    p = expand_path(path)
    try:
        is_dir, exists = p.is_dir(), p.exists()
    except OSError as exc:  # under a folder this user may not enter (the service's /var/lib/queue-mood)
        raise UserError(f"Source {path} cannot be reached ({exc.strerror}); run as a user who may read it, or make "
                        "it and its folders readable.") from exc
    if is_dir:
        return ImageFolderSource(str(p), fps=fps, every=every)
    if not exists:
        what = "is a link to a file that does not exist" if p.is_symlink() else "does not exist"
        raise UserError(f"Source {path} {what}; pass a video file, an image folder or an rtsp:// URL.")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource.single(p)
    return VideoFileSource(str(p), every=every)
