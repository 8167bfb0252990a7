#!/usr/bin/env bash
# The chesslens demo: builds the project and runs the single-machine analyses on the bundled
# model (models/chess-tiny, a 4-layer chess GPT-2 trained on random legal games). Outputs land
# in demo-out/ as safetensors files; `chesslens show FILE` prints them.
#
#   1. 200 random legal games (the dataset), and the legal-token view of one of them;
#   2. a forward pass with every TransformerLens hook cached, and the model's top predictions;
#   3. activation patching (block_every, fast exact algorithm) of a clean game into a corrupted
#      one whose last token is replaced, with the normalised logit metric of the clean move;
#   4. residual-stream decomposition, logit lens and legal-move statistics of one game;
#   5. neuron means by move phase and legal-move statistics over the whole dataset.
# Dependencies: deploy/install-deps.sh (run once, as root).
set -euo pipefail
cd "$(dirname "$0")/.."

cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$(nproc)" --target chesslens >/dev/null
cl=build/release/cli/chesslens
model=models/chess-tiny
out=demo-out
mkdir -p "$out"
step() { printf '\n== %s\n' "$*"; }

step "the model"
"$cl" model info "$model" | head -5

step "dataset: 200 random legal games of at most 127 tokens -> $out/games.uci"
"$cl" chess random --n 200 --seed 1 --max-tokens 127 >"$out/games.uci"
wc -l <"$out/games.uci"

# The clean game: the first 14 moves (29 tokens) of game 1. The corrupted game replaces its
# last token (a destination square) by another legal destination of the same piece.
clean=$(head -n 1 "$out/games.uci" | cut -d' ' -f1-14)
echo "clean game: $clean"

step "legal next tokens at the last two positions"
"$cl" chess legal --uci "$clean" | tail -n 2

step "forward pass, all hooks -> $out/forward.safetensors"
"$cl" forward --model "$model" --uci "$clean" --hooks all --out "$out/forward.safetensors"

last=$(echo "$clean" | awk '{print $NF}')
to=${last:2:2}
alt=$("$cl" chess legal --uci "$clean" | tail -n 2 | head -n 1 |
    tr -d '[]"' | sed 's/.*legal_next://; s/}//' | tr ',' '\n' | grep -vx "$to" | head -n 1)
if [ -z "$alt" ]; then
    alt=$(echo "$to" | tr 'a-h' 'b-ha')
fi
step "activation patching: token 28 '$to' -> '$alt', metric = normalised logit of the model's clean top move"
top=$("$cl" forward --model "$model" --uci "$clean" --out "$out/clean-logits.safetensors" |
    sed -n 's/^top next tokens: \([a-h][1-8]\).*/\1/p')
"$cl" patch --model "$model" --uci "$clean" --corrupt "28=$alt" --metric "logit:$top" --normalize \
    --kind block_every --out "$out/patch.safetensors"
"$cl" show "$out/patch.safetensors"

step "decomposition, logit lens and legal-move statistics of the clean game -> $out/decompose.safetensors"
"$cl" decompose --model "$model" --uci "$clean" --heads --legal-stats --out "$out/decompose.safetensors"
"$cl" show "$out/decompose.safetensors" | head -n 12

step "dataset: neuron means by phase and legal-move statistics -> $out/dataset.safetensors"
"$cl" decompose --model "$model" --games "$out/games.uci" --legal-stats --out "$out/dataset.safetensors"
"$cl" show "$out/dataset.safetensors" | head -n 12

step "done: inspect any result with '$cl show FILE [--tensor NAME]'"
