"""`edge convert`: full-integer post-training quantization with a representative dataset."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.card import (CARD_NAME, DEFAULT_MAX_DROP_PP, DEFAULT_MIN_AGREEMENT, FAILED_DIR, INT8_MODEL, ModelCard, Quant,
                       sha256_file)
from edge.errors import UserError
from edge.files import held_by, held_by_this_process
from edge.paths import check_out_folder
from edge.pipeline.cost import model_macs
from edge.labels import LABELS
from edge.pipeline.preprocess import CropRule
from train.data import Split, check_out_outside_data, load_dataset, train_val
from train.keras_io import load_keras
from train.provenance import record_command, versions

# Measured by running each detector on 1,000 FER2013 val faces upscaled onto a background
# (benchmarks/detector_recall.py): median crop side / box side and centre offset in box
# heights. BlazeFace full-range (the default): 1.25 (IQR 1.14-1.38), -0.05; Haar: 1.04,
# +0.01. Convert copies them into every model card; edge reads them only from there.
DEFAULT_CROP_RULE = CropRule(scale=1.25, shift_y=-0.05)
CROP_BY_DETECTOR = {"blazeface": DEFAULT_CROP_RULE, "haar": CropRule(scale=1.04, shift_y=0.0)}


@dataclass
class ConvertSettings:
    model: str  # run folder or .keras file
    data: str
    out: str
    calibration_size: int = 500
    max_drop_pp: float = DEFAULT_MAX_DROP_PP
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    float16: bool = False
    seed: int = 1234
    split: str | None = None  # parity split; default val
    votes: str | None = None  # FER+ votes; default: the training run's, when it trained on them


def resolve_keras_model(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        if not (p / "model.keras").is_file() and (p / INT8_MODEL).is_file():  # the folder a convert wrote
            p = p / INT8_MODEL
        else:
            p = p / "model.keras"
    if is_tflite(p):  # else "not a .keras zip archive", as if the file were damaged
        raise UserError(f"{p} is already a TFLite model: use it with `edge run --model` or "
                        "`edge eval`; `edge convert` takes the run folder from `edge train` or its .keras file.")
    if not p.is_file():
        raise UserError(f"No Keras model at {p}; pass a run folder from `edge train` or a .keras file.")
    return p


@dataclass
class Source:
    sha256: str  # of the Keras file's bytes that were loaded
    trainer: str  # "PID n" when a process (edge train) held the run as it was loaded, else ""


def load_snapshot(keras_path: Path):
    """(the Keras model, Source): a run still training replaces model.keras at each better epoch,
    during a conversion too, so the card must name the bytes loaded, not those there at its end
    (edge bundle tells a changed model by that hash)."""
    trainer = held_by(keras_path.parent)
    trainer = "" if trainer == f"PID {os.getpid()}" else trainer  # this convert's own --out is the run folder
    while True:
        sha = sha256_file(keras_path)
        model = load_keras(keras_path)
        if sha256_file(keras_path) == sha:  # else an epoch was written while it loaded: load that one
            return model, Source(sha, trainer)


def is_tflite(path: Path) -> bool:
    """A file named .tflite, or one that begins as TFLite models do (a FlatBuffer with the identifier TFL3)."""
    if not path.is_file():  # nor a pipe, which open() would wait on
        return False
    if path.suffix == ".tflite":
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(8)[4:] == b"TFL3"
    except OSError:
        return False


def representative(split: Split, n: int, seed: int) -> np.ndarray:
    """n training crops drawn stratified by class with a fixed seed, as float32 raw pixels:
    exactly what the classifier is fed at inference (the rescale sits inside the model)."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(split.y, minlength=len(LABELS))
    share = np.maximum(1, np.round(n * counts / counts.sum())).astype(int)
    idx = []
    for c in range(len(LABELS)):
        cls = np.flatnonzero(split.y == c)
        idx.extend(rng.choice(cls, min(share[c], len(cls)), replace=False))
    idx = np.array(idx)
    rng.shuffle(idx)
    return split.x[idx].astype(np.float32)[..., None]


def to_tflite(model, kind: str, calib: np.ndarray | None = None) -> bytes:
    """Keras -> SavedModel -> TFLite. kind: int8 (full integer), float32 or float16."""
    import tensorflow as tf

    tmp = tempfile.mkdtemp(prefix="qm-export-")
    try:
        model.export(tmp, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if kind == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # no Flex ops
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        elif kind == "float16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        try:
            return conv.convert()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"TFLite {kind} conversion failed ({first}); the model must use TFLite builtin ops only.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def io_quant(tflite_path: Path) -> tuple[Quant, Quant]:
    from edge.pipeline.runtime import load_interpreter

    it = load_interpreter(tflite_path)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    return Quant(float(i["quantization"][0]), int(i["quantization"][1])), Quant(float(o["quantization"][0]), int(o["quantization"][1]))


def trained_settings(run_dir: Path) -> dict:
    """The settings the run beside the Keras model trained with ({} for a lone .keras file)."""
    settings = run_dir / "train_settings.json"
    if not settings.exists():
        return {}
    try:
        saved = json.loads(settings.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{settings} cannot be read ({type(exc).__name__}); it says how the run split and labelled "
                        "its images: restore it, or convert a copy of the .keras file on its own.") from exc
    return saved if isinstance(saved, dict) else {}


def warn_if_other_data(ds, run_dir: Path, data: str) -> None:
    """The run's held-out images are only known on the dataset it trained on: on other images
    the gate and the calibration may score images the model learnt, and pass where it would not."""
    record = run_dir / "data.json"
    try:
        trained_on = json.loads(record.read_text()).get("fingerprint") if record.is_file() else None
    except (OSError, ValueError, AttributeError):
        trained_on = None
    if trained_on and trained_on != ds.fingerprint:
        print(f"WARNING: the images in {data} differ from those {run_dir} trained on (fingerprint {ds.fingerprint}, "
              f"was {trained_on}): the parity gate and the calibration may score images the model trained on; "
              "convert with the run's own --data.", file=sys.stderr, flush=True)


def run_splits(ds, run_dir: Path, seed: int) -> tuple[Split, Split, str]:
    """(train, val, where val came from) as the run split the dataset: with its --seed and
    validation share, so that on a dataset without a val split of its own the parity gate and
    the calibration see only images the run held out, never ones it trained on."""
    saved = trained_settings(run_dir)
    return train_val(ds, saved.get("val_fraction", 0.1), saved.get("seed", seed))


def run_votes(s: ConvertSettings, run_dir: Path):
    """The FER+ votes to score and calibrate with: --votes, else those the run trained on, else none."""
    from train.votes import find_votes, read_votes

    trained = trained_settings(run_dir)
    if s.votes or trained.get("labels") == "ferplus":
        return read_votes(find_votes(s.data, s.votes or trained.get("votes")))
    return None


def check_settings(s: ConvertSettings) -> None:
    """Refuse, in one sentence, a budget or size no conversion can use, before any work."""
    if not 0 <= s.min_agreement <= 1:
        raise UserError(f"--min-agreement is a fraction from 0 to 1 (0.97 for 97%), got {s.min_agreement}.")
    if not (math.isfinite(s.max_drop_pp) and s.max_drop_pp >= 0):  # nan would pass every drop: no gate at all
        raise UserError(f"--max-drop is an accuracy drop in percentage points, 0 or more (0.5 for half a point), "
                        f"got {s.max_drop_pp}.")
    if s.calibration_size < 1:
        raise UserError(f"--calibration-size must be at least 1, got {s.calibration_size}.")
    check_out_folder(s.out)
    check_not_around_cwd(s.out)
    check_out_outside_data(s.out, s.data)
    if s.votes:  # a wrong path fails now, not after both conversions
        from train.votes import find_votes

        find_votes(s.data, s.votes)


def check_not_around_cwd(out) -> None:
    """A passing conversion replaces --out as a whole (the old folder is removed after the
    swap): the folder you are in, one holding it, or your home folder is refused."""
    p, cwd = Path(out).expanduser().resolve(), Path.cwd().resolve()
    what = ("the folder you are in" if p == cwd else "a folder that holds the one you are in" if p in cwd.parents
            else "your home folder" if p == Path.home().resolve() else "")
    if what:
        raise UserError(f"--out {out} is {what}: a conversion replaces its --out folder as a whole, so give it "
                        "a folder of its own (e.g. --out runs/mymodel/int8).")


# What a conversion writes into --out: a passing one replaces all of them at once, so a file
# an earlier conversion wrote (a float16 model, a failed/ attempt) never sits beside a new model.
OUTPUTS = {INT8_MODEL, "model_float32.tflite", "model_float16.tflite", CARD_NAME, "parity.json", "parity.md", FAILED_DIR}
SCRATCH = ".convert-"  # a conversion's working folder beside --out (and, from older versions, inside it)


def run(s: ConvertSettings) -> tuple[dict, list[str]]:
    """Convert, write the card and the parity report; returns (parity, failures). The files
    are made in a scratch folder beside s.out. When the parity gate passes, the scratch folder
    gets s.out's other files too (hard links) and the two folders trade places in one rename,
    so a kill leaves either the old model or the new one whole, never a mix; a failed gate's
    files go to s.out/failed (FAILED_DIR), so a failed conversion never replaces a passing model.
    A conversion into an s.out that another one is writing is refused before any work."""
    check_settings(s)
    # An --out that is a link (models/current -> v7): the folder it points to is replaced and the
    # link kept (swapping the link itself left a real folder there and the link under a scratch
    # name, which rmtree refuses, for ever).
    out = Path(s.out).resolve()
    with held_by_this_process(out):
        keras_path = resolve_keras_model(s.model).resolve()
        votes = run_votes(s, keras_path.parent)  # the run's votes file gone: said now, not after both conversions
        model, source = load_snapshot(keras_path)
        ds = load_dataset(s.data, size=int(model.input_shape[1]))
        warn_if_other_data(ds, keras_path.parent, s.data)
        remove_scratch(out)
        earlier = converted_from(out)
        scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}{SCRATCH}", dir=out.parent))  # parent made by the hold
        scratch.chmod(out_mode(out))  # mkdtemp's 0700 would become --out's (or failed/'s) mode
        try:
            parity, failures = _convert(s, model, keras_path, ds, scratch, votes, source)
            if failures:
                out.mkdir(exist_ok=True)
                shutil.rmtree(out / FAILED_DIR, ignore_errors=True)  # the last failed attempt's files, not a mix
                os.rename(scratch, out / FAILED_DIR)
            else:
                _carry_over(out, scratch)
                _switch(scratch, out)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # after a switch: the previous folder
        notes = [f"parity gate failed: files in {FAILED_DIR}/"] if failures else []
        if not failures and earlier and earlier != str(keras_path):  # another run's model is gone: say which
            notes.append(f"{out} held the model converted from {earlier}; it is replaced by this one, converted "
                         f"from {keras_path}.")
            print(notes[-1], flush=True)
        record_command(out, notes=notes)
    return parity, failures


def out_mode(out: Path) -> int:
    """The mode the scratch folder takes before it becomes --out: --out's own, else what mkdir
    gives under the umask (mkdtemp's 0700 would hide the model from every other user, a service
    reading it among them)."""
    try:
        return stat.S_IMODE(out.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o777 & ~umask


def converted_from(out: Path) -> str | None:
    """The Keras model the conversion in `out` was made from, as its card says (None: no card
    there, or one without that record)."""
    try:
        return str(json.loads((out / CARD_NAME).read_text())["metrics"]["converted_from"]["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_scratch(out: Path) -> None:
    """Scratch folders a killed conversion left beside --out (or inside it, from older versions);
    and --out itself put back if a kill came between _switch's two renames. Called only while
    this process holds --out (run), so no live conversion is using any of them."""
    previous = _previous(out)
    if previous.is_dir() and not out.exists():
        os.rename(previous, out)
        print(f"{out} was being replaced when a conversion was stopped; put back the model it held.", flush=True)
    shutil.rmtree(previous, ignore_errors=True)
    for f in [*out.parent.glob(f".{out.name}{SCRATCH}*"), *(out.glob(f"{SCRATCH}*") if out.is_dir() else [])]:
        shutil.rmtree(f, ignore_errors=True)


def _previous(out: Path) -> Path:
    """Where _switch's two-rename fallback keeps --out between its renames (never a scratch name)."""
    return out.with_name(f".{out.name}.previous")


def _carry_over(out: Path, new: Path) -> None:
    """Hard-link (copy where links fail) every file of `out` that a conversion does not write
    into `new`: command.txt, and a run's own files when --out is the run folder. A link stays a
    link (a link to a dataset folder was copied whole, as a folder, and the link lost)."""
    if not out.is_dir():
        return
    for f in out.iterdir():
        if f.name in OUTPUTS or f.name.startswith(SCRATCH):
            continue
        if f.is_dir() and not f.is_symlink():
            shutil.copytree(f, new / f.name, copy_function=_link, symlinks=True)
        else:
            _link(f, new / f.name)


def _link(src, dst) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _switch(new: Path, out: Path) -> None:
    """Put `new` at `out` in one step: a rename when `out` does not exist yet, else an atomic
    exchange of the two folders (Linux renameat2), after which `new` holds the old folder. Where
    the exchange is unsupported, two renames through _previous(out): a kill between them leaves
    the old folder whole there, and the next conversion puts it back (remove_scratch)."""
    if not out.exists():
        os.rename(new, out)
        return
    if not _exchange(new, out):
        previous = _previous(out)
        os.rename(out, previous)
        os.rename(new, out)
        os.rename(previous, new)  # removed with the scratch folder


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); False where the system lacks it."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def gate_failures(parity: dict, s: ConvertSettings, split_name: str) -> list[str]:
    """Why the int8 model fails the parity gate, one line each; [] when it passes."""
    failures = []
    if parity["drop_pp"] > s.max_drop_pp:
        one = 100 / parity["images"]  # a gate finer than one image judges chance, not quantization
        few = (f" (one image of these {parity['images']} is {one:.2f} pp: judge on more {split_name} images, or "
               f"set --max-drop to at least {one:.2f})") if one > s.max_drop_pp else ""
        failures.append(f"int8 accuracy drop {parity['drop_pp']:.2f} pp exceeds --max-drop {s.max_drop_pp} pp{few}")
    if parity["agreement"] < s.min_agreement:
        failures.append(f"Keras/int8 top-1 agreement {parity['agreement']:.4f} is below --min-agreement {s.min_agreement}")
    return failures


def _convert(s: ConvertSettings, model, keras_path: Path, ds, out: Path, votes, source: Source) -> tuple[dict, list[str]]:
    from convert.parity import parity_report, write_parity

    size = int(model.input_shape[1])
    train_split, val_split, held_out = run_splits(ds, keras_path.parent, s.seed)
    split_name = "val"
    if s.split:
        from train.data import eval_split

        val_split, split_name = eval_split(ds, s.split, warn=False)
        if split_name == "train":
            print("WARNING: --split train judges the parity gate and fits flip averaging and the temperature on the "
                  "images the model trained on, so its scores are optimistic; leave --split out to use the run's "
                  "validation images.", file=sys.stderr, flush=True)
    if not len(val_split.y):  # Keras's predict on no images is an UnboundLocalError traceback
        where = f"its {split_name} split" if s.split else f"the run's held-out images ({held_out})"
        raise UserError(f"{s.data} leaves no images to judge the conversion on: {where} are none; "
                        "give a dataset with a val folder, or more images per class.")
    calib = representative(train_split, s.calibration_size, s.seed)
    files = {"int8": out / INT8_MODEL, "float32": out / "model_float32.tflite"}
    if s.float16:
        files["float16"] = out / "model_float16.tflite"
    # A line as each stage starts: after the images are decoded, a full FER2013 conversion runs
    # over a minute with nothing else on the terminal.
    for kind, path in files.items():
        calibrating = f", calibrating on {len(calib)} training images" if kind == "int8" else ""
        print(f"Converting to {kind}{calibrating} ...", flush=True)
        path.write_bytes(to_tflite(model, kind, calib if kind == "int8" else None))

    in_q, out_q = io_quant(files["int8"])
    run_dir = keras_path.parent
    # A report written while this converts (the training ended) describes a later model than the one loaded.
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (
        (run_dir / "metrics.json").exists() and not source.trainer) else {}
    if not metrics and (run_dir / "train_settings.json").exists() and not (run_dir / "soup.json").exists():
        # A run still training refuses --resume (its folder is held): say to wait for it instead.
        state = (f"it is still training ({source.trainer} is writing it), so this converts its best epoch so far and "
                 "the card gets no accuracy or macro_f1; convert it again when its training has ended"
                 if source.trainer else
                 "its training did not finish (or its report was cut short), so the card gets no accuracy or "
                 "macro_f1; finish it with `edge train --resume` first")
        print(f"WARNING: {run_dir} has no metrics.json: {state}.", file=sys.stderr, flush=True)
    if "ferplus_majority" in metrics:
        metrics["ferplus_majority_accuracy"] = metrics["ferplus_majority"]["accuracy"]
    card = ModelCard(
        labels=list(LABELS), input_size=size, color="gray", crop=DEFAULT_CROP_RULE,
        crop_by_detector=dict(CROP_BY_DETECTOR),
        input_quant=in_q, output_quant=out_q, model_file=files["int8"].name,
        model_sha256=sha256_file(files["int8"]), source_sha256=source.sha256,
        architecture=model.name, macs_per_invoke=model_macs(files["int8"])["total"],
        metrics={k: metrics[k] for k in ("accuracy", "ferplus_majority_accuracy", "macro_f1", "parameters") if k in metrics},
    )
    # Where the model came from: the Keras file, and the images that calibrated and judged it.
    card.metrics["converted_from"] = {"model": str(keras_path), "data": str(Path(s.data).resolve()),
                                      "data_fingerprint": ds.fingerprint, "parity_split": split_name,
                                      **({} if s.split else {"validation": held_out})}
    print(f"Checking parity on {len(val_split)} {split_name} images (Keras, {', '.join(files)}) ...", flush=True)
    parity = parity_report(model, files, card, val_split, len(calib), votes)
    parity = {"converted_from": card.metrics["converted_from"], "calibration_requested": s.calibration_size,
              "versions": versions(), **parity}  # the converter's build decides the int8 file
    failures = gate_failures(parity, s, split_name)
    parity["budget"] = {"max_drop_pp": s.max_drop_pp, "min_agreement": s.min_agreement, "passed": not failures,
                        "failures": failures}
    card.parity = {k: parity[k] for k in ("images", "keras_accuracy", "int8_accuracy", "drop_pp", "agreement")}
    card.parity.update(passed=not failures, max_drop_pp=s.max_drop_pp, min_agreement=s.min_agreement)
    print(f"Choosing flip averaging and fitting the temperature on the {len(val_split)} {split_name} images ...", flush=True)
    calib_rep = calibrate(files["int8"], card, val_split, votes)
    card.flip_average, card.temperature = calib_rep["flip_average"], calib_rep["temperature"]
    card.metrics["calibration"] = calib_rep
    parity["calibration"] = calib_rep
    card.save(out)
    write_parity(out, parity)
    return parity, failures


def calibrate(int8_path: Path, card: ModelCard, split: Split, votes=None) -> dict:
    """Flip averaging and temperature, chosen and fitted on `split` through the edge classifier
    (against the FER+ votes when the model was trained on them)."""
    from convert.calibrate import calibration_report
    from edge.pipeline.classifier import Classifier

    clf = Classifier(int8_path, card, calibrated=False)
    plain = clf.predict_many(split.x)
    flipped = clf.predict_many(split.x[:, :, ::-1])
    soft = majority = None
    if votes is not None:
        from train.votes import majority_labels, soft_targets

        soft = soft_targets(split.names, split.y, votes)[0]  # doubtful images keep their folder label here
        majority = majority_labels(split.names, votes)
    return calibration_report(plain, (plain + flipped) / 2, split.y, clf.prob_floor, soft, majority)
