import csv

import numpy as np
import pytest

from edge.errors import UserError
from edge.labels import LABELS
from tests.conftest import pattern_image, run_cli, write_class_folders
from train.data import load_dataset, stratified_split, train_val

KAGGLE_ALT = ("angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")


def test_class_folders_both_naming_schemes(tmp_path, cache_env):
    write_class_folders(tmp_path / "a" / "train", 3, names=LABELS, suffix=".jpg")
    write_class_folders(tmp_path / "b" / "train", 3, names=KAGGLE_ALT, suffix=".png")
    write_class_folders(tmp_path / "b" / "test", 2, names=KAGGLE_ALT, suffix=".png")
    a, b = load_dataset(tmp_path / "a"), load_dataset(tmp_path / "b")
    assert a.splits["train"].counts() == [3] * 7
    assert b.splits["train"].counts() == [3] * 7 and b.splits["test"].counts() == [2] * 7
    assert a.splits["train"].x.shape[1:] == (48, 48) and a.splits["train"].x.dtype == np.uint8


def test_flat_class_folder_any_size_and_colour(tmp_path, cache_env):
    import cv2

    (tmp_path / "happy").mkdir()
    cv2.imwrite(str(tmp_path / "happy" / "big.png"), np.full((200, 150, 3), (10, 200, 30), np.uint8))
    ds = load_dataset(tmp_path)
    assert ds.layout == "class-folders" and ds.splits["all"].x.shape == (1, 48, 48)
    assert ds.splits["all"].y.tolist() == [LABELS.index("happy")]


def test_csv_reader_maps_codes_and_usage(tmp_path, cache_env):
    rng = np.random.default_rng(0)
    p = tmp_path / "fer2013.csv"
    with p.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for code, usage in [(0, "Training"), (4, "Training"), (6, "PublicTest"), (3, "PrivateTest")]:
            w.writerow([code, " ".join(map(str, pattern_image(code, rng).ravel())), usage])
        w.writerow([2, "1 2 3", "Training"])  # not a square image
    ds = load_dataset(p)
    assert [LABELS[i] for i in ds.splits["train"].y] == ["angry", "sad"]
    assert [LABELS[i] for i in ds.splits["val"].y] == ["neutral"]
    assert [LABELS[i] for i in ds.splits["test"].y] == ["happy"]
    assert len(ds.skipped) == 1 and "fer2013.csv:6" in ds.skipped[0][0]


def _write_csv(path, rows):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        w.writerows(rows)
    return path


def test_a_csv_row_must_hold_one_48x48_image(tmp_path, cache_env):
    """A 4-pixel row was read as a 2x2 image and 2209 values as a 47x47 one, each scored as a face."""
    face = " ".join(map(str, pattern_image(0, np.random.default_rng(0)).ravel()))
    ds = load_dataset(_write_csv(tmp_path / "fer2013.csv", [
        [0, face, "Training"], [1, "1 2 3 4", "Training"], [2, " ".join(["7"] * 47 * 47), "Training"],
        [3, " ".join(["300"] + ["7"] * 2303), "Training"]]), progress=False)
    assert len(ds.splits["train"]) == 1
    assert [why for _, why in ds.skipped] == ["bad row (4 pixel values, not 48x48 = 2304)",
                                             "bad row (2209 pixel values, not 48x48 = 2304)",
                                             "bad row (pixel values outside 0-255)"]


def test_a_csv_whose_every_row_is_bad_says_why_in_csv_terms(tmp_path, cache_env):
    """It said "check the folder layout and file types" and gave no reason."""
    p = _write_csv(tmp_path / "fer2013.csv", [[0, "1 2 3 4", "Training"], [9, "1", "Training"]])
    with pytest.raises(UserError) as exc:
        load_dataset(p, progress=False)
    assert str(exc.value) == (f"No usable rows in {p}: all 2 were skipped (fer2013.csv:2: bad row (4 pixel values, not "
                              "48x48 = 2304); fer2013.csv:3: bad row (emotion 9 is not a FER2013 code 0-6)); each row "
                              "needs an emotion code 0-6 and 48x48 = 2304 pixel values 0-255.")


def test_corrupt_files_are_skipped_and_listed(tmp_path, cache_env):
    write_class_folders(tmp_path / "train", 2)
    (tmp_path / "train" / "sad" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "train" / "fear" / "empty.png").write_bytes(b"")
    ds = load_dataset(tmp_path)
    assert len(ds.splits["train"]) == 14
    assert sorted(f for f, _ in ds.skipped) == ["train/fear/empty.png", "train/sad/broken.jpg"]


def test_cache_is_used_and_invalidated_when_content_changes(tmp_path, cache_env):
    write_class_folders(tmp_path / "train", 2)
    first = load_dataset(tmp_path)
    assert load_dataset(tmp_path).fingerprint == first.fingerprint
    cached = list((cache_env / "datasets").glob(f"{first.fingerprint}.npz"))
    assert cached, "decoded arrays were not cached"
    write_class_folders(tmp_path / "train", 3, seed=9)  # overwrites 2 files per class, adds 1
    changed = load_dataset(tmp_path)
    assert changed.fingerprint != first.fingerprint and len(changed.splits["train"]) == 21


def test_a_cache_write_that_fails_leaves_no_half_written_file(tmp_path, monkeypatch):
    import os

    from edge import files

    write_class_folders(tmp_path / "ds" / "train", 2)

    def disk_full(fd, data):  # part of the file is written, then the disk is full
        os.write(fd, data[:1000])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "write_all", disk_full)
    ds = load_dataset(tmp_path / "ds", cache_dir=tmp_path / "cache")  # loading goes on without the cache
    assert len(ds.splits["train"]) == 2 * len(LABELS)
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_split_is_stratified_disjoint_and_fixed(tmp_path, cache_env):
    write_class_folders(tmp_path / "train", 20)
    ds = load_dataset(tmp_path)
    tr, va, how = train_val(ds, 0.25, seed=3)
    assert "stratified" in how
    assert va.counts() == [5] * 7 and tr.counts() == [15] * 7
    assert not set(tr.names) & set(va.names)
    _, again = stratified_split(ds.splits["train"], 0.25, 3)
    assert again.names == va.names


def test_dataset_val_split_is_used_when_present(synthetic_dataset, cache_env):
    tr, va, how = train_val(load_dataset(synthetic_dataset))
    assert how == "dataset val split" and len(va) == 84 and len(tr) == 280


@pytest.mark.parametrize("make, needle", [
    (lambda p: None, "does not exist"),
    (lambda p: (p / "train" / "grumpy").mkdir(parents=True), "Unknown class folder"),
    (lambda p: (p / "train" / "happy").mkdir(parents=True), "empty"),
])
def test_bad_data_is_one_sentence_and_nonzero_exit(tmp_path, make, needle):
    root = tmp_path / "data"
    if make(root) is None and not root.exists() and needle != "does not exist":
        root.mkdir()
    r = run_cli("train", "--data", root, "--out", tmp_path / "run", "--epochs", "1",
                env={"QUEUE_MOOD_CACHE": str(tmp_path / "c")})
    assert r.returncode == 2, r.stderr
    err = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1 and needle in err[0], r.stderr
    assert "Traceback" not in r.stderr


def test_load_dataset_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a CSV"):
        (tmp_path / "x.txt").write_text("hi")
        load_dataset(tmp_path / "x.txt")


def test_a_valid_folder_is_the_val_split_and_other_folders_are_named(tmp_path, cache_env, capsys):
    write_class_folders(tmp_path / "train", 2)
    write_class_folders(tmp_path / "valid", 1)
    write_class_folders(tmp_path / "holdout", 1)
    ds = load_dataset(tmp_path, progress=False)
    assert len(ds.splits["val"]) == 7 and set(ds.splits) == {"train", "val"}
    assert f"Ignoring holdout in {tmp_path}" in capsys.readouterr().err


def test_a_csv_that_is_not_utf8_is_one_sentence_naming_the_line(tmp_path, cache_env):
    p = tmp_path / "fer2013.csv"
    p.write_bytes(b"emotion,pixels,Usage\n0,1 2 3 4,Training\n3,1 2 3 4,Public\xe9Test\n")
    with pytest.raises(UserError, match=r"fer2013.csv is not UTF-8 text \(bad byte on line 3\); save it as UTF-8\."):
        load_dataset(p, only_split="val")  # the Usage pass meets the byte first
    with pytest.raises(UserError, match="is not UTF-8 text"):
        load_dataset(p)


def test_eval_names_the_images_it_could_not_read(tmp_path, cache_env, shipped_model):
    from edge.metrics import format_report
    from train.evaluate import evaluate

    write_class_folders(tmp_path / "val", 1)
    (tmp_path / "val" / "sad" / "broken.jpg").write_bytes(b"not a jpeg at all")
    rep = evaluate(str(shipped_model), str(tmp_path))
    assert rep["images"] == 7 and rep["skipped"] == [{"file": "val/sad/broken.jpg", "reason": "not a readable image"}]
    assert "skipped 1 that could not be read (not in these figures): val/sad/broken.jpg (not a readable image)" in \
        format_report(rep)


def test_eval_names_the_csv_rows_it_could_not_read(tmp_path, cache_env, shipped_model):
    from edge.metrics import format_report
    from train.evaluate import evaluate

    rng = np.random.default_rng(0)
    p = tmp_path / "fer2013.csv"
    with p.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        w.writerow([3, " ".join(map(str, pattern_image(3, rng).ravel())), "PublicTest"])
        w.writerow([9, " ".join(map(str, pattern_image(3, rng).ravel())), "PublicTest"])  # no such class
        w.writerow([3, "1 2 3", "PublicTest"])  # three pixels
    rep = evaluate(str(shipped_model), str(p))
    assert rep["images"] == 1 and rep["skipped"] == [
        {"file": "fer2013.csv:3", "reason": "bad row (emotion 9 is not a FER2013 code 0-6)"},
        {"file": "fer2013.csv:4", "reason": "bad row (3 pixel values, not 48x48 = 2304)"}]
    assert "skipped 2 that could not be read" in format_report(rep)


def test_macro_f1_is_over_the_classes_that_occur(tmp_path, cache_env, shipped_model):
    """A dataset without some classes (a store's own, with no disgust folder) scored perfectly has
    macro-F1 1, not 5/7; a class predicted but absent still counts, as an F1 of 0."""
    from edge.metrics import classification_report
    from train.evaluate import evaluate

    y = np.array([0, 3, 4, 5, 6] * 4)
    perfect = np.eye(len(LABELS))[y]
    assert classification_report(y, perfect)["macro_f1"] == 1.0
    wrong = perfect.copy()
    wrong[0] = np.eye(len(LABELS))[1]  # one angry face called disgust, a class with no face
    f1 = classification_report(y, wrong)["per_class"]
    assert classification_report(y, wrong)["macro_f1"] == pytest.approx(
        np.mean([f1[n]["f1"] for n in ("angry", "disgust", "happy", "neutral", "sad", "surprise")]))
    five = [n for n in LABELS if n not in ("disgust", "fear")]
    data = write_class_folders(tmp_path / "five", 3, seed=5, names=five)
    rep = evaluate(str(shipped_model), str(data))
    occur = [n for n, m in rep["per_class"].items() if m["support"] or m["precision"]]
    assert rep["macro_f1"] == pytest.approx(np.mean([rep["per_class"][n]["f1"] for n in occur]))
