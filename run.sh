#!/usr/bin/env bash
# thinfilm's front door: sets up its environment on first use, then dispatches.
#   bash run.sh setup | train [--gpus N] [ARGS] | sample ARGS | regress ARGS | evaluate [ARGS] | bench [ARGS]
#               | data ARGS | tensorboard [DIR] | test [PYTEST ARGS] (lint, then the suite) | python ARGS
# THINFILM_PYTHON=/path/to/python uses an interpreter that already has torch instead of .venv.
set -euo pipefail
cd "$(dirname "$0")"

setup() {
  if [ -n "${THINFILM_PYTHON:-}" ]; then
    PY=$THINFILM_PYTHON
    "$PY" -c "import torch" 2>/dev/null || { echo "error: THINFILM_PYTHON=$PY cannot import torch" >&2; exit 2; }
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    return
  fi
  PY=.venv/bin/python
  local stamp=.venv/.thinfilm-setup want
  want=$(cat setup.cfg pyproject.toml | cksum)
  if [ ! -x "$PY" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setting up .venv (first run: installs torch and friends, a few minutes) ..." >&2
    python3 -m venv .venv
    "$PY" -m pip install -q --upgrade pip >&2
    "$PY" -m pip install -q -e ".[test]" >&2
    echo "$want" > "$stamp"
  fi
}

lint() {  # ruff comes with .venv; an interpreter of your own may lack it
  if [ -n "${THINFILM_PYTHON:-}" ] && ! "$PY" -c "import ruff" 2>/dev/null; then
    echo "note: ruff is not installed for $PY: lint skipped (pip install ruff)" >&2
    return
  fi
  "$PY" -m ruff check .
}

cmd=${1:-help}
shift || true
case "$cmd" in
  setup) setup ;;
  train)
    setup
    gpus=1
    if [ "${1:-}" = "--gpus" ]; then gpus=$2; shift 2; fi
    args=("$@")
    case " $* " in *" --config "*|*" --resume "*) ;; *) args=(--config experiments/default.toml "${args[@]}") ;; esac
    if [ "$gpus" -gt 1 ]; then
      exec "$PY" -m torch.distributed.run --standalone --nproc_per_node "$gpus" -m thinfilm.train "${args[@]}"
    fi
    exec "$PY" -m thinfilm.train "${args[@]}" ;;
  sample) setup; exec "$PY" -m thinfilm.sample "$@" ;;
  regress) setup; exec "$PY" -m thinfilm.regression train "$@" ;;
  evaluate) setup; exec "$PY" -m thinfilm.evaluate "$@" ;;
  bench) setup; exec "$PY" -m thinfilm.bench "$@" ;;
  data) setup; exec "$PY" -m thinfilm.prepare "$@" ;;
  tensorboard) setup; exec "$PY" -m tensorboard.main --logdir "${1:-runs}" --bind_all ;;
  test) setup; lint; exec "$PY" -m pytest "$@" ;;
  python) setup; exec "$PY" "$@" ;;
  *) echo "usage: bash run.sh setup|train [--gpus N]|sample|regress|evaluate|bench|data|tensorboard|test|python ARGS" >&2
     exit 2 ;;
esac
