"""`edge bench NAME ARGS`: runs benchmarks/NAME.py's main(ARGS); registered with the edge CLI
through the "queue_mood.commands" entry points in pyproject.toml."""

from __future__ import annotations

import importlib
import sys

import click

BENCHMARKS = ("accuracy", "latency", "pipeline", "detector_recall", "peer", "head_detection", "face_width_accuracy",
              "scenarios", "soak")


@click.command("bench", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("name", type=click.Choice(BENCHMARKS))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(name, args):
    """Run benchmarks/NAME.py with ARGS (`edge bench NAME --help` lists them); results go to a new runs/bench/ folder unless --out says where."""
    module = importlib.import_module(f"{__package__}.{name}")
    # argv[0] is argparse's usage line and the command that benchmarks.common records
    sys.argv = [f"edge bench {name}", *args]
    sys.exit(module.main(list(args)) or 0)
