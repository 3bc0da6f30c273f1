"""`edge train`'s settings: what a run may be given, checked before any data is read."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.errors import UserError
from edge.paths import check_out_folder
from train.archs import ARCHITECTURES, DEFAULT_ARCH


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
    from train.data import check_out_outside_data

    check_out_outside_data(s.out, s.data)
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
