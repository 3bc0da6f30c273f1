"""`edge train`: fit an architecture from the registry, with checkpoints and resume (the run
folder's bookkeeping in resume.py, the callbacks in callbacks.py, the settings in settings.py)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.files import held_by_this_process
from edge.labels import LABELS
from edge.paths import check_out_folder
from train.augment import AugmentConfig, augment_batch, mix_batch
from train.callbacks import (Diverged, backup_callback, best_checkpoint, diverged_error, early_stopping, epoch_sync,
                             stop_on_divergence, timing_callback)
from train.data import FER2013_SIZE, Split, load_dataset, train_val, warn_absent_classes
from train.keras_io import import_keras
from train.provenance import record_command, record_versions
from train.resume import check_label_files, discard_first_epoch, finished, never_trained, resume_settings
from train.settings import TrainSettings, absolute, check_settings, idle_options
from train.warm_start import start_from

INPUT_SIZE = FER2013_SIZE  # models are trained at the dataset's native size
SGD_MOMENTUM = 0.9
SGD_DECAY_SCALE = 0.05


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
    own_val = va is ds.splits.get("val")
    warn_absent_classes(ds, va, "val" if own_val else "train", held_out=None if own_val else val_source)
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
        # What "accuracy" resolves to for these targets, made here: variables made inside fit's
        # first step (the metric's, the optimizer's) make TF trace that step twice, about 7 s
        # a trace on a CPU; they start at the same zeros either way.
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    model.optimizer.build(model.trainable_variables)
    # Checkpoints pick the epoch by accuracy against the argmax of the training kind of target
    # (for ferplus: votes mixed with --folder-weight, doubtful images left out); the report
    # below scores every label kind.
    val_x = va_fit.x[..., None].astype(np.float32)
    best = best_checkpoint(keras, out / "model.keras")
    timing = timing_callback(keras, out / "timing.json")
    # At each epoch's end its history.csv row and the best model are written before the backup,
    # and a resume first trims history.csv to the epochs the backup holds, then takes the best
    # so far from it (a resumed run must not overwrite the best model with a worse one): a kill
    # between them loses nothing and repeats nothing (the epoch is trained again, identically).
    callbacks = [
        stop_on_divergence(keras),  # first: a diverged epoch's end writes nothing
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
        best,
        backup_callback(keras, out / "backup", out / "history.csv", best if resume else None),
        epoch_sync(keras, batches),
        timing,
        early_stopping(keras, s.patience, out / "history.csv" if resume else None),
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


