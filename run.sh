#!/usr/bin/env bash
# diffsuite: one script for set-up, tests and the demo (used by README and .ci/run alike).
#
#   bash run.sh setup          create/refresh the virtualenv (idempotent; skipped when up to date)
#   bash run.sh test [ARGS]    setup, then `pytest -n 2 tests` (ARGS go to pytest)
#   bash run.sh demo [ARGS]    setup, then `diffsuite compare --preset default --out runs/demo`
#                              with a 3-solver x 3-NFE x 2-seed sweep (ARGS override it)
#
# Environment: DIFFSUITE_VENV (default ./.venv), PYTHON (default python3).
# Torch: without an NVIDIA GPU the CPU build torch==$TORCH_CPU_VERSION is installed first (a bare
# `torch` requirement would pull the multi-GB CUDA build); with a GPU plain pip gives CUDA torch.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT="$(pwd)"
VENV="${DIFFSUITE_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
TORCH_CPU_VERSION="2.13.0"
STAMP="$VENV/.diffsuite-install-stamp"

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "GPU"; }

stamp_key() {
  local kind=cpu
  has_gpu && kind=gpu
  { sha256sum pyproject.toml run.sh | cut -d' ' -f1; echo "$kind"; "$VENV/bin/python" --version 2>&1; } | sha256sum | cut -d' ' -f1
}

setup() {
  if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_key)" ] \
      && "$VENV/bin/python" -c "import shared, torch" >/dev/null 2>&1; then
    echo "[setup] environment up to date: $VENV"
    return 0
  fi
  local t0=$SECONDS
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtualenv $VENV ($("$PY" --version 2>&1))"
    "$PY" -m venv "$VENV"
  fi
  local pip=("$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q)
  if has_gpu; then
    echo "[setup] NVIDIA GPU found: installing with the default (CUDA) torch build"
  else
    echo "[setup] no NVIDIA GPU: installing CPU torch==$TORCH_CPU_VERSION first"
    "${pip[@]}" "torch==$TORCH_CPU_VERSION"
  fi
  echo "[setup] installing diffsuite with all domain extras and dev tools"
  "${pip[@]}" -e ".[all,dev]"
  stamp_key > "$STAMP"
  echo "[setup] done in $((SECONDS - t0))s: $VENV"
}

run_tests() {
  setup
  local t0=$SECONDS rc=0
  "$VENV/bin/python" -m pytest -n 2 tests "$@" || rc=$?
  echo "[test] pytest finished in $((SECONDS - t0))s with exit code $rc"
  if [ "$rc" -eq 5 ]; then
    echo "[test] ERROR: no tests were collected" >&2
    return 1
  fi
  return "$rc"
}

demo() {
  setup
  local out="runs/demo"
  # a sweep sized to finish within 15 minutes on a 2-core CPU; extra arguments override it
  local sweep=(--solvers ddim,dpmpp_2m,heun --nfe 5,10,20 --seeds 0,1)
  echo "[demo] diffsuite compare --preset default --out $out ${sweep[*]} $*"
  "$VENV/bin/diffsuite" compare --preset default --out "$out" "${sweep[@]}" "$@"
  echo "[demo] results: $ROOT/$out/report.md, $ROOT/$out/results.csv, plots in $ROOT/$out/plots/"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  setup) setup ;;
  test) run_tests "$@" ;;
  demo) demo "$@" ;;
  *) echo "usage: bash run.sh setup|test|demo [args]" >&2; exit 2 ;;
esac
