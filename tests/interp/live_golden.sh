#!/bin/sh
# Live golden test: a fresh random model (new seed every run, a shape unlike the fixtures),
# its analyses computed by the PyTorch reference (make_interp_golden.py), then every interp
# analysis compared with them by test_interp_golden. Exit 77 (skipped) without torch.
#   live_golden.sh PYTHON CHESSLENS TEST_BINARY SOURCE_DIR
set -eu
python=$1 chesslens=$2 test_bin=$3 src=$4
"$python" -c 'import torch' >/dev/null 2>&1 || exit 77
dir=${CHESSLENS_TEST_TMPDIR:-/tmp}/live
rm -rf "$dir"
mkdir -p "$dir"
seed=$(date +%s)
echo "live golden: seed $seed"
"$chesslens" model random --layers 3 --d-model 40 --heads 5 --ctx 32 --vocab 78 \
    --seed "$seed" --out "$dir/model" >/dev/null
"$python" "$src/tests/reference/make_interp_golden.py" --chesslens "$chesslens" \
    --model-dir "$dir/model" --out "$dir/golden.safetensors" >/dev/null
CHESSLENS_INTERP_MODEL="$dir/model" CHESSLENS_INTERP_GOLDEN="$dir/golden.safetensors" \
    exec "$test_bin"
