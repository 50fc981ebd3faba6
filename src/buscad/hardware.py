"""What the CPU can do fast, and the numeric precision chosen from it.

bfloat16 halves memory traffic and, on CPUs with AVX-512 BF16 or AMX units, runs oneDNN convolutions
about 1.5–2× faster than float32 (benchmarks/results/precision_cpu.md). Where the units are missing,
bf16 is emulated and slower than float32, so ``auto`` picks it only where it pays. Losses and metrics
stay in float32 either way (autocast covers the network's forward pass only).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
from collections.abc import Iterator
from typing import Literal

import torch

log = logging.getLogger(__name__)

Precision = Literal["32-true", "bf16-mixed"]
PRECISION_CHOICES: tuple[str, ...] = ("auto", "32-true", "bf16-mixed")


CPUINFO = "/proc/cpuinfo"


def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` of /proc/cpuinfo (Linux); None where there is none."""
    try:
        with open(CPUINFO, encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def _cpu_flags() -> set[str]:
    return set((_cpuinfo_field("flags") or "").split())


def cpu_name() -> str:
    """The CPU's model name (e.g. ``AMD EPYC``), for benchmark records: figures differ between CPUs."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown CPU"


@functools.lru_cache(maxsize=1)
def cpu_bf16_units() -> list[str]:
    """The CPU's native bf16 units (``amx_bf16``, ``avx512_bf16``); empty when bf16 would be emulated."""
    flags = _cpu_flags()
    units: list[str] = [flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags]
    if not flags:  # no /proc/cpuinfo (macOS, Windows): trust oneDNN's own probe
        mkldnn_probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        if mkldnn_probe is not None and torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX"):
            units = ["onednn-bf16"] if mkldnn_probe() else []
    return units


def cpu_int8_units() -> list[str]:
    """The CPU's exact int8 dot-product units (``amx_int8``, ``avx512_vnni``, ``avx_vnni``); empty on a CPU
    with AVX2 only, whose int8 kernels go through a saturating 16-bit intermediate (why int8 exports use
    7-bit weights: :mod:`buscad.inference.quantize`), or where /proc/cpuinfo is absent."""
    flags = _cpu_flags()
    return [flag for flag in ("amx_int8", "avx512_vnni", "avx_vnni") if flag in flags]


def bf16_fast_on_cpu() -> bool:
    """True where bf16 convolutions run natively on this CPU (AMX or AVX-512 BF16)."""
    return bool(cpu_bf16_units())


def resolve_precision(requested: str, accelerator: str = "cpu") -> tuple[Precision, str]:
    """``auto`` → ``bf16-mixed`` on a CPU with native bf16, else ``32-true``; returns (precision, reason).

    An explicit ``bf16-mixed`` on a CPU without native bf16 falls back to ``32-true`` with a note, since
    emulated bf16 is slower than float32 and gains nothing. On a GPU ``auto`` keeps float32 (Lightning's
    own mixed-precision choices apply there; pass ``bf16-mixed`` explicitly to use it).
    """
    if requested not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {requested!r} ({', '.join(PRECISION_CHOICES)})")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if requested == "32-true":
        return "32-true", "float32 as configured"
    if not on_cpu:
        if requested == "bf16-mixed":
            return "bf16-mixed", "bf16 autocast as configured (GPU)"
        return "32-true", "float32 (auto on a GPU)"
    units = cpu_bf16_units()
    if units:
        return "bf16-mixed", f"bf16 autocast: this CPU has {', '.join(units)}"
    if requested == "bf16-mixed":
        note = "bf16 requested but this CPU has no AMX/AVX-512 BF16 units; training in float32 instead"
        log.warning(note)
        return "32-true", note
    return "32-true", "float32: this CPU has no AMX/AVX-512 BF16 units"


@contextlib.contextmanager
def autocast_cpu(precision: str) -> Iterator[None]:
    """bf16 autocast around a CPU forward pass when ``precision`` is ``bf16-mixed``; a no-op otherwise."""
    if precision == "bf16-mixed":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield
