"""The `edge` command: parse arguments, build settings, call one run() per subcommand.

Build-machine subcommands (train, convert) import TensorFlow lazily, inside run().
"""

from __future__ import annotations

import sys

import click

from edge.errors import UserError


class Group(click.Group):
    """Turns a UserError from any subcommand into one sentence on stderr and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=Group)
def cli():
    """Queue-mood monitor: train, convert and run a facial-expression model on a Raspberry Pi."""


@cli.command()
@click.option("--data", required=True, help="Dataset folder (class or split folders) or fer2013.csv.")
@click.option("--out", required=True, help="Run folder to write (model.keras, metrics.json, figures).")
@click.option("--arch", default="queue_net", show_default=True, help="Architecture from the registry.")
@click.option("--epochs", type=int, default=40, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Peak learning rate (cosine schedule).")
@click.option("--label-smoothing", type=float, default=0.1, show_default=True)
@click.option("--class-weight-power", type=float, default=0.5, show_default=True,
              help="0 = no class weights, 1 = inverse frequency.")
@click.option("--mixup", "mixup_alpha", type=float, default=0.0, show_default=True, help="Mixup alpha (0 = off).")
@click.option("--no-augment", is_flag=True, help="Train on the images as they are (the seed_cnn baseline recipe).")
@click.option("--patience", type=int, default=12, show_default=True, help="Early-stopping patience in epochs.")
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--weights", type=click.Choice(["imagenet", "none"]), default="imagenet", show_default=True,
              help="mobilenetv2 only.")
@click.option("--steps-per-epoch", type=int, default=None, help="Cap batches per epoch (quick trials).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last epoch.")
def train(data, out, arch, epochs, batch_size, lr, label_smoothing, class_weight_power, mixup_alpha,
          no_augment, patience, seed, weights, steps_per_epoch, resume):
    """Train a model on FER2013 (or any dataset in a supported layout)."""
    from train.trainer import TrainSettings, run

    s = TrainSettings(data=data, out=out, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr,
                      label_smoothing=label_smoothing, class_weight_power=class_weight_power,
                      mixup_alpha=mixup_alpha, augment=not no_augment, patience=patience, seed=seed,
                      weights=None if weights == "none" else weights, steps_per_epoch=steps_per_epoch)
    metrics = run(s, resume=resume)
    click.echo(f"val accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}; report in {out}")


def main():
    cli(prog_name="edge")


if __name__ == "__main__":
    main()
