"""The training stage's commands, `edge train`, `edge eval` and `edge soup`, registered with the edge CLI
through the "queue_mood.commands" entry points in pyproject.toml (edge never imports train).
TensorFlow is imported inside each command, not here."""

from __future__ import annotations

import errno
import signal
from contextlib import contextmanager

import click

from edge.paths import not_empty
from edge.signals import StopFlag
from train.archs import DEFAULT_ARCH

SEED_MAX = 2**32 - 1  # Keras's set_random_seed takes no more


@click.command()
@click.option("--data", required=True, callback=not_empty, help="Dataset folder (class or split folders) or fer2013.csv.")
@click.option("--out", required=True, callback=not_empty, help="Run folder to write (model.keras, metrics.json, figures).")
@click.option("--arch", default=DEFAULT_ARCH, show_default=True, help="Architecture from the registry.")
@click.option("--epochs", type=int, default=40, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["adamw", "adam", "sgd"]), default="adamw", show_default=True,
              help="sgd: momentum 0.9 with Nesterov; give it about 10x the AdamW --lr.")
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True,
              help="cosine: warm-up then cosine decay to 1% of --lr.")
@click.option("--label-smoothing", type=float, default=0.1, show_default=True)
@click.option("--class-weight-power", type=float, default=0.5, show_default=True,
              help="0 = no class weights, 1 = inverse frequency.")
@click.option("--mixup", "mixup_alpha", type=float, default=0.0, show_default=True, help="Mixup alpha (0 = off).")
@click.option("--cutmix", "cutmix_alpha", type=float, default=0.0, show_default=True,
              help="CutMix alpha (0 = off); with --mixup too, each batch takes one of the two.")
@click.option("--no-augment", is_flag=True, help="Train on the images as they are (the seed_cnn baseline recipe).")
@click.option("--patience", type=int, default=12, show_default=True, help="Early-stopping patience in epochs.")
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=1234, show_default=True)
@click.option("--weights", type=click.Choice(["imagenet", "none"]), default="imagenet", show_default=True,
              help="mobilenetv2 only.")
@click.option("--steps-per-epoch", type=int, default=None, help="Cap batches per epoch (quick trials).")
@click.option("--warmup-epochs", type=int, default=2, show_default=True)
@click.option("--init-from", default=None, callback=not_empty, help="Start from this .keras model's weights (a run folder: its model.keras), or an int8 .tflite (a shipped model): a second schedule. "
              "From a related --arch, the layers that match by name and shape are copied, those of the same names but wider "
              "are grown from them (the model starts as the same function), and the rest start fresh.")
@click.option("--labels", type=click.Choice(["folder", "ferplus"]), default="folder", show_default=True,
              help="folder: one label per image from its class folder; ferplus: the ten FER+ annotators' vote distribution.")
@click.option("--votes", default=None, callback=not_empty,
              help="FER+ votes CSV (default: ferplus_votes.csv beside or above --data).")
@click.option("--folder-weight", type=float, default=0.0, show_default=True,
              help="ferplus: share of the folder label mixed into each vote distribution.")
@click.option("--teacher", default=None, callback=not_empty, help="Distillation: a trained model (.tflite with its card, or .keras), a teacher_probs.npz from "
              "train.torch_teacher, or several separated by commas, whose probabilities on the training images are "
              "mixed into the targets.")
@click.option("--teacher-weight", type=float, default=0.5, show_default=True,
              help="Share of the teachers' probabilities in each training target.")
@click.option("--teacher-folder-weight", type=float, default=None,
              help="A teacher_probs.npz: share of its FER2013-label head in its probabilities, the rest from its vote "
              "head  [default: 0 with --labels ferplus, 1 with folder]")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last epoch.")
def train(data, out, arch, epochs, batch_size, lr, optimizer, schedule, label_smoothing, class_weight_power, mixup_alpha,
          cutmix_alpha, no_augment, patience, seed, weights, steps_per_epoch, warmup_epochs, init_from, labels, votes,
          folder_weight, teacher, teacher_weight, teacher_folder_weight, resume):
    """Train a model on FER2013 (or any dataset in a supported layout)."""
    from train import trainer

    s = trainer.TrainSettings(data=data, out=out, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, schedule=schedule,
                      label_smoothing=label_smoothing, class_weight_power=class_weight_power,
                      mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, augment=not no_augment, patience=patience,
                      seed=seed, weights=None if weights == "none" else weights, steps_per_epoch=steps_per_epoch,
                      warmup_epochs=warmup_epochs, init_from=init_from, labels=labels, votes=votes,
                      folder_weight=folder_weight, teacher=teacher, teacher_weight=teacher_weight,
                      teacher_folder_weight=teacher_folder_weight)
    given = typed_options(click.get_current_context(), FIELD_OF_PARAM)
    stop = StopAsInterrupt()
    try:
        with write_errors(out, lambda: f"continue it with: {cmd}" if (cmd := resume_command(s)) else
                          "run the same command again (no epoch had finished)"), stop:
            metrics = trainer.run(s, resume=resume, given=given)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(interrupted(s, stop.name or "SIGINT")) from None
    except Exception:
        # The KeyboardInterrupt a stop signal raises can land inside a library that turns it into
        # its own error (numpy's __array__ fallback, under Keras's save_weights, gave a TypeError):
        # after a stop signal, any error is the interruption.
        if not stop.event.is_set():
            raise
        raise click.exceptions.Exit(interrupted(s, stop.name)) from None
    click.echo(summary_line(metrics, out))


class StopAsInterrupt(StopFlag):
    """SIGTERM (systemd, kill) and SIGHUP (a closed SSH session) end training as Ctrl-C does,
    with the line that says how to continue; the backups are written to survive any kill."""

    def _set(self, signum, frame):
        super()._set(signum, frame)
        raise KeyboardInterrupt


# What a full or read-only disk raises; a run folder it cannot write is one sentence, not a traceback.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


@contextmanager
def write_errors(out, then):
    """A full or read-only disk under `out` as one sentence; then(): what to do next, found when it happens."""
    from edge.errors import UserError

    try:
        yield
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        fix = "make its disk writable" if exc.errno == errno.EROFS else "free some space there"
        raise UserError(f"Cannot write into {out} ({exc.strerror}); {fix}, then {then()}.") from exc


def summary_line(metrics: dict, out: str) -> str:
    """The run's figures as metrics.json has them: against the folder labels and, for a run with
    votes, against the FER+ majority (the figure a vote-trained model is judged by)."""
    line = f"val accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} against the folder labels"
    fp = metrics.get("ferplus_majority") or {}
    if fp.get("images"):
        line += (f"; {fp['accuracy']:.4f}, macro-F1 {fp['macro_f1']:.4f} against the FER+ majority "
                 f"({fp['images']:,} images)")
    return f"{line}; report in {out}"


# train's parameters by the TrainSettings field each sets, where the names differ.
FIELD_OF_PARAM = {"no_augment": "augment", "resume": None}


def typed_options(ctx: click.Context, field_of_param: dict) -> dict[str, str]:
    """{settings field: option name} for the options typed on the command line (not defaults)."""
    from click.core import ParameterSource

    typed = {}
    for p in ctx.command.params:
        if ctx.get_parameter_source(p.name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            name = field_of_param.get(p.name, p.name)
            if name:
                typed[name] = p.opts[0]
    return typed


def resume_command(s) -> str | None:
    """The command that continues the run in s.out; None when no epoch of it has finished."""
    import os
    import shlex
    from pathlib import Path

    out = Path(os.path.abspath(s.out))
    if not (out / "backup").is_dir():
        return None
    return f"edge train --data {shlex.quote(os.path.abspath(s.data))} --out {shlex.quote(str(out))} --resume"


def interrupted(s, signame: str = "SIGINT") -> int:
    """After Ctrl-C or another stop signal: how to carry on, then the shell's exit status for it."""
    cmd = resume_command(s)
    hint = f"continue it with: {cmd}" if cmd else "no epoch had finished, so run the same command again to start over"
    click.echo(f"Interrupted{'' if signame == 'SIGINT' else ' by ' + signame}; {hint}", err=True)
    return 128 + signal.Signals[signame]


@click.command("eval")
@click.argument("model_arg", metavar="[MODEL]", required=False, callback=not_empty)
@click.option("--model", "model_opt", default=None, callback=not_empty, help="A .keras or .tflite model, or a run folder or the folder edge "
              "convert wrote (default: the shipped model).")
@click.option("--data", required=True, callback=not_empty, help="Dataset folder or fer2013.csv.")
@click.option("--split", default=None, help="Split to evaluate (default: the first the dataset has of val, all, test, "
              "train; all: class folders without split folders; train, scored so, comes with a warning).")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as JSON.")
@click.option("--raw", is_flag=True, help="Skip the card's temperature (uncalibrated probabilities).")
@click.option("--votes", default=None, callback=not_empty, help="FER+ votes CSV for the FER+ majority score (default: ferplus_votes.csv "
              "beside or above --data, if any; one found there that cannot be read is a warning and the folder labels "
              "only, one given here an error).")
@click.option("--degrade", default=None, metavar="SIDES",
              help="Also score the split shrunk to these face sizes and scaled back up, e.g. 40,32,24.")
def eval_cmd(model_arg, model_opt, data, split, as_json, raw, votes, degrade):
    """Evaluate any model (.keras through Keras, .tflite through the edge runtime) on a dataset."""
    from edge.errors import UserError
    from train.evaluate import evaluate

    if model_arg and model_opt:
        raise UserError(f"Give the model once, as MODEL or as --model, not both ({model_arg} and --model {model_opt}).")
    try:
        sides = [int(v) for v in degrade.split(",") if v.strip()] if degrade is not None else None
        if sides == []:  # an empty value (a shell variable left unset) would silently score no size
            raise ValueError
    except ValueError:
        raise UserError(f"--degrade takes face sizes in pixels separated by commas (e.g. 40,32,24), not '{degrade}'.")
    rep = evaluate(model_opt or model_arg, data, split, calibrated=not raw, votes=votes, degrade=sides)
    if as_json:
        import os
        import shlex
        import sys

        from train.report import json_text

        # how to make these figures again: the command line and the folder its relative paths start from
        rep["command"] = shlex.join([click.get_current_context().find_root().info_name, *sys.argv[1:]])
        rep["working_folder"] = os.getcwd()
        click.echo(json_text(rep))
    else:
        from edge.metrics import format_report

        click.echo(format_report(rep, f"{rep['model']} on {rep['data']} [{rep['split']}] via {rep['runtime']}"))


@click.command("soup")
@click.argument("out", callback=not_empty)
@click.argument("runs", nargs=-1, required=True)
def soup_cmd(out, runs):
    """Average the weights of runs fine-tuned from the same start (a model soup) into run folder OUT."""
    from train.soup import soup

    with write_errors(out, lambda: "run the same command again"):
        path = soup(out, list(runs))
    click.echo(f"soup of {len(runs)} runs: {path}; next: edge eval {path} --data ..., then edge convert {path.parent} ...")
