#!/usr/bin/env bash
# One device call: many short CUDA trainings of the synthetic default side by side (they share the
# GPU: each alone is launch-bound), at the CPU step budget, each on its own built-in dataset, then
# every run's last checkpoint sampled through `thinfilm.sample` (its default sampler) with several
# draw seeds and scored with experiments/fidelity.py on ONE common evaluation set of unseen
# specimens (synthetic seed 99), so runs trained on different datasets are compared on the same frames.
#   OUT=results bash experiments/gpu_sweep.sh          (DRY=1: tiny datasets and 2 steps, for a CPU check)
# Edit DATASETS / RUNS / DRAWS below for the comparison at hand; results: $OUT/summary.txt, logs.tar.gz.
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT" /tmp/logs /tmp/data
export PYTHONPATH=. PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT/summary.txt"
start=$(date +%s)

# dataset -> "series frames_per_series synthetic_seed"; the evaluation set is 8 x 50 frames, all scored.
declare -A DATASETS=([d10x50]="10 50 0" [d20x25]="20 25 0" [d20x50]="20 50 0" [eval]="8 50 99")
# run -> "dataset overrides-of-experiments/default.toml"
declare -A RUNS=()
for s in 0 1 2 3 4 5; do RUNS[d10x50_s$s]="d10x50 train.seed=$s"; RUNS[d20x25_s$s]="d20x25 train.seed=$s"; done
for s in 0 1; do RUNS[d20x50_s$s]="d20x50 train.seed=$s"; done
DRAWS=(0 7)
EXTRA=()
if [[ ${DRY:-0} == 1 ]]; then
  DATASETS=([d10x50]="5 13 0" [d20x25]="5 13 1" [d20x50]="5 13 2" [eval]="2 13 99")
  EXTRA=(--set train.steps=2 --set train.warmup_steps=1)
  RUNS=([d10x50_s0]="d10x50 train.seed=0" [d20x25_s1]="d20x25 train.seed=1")
fi

for d in "${!DATASETS[@]}"; do
  read -r n f seed <<< "${DATASETS[$d]}"
  all=(); [[ $d == eval ]] && all=(--all)
  python3 -m thinfilm.prepare synth --out /tmp/data/"$d" --series "$n" --frames "$f" --seed "$seed" "${all[@]}" \
    > /tmp/logs/data_"$d".log 2>&1 &
done
wait
for d in "${!DATASETS[@]}"; do  # cache each training set once, before the runs race for it
  [[ $d == eval ]] && continue
  python3 -c "
from thinfilm.config import load_config
from thinfilm.data import load_splits
load_splits(load_config('experiments/default.toml', ['data.train_csv=\"/tmp/data/$d/train.csv\"',
    'data.test_csv=\"/tmp/data/$d/test.csv\"', 'data.cache_dir=\"/tmp/data/$d/cache\"']).data, progress=False)" \
    > /tmp/logs/cache_"$d".log 2>&1 &
done
wait
echo "data: $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"

for name in "${!RUNS[@]}"; do
  read -r d overrides <<< "${RUNS[$name]}"
  args=(--set data.train_csv=\"/tmp/data/$d/train.csv\" --set data.test_csv=\"/tmp/data/$d/test.csv\"
        --set data.cache_dir=\"/tmp/data/$d/cache\")
  for o in $overrides; do args+=(--set "$o"); done
  timeout 420 python3 -m thinfilm.train --config experiments/default.toml --quiet --set train.out_dir=/tmp/runs \
    --set train.run_name="$name" --set train.sample_every=100000 "${args[@]}" "${EXTRA[@]}" \
    > /tmp/logs/"$name".log 2>&1 &
done
wait
echo "training: $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
for name in "${!RUNS[@]}"; do
  for s in "${DRAWS[@]}"; do
    ( timeout 150 python3 -m thinfilm.sample --ckpt /tmp/runs/"$name" --conditions /tmp/data/eval/all.csv \
        --out /tmp/gen/"$name"_r"$s" --seed "$s" --quiet > /tmp/logs/"$name"_r"$s".log 2>&1 &&
      python3 experiments/fidelity.py --samples /tmp/gen/"$name"_r"$s" --reference /tmp/data/eval/all.csv \
        > /tmp/logs/"$name"_r"$s".json 2>>/tmp/logs/"$name"_r"$s".log ) &
  done
done
wait
echo "sampling: $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
python3 - "${DRAWS[@]}" <<'EOF' | tee -a "$OUT/summary.txt"
import json, pathlib, re, sys
logs = pathlib.Path("/tmp/logs")
keys = ["corr_sep_a", "corr_sep_b", "corr_whitening", "corr_gap", "corr_height", "noise_generated", "level_error",
        "ceiling_gap"]
print("run        draw  train_min " + " ".join(k.replace("corr_", "")[:9].rjust(9) for k in keys) + "  min_r")
for log in sorted(p for p in logs.glob("*.log") if "_r" not in p.stem and not p.stem.startswith(("data", "cache"))):
    m = re.search(r"in ([0-9.]+) min", log.read_text())
    for s in sys.argv[1:]:
        f = logs / f"{log.stem}_r{s}.json"
        text = f.read_text().strip() if f.is_file() else ""
        if not text:
            print(f"{log.stem:10s} {s:5s} no result")
            continue
        r = json.loads(text)
        low = min(r[k] for k in keys[:5])
        print(f"{log.stem:10s} {s:5s} {m.group(1) if m else '?':9s} " + " ".join(f"{r[k]:9.3f}" for k in keys)
              + f"  {low:.3f}")
EOF
tar czf "$OUT/logs.tar.gz" -C /tmp logs
echo "total: $(( $(date +%s) - start )) s"
