"""`--isa avx2`: measure as an AVX2-only x86 core would, on a core that also has AVX-512.

Issue #15's budget is set on an AVX2-only machine, and int8 inference differs by up to 10x
between AVX2 and AVX-512 VNNI kernels. Every library in the pipeline picks its kernels at run
time from what the CPU reports, and each can be told to ignore AVX-512:

- numpy: NPY_DISABLE_CPU_FEATURES; OpenCV: OPENCV_CPU_DISABLE; oneDNN (TensorFlow, for the
  peer's Keras backend): ONEDNN_MAX_CPU_ISA. All three are read when the library loads, so
  `apply` re-starts the process with them set.
- LiteRT's XNNPACK (and ruy) have no switch: they read the CPU's features once, from the
  cpuinfo library's `cpuinfo_isa` table, when the first interpreter is made. `apply`
  initialises cpuinfo itself (found through the library's ELF symbol table) and clears the
  table's AVX-512 (and AVX-VNNI) entries before any interpreter exists. The layout is checked against
  /proc/cpuinfo first, so a library whose layout differs is refused, not mis-patched.

The result is AVX2 kernels on this core's clock and cache, not a different machine: compare a
classifier call with a figure measured on a real AVX2-only machine before scaling (README,
Compute budget).
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from pathlib import Path

from edge.errors import UserError

CHOICES = ("native", "avx2")
ENV_FLAG = "QUEUE_MOOD_ISA"  # set in the re-started process; benchmarks.common reports it
AVX2_ENV = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL",
    "OPENCV_CPU_DISABLE": "AVX512-SKX",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
LIBRARY = "libpywrap_litert_common.so"  # ai-edge-litert's interpreter, XNNPACK and cpuinfo

# Byte offsets in cpuinfo's `struct cpuinfo_x86_isa` (x86-64 build: one bool each) and the
# /proc/cpuinfo flag each must equal; the AVX-512 entries are 29-46.
CHECKED = {17: "ssse3", 18: "sse4_1", 19: "sse4_2", 20: "sse4a", 22: "avx", 23: "avx_vnni", 24: "fma", 27: "f16c",
           28: "avx2",
           29: "avx512f", 32: "avx512cd", 33: "avx512dq", 34: "avx512bw", 35: "avx512vl", 36: "avx512ifma",
           37: "avx512vbmi", 38: "avx512_vbmi2", 39: "avx512_bitalg", 40: "avx512_vpopcntdq", 41: "avx512_vnni",
           42: "avx512_bf16", 43: "avx512_fp16", 44: "avx512_vp2intersect"}
AVX512 = range(29, 47)
# Cleared: the AVX-512 entries and AVX-VNNI (256-bit int8 dot products, which an AVX2-only core
# such as Zen 3 also lacks).
MASKED = (23, *AVX512)
# Features whose table entries lie past the checked range (their place moved between cpuinfo
# versions): a CPU with them is refused rather than half-masked.
UNCHECKED_WIDE = ("avx10", "amx_tile", "amx_int8", "amx_bf16")


def active() -> str:
    return os.environ.get(ENV_FLAG) or "native"


def apply(isa: str) -> None:
    """Make this process use `isa`'s kernels: re-start it with the environment set, then mask
    LiteRT's table. Call before any interpreter is made."""
    if isa not in CHOICES:
        raise UserError(f"--isa {isa}: choose one of {', '.join(CHOICES)}.")
    if isa == "native":
        if active() != "native":
            raise UserError(f"{ENV_FLAG}={active()} is set in the environment but --isa is native; unset it.")
        return
    if active() != isa:
        _restart(isa)
    mask_litert_avx512()


def _restart(isa: str) -> None:
    argv = list(getattr(sys, "orig_argv", []))
    if "--isa" not in argv and f"--isa={isa}" not in argv:
        raise UserError("--isa re-starts the process, so it must be given on the command line "
                        "(python benchmarks/NAME.py --isa avx2 ... or edge bench NAME --isa avx2 ...).")
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], {**os.environ, **AVX2_ENV, ENV_FLAG: isa})


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def elf_symbols(path: Path, wanted: set[str]) -> dict[str, tuple[int, int]]:
    """{name: (address, size)} for the wanted names in a 64-bit little-endian ELF's .symtab."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise UserError(f"{path} is not a 64-bit little-endian ELF library; --isa avx2 needs x86-64.")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    found = {}
    for _name, kind, _f, _a, offset, size, link, _i, _al, entsize in sections:
        if kind != 2:  # SHT_SYMTAB: the full table, local symbols included
            continue
        strtab = sections[link][4]
        for at in range(offset, offset + size, entsize):
            st_name, _info, _other, _shndx, value, sym_size = struct.unpack_from("<IBBHQQ", data, at)
            start = strtab + st_name
            name = data[start:data.index(b"\0", start)].decode(errors="replace")
            if name in wanted:
                found[name] = (value, sym_size)
    return found


def _loaded(name: str) -> tuple[Path, int]:
    """(file, load address) of a shared library mapped into this process."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5].endswith("/" + name) and int(parts[2], 16) == 0:
            return Path(parts[5]), int(parts[0].split("-")[0], 16)
    raise UserError(f"--isa avx2 needs ai-edge-litert's {name} loaded; install ai-edge-litert "
                    "(the other TFLite runtimes cannot be masked).")


def mask_litert_avx512() -> None:
    """Clear the AVX-512 (and AVX-VNNI) entries of LiteRT's cpuinfo table."""
    import ai_edge_litert.interpreter  # noqa: F401 - maps the library into this process

    flags = cpu_flags()
    wide = [f for f in UNCHECKED_WIDE if f in flags]
    if wide:
        raise UserError(f"this CPU reports {', '.join(wide)}, whose place in LiteRT's cpuinfo table is not "
                        "checked; --isa avx2 cannot mask it safely here.")
    path, base = _loaded(LIBRARY)
    syms = elf_symbols(path, {"cpuinfo_initialize", "cpuinfo_isa"})
    if len(syms) < 2:
        raise UserError(f"{path} has no symbol table entries for cpuinfo; --isa avx2 cannot mask this build.")
    if not ctypes.CFUNCTYPE(ctypes.c_bool)(base + syms["cpuinfo_initialize"][0])():
        raise UserError("LiteRT's cpuinfo failed to initialise; --isa avx2 cannot mask it.")
    address, size = syms["cpuinfo_isa"]
    table = (ctypes.c_uint8 * size).from_address(base + address)
    check_table(bytes(table), flags, path.name)
    for i in MASKED:
        table[i] = 0


def check_table(table: bytes, flags: set[str], where: str) -> None:
    """Refuse a cpuinfo table whose checked entries disagree with the CPU's flags (an unknown
    layout), or a CPU without AVX2."""
    wrong = [f"{flag} (byte {i})" for i, flag in CHECKED.items() if i >= len(table) or bool(table[i]) != (flag in flags)]
    if wrong:
        raise UserError(f"LiteRT's cpuinfo table in {where} does not match /proc/cpuinfo at {', '.join(wrong)}; "
                        "this build's layout is unknown, so --isa avx2 refuses to patch it.")
    if "avx2" not in flags:
        raise UserError("this CPU has no AVX2; --isa avx2 cannot run as an AVX2 machine.")


def describe() -> str | None:
    """How the kernels were restricted, for the result's machine block (None when native)."""
    if active() == "native":
        return None
    return (f"{active().upper()} kernels only (--isa {active()}): AVX-512 hidden from numpy, OpenCV, oneDNN and "
            "LiteRT's XNNPACK on a CPU that has it")
