"""A run's record names the CPU it ran on and the units its speed and numerics depend on."""

from __future__ import annotations

from buscad import hardware
from buscad.training import provenance


def test_machine_names_the_cpu_and_its_bf16_and_int8_units(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\n"
                       "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_int8 avx512_vnni\n")
    monkeypatch.setattr(hardware, "CPUINFO", str(cpuinfo))
    hardware.cpu_bf16_units.cache_clear()  # cached for the whole process: read the fake cpuinfo, then forget it
    try:
        record = provenance.machine()
    finally:
        hardware.cpu_bf16_units.cache_clear()
    assert record["cpu"] == "Intel(R) Xeon(R) Platinum 8488C"
    assert record["bf16_units"] == ["amx_bf16", "avx512_bf16"]
    assert record["int8_units"] == ["amx_int8", "avx512_vnni"]
    assert record["cpus"] >= 1 and record["python"]
