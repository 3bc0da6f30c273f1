"""The compute budget: what the configured schedule costs on this board, timed here."""

from __future__ import annotations

import time

from edge.ops.doctor.context import OK, WARN, _Context

BUDGET_FACES = 4  # the queue the compute budget is stated for (README, Compute budget)
BUDGET_WARN = 0.8  # of one core: above it a busy queue may cost frames


def _median_s(fn, n: int = 7) -> float:
    fn()  # the first call allocates
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[n // 2]


def recording_frames(source) -> tuple[int, int, float | None]:
    """The recording [source] path names, opened as edge run opens it: its first frame's width and
    height, as [source] rotate turns it, and a video file's own rate (None for images, paced by
    [source] fps). UserError: what edge run would say of it (a file OpenCV cannot decode, a folder
    without images, one without a frame)."""
    from edge.errors import UserError
    from edge.files import no_core_dumps
    from edge.pipeline.sources import VideoFileSource, open_source

    # The doctor reads this frame itself, not in a child as a camera's: a store's recording is
    # customers' faces, which a crash or Ctrl-\ must not copy into a core file (as edge analyze).
    no_core_dumps()
    recording = open_source(None, source.path, fps=source.fps, rotate=source.rotate)
    try:
        first = next(iter(recording), None)
    finally:
        recording.close()
    if first is None:
        raise UserError(f"Source {source.path} opens but gives no frame; pass a video file, an image folder or an "
                        "rtsp:// URL.")
    h, w = first.image.shape[:2]
    return w, h, recording.fps if isinstance(recording, VideoFileSource) else None


def frames_timed(source) -> tuple[int, int, float, str]:
    """The frames the budget is stated for: (width, height, fps, whose). A recording keeps its own
    frame size ([source] width and height are a camera's), and a video file its own rate too
    ([source] fps paces an image folder), so they are read from its first frame, as [source]
    rotate turns it; whose then names it (" (queue.mp4's 1280x720)"). A camera's frames are
    [source] width x height, turned by rotate too: on its side, 640x480 is costed as 480x640."""
    from edge.config import source_kind
    from edge.errors import UserError

    if source_kind(source) == "recording":
        try:
            w, h, fps = recording_frames(source)
        except (UserError, OSError):
            pass  # the camera check says what is wrong with it
        else:
            if fps is not None:
                return w, h, fps, f" ({source.path}'s {w}x{h})"
            return w, h, source.fps, f" ({source.path}'s {w}x{h} images)"
    if source.rotate in (90, 270):
        return source.height, source.width, source.fps, f" ({source.width}x{source.height} turned on its side)"
    return source.width, source.height, source.fps, ""


def check_budget(ctx: _Context, cfg) -> None:
    """What the configured schedule costs on this board with BUDGET_FACES faces in view: one
    detector call and one face's classification timed here, times the calls a second the
    schedule makes at most (decoding the camera's frames not counted)."""
    import numpy as np

    from edge.config import resolve_model
    from edge.pipeline.classifier import Classifier
    from edge.pipeline.detectors.regions import configured_detector
    from edge.pipeline.schedule import budget_rates

    try:
        clf = Classifier(resolve_model(cfg), num_threads=cfg.model.threads)
        det = configured_detector(cfg)
    except Exception:  # noqa: BLE001 - the model and detector checks above say why
        return
    w, h, fps, whose = frames_timed(cfg.source)
    wins = det.windows_for(w, h) if hasattr(det, "windows_for") else [(0, 0, w, h)]
    inner = getattr(det, "inner", det)
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x0, y0, x1, y1 = wins[0]
    size = clf.card.input_size
    try:
        det_s = _median_s(lambda: inner.detect(frame[y0:y1, x0:x1]))
        mirror = [False] if cfg.schedule.flip_in_turn else None  # one image a face, or the face and its mirror
        face_s = _median_s(lambda: clf.predict(np.full((1, size, size), 128, np.uint8), mirror))
    except Exception as exc:  # noqa: BLE001
        ctx.add("compute budget", WARN, f"could not time the detector and classifier: {type(exc).__name__}: {exc}")
        return
    calls, faces = budget_rates(cfg.schedule, fps, BUDGET_FACES, len(wins))
    share = calls * det_s + faces * face_s
    detail = (f"about {share:.0%} of one core at {fps:g} fps{whose} with {BUDGET_FACES} faces, timed on this board: detector "
              f"{det_s * 1e3:.1f} ms a call x {calls:.0f} calls/s at most, classifier {face_s * 1e3:.1f} ms a face x "
              f"{faces:.1f} faces/s; camera decoding not counted")
    if cfg.schedule.flip_in_turn and cfg.schedule.flip_both_share < 1:
        detail += (f" (the classifier's part doubles while the queue's negative share is at least "
                   f"{cfg.schedule.flip_both_share:g} or an alert is raised: both images then)")
    if share > BUDGET_WARN:
        ctx.add("compute budget", WARN, f"{detail}: more than this board's core can spare; try schedule.classify_hz = 1 "
                                        "or schedule.detect_hz = 3 or schedule.flip_both_share = 1 (README: Compute budget)")
    else:
        ctx.add("compute budget", OK, detail)
