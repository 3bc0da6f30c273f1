"""benchmarks/isa.py: `--isa avx2` hides AVX-512 from every library, LiteRT's table included."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import isa
from edge.errors import UserError

REPO = Path(__file__).resolve().parent.parent

x86_litert = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or importlib.util.find_spec("ai_edge_litert") is None,
    reason="--isa avx2 masks ai-edge-litert on x86-64 only")


def zen4_like() -> tuple[bytes, set[str]]:
    """A table and flags as an AVX-512 VNNI core reports them."""
    flags = {"ssse3", "sse4_1", "sse4_2", "sse4a", "avx", "fma", "f16c", "avx2", "avx512f", "avx512cd",
             "avx512dq", "avx512bw", "avx512vl", "avx512_vnni"}
    table = bytearray(86)
    for i, flag in isa.CHECKED.items():
        table[i] = flag in flags
    return bytes(table), flags


def test_a_table_that_matches_the_cpu_passes():
    table, flags = zen4_like()
    isa.check_table(table, flags, "lib.so")


def test_a_table_with_another_layout_is_refused():
    table, flags = zen4_like()
    shifted = bytes(1) + table[:-1]  # one field inserted before the SIMD block
    with pytest.raises(UserError, match="layout is unknown"):
        isa.check_table(shifted, flags, "lib.so")


def test_a_cpu_without_avx2_is_refused():
    table = bytes(86)
    with pytest.raises(UserError, match="no AVX2"):
        isa.check_table(table, set(), "lib.so")


def test_isa_must_come_from_the_command_line(monkeypatch):
    # in-process (as pytest calls main) there is no command line to re-start with: refused, not exec'd
    monkeypatch.delenv(isa.ENV_FLAG, raising=False)
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "pytest"])
    with pytest.raises(UserError, match="command line"):
        isa.apply("avx2")


def test_unknown_isa_is_refused():
    with pytest.raises(UserError, match="choose one of"):
        isa.apply("sse2")


@x86_litert
def test_the_litert_library_has_the_cpuinfo_symbols():
    import ai_edge_litert

    lib = Path(ai_edge_litert.__file__).parent / isa.LIBRARY
    syms = isa.elf_symbols(lib, {"cpuinfo_initialize", "cpuinfo_isa"})
    assert set(syms) == {"cpuinfo_initialize", "cpuinfo_isa"}
    assert syms["cpuinfo_isa"][1] > max(isa.AVX512)


PROBE = """
import ctypes, json, os, sys
sys.path.insert(0, {repo!r})
from benchmarks import isa
isa.apply("avx2")
import ai_edge_litert
path, base = isa._loaded(isa.LIBRARY)
addr, size = isa.elf_symbols(path, {{"cpuinfo_isa"}})["cpuinfo_isa"]
table = (ctypes.c_uint8 * size).from_address(base + addr)
print(json.dumps({{"flag": os.environ.get(isa.ENV_FLAG), "npy": os.environ.get("NPY_DISABLE_CPU_FEATURES"),
                  "avx2": table[28], "avx512": [table[i] for i in isa.MASKED], "kernels": isa.describe()}}))
"""


@x86_litert
def test_avx2_restarts_with_the_switches_set_and_clears_the_avx512_entries(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE.format(repo=str(REPO)))
    env = {k: v for k, v in os.environ.items() if k != isa.ENV_FLAG}
    r = subprocess.run([sys.executable, str(probe), "--isa", "avx2"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["flag"] == "avx2" and "X86_V4" in out["npy"]
    assert out["avx2"] == 1 and not any(out["avx512"])
    assert "AVX2 kernels only" in out["kernels"]


@pytest.mark.slow
@x86_litert
def test_edge_bench_latency_under_avx2_says_so_in_its_results(tmp_path, shipped_model):
    from tests.conftest import run_cli

    out = tmp_path / "out"
    r = run_cli("bench", "latency", shipped_model, "--isa", "avx2", "--threads", "1", "--faces", "1", "--repeats", "3",
                "--warmup", "1", "--no-peer", "--out", out)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "latency_avx2.json").read_text())
    assert "AVX2 kernels only" in report["machine"]["kernels"]
    assert report["command"].startswith("edge bench latency ") and "--isa avx2" in report["command"]
    assert "AVX2 kernels only" in (out / "latency_avx2.md").read_text()


def test_results_under_avx2_kernels_are_named_apart_from_native_ones(tmp_path, monkeypatch):
    from benchmarks import accuracy, common
    from edge.labels import LABELS

    monkeypatch.setenv(isa.ENV_FLAG, "avx2")  # what the re-started process has
    j, m = common.write_results(tmp_path, "latency", {"x": 1}, "# t\n")
    assert (j.name, m.name) == ("latency_avx2.json", "latency_avx2.md")
    plt = common.pyplot()
    if plt is not None:
        fig = plt.figure()
        assert common.save_figure(plt, fig, tmp_path, "latency").name == "latency_avx2.png"
        row = {"label": "m", "confusion_matrix": np.eye(len(LABELS), dtype=int).tolist(), "accuracy": 1.0,
               "per_class_recall": dict.fromkeys(LABELS, 1.0), "images": len(LABELS)}
        names = {p.name for p in accuracy.figures({"rows": [row], "split": "val"}, tmp_path)}
        assert names == {"accuracy_avx2_confusion_m.png", "accuracy_avx2_per_class.png"}
    monkeypatch.delenv(isa.ENV_FLAG)
    assert common.write_results(tmp_path, "latency", {"x": 1}, "# t\n")[0].name == "latency.json"
    assert {"latency.json", "latency.md", "latency_avx2.json", "latency_avx2.md"} <= {p.name for p in tmp_path.iterdir()}
