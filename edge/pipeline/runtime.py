"""The one place a TFLite interpreter is loaded: ai-edge-litert, then tflite_runtime,
then tensorflow.lite (the last only on a build machine)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from edge.errors import UserError
from edge.paths import check_readable, not_a_file

# (runtime name, module with Interpreter, distribution whose version is reported)
_CANDIDATES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite-runtime", "tflite_runtime.interpreter", "tflite-runtime"),
    # the module that holds Interpreter: importing "tensorflow.lite" gives a package without it
    ("tensorflow.lite", "tensorflow.lite.python.interpreter", "tensorflow"),
)


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter_class: type

    def describe(self) -> str:
        return f"{self.name} {self.version}"


_cached: Runtime | None = None

# A Pi's venv takes numpy from apt (1.x on Bookworm, 2.x on Trixie), and apt's OpenCV is built
# against it: pip there goes through install.sh's constraint file, which pins numpy to apt's.
PI_PIP = "sudo /opt/queue-mood/venv/bin/pip install -c /opt/queue-mood/pip-constraints.txt"


def runtime() -> Runtime:
    """The first TFLite runtime that imports (QUEUE_MOOD_RUNTIME=name forces one)."""
    global _cached
    if _cached is not None:
        return _cached
    import importlib
    from importlib import metadata

    forced = os.environ.get("QUEUE_MOOD_RUNTIME")
    names = [name for name, _, _ in _CANDIDATES]
    if forced and forced not in names:  # a typo would read as "no runtime is installed"
        raise UserError(f"QUEUE_MOOD_RUNTIME={forced} names no TFLite runtime; use one of {', '.join(names)}, "
                        "or unset it to take the first that imports.")
    broken = []  # installed but failed to import: say why, not "not installed"
    for name, module, dist in _CANDIDATES:
        if forced and forced != name:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            absent = isinstance(exc, ModuleNotFoundError) and exc.name and (module + ".").startswith(exc.name + ".")
            if not absent:
                broken.append(f"{module}: {exc}")
            continue
        if not hasattr(mod, "Interpreter"):  # a release that moved or dropped it
            broken.append(f"{module}: it has no Interpreter")
            continue
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "unknown"
        _cached = Runtime(name, version, mod.Interpreter)
        return _cached
    if broken:
        raise UserError(f"No TFLite runtime could be imported ({'; '.join(broken)}); reinstall it with: "
                        "pip install --force-reinstall --no-deps ai-edge-litert (on a Raspberry Pi: "
                        f"{PI_PIP} --force-reinstall --no-deps ai-edge-litert, which leaves apt's numpy as it is).")
    raise UserError("No TFLite runtime is installed; install one with: pip install 'queue-mood[edge]' (on a Raspberry "
                    f"Pi: {PI_PIP} ai-edge-litert, which keeps apt's numpy).")


def load_interpreter(model_path, num_threads: int | None = 1, what: str = "Model file",
                     advice: str = "pass a .tflite model made by `edge convert`"):
    """An allocated interpreter for a .tflite file; a bad file is one clear sentence, naming it
    `what` and ending in `advice` (a face detector's caller gives its own: edge convert makes
    only classifiers)."""
    path = os.fspath(model_path)
    if why := not_a_file(path):
        raise UserError(f"{what} {path} {why}; {advice}.")
    check_readable(path, what)  # the interpreter would say only "could not open" or "not a valid model"
    rt = runtime()
    try:
        interp = rt.interpreter_class(model_path=path, num_threads=num_threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{path} is not a valid TFLite model ({str(exc).splitlines()[0]}); {advice}.") from exc
    return interp
