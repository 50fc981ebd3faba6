"""Precision choice: bf16 autocast only where the CPU runs it natively, float32 elsewhere."""

from __future__ import annotations

import pytest
import torch

from buscad import hardware


@pytest.fixture()
def cpu_units(monkeypatch):
    def set_units(units: list[str]) -> None:
        monkeypatch.setattr(hardware, "cpu_bf16_units", lambda: units)

    return set_units


def test_auto_picks_bf16_on_a_cpu_with_bf16_units(cpu_units):
    cpu_units(["avx512_bf16"])
    precision, reason = hardware.resolve_precision("auto", "cpu")
    assert precision == "bf16-mixed" and "avx512_bf16" in reason


def test_auto_falls_back_to_float32_without_bf16_units(cpu_units):
    cpu_units([])
    assert hardware.resolve_precision("auto", "cpu")[0] == "32-true"


def test_explicit_bf16_without_units_falls_back_with_a_note(cpu_units, caplog):
    cpu_units([])
    precision, reason = hardware.resolve_precision("bf16-mixed", "cpu")
    assert precision == "32-true" and "no AMX/AVX-512 BF16" in reason
    assert any("bf16 requested" in r.getMessage() for r in caplog.records)


def test_float32_is_kept_when_asked(cpu_units):
    cpu_units(["amx_bf16"])
    assert hardware.resolve_precision("32-true", "cpu")[0] == "32-true"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="unknown precision"):
        hardware.resolve_precision("16-mixed", "cpu")


def test_autocast_runs_a_convolution_in_bf16_and_is_a_no_op_for_float32():
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.randn(1, 1, 8, 8)
    with hardware.autocast_cpu("bf16-mixed"):
        assert conv(x).dtype == torch.bfloat16
    with hardware.autocast_cpu("32-true"):
        assert conv(x).dtype == torch.float32


def test_this_machine_reports_its_units_consistently():
    units = hardware.cpu_bf16_units()
    assert isinstance(units, list)
    assert hardware.bf16_fast_on_cpu() == bool(units)


def test_cpu_name_and_flags_come_from_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
                       "flags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\nmodel name\t: other\n")
    monkeypatch.setattr(hardware, "CPUINFO", str(cpuinfo))
    assert hardware.cpu_name() == "AMD EPYC 9R14"
    assert hardware._cpu_flags() == {"fpu", "avx512f", "avx512_bf16", "avx512_vnni"}
    assert hardware.cpu_int8_units() == ["avx512_vnni"]
    monkeypatch.setattr(hardware, "CPUINFO", str(tmp_path / "absent"))
    assert hardware._cpu_flags() == set() and hardware.cpu_name()  # the platform's own name instead
    assert hardware.cpu_int8_units() == []
