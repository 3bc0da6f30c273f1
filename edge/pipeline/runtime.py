"""The one place a TFLite interpreter is loaded: ai-edge-litert, then tflite_runtime,
then tensorflow.lite (the last only on a build machine)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from dataclasses import dataclass

from edge.errors import UserError
from edge.paths import check_readable, not_a_file

# (runtime name, module with Interpreter, distribution whose version is reported)
_CANDIDATES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite-runtime", "tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow.lite", "tensorflow"),
)


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter_class: type

    def describe(self) -> str:
        return f"{self.name} {self.version}"


_cached: Runtime | None = None


def runtime() -> Runtime:
    """The first TFLite runtime that imports (QUEUE_MOOD_RUNTIME=name forces one)."""
    global _cached
    if _cached is not None:
        return _cached
    import importlib
    from importlib import metadata

    forced = os.environ.get("QUEUE_MOOD_RUNTIME")
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
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "unknown"
        _cached = Runtime(name, version, mod.Interpreter)
        return _cached
    if broken:
        raise UserError(f"No TFLite runtime could be imported ({'; '.join(broken)}); reinstall it with: "
                        "pip install --force-reinstall 'ai-edge-litert' 'numpy<2' (on a Raspberry Pi).")
    raise UserError(
        "No TFLite runtime is installed; install one with: pip install 'ai-edge-litert' 'numpy<2' "
        "(on a Raspberry Pi) or pip install 'queue-mood[edge]'."
    )


# The TFLite runtime's C++ logger prints this to file descriptor 2 when it makes its first
# XNNPACK delegate, whatever Python's log level; no setting of the runtime turns it off.
NATIVE_BANNER = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
_banner_lock = threading.Lock()
_banner_done = False
log = logging.getLogger(__name__)


@contextlib.contextmanager
def _native_info_hidden():
    """While INFO logs are off (`edge run -q`, doctor), the runtime's banner is dropped: fd 2
    goes through a pipe whose reader passes every other line on to the real stderr as it
    comes, so a warning, or the last words of a crash, still get out. With INFO on, nothing
    is touched."""
    global _banner_done
    with _banner_lock:
        if _banner_done or log.isEnabledFor(logging.INFO):
            yield
            return
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            r, w = os.pipe()
        except OSError:
            os.close(saved)
            yield
            return

        def forward():
            try:
                with os.fdopen(r, "rb") as pipe:
                    for line in pipe:
                        if line.rstrip(b"\r\n").decode(errors="replace") != NATIVE_BANNER:
                            os.write(saved, line)
            except OSError:
                pass

        reader = threading.Thread(target=forward, name="runtime-stderr", daemon=True)
        reader.start()
        os.dup2(w, 2)
        os.close(w)
        try:
            yield
            _banner_done = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)  # the pipe's last write end closes: the reader reads to its end
            reader.join(5.0)
            os.close(saved)


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
        with _native_info_hidden():
            interp = rt.interpreter_class(model_path=path, num_threads=num_threads)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{path} is not a valid TFLite model ({str(exc).splitlines()[0]}); {advice}.") from exc
    return interp
