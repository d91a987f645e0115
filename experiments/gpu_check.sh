#!/usr/bin/env bash
# One device call (see README, Performance): on the synthetic default, a few short CUDA trainings
# that compare objectives at the CPU step budget (condition fidelity of each), one sampling run
# through the CLI, then the researcher's networks' step time, memory and sampling latency.
#   OUT=results bash experiments/gpu_check.sh
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch; print('torch', torch.__version__)"
start=$(date +%s)
python3 -m thinfilm.data synth --out /tmp/syn > "$OUT/synth.log" 2>&1
echo "synth: $(( $(date +%s) - start )) s"
common=(--config experiments/default.toml --quiet --set data.train_csv=/tmp/syn/train.csv
        --set data.test_csv=/tmp/syn/test.csv --set data.cache_dir=/tmp/cache --set train.out_dir=/tmp/runs
        --set train.precision=fp32 --set train.steps=1200)
variant() {  # name, overrides...
  local name=$1; shift
  local args=()
  for o in "$@"; do args+=(--set "$o"); done
  timeout 150 python3 -m thinfilm.train "${common[@]}" --set train.run_name="$name" "${args[@]}" > "$OUT/$name.log" 2>&1
  echo "$name: $(grep -A1 'condition fidelity' "$OUT/$name.log" | tail -1) [$(( $(date +%s) - start )) s]"
  cp /tmp/runs/"$name"/samples/step_0001200.png "$OUT/$name.png" 2>/dev/null
}
variant v_minsnr diffusion.prediction=\"v\" diffusion.loss_weighting=\"min_snr\"
variant v_plain diffusion.prediction=\"v\" diffusion.loss_weighting=\"none\" diffusion.min_snr_floor=0
variant eps_plain diffusion.prediction=\"eps\" diffusion.loss_weighting=\"none\" diffusion.min_snr_floor=0
python3 -m thinfilm.sample --ckpt /tmp/runs/v_plain --conditions /tmp/syn/test.csv --out /tmp/cli --quiet | tail -1
python3 experiments/fidelity.py --samples /tmp/cli --reference /tmp/syn/test.csv | tee "$OUT/cli_fidelity.json"
timeout 240 python3 experiments/gpu_check.py --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
echo "total: $(( $(date +%s) - start )) s"
