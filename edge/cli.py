"""The `edge` command: parse arguments, build settings, call one run() per subcommand.

The build-machine stages (train, convert, benchmarks) register their own commands under the
"queue_mood.commands" entry points (pyproject.toml); edge finds them there and never imports
those packages by name. They import TensorFlow lazily, inside each command.
"""

from __future__ import annotations

import functools
import signal
import sys
from importlib.metadata import entry_points

import click

from edge.errors import ConfigError, UserError
from edge.paths import not_empty
from edge.pipeline.detectors import DETECTORS


class PluginChoice(click.Choice):
    """The keys of a plugin registry, read when the command runs, so a plugin registered
    after this module was imported is a choice too."""

    def __init__(self, registry):
        self.registry = registry
        super().__init__(())

    @property
    def choices(self):
        return tuple(sorted(self.registry))

    @choices.setter
    def choices(self, _value):  # click.Choice.__init__ assigns it; the registry is the truth
        pass


STAGE_COMMANDS = "queue_mood.commands"  # the entry-point group of the stages' commands


def _needs_build_extra(exc: ImportError) -> UserError:
    return UserError(f"This command needs the build-machine packages ({exc.name} is missing); "
                     "install them with: pip install 'queue-mood[train]'.")


def _stage_command(ep) -> click.Command:
    """A stage's command from its entry point; a missing build-machine package (at import or
    inside the command) is one sentence, not a traceback."""
    try:
        cmd = ep.load()
    except ImportError as exc:
        error = _needs_build_extra(exc)

        def fail():
            raise error

        return click.Command(ep.name, callback=fail, help=f"(unavailable: {error})",
                             context_settings={"ignore_unknown_options": True})
    callback = cmd.callback

    @functools.wraps(callback)
    def guarded(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except ImportError as exc:
            raise _needs_build_extra(exc) from exc

    cmd.callback = guarded
    return cmd


class Group(click.Group):
    """Adds the stages' registered commands; turns a UserError from any subcommand into one
    sentence on stderr and exit code 2."""

    def _stages(self) -> dict:
        return {ep.name: ep for ep in entry_points(group=STAGE_COMMANDS)}

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self._stages()})

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in self._stages():
            cmd = _stage_command(self._stages()[name])
        return cmd

    def resolve_command(self, ctx, args):
        if args and self.get_command(ctx, args[0]) is None and not self._stages():
            raise UserError(f"Unknown command '{args[0]}'. This install registers no build-stage commands (train, "
                            "convert, eval, bench); reinstall the package from its checkout: pip install -e '.[dev]'.")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            if ctx.invoked_subcommand == "run":  # the service: not a restart every 5 s into the same error
                from edge.service.notify import failed_start

                failed_start(str(exc))
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # click's "Aborted!" and status 1 read as a failure; 130 is the shell's Ctrl-C
            click.echo("Interrupted.", err=True)
            sys.exit(130)


def _print_version(ctx, _param, value):
    if not value or ctx.resilient_parsing:
        return
    from edge.release import current, summary

    click.echo(summary(current()))
    ctx.exit()


@click.group(cls=Group)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version, the source commit and when the bundle was made, and exit.")
def cli():
    """Queue-mood monitor: train, convert and run a facial-expression model on a Raspberry Pi."""


@cli.command("run")
@click.option("--config", "config_path", default=None, callback=not_empty, help="TOML config file (default: built-in defaults).")
@click.option("--camera", type=int, default=None, help="Camera index: the Pi camera via picamera2, else a USB camera.")
@click.option("--source", default=None, help="Video file, image folder or rtsp:// / http:// stream instead of a camera; "
              "a USB camera's device (/dev/v4l/by-id/...) is a camera.")
@click.option("--realtime", is_flag=True,
              help="Play the --source recording at its own frame rate, as a camera would (default: as fast as possible).")
@click.option("--wait-for-camera", is_flag=True,
              help="A camera that cannot be opened at the start is reported down and tried again, not an error "
                   "(the service uses it: at boot the camera may not be ready).")
@click.option("--model", default=None, callback=not_empty, help="int8 .tflite model with model.json beside it, or the folder `edge convert --out` wrote (default: the shipped model).")
@click.option("--detector", type=PluginChoice(DETECTORS), default=None,
              help="Face detector (default: the config's [detector] kind, else blazeface).")
@click.option("--detector-model", default=None, help="Face detector model file.")
@click.option("--threads", type=int, default=None, help="Interpreter threads (default 1).")
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames (1 or more).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (more than 0).")
@click.option("--preview", default=None, metavar="VIDEO.mp4",
              help="Write an annotated video (.mp4, .avi, .mov or .mkv) for debugging (off by default: frames never leave memory).")
@click.option("--print-config", is_flag=True, help="Print the effective config as TOML and exit.")
@click.option("--example", is_flag=True, help="With --print-config: print a commented example with every key instead.")
@click.option("--show-secrets", is_flag=True, help="With --print-config: print tokens, passwords and URLs with "
              "credentials too (hidden by default).")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON at the end (no status line).")
@click.option("-v", "--verbose", count=True, help="-v: per-track detail each second; -vv: debug logs of every library.")
@click.option("-q", "--quiet", is_flag=True, help="Only alerts, warnings and errors; no status line.")
def run_cmd(config_path, camera, source, realtime, wait_for_camera, model, detector, detector_model, threads, max_frames, duration, preview,
            print_config, example, show_secrets, as_json, verbose, quiet):
    """Watch the queue: camera -> faces -> expressions -> queue mood -> local alerts."""
    import json

    from edge.service.app import RunOptions, run
    from edge.config import load_config

    if camera is not None and source:  # else one of them silently unused
        from edge.redact import redact_url

        raise UserError(f"--camera {camera} and --source {redact_url(source)} name two sources; give one of them.")
    flags = {"source.camera": ("--camera", camera), "source.path": ("--source", source),
             "source.realtime": ("--realtime", realtime or None),
             "source.wait_for_camera": ("--wait-for-camera", wait_for_camera or None), "model.path": ("--model", model),
             "detector.kind": ("--detector", detector), "detector.model": ("--detector-model", detector_model),
             "model.threads": ("--threads", threads)}
    overrides = {k: v for k, (_, v) in flags.items() if v is not None}
    for flag, given in (("--example", example), ("--show-secrets", show_secrets)):
        if given and not print_config:
            raise UserError(f"{flag} goes with --print-config: edge run --print-config {flag}.")
    if example:
        from edge.configdoc import example_toml

        click.echo(example_toml(), nl=False)
        return
    unread: list[str] = []
    try:
        cfg = load_config(config_path, overrides, unread=unread)
    except ConfigError as exc:  # a value given as a flag is named by the flag the user typed
        for key in overrides:
            exc.args = (str(exc).replace(f"Config key '{key}'", f"{flags[key][0]} (config key {key})"),)
        raise
    if print_config:
        from edge.configdoc import effective_toml

        click.echo(effective_toml(cfg, show_secrets), nl=False)
        return
    if verbose and quiet:
        raise UserError("-v and -q contradict each other; choose one.")
    from edge.service.console import Console

    console = Console(verbose=verbose, quiet=quiet, status_line=False if as_json else None)
    warn_unread(unread)  # after the console: in the startup log as its other lines are
    try:
        summary = run(cfg, RunOptions(max_frames=max_frames, duration_s=duration, preview=preview),
                      on_result=console.on_result)
    finally:
        console.close()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    # Alert events gone for good (the ERROR lines above say which and why): a script or a person
    # at the terminal must not read the run as a success.
    gone = {key: n for key, s in summary["sinks"].items() if (n := s["lost"] + s["dropped"])}
    if gone:
        click.echo(f"edge run: alert events were lost ({', '.join(f'{k}: {n}' for k, n in gone.items())}); "
                   "the ERROR lines above say why.", err=True)
        raise SystemExit(1)


@cli.command("config")
@click.option("--config", "config_path", default=None, callback=not_empty, help="TOML config file to check and print (default: built-in defaults).")
@click.option("--docs", is_flag=True, help="Print the reference of every key (docs/config.md) as Markdown.")
@click.option("--example", is_flag=True, help="Print a commented example with every key (deploy/config.example.toml).")
@click.option("--show-secrets", is_flag=True, help="Print tokens, passwords and URLs with credentials too (hidden by default).")
def config_cmd(config_path, docs, example, show_secrets):
    """Print the effective config, the reference of every key, or a commented example."""
    from edge import configdoc
    from edge.config import load_config

    if docs and example:
        raise UserError("Choose one of --docs and --example.")
    if (docs or example) and config_path:  # they describe every key's default, whatever a file sets
        raise UserError(f"--{'docs' if docs else 'example'} prints the defaults of every key and reads no --config; "
                        "drop one of them (edge config --config FILE prints that file's effective config).")
    if docs or example:
        if show_secrets:
            raise UserError(f"--{'docs' if docs else 'example'} prints defaults, which hold no secrets; drop "
                            "--show-secrets (it goes with printing a config: edge config --config FILE --show-secrets).")
        click.echo(configdoc.markdown() if docs else configdoc.example_toml(), nl=False)
        return
    unread: list[str] = []
    cfg = load_config(config_path, unread=unread)
    echo_unread(unread)
    click.echo(configdoc.effective_toml(cfg, show_secrets), nl=False)


def echo_unread(unread: list[str]) -> None:
    """warn_unread for a command that sets up no logging: on stderr, beside what it prints on
    stdout, marked as the command's errors are ("error: ...")."""
    for said in unread:
        click.echo(f"warning: {said}.", err=True)


def warn_unread(unread: list[str]) -> None:
    """One warning for each config key set where its mode does not read it (config.unread_keys)."""
    import logging

    for said in unread:
        logging.getLogger("edge.config").warning("%s.", said)


@cli.command("demo")
@click.option("--out", default=None, help="Folder for the scene, alerts.jsonl and summary.png "
                                          "(default: ~/.cache/queue-mood/demo); an earlier demo there is replaced, "
                                          "other files of those names are refused.")
@click.option("--fast", is_flag=True, help="Run through the scene as fast as this machine can (default: its own pace).")
@click.option("--model", default=None, callback=not_empty,
              help="Another model: a .tflite with its model.json, or the folder `edge convert` wrote (default: the shipped one).")
def demo_cmd(out, fast, model):
    """Watch the monitor raise and clear an alert on a made-up queue scene (no camera, no dataset)."""
    from edge.ops.demo import DemoSettings, run
    from edge.service.console import Console

    Console(status_line=False)  # logs (the alerts among them) on stderr, the live lines on stdout
    result = run(DemoSettings(out=out, realtime=not fast, model=model), echo=click.echo)
    kinds = [e["kind"] for e in result.alerts]
    if not ("raised" in kinds and "cleared" in kinds):
        err = UserError(f"The demo ran, but the alert was not both raised and cleared (events: {kinds or 'none'}); "
                        f"see {result.chart}.")
        err.exit_code = 1
        raise err


@cli.command("analyze")
@click.argument("path")
@click.option("--out", default=None,
              help="Folder for the results (default: ./<name>-analysis); an earlier analysis there is replaced, "
                   "other files of the names it writes are refused.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Analyse every Nth frame (or image).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True,
              help="Format of timeline.* and tracks.*.")
@click.option("--annotate", is_flag=True, help="Also write OUT/annotated.mp4 with boxes and labels (off by default: privacy).")
@click.option("--config", "config_path", default=None, callback=not_empty, help="TOML config file (default: built-in defaults).")
@click.option("--model", default=None, callback=not_empty, help="int8 .tflite model with model.json beside it, or the folder `edge convert --out` wrote (default: the shipped model).")
def analyze_cmd(path, out, every, fmt, annotate, config_path, model):
    """Analyse a video, an image or a folder of images: per-face timeline, per-track summary, chart."""
    from pathlib import Path

    from edge.ops.analyze import AnalyzeOptions, analyze, report_lines
    from edge.config import load_config

    unread: list[str] = []  # as edge config says them: by the config's own [source], not PATH
    cfg = load_config(config_path, {"model.path": model} if model else {}, unread=unread)
    echo_unread(unread)
    out = out or f"{Path(path).stem or 'input'}-analysis"
    summary = analyze(cfg, path, AnalyzeOptions(out=out, every=every, fmt=fmt, annotate=annotate))
    for line in report_lines(summary):
        click.echo(line)
    if summary["stopped_by_signal"]:  # the files cover a part: a script must not take them for the whole
        sys.exit(128 + signal.Signals[summary["stopped_by_signal"]])  # as the shell reports it: 130 for Ctrl-C


@cli.command("bundle")
@click.option("--model", default=None, callback=not_empty, help="int8 .tflite with model.json beside it, or the folder `edge convert --out` wrote (default: the config's, else the shipped model).")
@click.option("--config", "config_path", default=None, callback=not_empty, help="TOML config to ship (default: edge run's defaults with camera 0).")
@click.option("--out", required=True, help="Bundle folder, or a file ending in .tar.gz.")
@click.option("--wheel", default=None, help="A prebuilt queue_mood-*.whl (default: build one from this checkout).")
def bundle_cmd(model, config_path, out, wheel):
    """Pack model, detector, config, wheel, install.sh and the systemd unit for a Pi."""
    from edge.ops.bundle import BundleSettings, run

    result = run(BundleSettings(out=out, model=model, config=config_path, wheel=wheel))
    click.echo(f"bundle {result.path} ({len(result.files)} files, {result.size_bytes / 2**20:.1f} MiB)")
    for note in result.notes:
        click.echo(f"note: {note}")


@cli.command("doctor")
@click.option("--config", "config_path", default=None, callback=not_empty, help="TOML config to check (default: built-in defaults).")
@click.option("--model", default=None, callback=not_empty, help="int8 .tflite model to check instead of the config's.")
@click.option("--camera", type=int, default=None, help="Camera index to probe (default: the config's camera).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.pass_context
def doctor_cmd(ctx, config_path, model, camera, as_json):
    """Check this machine: clock, runtime, numpy/OpenCV, config, model, detector, compute budget, camera, sinks,
    disk, status page, Pi health."""
    from edge.ops.doctor import DoctorSettings, run

    ctx.exit(run(DoctorSettings(config=config_path, model=model, camera=camera, as_json=as_json), echo=click.echo))


def main():
    cli(prog_name="edge")


if __name__ == "__main__":
    main()
