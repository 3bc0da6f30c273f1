"""`edge train`: fit an architecture from the registry, with checkpoints and resume."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.labels import LABELS
from train.archs import DEFAULT_ARCH
from train.augment import AugmentConfig, augment_batch
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
    arch_options: dict = field(default_factory=dict)


def load_matching_weights(model, start) -> list[str]:
    """Copy `start`'s weights into `model` layer by layer, where a layer of the same name has
    weights of the same shapes; returns the names of the layers left as built. A model that
    shares fewer than half of its weighted layers is refused (most likely the wrong file)."""
    theirs = {layer.name: layer for layer in start.layers}
    weighted = [layer for layer in model.layers if layer.weights]
    fresh = []
    for layer in weighted:
        other = theirs.get(layer.name)
        w = other.get_weights() if other is not None else []
        if len(w) == len(layer.weights) and all(a.shape == tuple(b.shape) for a, b in zip(w, layer.weights)):
            layer.set_weights(w)
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
    keras = import_keras()
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
        try:
            start = keras.models.load_model(path, compile=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"Cannot start from {path}: it is not a Keras model ({exc}).") from exc
    fresh = load_matching_weights(model, start)
    if fresh:
        print(f"Started from {path} ({start.name}): every layer but {', '.join(fresh)}, which start fresh.")


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
            if self.s.mixup_alpha > 0:
                lam = rng.beta(self.s.mixup_alpha, self.s.mixup_alpha)
                perm = rng.permutation(len(idx))
                x = lam * x + (1 - lam) * x[perm]
                y = lam * y + (1 - lam) * y[perm]
                sw = lam * sw + (1 - lam) * sw[perm]
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


def _best_so_far(history_csv: Path) -> float:
    import csv

    if not history_csv.exists():
        return float("-inf")
    with history_csv.open() as fh:
        return max((float(r["val_accuracy"]) for r in csv.DictReader(fh)), default=float("-inf"))


def targets(s: TrainSettings, tr: Split, va: Split):
    """(train split, train targets, val split, val targets, label info) for s.labels."""
    one_hot = np.eye(len(LABELS), dtype=np.float32)
    if s.labels == "folder":
        return tr, one_hot[tr.y], va, one_hot[va.y], {"kind": "folder"}
    if s.labels != "ferplus":
        raise UserError(f"Unknown --labels '{s.labels}'; choose folder or ferplus.")
    if not 0.0 <= s.folder_weight <= 1.0:
        raise UserError(f"--folder-weight must lie in [0, 1], got {s.folder_weight}.")
    from train.votes import find_votes, read_votes, soft_targets

    path = find_votes(s.data, s.votes)
    s.votes = str(path)  # saved with the settings, so --resume reads the same file
    votes = read_votes(path)
    info = {"kind": "ferplus", "votes": str(path), "folder_weight": s.folder_weight}
    out = []
    for name, split in (("train", tr), ("val", va)):
        t, keep, counts = soft_targets(split.names, split.y, votes, s.folder_weight)
        info[name] = counts
        print(f"FER+ votes, {name}: {counts['vote_labels']} images with vote labels, {counts['folder_label_fallback']} "
              f"with the folder label (no votes), {counts['left_out_doubtful']} left out (mostly unknown / not a face)",
              flush=True)
        keep_idx = np.flatnonzero(keep)
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
    keras = import_keras()
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises several types for a damaged archive
        raise UserError(f"{path} could not be loaded as a Keras model ({type(exc).__name__}: {exc}).") from exc
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 1:
        raise UserError(f"{path} takes input {model.input_shape}, but the pipeline feeds square grayscale crops "
                        "(None, S, S, 1); retrain it with `edge train`.")
    if model.output_shape[-1] != len(LABELS):
        raise UserError(f"{path} outputs {model.output_shape[-1]} classes, expected {len(LABELS)} ({', '.join(LABELS)}).")
    return model


def versions() -> dict:
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "numpy": np.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "platform": platform.platform()}


def run(s: TrainSettings, resume: bool = False, command: list[str] | None = None) -> dict:
    """Train into s.out; returns the metrics written to metrics.json."""
    out = Path(s.out)
    settings_file = out / "train_settings.json"
    if resume:
        if not settings_file.exists():
            raise UserError(f"Nothing to resume in {out}: it has no train_settings.json; start a new run without --resume.")
        # The saved settings win: a resumed run continues the same schedule and data.
        s = TrainSettings(**json.loads(settings_file.read_text()))
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"Run folder {out} already has files; pass --resume to continue it or choose a new --out.")

    if s.teacher:  # a wrong path or weight fails now, not after the dataset has loaded
        from train.teacher import check_weight, teacher_paths

        teacher_paths(s.teacher)
        check_weight(s.teacher_weight)
    keras = import_keras()
    from train import archs, report

    keras.utils.set_random_seed(s.seed)
    ds = load_dataset(s.data, size=INPUT_SIZE)
    tr_all, va, val_source = train_val(ds, s.val_fraction, s.seed)
    tr, tr_y, va_fit, va_y, label_info = targets(s, tr_all, va)
    if s.teacher:  # validation keeps the ground truth: the teacher only shapes what is learned
        from train.teacher import distill

        tr_y, label_info["teacher"] = distill(s.teacher, s.teacher_weight, tr.x, tr_y)
    if len(tr) == 0 or len(va_fit) == 0:
        raise UserError(f"{s.data} gives {len(tr)} training and {len(va_fit)} validation images; both must be non-empty.")

    out.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(asdict(s), indent=2))
    cmd = command or sys.argv
    with (out / "command.txt").open("a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}  {shlex.join(cmd)}\n")
    (out / "data.json").write_text(json.dumps({**ds.summary(), "validation": val_source, "labels": label_info,
                                               "train_images": len(tr), "val_images": len(va_fit)}, indent=2))
    (out / "versions.json").write_text(json.dumps(versions(), indent=2))

    options = dict(s.arch_options)
    if s.arch == "mobilenetv2":
        options["weights"] = s.weights
    model = archs.build(s.arch, INPUT_SIZE, len(LABELS), **options)
    restoring = resume and (out / "backup").exists()  # the backup's weights replace any starting weights
    if s.init_from and not restoring:
        sample = np.random.default_rng(s.seed).permutation(len(tr))[:1024]
        start_from(model, s.init_from, tr.x[sample])
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
    best = keras.callbacks.ModelCheckpoint(str(out / "model.keras"), monitor="val_accuracy", save_best_only=True)
    if resume:  # a resumed run must not overwrite the best model with a worse one
        best.best = _best_so_far(out / "history.csv")
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup"), delete_checkpoint=False),
        _epoch_sync(keras, batches),
        best,
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=s.patience, restore_best_weights=True),
    ]
    started = time.time()
    model.fit(batches, validation_data=(val_x, va_y), epochs=s.epochs, callbacks=callbacks,
              verbose=1 if sys.stdout.isatty() else 2)
    elapsed = time.time() - started
    timing_file = out / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else {"train_seconds": 0.0}
    timing["train_seconds"] += elapsed
    timing_file.write_text(json.dumps(timing, indent=2))

    best = keras.models.load_model(out / "model.keras") if (out / "model.keras").exists() else model
    probs = best.predict(va.x[..., None].astype(np.float32), batch_size=256, verbose=0)
    metrics = report.write_run_report(out, best, va, probs, tr, ds, weights, timing["train_seconds"], val_source,
                                      votes=s.votes if s.labels == "ferplus" else None)
    return metrics
