#!/usr/bin/env bash
# Short runs of recipe variants on fold 0 of curated BUSI, in parallel, 2 CPU threads each.
# Usage: benchmarks/recipe_tuning.sh MANIFEST_WITH_FOLDS OUT_DIR [BUDGET_MINUTES]
# (MANIFEST from benchmarks/train_busi_cpu.py's first step: WORK/busi_curated_folds.csv)
set -euo pipefail
manifest=$1; out=$2; budget=${3:-6}
mkdir -p "$out"
base=(configs/busi_mt_cpu.yaml "data.manifest=$manifest" train.accelerator=cpu train.threads=2
      train.progress_bar=false "train.time_budget_minutes=$budget" "train.max_time_minutes=$((budget + 1))"
      data.oversample=true model.options.head_conv_channels=128)
run() { name=$1; shift; buscad train "${base[@]}" "data.cache_dir=$out/cache_$name" "$@" --fold 0 -o "$out/$name" > "$out/$name.log" 2>&1; }
run v1_base_oversampled &
run v2_small_oversampled "model.options.features=[8, 16, 32, 64, 128]" &
run v3_base_no_oversampling data.oversample=false &
run v4_seg_weight_0.4 loss.seg_weight=0.4 &
run v5_batch8_lr1e-3 train.batch_size=8 train.lr=0.001 &
run v6_keep_aspect data.keep_aspect=true &
wait
python3 - "$out" <<'PY'
import json, pathlib, sys
for d in sorted(pathlib.Path(sys.argv[1]).glob("v*/run_info.json")):
    info = json.loads(d.read_text()); t = info.get("test_metrics", {})
    print(d.parent.name, f"dice {t.get('dice', float('nan')):.3f} accuracy {t.get('accuracy', float('nan')):.3f}",
          f"epochs {info['epochs_run']} images/s {info['timings']['train_images_per_second']}")
PY
