"""`edge train`: fit an architecture from the registry, with checkpoints and resume."""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.card import CARD_NAME
from edge.errors import UserError
from edge.files import held_by_this_process, temporary_name, write_atomic
from edge.labels import LABELS
from edge.paths import check_out_folder, check_readable, not_a_file
from train.archs import ARCHITECTURES, DEFAULT_ARCH
from train.augment import AugmentConfig, augment_batch, mix_batch
from train.data import FER2013_SIZE, Split, load_dataset, train_val

INPUT_SIZE = FER2013_SIZE  # models are trained at the dataset's native size
SGD_MOMENTUM = 0.9
SGD_DECAY_SCALE = 0.05


@dataclass
class TrainSettings:
    data: str
    out: str
    arch: str = DEFAULT_ARCH
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adamw"  # adamw | adam (the seed_cnn baseline recipe) | sgd (Nesterov momentum)
    schedule: str = "cosine"  # cosine (with warm-up) | constant
    weight_decay: float = 0.01
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    class_weight_power: float = 0.5  # 0: none, 1: fully inverse-frequency
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    patience: int = 12
    seed: int = 1234
    val_fraction: float = 0.1
    weights: str | None = None  # mobilenetv2 only: "imagenet" or None
    augment: bool = True
    steps_per_epoch: int | None = None  # for quick tests
    init_from: str | None = None  # a .keras model whose weights start this run (a second cosine cycle)
    labels: str = "folder"  # folder: the dataset's class folders | ferplus: the FER+ vote distribution
    votes: str | None = None  # ferplus_votes.csv (found beside or above --data when not given)
    folder_weight: float = 0.0  # ferplus: share of the folder label's one-hot in each target
    teacher: str | None = None  # distillation: model file(s), comma-separated, whose probabilities join the targets
    teacher_weight: float = 0.5  # share of the teachers' mean probabilities in each training target
    # A .npz teacher (train/torch_teacher.py) has a vote head and a FER2013-label head: the share of
    # the latter in its probabilities; None: 0 for --labels ferplus, 1 for folder.
    teacher_folder_weight: float | None = None
    arch_options: dict = field(default_factory=dict)


def _grown(mine, theirs: np.ndarray, mixes: bool) -> np.ndarray:
    """`theirs` copied into the leading channels of `mine` (a wider layer's weight as built).
    A kernel that mixes channels (`mixes`: a convolution's or a dense layer's, not a depthwise
    one's) gets zeros from the new input channels into the old output channels, so the old
    channels compute what they did and the grown model starts as the same function; the new
    channels keep their random start and learn from there."""
    grown = mine.copy()
    if mixes and grown.ndim >= 2:
        old_in, old_out = theirs.shape[-2], theirs.shape[-1]
        grown[..., old_in:, :old_out] = 0.0
    grown[tuple(slice(0, n) for n in theirs.shape)] = theirs
    return grown


def _mixes_channels(layer, weight) -> bool:
    """A convolution's, pointwise or dense kernel; not a depthwise kernel (Keras names a
    DepthwiseConv2D's "kernel" too), a batch norm's or a bias."""
    per_channel = type(layer).__name__ in ("DepthwiseConv2D", "BatchNormalization")
    return not per_channel and weight.path.endswith("kernel") and not weight.path.endswith("depthwise_kernel")


def _growable(mine: tuple, theirs: tuple) -> bool:
    """Only channel axes may grow (a kernel's last two, a vector's one): a larger spatial kernel
    would not compute the same function. A dense layer's inputs count as channels, as they are
    after queue_net's global pooling (not after a Flatten of a larger image)."""
    fixed = mine[:-2] if len(mine) >= 2 else ()
    return len(mine) == len(theirs) and fixed == theirs[:len(fixed)] and all(a >= b for a, b in zip(mine, theirs))


def load_matching_weights(model, start) -> list[str]:
    """Copy `start`'s weights into `model` layer by layer, where a layer of the same name has
    weights of the same shapes, or of shapes as large or larger in every axis (a wider model
    grown from a narrower one, see _grown); returns the names of the layers left as built. A
    model that shares fewer than half of its weighted layers is refused (most likely the wrong
    file)."""
    theirs = {layer.name: layer for layer in start.layers}
    weighted = [layer for layer in model.layers if layer.weights]
    fresh = []
    for layer in weighted:
        other = theirs.get(layer.name)
        w = other.get_weights() if other is not None else []
        shapes = [(tuple(b.shape), a.shape) for a, b in zip(w, layer.weights)]  # (mine, theirs)
        if len(w) == len(layer.weights) and all(a == b for a, b in shapes):
            layer.set_weights(w)
        elif len(w) == len(layer.weights) and all(_growable(a, b) for a, b in shapes):
            layer.set_weights([_grown(v.numpy(), t, _mixes_channels(layer, v)) for v, t in zip(layer.weights, w)])
        else:
            fresh.append(layer.name)
    if len(fresh) * 2 > len(weighted):
        raise UserError(f"Cannot start a {model.name} from {start.name}: only {len(weighted) - len(fresh)} of its "
                        f"{len(weighted)} layers match by name and shape; pass a run of the same or a related "
                        "architecture.")
    return fresh


def start_from(model, path: str, sample: np.ndarray) -> None:
    """Set `model`'s starting weights from a .keras model or an int8 .tflite (sample: uint8
    training crops for the rebuilt batch norms). A .tflite whose card (model.json beside it)
    names another architecture is rebuilt as that one, then matched layer by layer like a
    .keras start, so a related architecture can start from a shipped int8 file."""
    from train import archs

    if path.endswith(".tflite"):
        from train.from_tflite import load_from_tflite

        from edge.card import load_card

        try:  # no card, or one that cannot be read: the file is taken to be of this architecture
            arch = load_card(path).architecture
        except UserError:
            arch = None
        if not arch or arch == model.name or arch not in archs.ARCHITECTURES:
            load_from_tflite(model, path, sample)  # refuses, in one sentence, a file of another architecture
            return
        start = archs.build(arch, model.input_shape[1], model.output_shape[-1])
        load_from_tflite(start, path, sample)
    else:
        start = load_keras(path)  # one sentence for a file that is not a model
    fresh = load_matching_weights(model, start)
    if fresh:
        print(f"Started from {path} ({start.name}): every layer but {', '.join(fresh)}, which start fresh.")


def unlearned_classes(targets: np.ndarray) -> list[str]:
    """The classes no training target gives any weight (a dataset without their folder)."""
    return [name for name, mass in zip(LABELS, np.asarray(targets).sum(0)) if mass <= 0]


def class_weights(y: np.ndarray, power: float) -> np.ndarray:
    """(N / (K * n_c)) ** power per class, normalised so the mean sample weight is 1."""
    counts = np.bincount(y, minlength=len(LABELS)).astype(float)
    w = np.where(counts > 0, (counts.sum() / (len(LABELS) * np.maximum(counts, 1))) ** power, 0.0)
    return w / (w[y].mean() if len(y) else 1.0)


def _batches(keras):
    class AugmentedBatches(keras.utils.PyDataset):
        """Shuffled, augmented (x, target distribution y, sample weight) batches; seeded by (seed, epoch, batch)."""

        def __init__(self, split: Split, targets: np.ndarray, s: TrainSettings, weights: np.ndarray):
            super().__init__()
            self.split, self.targets, self.s, self.weights = split, targets, s, weights
            self.epoch = 0
            self.aug = AugmentConfig()
            self._order()

        def _order(self):
            self.order = np.random.default_rng([self.s.seed, self.epoch]).permutation(len(self.split))

        def set_epoch(self, epoch: int):
            self.epoch = epoch
            self._order()

        def __len__(self):
            # Full batches only (the reshuffle each epoch still uses every image): TF 2.21's
            # oneDNN kernels segfault on mini_xception's backward pass with a short last batch.
            n = max(1, len(self.split) // self.s.batch_size)
            return min(n, self.s.steps_per_epoch) if self.s.steps_per_epoch else n

        def __getitem__(self, i):
            idx = self.order[i * self.s.batch_size : (i + 1) * self.s.batch_size]
            rng = np.random.default_rng([self.s.seed, self.epoch, i])
            x = self.split.x[idx]
            x = augment_batch(x, rng, self.aug) if self.s.augment else x.astype(np.float32)
            y = self.targets[idx]
            sw = (y @ self.weights).astype(np.float32)  # a soft target weighs as the mix of its classes
            x, y, sw = mix_batch(x, y, sw, rng, self.s.mixup_alpha, self.s.cutmix_alpha)
            return x[..., None], y, sw

    return AugmentedBatches


def _epoch_sync(keras, batches):
    class EpochSync(keras.callbacks.Callback):
        """Tell the batches which epoch runs, so a resumed run replays the same augmentation."""

        def on_epoch_begin(self, epoch, logs=None):
            batches.set_epoch(epoch)

    return EpochSync()


def _optimizer(keras, s: TrainSettings, steps_per_epoch: int):
    if s.schedule == "cosine":
        steps, warmup = steps_per_epoch * s.epochs, steps_per_epoch * s.warmup_epochs
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=s.lr / 10 if warmup else s.lr, decay_steps=max(1, steps - warmup),
            warmup_target=s.lr if warmup else None, warmup_steps=warmup, alpha=0.01)
    elif s.schedule == "constant":
        lr = s.lr
    else:
        raise UserError(f"Unknown --schedule '{s.schedule}'; choose cosine or constant.")
    if s.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if s.optimizer == "sgd":
        # weight_decay is AdamW's (0.01); SGD's customary 5e-4 is that times SGD_DECAY_SCALE.
        return keras.optimizers.SGD(learning_rate=lr, momentum=SGD_MOMENTUM, nesterov=True,
                                    weight_decay=s.weight_decay * SGD_DECAY_SCALE)
    raise UserError(f"Unknown --optimizer '{s.optimizer}'; choose adamw, adam or sgd.")


def _val_accuracies(history_csv: Path) -> list[float]:
    """val_accuracy of each epoch history.csv holds, in order (none when it does not exist)."""
    import csv

    if not history_csv.exists():
        return []
    with history_csv.open(newline="", errors="replace") as fh:
        rows = list(csv.DictReader(line.replace("\0", "") for line in fh))
    accs = []
    for n, r in enumerate(rows, start=2):
        try:
            accs.append(float(r["val_accuracy"]))
        except (KeyError, TypeError, ValueError):
            if n == len(rows) + 1:  # the last row, cut short by a crash while it was written: that epoch trains again
                break
            raise UserError(f"{history_csv} line {n} is not an epoch's row ({dict(r)}); fix or remove that line, "
                            "or train a new --out.") from None
    return accs


def _best_so_far(history_csv: Path) -> float:
    return max(_val_accuracies(history_csv), default=float("-inf"))


def targets(s: TrainSettings, tr: Split, va: Split):
    """(train split, train targets, val split, val targets, label info) for s.labels."""
    one_hot = np.eye(len(LABELS), dtype=np.float32)
    if s.labels == "folder":
        return tr, one_hot[tr.y], va, one_hot[va.y], {"kind": "folder"}
    if s.labels != "ferplus":
        raise UserError(f"Unknown --labels '{s.labels}'; choose folder or ferplus.")
    from train.votes import find_votes, read_votes, soft_targets

    path = Path(find_votes(s.data, s.votes)).resolve()
    s.votes = str(path)  # saved with the settings, so --resume reads the same file
    votes = read_votes(path)
    from edge.card import sha256_file

    # The file's bytes too: a resume checks them (check_label_files), as it checks the images.
    info = {"kind": "ferplus", "votes": str(path), "votes_sha256": sha256_file(path), "folder_weight": s.folder_weight}
    out = []
    for name, split in (("train", tr), ("val", va)):
        t, keep, counts = soft_targets(split.names, split.y, votes, s.folder_weight)
        info[name] = counts
        print(f"FER+ votes, {name}: {counts['vote_labels']} images with vote labels, {counts['folder_label_fallback']} "
              f"with the folder label (no votes), {counts['left_out_doubtful']} left out (mostly unknown / not a face)",
              flush=True)
        keep_idx = np.flatnonzero(keep)
        if len(split) and not len(keep_idx):
            raise UserError(f"{path} leaves out every {name} image: all {len(split)} are doubtful (half or more of "
                            "their votes unknown or not a face, or none on the seven classes); fix their rows in the "
                            "votes file, or train with --labels folder.")
        out += [split.take(keep_idx), t[keep_idx]]
    return (*out, info)


def import_keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"Training needs TensorFlow/Keras ({exc.name} is missing); install the build extra: pip install -e '.[train]'."
        ) from exc
    return keras


def load_keras(path: Path):
    if why := not_a_file(path):  # a pipe would hang Keras's zip check
        raise UserError(f"Keras model {path} {why}; pass a .keras model saved by `edge train`.")
    check_readable(path, "Keras model")
    if not zipfile.is_zipfile(path):  # Keras calls such a file "File not found"
        raise UserError(f"{path} is not a readable Keras model (not a .keras zip archive); pass a model saved "
                        "by `edge train`.")
    keras = import_keras()
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises several types for a damaged archive
        raise UserError(f"{path} is not a readable Keras model ({type(exc).__name__}: {exc}).") from exc
    shape = tuple(model.input_shape[1:])
    if len(shape) == 3 and None in shape[:2]:  # the card, the crops and the int8 file all need one size
        raise UserError(f"{path} takes input {model.input_shape}, of any size; the pipeline feeds crops of one size: "
                        f"save it with a fixed input, e.g. keras.Input(({INPUT_SIZE}, {INPUT_SIZE}, 1)).")
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 1:
        raise UserError(f"{path} takes input {model.input_shape}, but the pipeline feeds square grayscale crops "
                        "(None, S, S, 1); retrain it with `edge train`.")
    out = model.output_shape
    if not (isinstance(out, tuple) and len(out) == 2 and out[-1] == len(LABELS)):
        raise UserError(f"{path} outputs {out}, but the pipeline reads one row of {len(LABELS)} class probabilities "
                        f"(None, {len(LABELS)}) ({', '.join(LABELS)}); retrain it with `edge train`.")
    # Alerts, calibration and the parity gate read the outputs as probabilities: logits would pass
    # every check here yet mean nothing downstream.
    rows = np.asarray(model(np.random.default_rng(0).uniform(0, 255, (4, *shape)).astype(np.float32), training=False))
    if not np.isfinite(rows).all():  # NaN weights: a softmax of them is NaN too, not a missing softmax
        raise UserError(f"{path} outputs NaN (not numbers) instead of probabilities: its training diverged; retrain "
                        "it, e.g. with a lower --lr.")
    if not (np.all(rows >= -1e-6) and np.allclose(rows.sum(axis=1), 1, atol=1e-3)):
        raise UserError(f"{path} does not output probabilities (its rows sum to "
                        f"{', '.join(f'{v:.3g}' for v in rows.sum(axis=1))}); end the model with a softmax.")
    return model


def code_version() -> dict:
    """This project's version and, run from a git checkout, its commit and whether files git tracks
    differ from it: the augmentation, architectures and readers are code, not settings, so a
    run's record names the code that made it."""
    from importlib import metadata

    try:
        out = {"version": metadata.version("queue-mood")}
    except metadata.PackageNotFoundError:
        out = {"version": None}
    root = Path(__file__).resolve().parents[1]

    def git(*args) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top and Path(top).resolve() == root:  # not a repository that merely holds an installed copy
        out["commit"] = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
        out["modified"] = None if changed is None else bool(changed)
    return out


def versions() -> dict:
    import cv2
    import keras
    import tensorflow as tf

    return {"queue_mood": code_version(), "python": platform.python_version(), "numpy": np.__version__,
            "opencv": cv2.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "platform": platform.platform()}


def record_versions(path: Path, resumed: bool) -> None:
    """versions.json: the first session's versions, and each resumed session's under
    "resumed_sessions" (with its start time), so a run resumed on another build says so."""
    record = versions()
    if resumed:
        try:
            first = json.loads(path.read_text())
        except (OSError, ValueError):
            first = None
        if isinstance(first, dict):
            later = first.setdefault("resumed_sessions", [])
            later.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), **record})
            record = first
    write_atomic(path, json.dumps(record, indent=2))


# The files a run writes before its first epoch ends: a folder holding only these never
# trained, and a new command may start it afresh (after a crash or a bad option).
START_FILES = {"train_settings.json", "command.txt", "data.json", "versions.json"}
# What the end of the first epoch writes before its backup is whole (history.csv's row, the
# best model, half-written or renamed, a backup cut short): a kill or a full disk there leaves
# them, and starting afresh loses only that epoch, which trains again.
FIRST_EPOCH_FILES = {"history.csv", "model.partial.keras", "model.keras", "timing.json", "backup"}
# What --resume may change: more epochs lengthen the run (the cosine schedule stretches to the
# new end), patience only moves early stopping. Every other option must match the saved one.
RESUMABLE = ("epochs", "patience")
BACKUP_META = ("training_metadata.json", "training_metadata.json.bkp")  # the last epoch's, the one before


def backup_epoch(out: Path) -> int | None:
    """Epochs the newest readable backup metadata holds (the last epoch's, else the one
    before); None when no epoch reached a backup."""
    for name in BACKUP_META:
        try:
            return int(json.loads((out / "backup" / name).read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _history_rows(history_csv: Path) -> int:
    """Epoch rows in history.csv (lines after the header; 0 when it does not exist)."""
    try:
        return max(0, len(history_csv.read_bytes().splitlines()) - 1)
    except OSError:
        return 0


def never_trained(out: Path) -> bool:
    """True when no epoch of `out` reached a backup: it holds only what a run writes before its
    first backup is whole (CSVLogger opens history.csv at the start, and the first epoch's row
    and best model come before its backup). A model.keras counts only beside that row: without
    it the folder is not a run's (a soup, a copied model) and is never started over."""
    names = {f.name for f in out.iterdir() if not f.name.endswith(".tmp")}  # a write_atomic a kill cut short
    rows = _history_rows(out / "history.csv")
    return (names <= START_FILES | FIRST_EPOCH_FILES and backup_epoch(out) is None and rows <= 1
            and ("model.keras" not in names or rows == 1))


def discard_first_epoch(out: Path) -> bool:
    """Remove what an interrupted first epoch left (see FIRST_EPOCH_FILES), so a run started
    afresh appends no second epoch 0 to history.csv and adds no old time; True if any was there."""
    found = False
    for name in FIRST_EPOCH_FILES:
        f = out / name
        if f.is_dir():
            shutil.rmtree(f)
            found = True
        elif f.exists():
            found = found or name != "history.csv" or f.stat().st_size > 0
            f.unlink()
    return found


PATH_FIELDS = ("data", "out", "init_from", "votes")


def absolute(s: TrainSettings) -> TrainSettings:
    """s with its paths absolute, so that train_settings.json resumes from any working folder."""
    d = asdict(s)
    for k in PATH_FIELDS:
        if d[k]:
            d[k] = os.path.abspath(d[k])
    if d["teacher"]:
        d["teacher"] = ",".join(os.path.abspath(t.strip()) for t in d["teacher"].split(",") if t.strip())
    return TrainSettings(**d)


def check_settings(s: TrainSettings) -> None:
    """Refuse, in one sentence, an option no run can use, before the dataset is read or the
    run folder made (a half-made folder would refuse the corrected command)."""
    for value, ok, what in ((s.epochs, s.epochs >= 1, "--epochs must be at least 1"),
                            (s.batch_size, s.batch_size >= 1, "--batch-size must be at least 1"),
                            (s.lr, math.isfinite(s.lr) and s.lr > 0, "--lr must be a finite number above 0"),
                            (s.patience, s.patience >= 0, "--patience must be 0 or more"),
                            (s.warmup_epochs, s.warmup_epochs >= 0, "--warmup-epochs must be 0 or more"),
                            (s.steps_per_epoch, s.steps_per_epoch is None or s.steps_per_epoch >= 1,
                             "--steps-per-epoch must be at least 1"),
                            (s.label_smoothing, 0 <= s.label_smoothing < 1, "--label-smoothing must lie in [0, 1)"),
                            (s.mixup_alpha, 0 <= s.mixup_alpha < math.inf, "--mixup must be 0 (off) or a finite number above it"),
                            (s.cutmix_alpha, 0 <= s.cutmix_alpha < math.inf, "--cutmix must be 0 (off) or a finite number above it"),
                            (s.class_weight_power, s.class_weight_power >= 0, "--class-weight-power must be 0 or more"),
                            (s.folder_weight, 0 <= s.folder_weight <= 1, "--folder-weight must lie in [0, 1]")):
        if not ok:
            raise UserError(f"{what}, got {value}.")
    check_out_folder(s.out)
    if s.arch not in ARCHITECTURES:
        raise UserError(f"Unknown --arch '{s.arch}'; choose one of: {', '.join(sorted(ARCHITECTURES))}.")
    if s.init_from:
        from train.evaluate import model_file

        s.init_from = str(model_file(Path(s.init_from), "--init-from"))  # a run folder's model, as edge eval takes it
    if s.init_from and Path(s.init_from).suffix not in (".keras", ".tflite"):
        raise UserError(f"--init-from {s.init_from} is neither a .keras model nor an int8 .tflite; pass one of those.")
    if s.teacher:  # a wrong path or weight fails now, not after the dataset has loaded
        from train.teacher import check_weight, teacher_paths

        paths = teacher_paths(s.teacher)
        check_weight(s.teacher_weight)
        if s.teacher_folder_weight is not None:
            check_weight(s.teacher_folder_weight, "--teacher-folder-weight")
            if any(p.suffix != ".npz" for p in paths):
                raise UserError("--teacher-folder-weight mixes the two heads of a teacher_probs.npz; a .tflite or .keras "
                                "teacher has one: drop the option or pass only .npz teachers.")
    elif s.teacher_folder_weight is not None:
        raise UserError("--teacher-folder-weight needs --teacher (a teacher_probs.npz).")
    elif s.teacher_weight != TrainSettings.teacher_weight:
        raise UserError(f"--teacher-weight {s.teacher_weight} needs --teacher; add the teacher or drop the option.")
    # Options only --labels ferplus reads: accepted silently, they would look used in train_settings.json.
    if s.labels != "ferplus":
        for given, flag in ((s.votes, f"--votes {s.votes}"), (s.folder_weight, f"--folder-weight {s.folder_weight}")):
            if given:
                raise UserError(f"{flag} is read only with --labels ferplus; add --labels ferplus or drop the option.")
    elif s.votes:
        from train.votes import find_votes

        find_votes(s.data, s.votes)  # a wrong path fails now, not after the dataset has loaded


def idle_options(s: TrainSettings, given: dict[str, str] | None) -> list[str]:
    """Options that do nothing in this run, or not what they say (the run still makes sense:
    warnings, not errors). given: the options typed (None: not known, those are not checked)."""
    typed = given or {}
    out = []
    if s.schedule == "cosine" and s.warmup_epochs >= s.epochs:
        out.append(f"--warmup-epochs {s.warmup_epochs} is not fewer than --epochs {s.epochs}: the learning rate rises "
                   "for the whole run and never decays (it reaches --lr only if they are equal); give fewer warm-up "
                   "epochs")
    if s.schedule == "constant" and s.warmup_epochs and "warmup_epochs" in typed:
        out.append(f"--warmup-epochs {s.warmup_epochs} does nothing with --schedule constant, which has no warm-up")
    if s.arch != "mobilenetv2" and "weights" in typed:
        out.append(f"--weights is read only by --arch mobilenetv2; {s.arch} starts from random weights")
    return out


def same_file(name: str, new, old) -> bool:
    """A path option naming the saved file by another way (a symlink: the run saves --votes resolved)."""
    return name in PATH_FIELDS and bool(new) and bool(old) and Path(new).resolve() == Path(old).resolve()


def resume_settings(s: TrainSettings, given: dict[str, str] | None) -> tuple[TrainSettings, list[str]]:
    """The settings a resumed run uses: the saved ones, with the given options that may change
    (RESUMABLE, and --data: checked against the saved fingerprint once read). Any other given
    option that differs is refused by name. Returns (settings, notes on what changed)."""
    out = Path(s.out)
    settings_file = out / "train_settings.json"
    if not settings_file.exists():
        raise UserError(f"Nothing to resume in {out}: it has no train_settings.json; start a new run without --resume.")
    if not (out / "backup").is_dir() and not never_trained(out):
        raise UserError(f"Nothing to resume in {out}: no backup/; the run finished or was never started "
                        "(train a new --out, or start one from it with --init-from).")
    saved = absolute(TrainSettings(**{**json.loads(settings_file.read_text()), "out": s.out}))
    differ, notes, use = [], [], asdict(saved)
    for name, flag in (given or {}).items():
        new, old = getattr(s, name), getattr(saved, name)
        if name in ("out", "data") or new == old or same_file(name, new, old):
            continue
        if name in RESUMABLE or (name in MOVABLE and old and moved_label_file(out, name, flag, new)):
            use[name] = new
            notes.append(f"{flag} {new} replaces the saved {old}")
        else:
            # A flag reads by what it does: "--no-augment False (saved: True)" reads backwards.
            differ.append(f"{flag} (the run was started without it)" if isinstance(new, bool) else
                          f"{flag} {new} (saved: {old})")
    if differ:
        raise UserError(f"--resume continues {out} with its saved settings, but {', '.join(differ)} differ from them; "
                        "drop those options, or train a new --out with them.")
    done = backup_epoch(out) or 0
    if use["epochs"] < done:
        raise UserError(f"--epochs {use['epochs']} is fewer than the {done} epochs {out} has already trained; "
                        f"give --epochs {done} or more.")
    use["data"] = s.data  # the same images at another path are fine; run() compares fingerprints
    for name in MOVABLE:
        for p in label_file_paths(name, use[name]):
            if why := not_a_file(p):
                raise UserError(f"--{name} {p}, which {out} started with, {why}; if it moved, resume with --{name} "
                                "and its new place (checked by its sha256 in data.json).")
    return TrainSettings(**use), notes


# Label files a resume may find at another path: the same bytes (their sha256 in data.json) give the same targets.
MOVABLE = ("votes", "teacher")


def label_file_paths(name: str, value: str | None) -> list[Path]:
    """The files --votes or --teacher (comma-separated) names."""
    return [Path(p.strip()) for p in (value or "").split(",") if p.strip()] if name in MOVABLE else []


def moved_label_file(out: Path, name: str, flag: str, new: str) -> bool:
    """Whether `new` holds the bytes the run started on as --votes or --teacher (a file moved
    since); one sentence where it cannot be read or holds other bytes."""
    from edge.card import sha256_file

    try:
        first = json.loads((out / "data.json").read_text()).get("labels") or {}
    except (OSError, ValueError, AttributeError):
        return False
    was = [first.get("votes_sha256")] if name == "votes" else (first.get("teacher") or {}).get("sha256")
    if not was or not all(was):  # a run recorded before the hashes were kept: the path may not change
        return False
    paths = label_file_paths(name, new)
    for p in paths:
        if why := not_a_file(p):
            raise UserError(f"{flag} {p} {why}; pass the file {out} started with at its new place.")
    if [sha256_file(p) for p in paths] != was:
        raise UserError(f"{flag} {new} is not the file {out} started with (its sha256 in data.json differs), so the "
                        "resumed epochs would learn other targets; pass that file at its new place, or train a new "
                        f"--out (--init-from {out / 'model.keras'} keeps the best epoch).")
    return True


def record_command(folder: Path, command: list[str] | None = None, notes=()) -> None:
    """Append the command line, with the working folder its relative paths start from, and
    notes on what it changed, to folder/command.txt."""
    cmd = shlex.join(command or sys.argv) + "".join(f"  # {n}" for n in notes)
    with (folder / "command.txt").open("a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}  (in {os.getcwd()})  {cmd}\n")


def run(s: TrainSettings, resume: bool = False, command: list[str] | None = None,
        given: dict[str, str] | None = None) -> dict:
    """Train into s.out; returns the metrics written to metrics.json. given: the settings the
    user typed (field -> option name); on resume, only they are compared with the saved ones
    (None: every field of s that is not a default counts as typed). A second process training
    into the same folder (a supervisor's --resume while the first still runs) is refused: both
    wrote its history, checkpoints and model."""
    check_out_folder(absolute(s).out)  # before the hold, whose lock lies in --out's parent folder
    with held_by_this_process(absolute(s).out):
        return _run(s, resume, command, given)


def _run(s: TrainSettings, resume: bool, command: list[str] | None, given: dict[str, str] | None) -> dict:
    s = absolute(s)
    out = Path(s.out)
    settings_file = out / "train_settings.json"
    notes: list[str] = []
    if resume:  # the options are checked as the run will use them: the saved ones, with the given ones that may change
        if given is None:
            defaults = TrainSettings(data="", out="")
            given = {k: "--" + k.replace("_", "-") for k, v in asdict(s).items() if v != getattr(defaults, k)}
        check_out_folder(s.out)
        s, notes = resume_settings(s, given)
    check_settings(s)
    for warning in idle_options(s, given):
        print(f"WARNING: {warning}.", file=sys.stderr, flush=True)
    if resume:
        if never_trained(out):  # a supervisor that always resumes must not be stuck here
            print(f"No epoch of {out} reached a backup; starting it from the first epoch with its saved settings.",
                  flush=True)
            resume = False
        elif (why := finished(out, s)) and (out / "metrics.json").exists():
            print(f"{out} has finished ({why}); nothing to resume. To train it on, give a larger --epochs"
                  f"{' and --patience' if 'early' in why else ''}.", flush=True)
            return json.loads((out / "metrics.json").read_text())
    elif out.exists() and not never_trained(out):
        raise UserError(f"Run folder {out} already has files; pass --resume to continue it or choose a new --out.")

    ds = load_dataset(s.data, size=INPUT_SIZE)
    if resume:
        first = json.loads((out / "data.json").read_text()).get("fingerprint") if (out / "data.json").exists() else None
        if first and first != ds.fingerprint:
            raise UserError(f"The images in {s.data} differ from those {out} started on (fingerprint {ds.fingerprint}, "
                            f"was {first}); resume with the original dataset, or train a new --out on this one.")
    keras = import_keras()
    from train import archs, report

    keras.utils.set_random_seed(s.seed)
    tr_all, va, val_source = train_val(ds, s.val_fraction, s.seed)
    tr, tr_y, va_fit, va_y, label_info = targets(s, tr_all, va)
    if s.teacher:  # validation keeps the ground truth: the teacher only shapes what is learned
        from train.teacher import distill

        tr_y, label_info["teacher"] = distill(s.teacher, s.teacher_weight, tr.x, tr_y,
                                                 s.teacher_folder_weight if s.teacher_folder_weight is not None
                                                 else float(s.labels == "folder"))
    if resume:
        check_label_files(out, label_info)
    if len(tr) == 0 or len(va_fit) == 0:
        raise UserError(f"{s.data} gives {len(tr)} training and {len(va_fit)} validation images; both must be non-empty.")
    if absent := unlearned_classes(tr_y):
        print(f"WARNING: no training image of {', '.join(absent)} in {s.data}: the model keeps its {len(LABELS)} "
              f"outputs but cannot learn {'that class' if len(absent) == 1 else 'those classes'}; macro-F1 "
              "averages over the classes that occur.", file=sys.stderr, flush=True)

    options = dict(s.arch_options)
    if s.arch == "mobilenetv2":
        options["weights"] = s.weights
    model = archs.build(s.arch, INPUT_SIZE, len(LABELS), **options)
    if s.init_from and not resume:  # on resume the backup's weights replace any starting weights
        sample = np.random.default_rng(s.seed).permutation(len(tr))[:1024]
        start_from(model, s.init_from, tr.x[sample])

    # Written only now, when every option has been used once, so a bad one leaves no folder.
    out.mkdir(parents=True, exist_ok=True)
    if not resume and discard_first_epoch(out):
        print(f"Starting {out} afresh: its first epoch ended before its backup was whole (a kill or a full disk); "
              "that epoch trains again.", flush=True)
    settings_file.write_text(json.dumps(asdict(s), indent=2))
    record_command(out, command, notes)
    if not resume:  # data.json keeps the first session's record; a resume is checked against it above
        (out / "data.json").write_text(json.dumps({**ds.summary(), "validation": val_source, "labels": label_info,
                                                   "train_images": len(tr), "val_images": len(va_fit)}, indent=2))
        if ds.skipped:
            what = (f"row(s) of the CSV were left out (unparseable, or not a {FER2013_SIZE}x{FER2013_SIZE} image)"
                    if ds.layout == "fer2013-csv" else
                    "file(s) were left out (unreadable, not images, or outside the class folders)")
            print(f"{len(ds.skipped)} {what}; they are listed, each with why, under \"skipped\" in "
                  f"{out / 'data.json'}.", flush=True)
    record_versions(out / "versions.json", resume)

    weights = class_weights(tr_y.argmax(1), s.class_weight_power)
    batches = _batches(keras)(tr, tr_y, s, weights)
    model.compile(
        optimizer=_optimizer(keras, s, len(batches)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=s.label_smoothing),
        metrics=["accuracy"],
    )
    # Checkpoints pick the epoch by accuracy against the argmax of the training kind of target
    # (for ferplus: votes mixed with --folder-weight, doubtful images left out); the report
    # below scores every label kind.
    val_x = va_fit.x[..., None].astype(np.float32)
    best = _checkpoint(keras, out / "model.keras")
    timing = _timing(keras, out / "timing.json")
    # At each epoch's end its history.csv row and the best model are written before the backup,
    # and a resume first trims history.csv to the epochs the backup holds, then takes the best
    # so far from it (a resumed run must not overwrite the best model with a worse one): a kill
    # between them loses nothing and repeats nothing (the epoch is trained again, identically).
    callbacks = [
        _stop_on_divergence(keras),  # first: a diverged epoch's end writes nothing
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
        best,
        _backup(keras, out / "backup", out / "history.csv", best if resume else None),
        _epoch_sync(keras, batches),
        timing,
        _early_stopping(keras, s.patience, out / "history.csv" if resume else None),
    ]
    if resume and finished(out, s):  # killed while writing the report: write it, train nothing more
        print(f"{out} has finished training; writing its report.", flush=True)
    else:
        # metrics.json describes the model at an earlier end and, present, says the run is
        # finished: training on makes it stale until the new report replaces it.
        (out / "metrics.json").unlink(missing_ok=True)
        # shuffle=False: the batches are already shuffled by (seed, epoch); Keras's own shuffle of
        # their order draws on Python's global `random`, which a resumed run does not restore.
        try:
            model.fit(batches, validation_data=(val_x, va_y), epochs=s.epochs, callbacks=callbacks, shuffle=False,
                      verbose=1 if sys.stdout.isatty() else 2)
        except Diverged as exc:
            raise diverged_error(s, out, *exc.args) from None

    best = keras.models.load_model(out / "model.keras") if (out / "model.keras").exists() else model
    probs = best.predict(va.x[..., None].astype(np.float32), batch_size=256, verbose=0)
    metrics = report.write_run_report(out, best, va, probs, tr, ds, weights, timing.total(), val_source,
                                      votes=s.votes if s.labels == "ferplus" else None)
    return metrics


def check_label_files(out: Path, info: dict) -> None:
    """On resume, the votes and teacher files must be the bytes the run started on (their sha256
    in data.json): other bytes give the remaining epochs other targets than the first ones and
    than data.json records. Runs recorded before the hashes were kept are not checked."""
    try:
        first = json.loads((out / "data.json").read_text()).get("labels") or {}
    except (OSError, ValueError, AttributeError):
        return
    changed = []
    if first.get("votes_sha256") and first["votes_sha256"] != info.get("votes_sha256"):
        changed.append(f"--votes {info.get('votes')}")
    for key, what in (("sha256", ""), ("card_sha256", f"'s {CARD_NAME}")):
        was, now = (first.get("teacher") or {}).get(key), (info.get("teacher") or {}).get(key)
        if was and now and was != now:
            changed += [f"--teacher {m}{what}" for m, a, b in zip(info["teacher"]["models"], was, now) if a != b]
    if changed:
        raise UserError(f"{', '.join(changed)} {'is' if len(changed) == 1 else 'are'} not the file {out} started with "
                        "(its sha256 in data.json differs), so the resumed epochs would learn other targets; put the "
                        f"original back, or train a new --out (--init-from {out / 'model.keras'} keeps the best "
                        "epoch).")


def _replay(accs: list[float]) -> tuple[float | None, int, int]:
    """(best, best epoch, epochs since it) as EarlyStopping counts them over these val
    accuracies (min_delta 0, mode max; an epoch that sets a new best resets the count)."""
    best, best_epoch, wait = None, 0, 0
    for epoch, acc in enumerate(accs):
        wait += 1
        if best is None or acc > best:
            best, best_epoch, wait = acc, epoch, 0
    return best, best_epoch, wait


def finished(out: Path, s: TrainSettings) -> str | None:
    """Why the run in `out` has nothing left to train under s (every epoch done, or early
    stopping reached with s.patience, tested as EarlyStopping tests after an epoch), or None."""
    done = backup_epoch(out) or 0
    if done >= s.epochs:
        return f"all {s.epochs} epochs trained"
    _, best_epoch, wait = _replay(_val_accuracies(out / "history.csv")[:done])
    if done > 1 and wait > 0 and wait >= s.patience:
        return (f"stopped early after epoch {done}: no better val accuracy in the {wait} epochs since epoch "
                f"{best_epoch + 1}, --patience {s.patience}")
    return None


def trim_history(history_csv: Path, epochs: int) -> None:
    """Keep the header and the first `epochs` rows of history.csv (the epochs a backup holds).
    Truncated in place: the CSV logger already holds the file open for appending."""
    if not history_csv.exists():
        return
    with history_csv.open("r+b") as f:
        lines = f.read().splitlines(keepends=True)
        if len(lines) > epochs + 1:
            f.truncate(sum(len(line) for line in lines[: epochs + 1]))


def _seed_states(model) -> list:
    """The state variables of the model's random seed generators (Dropout's masks). Keras 3
    keeps them out of weights files (keras-team/keras#19796), so a resumed run would draw the
    masks of epoch 1 again; the backup's metadata carries them instead."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


class StaleBackup(ValueError):
    """A backup whose weights and metadata are of different epochs."""


def _copy_atomic(src, dst) -> None:
    """Copy src to a new file renamed over dst (write_atomic): a kill mid-copy leaves dst as it was."""
    write_atomic(Path(dst), Path(src).read_bytes())


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _backup(keras, path: Path, history_csv: Path, best=None):
    class Backup(keras.callbacks.BackupAndRestore):
        """Keras's backup (weights, then metadata naming the epochs they hold; the previous
        epoch's pair kept as .bkp) with three additions: the metadata also holds the seed
        generators' state and the optimizer's step count, and is renamed into place whole; a
        pair that cannot be read, or whose step count does not match (a kill between the two
        writes), gives way to the previous epoch's pair, said in one line; with neither left,
        one sentence, not an h5py traceback."""

        _partial = str(path / "latest.partial.weights.h5")  # Keras saves weights only under *.weights.h5

        def on_train_begin(self, logs=None):
            backup_files = map(Path, (self._weights_path, self._prev_weights_path, self._training_metadata_path,
                                      self._prev_training_metadata_path))
            for partial in (Path(self._partial), *map(temporary_name, backup_files)):
                partial.unlink(missing_ok=True)  # what a kill cut short (write_atomic's temporary names)
            try:
                meta = self._restore()
            except Exception as exc:
                if not (Path(self._prev_weights_path).exists() and Path(self._prev_training_metadata_path).exists()):
                    raise self._damaged(exc) from exc
                # Copied to new files and renamed over the damaged ones, never rewritten in place:
                # Keras leaves the damaged weights file open when h5py fails mid-load, and HDF5
                # would read the copy through that open file's cached state (the damage again).
                _copy_atomic(self._prev_weights_path, self._weights_path)
                _copy_atomic(self._prev_training_metadata_path, self._training_metadata_path)
                try:
                    meta = self._restore()
                except Exception as exc2:
                    raise self._damaged(exc2) from exc2
                why = exc if isinstance(exc, StaleBackup) else f"{type(exc).__name__}, most likely cut short by a crash"
                print(f"The last backup in {path} cannot be used ({why}); resuming from the one before it, so "
                      f"epoch {meta.get('epoch', 0) + 1} trains again.", flush=True)
            trim_history(history_csv, meta.get("epoch", 0))
            if best is not None:  # the checkpoint's bar: the best of the epochs kept
                best.best = _best_so_far(history_csv)

        def _restore(self) -> dict:
            """Load the current pair; returns its metadata ({} when there is no backup)."""
            super()._load_model()
            meta = json.loads(Path(self._training_metadata_path).read_text()) if Path(
                self._training_metadata_path).exists() else {}
            epoch = int(meta.get("epoch", 0))
            steps = int(meta.get("iterations", epoch * (self.params.get("steps") or 0)))
            done = int(self.model.optimizer.iterations.numpy())
            if done != steps:  # a kill between the weights and the metadata: the weights are an epoch on
                raise StaleBackup(f"its weights are {done} optimizer steps on, its metadata says {steps}")
            seeds = _seed_states(self.model)
            if len(meta.get("seed_generators", [])) == len(seeds):
                for v, value in zip(seeds, meta.get("seed_generators", [])):
                    v.assign(np.array(value, dtype=v.dtype))
            elif seeds and meta:
                print(f"Note: the backup in {path} predates saving the dropout seeds, so from here on the "
                      "dropout masks differ from those of an uninterrupted run.", flush=True)
            return meta

        def _damaged(self, exc) -> UserError:
            return UserError(f"The training state in {path} cannot be read ({type(exc).__name__}), most likely "
                             f"damaged by a crash while it was written; train a new --out, with --init-from "
                             f"{path.parent / 'model.keras'} to keep the best epoch so far.")

        def _save_model(self):
            """Each file is written under a temporary name and renamed into place, so a kill at
            any point leaves the last epoch's pair or the one before whole (weights renamed
            ahead of their metadata are caught by the step count)."""
            path.mkdir(parents=True, exist_ok=True)
            if Path(self._weights_path).exists() and Path(self._training_metadata_path).exists():
                # The old .bkp metadata goes first: a kill between the two copies leaves a .bkp
                # pair without metadata, never one whose metadata names another epoch's weights.
                Path(self._prev_training_metadata_path).unlink(missing_ok=True)
                _copy_atomic(self._weights_path, self._prev_weights_path)
                _copy_atomic(self._training_metadata_path, self._prev_training_metadata_path)
            self.model.save_weights(self._partial, overwrite=True)
            _fsync(self._partial)
            os.replace(self._partial, self._weights_path)
            # Written after the weights, and renamed into place whole: it is what says they are complete.
            write_atomic(Path(self._training_metadata_path), json.dumps({
                "epoch": self._current_epoch, "batch": self._last_batch_seen,
                "iterations": int(self.model.optimizer.iterations.numpy()),
                "seed_generators": [np.asarray(v.numpy()).tolist() for v in _seed_states(self.model)]}))

    return Backup(str(path), double_checkpoint=True, delete_checkpoint=False)


def _early_stopping(keras, patience: int, history_csv: Path | None):
    class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
        """On resume, counts on from history.csv's epochs (best val accuracy, epochs since it),
        so a resumed run stops at the epoch the uninterrupted one would."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            accs = _val_accuracies(history_csv) if history_csv else []
            if accs:
                self.best, self.best_epoch, self.wait = _replay(accs)

    return ResumedEarlyStopping(monitor="val_accuracy", mode="max", patience=patience, restore_best_weights=True)


class Diverged(Exception):
    """The loss became NaN or infinite; args: (epoch counted from 1, the value)."""


def _stop_on_divergence(keras):
    class StopOnDivergence(keras.callbacks.Callback):
        """Raises Diverged at the first training or validation loss that is not a finite number.
        It runs first at each epoch's end, so that epoch writes no history.csv row, best model or
        backup: the run folder keeps the epochs before it, and a NaN never reaches the report."""

        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            self._check(logs)

        def on_epoch_end(self, epoch, logs=None):
            self._check(logs)

        def _check(self, logs):
            for key in ("loss", "val_loss"):
                if key in (logs or {}) and not math.isfinite(float(logs[key])):
                    raise Diverged(self.epoch + 1, float(logs[key]))

    return StopOnDivergence()


def diverged_error(s: TrainSettings, out: Path, epoch: int, loss: float) -> UserError:
    """What to do after a diverged epoch: a lower --lr, from scratch or from the epochs kept."""
    kept = backup_epoch(out)
    then = (f"{out} keeps the {kept} epoch(s) before it, so train a new --out (--init-from {out / 'model.keras'} "
            "starts from their best)" if kept else "nothing was kept, so run the command again")
    return UserError(f"Training diverged in epoch {epoch} (the loss became {loss}); {then} with a lower --lr than "
                     f"{s.lr:g}, e.g. {s.lr / 10:g}.")


def _checkpoint(keras, path: Path):
    class AtomicCheckpoint(keras.callbacks.ModelCheckpoint):
        """The best model, written to a temporary file and renamed over `path`, so a crash
        mid-write leaves the previous best model whole."""

        tmp = path.with_name(path.stem + ".partial.keras")

        def on_train_begin(self, logs=None):
            self.tmp.unlink(missing_ok=True)  # a crash's half-written file is never renamed
            super().on_train_begin(logs)

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if self.tmp.exists():
                os.replace(self.tmp, path)

    cb = AtomicCheckpoint(str(AtomicCheckpoint.tmp), monitor="val_accuracy", save_best_only=True)
    return cb


def _timing(keras, path: Path):
    class Timing(keras.callbacks.Callback):
        """timing.json's train_seconds, summed over every session and written each epoch, so a
        killed session's finished epochs count too."""

        before, started = 0.0, None

        def on_train_begin(self, logs=None):
            self.before = read_train_seconds(path)
            self.started = time.time()

        def total(self) -> float:
            if self.started is None:  # nothing trained in this session (a report written after a crash)
                return read_train_seconds(path)
            return self.before + time.time() - self.started

        def on_epoch_end(self, epoch, logs=None):
            write_atomic(path, json.dumps({"train_seconds": round(self.total(), 1)}, indent=2))

    return Timing()


def read_train_seconds(path: Path) -> float:
    """The earlier sessions' training time from timing.json (0 when none). A damaged file (from
    a version that rewrote it in place) is one WARNING: the count restarts, the run goes on."""
    if not path.exists():
        return 0.0
    try:
        return float(json.loads(path.read_text())["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"WARNING: {path} cannot be read ({type(exc).__name__}); the training time counts from this "
              "session, so train_seconds will be short of the true total.", file=sys.stderr, flush=True)
        return 0.0
