#!/usr/bin/env bash
# Run the README's cheap commands for real, as written, on the `tiny` synthetic preset (a few minutes on
# 2 cores; not in CI: tests/test_readme.py checks every README command's tool and flags in seconds).
#   bash tools/check_readme.sh [WORK_DIR]     (default: a new temporary folder, removed at the end)
# Each command must exit 0; the first that does not stops the script with its exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [ $# -ge 1 ]; then W=$1; mkdir -p "$W"; else W=$(mktemp -d -t eri-readme-XXXX); trap 'rm -rf "$W"' EXIT; fi
TINY="data.root=$W/tiny data.synthetic=tiny model.preset=tiny trainer.max_epochs=1 trainer.progress_bar=false"
run() { echo "+ $*"; "$@"; }

run $PY tools/make_synthetic.py --out "$W/tiny" --preset tiny
run $PY tools/train.py --config configs/demo.yaml --out "$W/a" $TINY
run $PY tools/train.py --config configs/demo.yaml --out "$W/b" $TINY seed=1
run $PY tools/evaluate.py --run "$W/a" --json "$W/a_eval.json"
run $PY tools/ensemble.py --runs "$W/a" "$W/b" combiner=weights --out "$W/ensemble_ab"
run $PY tools/compare.py "$W/ensemble_ab" "$W/a" --split test
run $PY tools/submit.py "$W/a" --out "$W/submission_a.csv"
run $PY tools/submit.py "$W/ensemble_ab" --out "$W/submission_ab.csv"
run $PY tools/ablate.py --table 004-demo-authors --preset tiny --data-root "$W/tiny" --out "$W/ablate" --runs "$W/cache"
run $PY tools/search.py --config configs/search/tiny.yaml --out "$W/search" --n-trials 2 "base_overrides.0=data.root=$W/tiny"
echo "README commands: all ran (work folder $W)"
