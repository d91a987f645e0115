#!/usr/bin/env bash
# One device call: many short CUDA trainings of the synthetic default side by side (they share the
# GPU: each alone is launch-bound), at the CPU step budget, then every run's last checkpoint sampled
# through `thinfilm.sample` at several guidance scales and scored with experiments/fidelity.py.
#   OUT=results bash experiments/gpu_sweep.sh
# Edit RUNS / GUIDANCE below for the comparison at hand; results: $OUT/summary.txt, logs in logs.tar.gz.
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT" /tmp/logs
export PYTHONPATH=. PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/summary.txt"
start=$(date +%s)
python3 -c "
from thinfilm.config import load_config
from thinfilm.data import load_splits
load_splits(load_config('experiments/default.toml').data, progress=False)" > /tmp/logs/data.log 2>&1
echo "data: $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"

# name -> overrides of experiments/default.toml (space-separated KEY=VALUE). The README's first
# comparison (with sample.guidance=2, steps 1300) ran, per seed s in 0 1:
#   [v_s$s]='diffusion.prediction="v" train.seed=$s'   [vcos_s$s]='... "v" diffusion.schedule="cosine" ...'
#   [x1_s$s]='diffusion.loss_weighting="none" train.seed=$s'   [x_s$s]='train.seed=$s'
# and [v_2600_s0], [x_2600_s0] with train.steps=2600; this one compares seeds and guidance scales.
declare -A RUNS=(
  [x0_s0]="train.seed=0" [x0_s1]="train.seed=1" [x0_s2]="train.seed=2"
  [x0_s3]="train.seed=3" [x0_s4]="train.seed=4" [x0_s5]="train.seed=5"
)
GUIDANCE=(1 1.5 2)

for name in "${!RUNS[@]}"; do
  args=()
  for o in ${RUNS[$name]}; do args+=(--set "$o"); done
  timeout 400 python3 -m thinfilm.train --config experiments/default.toml --quiet --set train.out_dir=/tmp/runs \
    --set train.run_name="$name" --set train.sample_every=100000 "${args[@]}" > /tmp/logs/"$name".log 2>&1 &
done
wait
echo "training: $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
for name in "${!RUNS[@]}"; do
  for g in "${GUIDANCE[@]}"; do
    ( timeout 120 python3 -m thinfilm.sample --ckpt /tmp/runs/"$name" --conditions data/synthetic/test.csv \
        --out /tmp/gen/"$name"_g"$g" --guidance "$g" --quiet > /tmp/logs/"$name"_g"$g".log 2>&1 &&
      python3 experiments/fidelity.py --samples /tmp/gen/"$name"_g"$g" --reference data/synthetic/test.csv \
        > /tmp/logs/"$name"_g"$g".json 2>>/tmp/logs/"$name"_g"$g".log ) &
  done
done
wait
echo "sampling: $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
python3 - "${GUIDANCE[@]}" <<'EOF' | tee -a "$OUT/summary.txt"
import json, pathlib, re, sys
logs = pathlib.Path("/tmp/logs")
keys = ["corr_sep_a", "corr_sep_b", "corr_whitening", "corr_gap", "corr_height", "noise_generated", "level_error"]
print("run       guid  train_min " + " ".join(k.replace("corr_", "")[:9].rjust(9) for k in keys))
for log in sorted(p for p in logs.glob("*.log") if "_g" not in p.stem and p.stem != "data"):
    m = re.search(r"in ([0-9.]+) min", log.read_text())
    for g in sys.argv[1:]:
        f = logs / f"{log.stem}_g{g}.json"
        text = f.read_text().strip() if f.is_file() else ""
        if not text:
            print(f"{log.stem:9s} {g:5s} no result")
            continue
        r = json.loads(text)
        print(f"{log.stem:9s} {g:5s} {m.group(1) if m else '?':9s} " + " ".join(f"{r[k]:9.3f}" for k in keys))
EOF
tar czf "$OUT/logs.tar.gz" -C /tmp logs
echo "total: $(( $(date +%s) - start )) s"
