from buscad.data.inspect import summarize
from buscad.data.manifest import read_manifest


def test_summary_of_the_synthetic_manifest(synthetic_manifest):
    summary = summarize(read_manifest(synthetic_manifest))
    assert summary.n_cases == 24 and summary.problems == []
    assert summary.per_dataset_label.loc["busi", "total"] == 24
    assert summary.width_range == (128, 128) and summary.height_range == (96, 96)
    assert summary.multi_mask_cases == 1
    assert summary.mask_presence.loc["normal", "empty"] == 4


def test_inconsistent_labels_and_missing_files_are_listed(synthetic_manifest):
    frame = read_manifest(synthetic_manifest)
    normal = frame.index[frame["label"] == "normal"][0]
    benign = frame.index[frame["label"] == "benign"][0]
    frame.loc[normal, "lesion_pixels"] = 5
    frame.loc[benign, "lesion_pixels"] = 0
    frame.loc[benign, "image_path"] = "benign/gone.png"
    problems = summarize(frame).problems
    assert len(problems) == 3
    assert any("labelled normal but its mask has 5 lesion pixels" in p for p in problems)
    assert any("labelled benign but its mask is empty" in p for p in problems)
    assert any(p.endswith("gone.png: file listed in the manifest is missing") for p in problems)
