"""Boxes, labels and the mood line drawn on a frame: the one drawing used by `edge run
--preview` and `edge analyze --annotate` (both off by default: frames never leave memory)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from edge.errors import UserError, import_cv2

CONFIRMED, TENTATIVE, MOOD, ROI = (0, 255, 0), (0, 200, 255), (0, 0, 255), (255, 160, 0)  # BGR
# the containers OpenCV's FFmpeg writer puts mp4v into; another name makes it fall back to its
# image-sequence writer, which fails as if there were no encoder
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
# mp4v (MPEG-4 part 2) takes sides up to 8190 pixels, in even numbers (an odd one is cut); 16, a
# macroblock, is the least kept here (a 1x1 first frame failed to open the writer at all)
MIN_SIDE, MAX_SIDE = 16, 8190


def draw(image: np.ndarray, result, labels: list[str], roi=()) -> np.ndarray:
    """A BGR copy of `image` with every face of `result` (green once its track counts as a
    person, orange before), the `roi` (source.roi, where the detector looks; blue) and a line
    with the time, faces, negative share and alert state."""
    cv2 = import_cv2()
    img = _bgr(image)
    if roi:  # to aim the camera: the queue must stand inside it
        from edge.pipeline.detectors.regions import Roi

        x0, y0, x1, y1 = Roi.from_list(roi).pixels(img.shape[1], img.shape[0])
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), ROI, 2)
        cv2.putText(img, "roi", (x0 + 4, y1 - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, ROI, 1, cv2.LINE_AA)
    for tr in result.faces:
        x, y, w, h = tr.box.rounded()
        color = CONFIRMED if tr.confirmed else TENTATIVE
        cv2.rectangle(img, (x, y), (x + w, y + h), color, 2)
        cv2.putText(img, f"#{tr.id} {labels[tr.top]} {tr.confidence:.2f}", (x, max(12, y - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    cv2.putText(img, f"t={result.t_s:.1f}s  faces {len(result.faces)}  negative {100 * result.mood.negative_share:.0f}%"
                f"  alert: {result.alert_state}", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, MOOD, 2)
    return img


def _bgr(image: np.ndarray) -> np.ndarray:
    """A BGR copy of a BGR, grayscale or BGRA frame (the video writer skips every 4-channel one)."""
    cv2 = import_cv2()
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) if image.shape[2] == 4 else image.copy()


def check_video_path(path: str | Path) -> None:
    """A file OpenCV's mp4v writer can open; else one sentence saying why (the writer itself
    only fails to open, as if it had no encoder)."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise UserError(f"The annotated video {path} is a folder; give a file name ending in .mp4 "
                        f"(e.g. {path / 'preview.mp4'}).")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"The annotated video {path} {f'ends in {path.suffix}' if path.suffix else 'has no extension'}; "
                        f"give a file name ending in {', '.join(VIDEO_SUFFIXES[:-1])} or {VIDEO_SUFFIXES[-1]} "
                        f"(e.g. {path.with_suffix('.mp4').name}).")
    if not folder.is_dir():
        why = f"the folder {folder} does not exist"
    elif not os.access(folder, os.W_OK | os.X_OK):
        why = f"the folder {folder} cannot be written (read-only, or another user's)"
    elif path.exists() and not os.access(path, os.W_OK):
        why = "the file is read-only"
    else:
        return
    raise UserError(f"Cannot write the annotated video {path}: {why}; choose a file in a folder you can write to.")


def private(path: Path) -> None:
    """The video file made new and readable by its owner only before OpenCV writes it (which
    keeps the mode): it shows customers' faces, and a umask of 022 would let every local user read it.
    A file that was there is replaced, not emptied: whoever opened it while others could read it
    would read the new video through it. A file that cannot be made private (another user's, a
    folder only root may write into) is one sentence, its contents untouched."""
    real = os.path.realpath(path)  # a link's file is the one written, as OpenCV follows the link
    tmp = None
    try:
        fd = os.open(real, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a file that was there keeps its mode through O_CREAT; another user's refuses
        finally:
            os.close(fd)
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(real).name}.", dir=Path(real).parent)  # mode 0600
        os.close(fd)
        os.replace(tmp, real)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise UserError(f"Cannot write the annotated video {path} ({exc.strerror}); choose a file of your own in a "
                        "folder you can write to.") from exc


def video_size(w: int, h: int) -> tuple[int, int]:
    """The size of a video whose first frame is w x h: that, within what mp4v takes (a 1x1 image
    or a 12000x9000 photo first in a folder failed as if there were no encoder, losing the whole
    analysis); later frames of another size are letterboxed into it."""
    scale = min(1.0, MAX_SIDE / max(w, h))
    return tuple(min(MAX_SIDE, max(MIN_SIDE, int(side * scale) // 2 * 2)) for side in (w, h))


class AnnotatedVideo:
    """An mp4 of annotated frames; frames of another size are letterboxed into the first one's."""

    def __init__(self, path: str | Path, fps: float, labels: list[str], roi=()):
        self.path, self.fps, self.labels, self.roi = Path(path), fps, list(labels), list(roi)
        check_video_path(self.path)
        self.writer = None
        self.size: tuple[int, int] | None = None
        self._t0: float | None = None  # the first frame's time, with add(t_s=...)
        self._place = 0  # the frames of the timeline written up to: with add(t_s=...), gaps held (see add)

    def add(self, image: np.ndarray, result, t_s: float | None = None) -> None:
        """One annotated frame; given its time `t_s`, held for as many frames as have passed since
        the last one (a live source's frames the loop had no time for were dropped, and the video
        played too fast), for a second at most (a camera that was down resumes the timeline)."""
        cv2 = import_cv2()
        img = draw(image, result, self.labels, self.roi)
        if self.writer is None:
            self.size = video_size(img.shape[1], img.shape[0])
            private(self.path)
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise UserError(f"Cannot write {self.path}: this OpenCV build has no mp4v encoder; "
                                "leave out --preview / --annotate.")
        if (img.shape[1], img.shape[0]) != self.size:
            s = min(self.size[0] / img.shape[1], self.size[1] / img.shape[0])
            small = cv2.resize(img, (max(1, int(img.shape[1] * s)), max(1, int(img.shape[0] * s))))
            canvas = np.zeros((self.size[1], self.size[0], 3), np.uint8)
            y0, x0 = (self.size[1] - small.shape[0]) // 2, (self.size[0] - small.shape[1]) // 2
            canvas[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
            img = canvas
        repeats, place = 1, self._place + 1
        if t_s is not None:
            self._t0 = t_s if self._t0 is None else self._t0
            due = round((t_s - self._t0) * self.fps) + 1  # frames the video should hold up to this one
            repeats = min(max(1, due - self._place), max(1, round(self.fps)))
            place = max(due, self._place + repeats)  # after a longer gap the timeline moves on without it
        for _ in range(repeats):
            self.writer.write(img)
        self._place = place

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
