"""Dataset readers: class-folder layouts (two Kaggle naming schemes) and fer2013.csv.

Every reader returns uint8 size x size grayscale arrays and integer labels in edge.labels
order. Files that cannot be decoded, are not images or sit outside any class folder are skipped
and listed, never dropped silently.
Decoded arrays are cached under a key made from the source's bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.files import write_atomic
from edge.labels import FER2013_CSV_CODES, LABELS, label_index
from edge.paths import not_a_file
from edge.pipeline.preprocess import resize_square, to_gray
from edge.pipeline.sources import IMAGE_SUFFIXES

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "publictest": "val", "test": "test", "privatetest": "test"}
CSV_USAGE = {"training": "train", "publictest": "val", "privatetest": "test"}
CACHE_VERSION = 2  # 2: a CSV row must hold 48x48 pixels (1 read any square as an image)
EVAL_ORDER = ("val", "all", "test", "train")  # the split `edge eval` scores unless told (its --split help says so)
FER2013_SIZE = 48  # FER2013's native crop side; the model card carries the model's input size onward


@dataclass
class Split:
    x: np.ndarray  # (n, size, size) uint8
    y: np.ndarray  # (n,) int64, indices into LABELS
    names: list[str]  # file (or csv row) each sample came from

    def __len__(self) -> int:
        return len(self.y)

    def counts(self) -> list[int]:
        return np.bincount(self.y, minlength=len(LABELS)).tolist()

    def take(self, idx: np.ndarray) -> "Split":
        return Split(self.x[idx], self.y[idx], [self.names[i] for i in idx])


@dataclass
class Dataset:
    source: str
    layout: str
    fingerprint: str
    splits: dict[str, Split]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def summary(self) -> dict:
        return {
            "source": self.source,
            "layout": self.layout,
            "fingerprint": self.fingerprint,
            "splits": {k: {"images": len(v), "per_class": dict(zip(LABELS, v.counts()))} for k, v in self.splits.items()},
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
        }


def default_cache_dir() -> Path:
    return Path(os.environ.get("QUEUE_MOOD_CACHE", Path.home() / ".cache" / "queue-mood"))


def load_dataset(path: str | os.PathLike, size: int = FER2013_SIZE, cache_dir: Path | None = None, progress: bool = True,
                 only_split: str | tuple[str, ...] | None = None) -> Dataset:
    """Read a dataset folder or fer2013.csv, from the cache when its bytes are unchanged.
    only_split: read just that split (a tuple: the first of them the dataset has), leaving
    the others undecoded; `edge eval` scores one split of FER2013's 35k images."""
    path = Path(path)
    if not path.is_dir() and (why := not_a_file(path)):  # a pipe (<(cat fer2013.csv)) is read only once
        raise UserError(f"Dataset path {path} {why}; pass a folder of class folders, a folder of split folders, or "
                        "fer2013.csv.")
    keep, unused = None, []
    with readable_dataset(path):  # every file is read here first, for the fingerprint
        if path.is_file():
            if path.suffix.lower() != ".csv":
                raise UserError(f"{path} is a file but not a CSV; pass a dataset folder or fer2013.csv.")
            layout, files = "fer2013-csv", None
            if only_split:
                keep = _choose_split(only_split, _csv_splits(path), path)
            fingerprint = _hash_files([path], path.parent, size, keep)
        else:
            layout, files, unused = _scan_folders(path)
            if only_split:
                keep = _choose_split(only_split, {s for s, _, _ in files}, path)
                files = [f for f in files if f[0] == keep]
                unused = [u for u in unused if u[0] == keep]
            fingerprint = _hash_files([f for _, _, f in files], path, size)

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    ds = _read_cache(cache_dir, fingerprint, path, layout)
    if ds is None:
        if files is None:
            splits, skipped = _read_csv(path, size, progress, keep)
        else:
            splits, skipped = _decode_folders(path, files, size, progress)
        if not any(len(s) for s in splits.values()):
            raise no_images(path, files is None, skipped + [(f, why) for _, f, why in unused])
        ds = Dataset(str(path), layout, fingerprint, splits, skipped)
        _write_cache(cache_dir, ds)
    # Files the scan passed over are not in the fingerprint, so they are listed afresh, never from the cache.
    ds.skipped = [(f, why) for _, f, why in unused] + ds.skipped
    return ds


def check_out_outside_data(out: str | os.PathLike, data: str | os.PathLike, flag: str = "--out") -> None:
    """One sentence, before any work, for an --out (or another folder written, named by flag) inside
    --data: a run's or a conversion's folder there is read as a class of its own (a folder of class
    folders) by the next command on that dataset (its --resume, edge eval, edge convert), and a
    conversion into --data itself would replace the dataset's folder."""
    d, o = Path(data).resolve(), Path(out).resolve()
    if d == o or d in o.parents:
        raise UserError(f"{flag} {out} {'is' if d == o else 'lies inside'} --data {data}, where the next command that "
                        f"reads the dataset would take its files for images or classes; pass {flag} a folder outside "
                        "it.")


@contextmanager
def readable_dataset(path: Path):
    """A folder or file of the dataset this user may not read (unpacked by root with a tight
    umask) as one sentence for the whole dataset, not a PermissionError for the first of many."""
    try:
        yield
    except PermissionError as exc:
        raise UserError(f"Cannot read {exc.filename} ({exc.strerror}); make the dataset readable by the user that "
                        f"runs edge (e.g. sudo chmod -R a+rX {path}).") from exc


def no_images(path: Path, is_csv: bool, skipped: list[tuple[str, str]]) -> UserError:
    """Every file or CSV row skipped: the sentence says why, from the first few."""
    why = "; ".join(f"{f}: {r}" for f, r in skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
    if is_csv:
        return UserError(f"No usable rows in {path}: all {len(skipped)} were skipped ({why}); each row needs an emotion "
                         f"code 0-6 and {FER2013_SIZE}x{FER2013_SIZE} = {FER2013_SIZE**2} pixel values 0-255.")
    return UserError(f"No readable images in {path}: all {len(skipped)} files were skipped ({why}); check the folder "
                     "layout and file types.")


def _scan_folders(root: Path) -> tuple[str, list[tuple[str, int, Path]], list[tuple[str, str, str]]]:
    """[(split, label, file)] for a folder of class folders or of split folders, and the files
    passed over as [(split, file, why)]: images outside any class folder, files of other types."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise UserError(f"{root} holds no folders; expected class folders ({', '.join(LABELS)}) or split folders (train, val, test).")
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_NAMES]
    if split_dirs:
        layout = "split-folders"
        ignored = [d.name for d in subdirs if d not in split_dirs]
        if ignored:  # a split under another name would silently be left out of training or validation
            print(f"Ignoring {', '.join(ignored)} in {root}: split folders are named train, val (or valid, "
                  "validation) and test.", file=sys.stderr, flush=True)
        groups = [(SPLIT_NAMES[d.name.lower()], d) for d in split_dirs]
    else:
        layout = "class-folders"
        groups = [("all", root)]
    files, unused, notes = [], [], []
    kinds = ", ".join(IMAGE_SUFFIXES)
    for split, folder in groups:
        where = folder.relative_to(root).as_posix() if folder != root else "the dataset folder"
        cls_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        # A loose image has no label; a dataset root also holds votes files and READMEs, a split folder only images.
        loose = [f for f in sorted(folder.iterdir()) if f.is_file() and not f.name.startswith(".")
                 and (folder != root or f.suffix.lower() in IMAGE_SUFFIXES)]
        unused += [(split, str(f.relative_to(root)), "outside any class folder, so it has no label") for f in loose]
        if loose:
            notes.append(f"the {len(loose)} file(s) in {where}, which has no class folders" if not cls_dirs else
                         f"{len(loose)} file(s) in {where} outside its class folders")
        other = 0
        for cls_dir in cls_dirs:
            label = label_index(cls_dir.name)
            if label is None:
                raise UserError(
                    f"Unknown class folder '{cls_dir}'; class folders must be named {', '.join(LABELS)} "
                    "(or disgusted, fearful, surprised)."
                )
            for f in sorted(cls_dir.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    files.append((split, label, f))
                elif f.is_file() and not f.name.startswith("."):
                    unused.append((split, str(f.relative_to(root)), f"not an image file ({kinds})"))
                    other += 1
        if other:
            notes.append(f"{other} file(s) in {where}'s class folders that are not images")
    if not files:
        raise UserError(f"No images ({kinds}) in class folders under {root}" + (f" ({'; '.join(notes)})" if notes else "")
                        + f"; the dataset is empty: put each image in the folder of its class ({', '.join(LABELS)}).")
    if notes:  # training and validation go on without them, so it is said where it is seen
        print(f"Left out of {root}: {'; '.join(notes)}. Labels come from class folders ({', '.join(LABELS)}) and "
              f"images are {kinds}; each file left out is listed as skipped.", file=sys.stderr, flush=True)
    return layout, files, unused


def _choose_split(wanted: str | tuple[str, ...], have: set[str], source: Path) -> str:
    for name in (wanted,) if isinstance(wanted, str) else wanted:
        if name in have:
            return name
    raise UserError(f"{source} has no '{wanted if isinstance(wanted, str) else wanted[0]}' split; "
                    f"it has: {', '.join(sorted(have)) or 'none'}.")


@contextmanager
def open_csv(path: Path):
    """A CSV file opened as UTF-8 text; a byte that is not UTF-8 is one sentence naming its line,
    not a UnicodeDecodeError (the file is decoded in chunks, so the error's offset is no help)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: Excel starts its UTF-8 with a byte-order mark
            yield fh
    except UnicodeDecodeError as exc:
        with path.open("rb") as fh:  # UTF-8 never has a newline byte inside a character
            line = next((n for n, raw in enumerate(fh, 1) if not _is_utf8(raw)), "?")
        raise UserError(f"{path} is not UTF-8 text (bad byte on line {line}); save it as UTF-8.") from exc


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _csv_splits(path: Path) -> set[str]:
    """The splits fer2013.csv's Usage column names (a cheap pass: no pixels are parsed)."""
    with open_csv(path) as fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "usage" not in cols:
            return {"train"}
        return {CSV_USAGE.get((row.get(cols["usage"]) or "Training").strip().lower(), "?") for row in reader} - {"?"}


def _hash_files(files: list[Path], root: Path, size: int, tag: str | None = None) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}:{size}".encode() + (f":{tag}".encode() if tag else b""))
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:24]


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", leave=False)


def _decode_folders(root, files, size, progress):
    import cv2

    per_split: dict[str, tuple[list, list, list]] = {}
    skipped = []
    for split, label, f in _progress(files, len(files), "decoding images", progress):
        raw = np.fromfile(f, dtype=np.uint8)
        img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
        if img is None:
            skipped.append((str(f.relative_to(root)), "not a readable image"))
            continue
        if img.dtype != np.uint8:
            img = cv2.convertScaleAbs(img, alpha=255.0 / max(1, int(img.max())))
        xs, ys, names = per_split.setdefault(split, ([], [], []))
        xs.append(resize_square(to_gray(img), size))
        ys.append(label)
        names.append(str(f.relative_to(root)))
    splits = {
        s: Split(np.stack(xs) if xs else np.zeros((0, size, size), np.uint8), np.array(ys, np.int64), names)
        for s, (xs, ys, names) in per_split.items()
    }
    return splits, skipped


def _read_csv(path: Path, size: int, progress: bool, keep: str | None = None):
    per_split: dict[str, tuple[list, list, list]] = {}
    skipped = []
    with open_csv(path) as fh:
        reader = csv.DictReader(fh)
        need = {"emotion", "pixels"}
        if not reader.fieldnames or not need <= {c.strip().lower() for c in reader.fieldnames}:
            raise UserError(f"{path} is not fer2013.csv: it needs the columns emotion,pixels[,Usage], found {reader.fieldnames}.")
        cols = {c.strip().lower(): c for c in reader.fieldnames}
        for lineno, row in enumerate(_progress(reader, None, "reading csv", progress), start=2):
            where = f"{path.name}:{lineno}"
            if keep and CSV_USAGE.get((row.get(cols.get("usage", ""), "") or "Training").strip().lower()) != keep:
                continue  # another split: its pixels are never parsed
            try:
                code = int(row[cols["emotion"]])
                if code not in FER2013_CSV_CODES:
                    raise ValueError(f"emotion {code} is not a FER2013 code 0-6")
                name = FER2013_CSV_CODES[code]
                pixels = np.array((row[cols["pixels"]] or "").split(), dtype=np.int64)  # None: the row is short
                if pixels.size != FER2013_SIZE**2:  # FER2013's crops are all 48x48; another count is another image
                    raise ValueError(f"{pixels.size} pixel values, not {FER2013_SIZE}x{FER2013_SIZE} = {FER2013_SIZE**2}")
                if pixels.min() < 0 or pixels.max() > 255:
                    raise ValueError("pixel values outside 0-255")
            except (KeyError, ValueError, TypeError) as exc:
                skipped.append((where, f"bad row ({exc})"))
                continue
            usage = (row.get(cols.get("usage", ""), "") or "Training").strip().lower()
            split = CSV_USAGE.get(usage)
            if split is None:
                skipped.append((where, f"unknown Usage '{usage}'"))
                continue
            xs, ys, names = per_split.setdefault(split, ([], [], []))
            xs.append(resize_square(pixels.reshape(FER2013_SIZE, FER2013_SIZE).astype(np.uint8), size))
            ys.append(LABELS.index(name))
            names.append(where)
    splits = {s: Split(np.stack(xs), np.array(ys, np.int64), names) for s, (xs, ys, names) in per_split.items()}
    return splits, skipped


def _cache_path(cache_dir: Path, fingerprint: str) -> Path:
    return cache_dir / "datasets" / f"{fingerprint}.npz"


def _read_cache(cache_dir, fingerprint, path, layout) -> Dataset | None:
    p = _cache_path(cache_dir, fingerprint)
    if not p.exists():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            splits = {s: Split(z[f"{s}_x"], z[f"{s}_y"], meta["names"][s]) for s in meta["splits"]}
    except Exception:  # a damaged cache is rebuilt, not trusted
        return None
    return Dataset(str(path), layout, fingerprint, splits, [tuple(s) for s in meta["skipped"]])


def _write_cache(cache_dir: Path, ds: Dataset) -> None:
    p = _cache_path(cache_dir, ds.fingerprint)
    arrays = {}
    for s, sp in ds.splits.items():
        arrays[f"{s}_x"], arrays[f"{s}_y"] = sp.x, sp.y
    meta = {"splits": list(ds.splits), "names": {s: sp.names for s, sp in ds.splits.items()}, "skipped": ds.skipped}
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    try:  # whole or not at all: a full disk keeps no half-written copy (FER2013: 75 MB)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(p, buf.getvalue())
    except OSError:
        pass  # caching is an optimisation; a read-only home or a full disk must not stop training


def stratified_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(rest, held) with `fraction` of every class held out; fixed by the seed."""
    rng = np.random.default_rng(seed)
    held = []
    for c in range(len(LABELS)):
        idx = np.flatnonzero(split.y == c)
        rng.shuffle(idx)
        held.extend(idx[: int(round(len(idx) * fraction))])
    held_mask = np.zeros(len(split), bool)
    held_mask[held] = True
    return split.take(np.flatnonzero(~held_mask)), split.take(np.flatnonzero(held_mask))


def train_val(ds: Dataset, val_fraction: float = 0.1, seed: int = 1234) -> tuple[Split, Split, str]:
    """Training and validation splits, before any augmentation.

    The dataset's own val split (PublicTest) when it has one, else a stratified split
    with a fixed seed. A test split is never used here.
    """
    if "val" in ds.splits and "train" in ds.splits:
        return ds.splits["train"], ds.splits["val"], "dataset val split"
    base = ds.splits.get("train") or ds.splits.get("all")
    if base is None:
        raise UserError(f"{ds.source} has no training images (found splits: {', '.join(ds.splits)}).")
    rest, held = stratified_split(base, val_fraction, seed)
    return rest, held, f"stratified {val_fraction:.0%} of train, seed {seed}"


def warn_absent_classes(ds: Dataset, split: Split, name: str, held_out: str | None = None) -> None:
    """Name the classes without an image in the split a report scores (a store's dataset with no
    disgust/ folder, or an empty one) and where they are missing: the report's row for each says
    only support 0, easily read as a class the model never gets right. held_out: how the split
    was held out of split `name` (then a class needs more images there)."""
    absent = [c for c, n in zip(LABELS, split.counts()) if n == 0]
    if not absent or not len(split):
        return
    parts = Path(split.names[0]).parts  # split/class/file, class/file, or a CSV's row
    place = (f"the {name} rows of {ds.source}" if ds.layout == "fer2013-csv" else
             str(Path(ds.source) / parts[0]) if len(parts) > 2 else ds.source)
    them, names = "it" if len(absent) == 1 else "them", ", ".join(absent)
    where = (f"the validation images ({held_out}) have" if held_out else
             f"{place} {'have' if ds.layout == 'fer2013-csv' else 'has'}")  # the rows have, a folder has
    print(f"WARNING: {where} no image of {names}, so the report scores {them} on nothing (support 0); add images of "
          f"{names} to {place} to measure {them}.", file=sys.stderr, flush=True)


def eval_split(ds: Dataset, which: str | None = None, warn: bool = True) -> tuple[Split, str]:
    """The split `edge eval` measures: the named one, else the first of EVAL_ORDER the dataset has;
    `warn`: say so when that is the train split (edge convert says more in its own words)."""
    if which and which not in ds.splits:
        raise UserError(f"{ds.source} has no '{which}' split; it has: {', '.join(ds.splits)}.")
    name = which or next((n for n in EVAL_ORDER if n in ds.splits), None)
    if name is None:
        raise UserError(f"{ds.source} has no images to evaluate.")
    if name == "train" and warn:  # asked for or not, the figures may be on the very images the model learnt
        how = "its train split is scored" if which else "it has only a train split, so that is scored"
        print(f"WARNING: {ds.source}: {how}; these may be the images the model was trained on, which flatters it: "
              "score a val or test folder it did not see for a fair figure.", file=sys.stderr, flush=True)
    return ds.splits[name], name
