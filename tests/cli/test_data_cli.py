import shutil

import pytest
from typer.testing import CliRunner

from buscad import __version__
from buscad.cli.main import app
from buscad.data.export import crop_margin_of
from buscad.data.manifest import read_manifest

runner = CliRunner()


def test_help_lists_the_command_groups_and_version_works():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "data" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"buscad {__version__}"
    result = runner.invoke(app, ["data", "--help"])
    assert all(command in result.output for command in ("prepare", "inspect", "synth"))


def test_synth_prepare_inspect(tmp_path):
    out = tmp_path / "s"
    result = runner.invoke(app, ["data", "synth", str(out), "-n", "6", "--seed", "3", "--size", "48x64"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*/* ([0-9]).png"))) == 6
    manifest = tmp_path / "m.csv"
    result = runner.invoke(app, ["data", "prepare", str(out), "--format", "busi", "-o", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "6 cases written" in result.stdout
    frame = read_manifest(manifest)
    assert set(frame["label"]) == {"normal", "benign", "malignant"} and set(frame["width"]) == {64}
    result = runner.invoke(app, ["data", "inspect", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "6 cases" in result.stdout and "no problems found" in result.stdout


@pytest.fixture()
def bad_dir(synthetic_busi_dir, tmp_path):
    root = shutil.copytree(synthetic_busi_dir, tmp_path / "bad")
    (root / "benign" / "benign (900).png").write_bytes(b"")
    (root / "normal" / "normal (1)_mask.png").unlink()
    return root


def test_prepare_reports_each_problem_on_one_line(bad_dir, tmp_path):
    result = runner.invoke(
        app, ["data", "prepare", str(bad_dir), "-f", "busi", "-o", str(tmp_path / "m.csv")]
    )
    assert result.exit_code == 0
    problem_lines = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    assert len(problem_lines) == 2
    assert any(line.endswith("benign (900).png: empty file (0 bytes)") for line in problem_lines)
    assert any(line.endswith("normal (1).png: image has no mask file") for line in problem_lines)
    assert "23 cases written" in result.stdout and "2 skipped" in result.stdout


def test_strict_exits_1_without_traceback_or_manifest(bad_dir, tmp_path):
    args = ["data", "prepare", str(bad_dir), "-f", "busi", "-o", str(tmp_path / "m.csv"), "--strict"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == "error: 2 problem(s) with --strict: no manifest written"
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["data", "prepare", "/no/such/folder", "-f", "busi", "-o", "m.csv"],
            "error: /no/such/folder: dataset folder not found",
        ),
        (["data", "inspect", "/no/such/m.csv"], "error: /no/such/m.csv: manifest not found"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.strip() == message
    assert "Traceback" not in result.output


def test_synth_refuses_an_existing_dataset_and_bad_sizes(synthetic_busi_dir, tmp_path):
    result = runner.invoke(app, ["data", "synth", str(synthetic_busi_dir), "-n", "3"])
    assert result.exit_code == 1 and "already holds images" in result.stderr
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "x"), "--size", "big"])
    assert result.exit_code == 2 and "HEIGHTxWIDTH" in result.output
    assert not (tmp_path / "x").exists()


def test_export_nnunet_and_monai(synthetic_manifest, tmp_path):
    folded = tmp_path / "folds.csv"
    result = runner.invoke(app, ["data", "split", str(synthetic_manifest), "--folds", "3", "-o", str(folded)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["data", "export", str(folded), "--format", "nnunet", "-o", str(tmp_path / "raw"),
                                 "--dataset-id", "601", "--name", "Synth"])
    assert result.exit_code == 0, result.output
    assert "with splits_final.json" in result.output
    assert (tmp_path / "raw" / "Dataset601_Synth" / "splits_final.json").is_file()
    result = runner.invoke(app, ["data", "export", str(folded), "--format", "nnunet", "-o", str(tmp_path / "raw"),
                                 "--dataset-id", "601", "--name", "Synth"])
    assert result.exit_code == 1 and "already exists" in result.output
    result = runner.invoke(app, ["data", "export", str(folded), "--format", "monai", "-o", str(tmp_path / "monai")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "monai" / "datalist.json").is_file()
    result = runner.invoke(app, ["data", "export", str(folded), "--format", "crops", "-o", str(tmp_path / "crops")])
    assert result.exit_code == 0, result.output
    assert "lesion crops of" in result.output and "buscad train CONFIG.yaml data.manifest=" in result.output
    assert (tmp_path / "crops" / "manifest.csv").is_file()
    result = runner.invoke(app, ["data", "export", str(folded), "--format", "crops", "--margin", "0.5",
                                 "-o", str(tmp_path / "wide")])
    assert result.exit_code == 0, result.output
    assert crop_margin_of(read_manifest(tmp_path / "wide" / "manifest.csv")) == 0.5
    result = runner.invoke(app, ["data", "export", str(folded), "--format", "crops", "--margin", "3",
                                 "-o", str(tmp_path / "too_wide")])
    assert result.exit_code == 1 and "crop margin 3.0: expected" in result.output
    result = runner.invoke(app, ["data", "export", str(folded), "--format", "monai", "--margin", "0.5",
                                 "-o", str(tmp_path / "monai2")])
    assert result.exit_code != 0 and "--format crops only" in result.output
