#!/usr/bin/env bash
# Measure every shipped zoo model (and two training checkpoints for accuracy-matched
# Transformer-CNN pairs) with configs/leaderboard-fmnist.yaml, submit each run and render
# the pages in leaderboards/. Resumable: rerun after an interruption.
#   bash scripts/leaderboard_zoo.sh            # all (about 30 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
RC=${ROBCURVE:-.venv/bin/robcurve}
MODELS=${MODELS:-"zoo:vit-fmnist zoo:swin-fmnist zoo:resnet-fmnist zoo:convnext-fmnist zoo:vit-fmnist-at zoo:resnet-fmnist-at zoo:resnet-fmnist@3 zoo:vit-fmnist@8"}
for m in $MODELS; do
  out="runs/leaderboard/$(echo "$m" | tr ':@' '--')"
  mkdir -p "$(dirname "$out")"
  "$RC" bench --model "$m" --config configs/leaderboard-fmnist.yaml --out "$out" --no-progress ${THREADS:+--threads $THREADS} > "$out.log" 2>&1 || { "$RC" bench --model "$m" --config configs/leaderboard-fmnist.yaml --out "$out" --no-progress; }
  # --replace: a re-measured model replaces its entry (the old entry's digest goes to leaderboards/history.jsonl)
  [ "${SUBMIT:-1}" = 1 ] && "$RC" submit "$out" --seed 0 --replace
done
"$RC" leaderboard render
