#!/usr/bin/env bash
# Build the curated BUSI manifest and the 4-fold splits used by the training benchmarks.
#
#   bash benchmarks/make_curated_busi.sh [BUSI_DIR] [OUT_DIR]
#
# BUSI_DIR defaults to ../shared/datasets/BUSI/Dataset_BUSI_with_GT, OUT_DIR to data/ (not committed).
# Writes into OUT_DIR:
#   busi.csv                  manifest of the 780 images
#   busi_dedup.csv            + dup_group / dup_score
#   busi_curated.csv          duplicates removed (drop-all: every member of every group, as Curated BUSI)
#   busi_curated_folds.csv    curated + fold (test fold 0-3) / val_fold, stratified by label, seed 0
#   busi_grouped_folds.csv    all 780 images + fold / val_fold, duplicate groups kept inside one part
#   dedup_report/             groups.csv, pairs.csv, contact sheets for review
set -euo pipefail
BUSI="${1:-../shared/datasets/BUSI/Dataset_BUSI_with_GT}"
OUT="${2:-data}"
mkdir -p "$OUT"
buscad data prepare "$BUSI" --format busi -o "$OUT/busi.csv"
buscad data dedup "$OUT/busi.csv" -o "$OUT/busi_dedup.csv" \
    --curated "$OUT/busi_curated.csv" --policy drop-all --report "$OUT/dedup_report"
buscad data split "$OUT/busi_curated.csv" -o "$OUT/busi_curated_folds.csv" --folds 4 --seed 0 --val-fraction 0.15
buscad data split "$OUT/busi_dedup.csv" -o "$OUT/busi_grouped_folds.csv" --folds 4 --seed 0 --val-fraction 0.15
