#!/usr/bin/env bash
# The chesslens demo: builds the project and runs a real sweep on the bundled model
# (models/chess-tiny, a 4-layer chess GPT-2 trained on random legal games), end to end:
#
#   1. a dataset of 100 random legal games in a SQLite database (demo-out/demo.db);
#   2. the sweep deploy/demo-sweep.json through the distributed service on loopback (a
#      chesslens-coordinator and two chesslens-worker processes, `chesslens submit` and
#      `chesslens wait`; deploy/local/run-sweep.sh): block_every activation patching
#      at nine cut-offs with the last token replaced by every other legal square (normalised
#      logit difference of the clean and corrupted runs' top tokens), legal-move statistics of
#      the embeddings, heads and MLPs, neuron means by move phase, top-5 predictions;
#   3. three SQL questions answered from the results, and the same data read from Python;
#   4. the sweep's HTML report (demo-out/report.html) and a board plot (demo-out/board.svg).
# Run it again and the sweep resumes (nothing is computed or stored twice).
# Dependencies: deploy/install-deps.sh (run once, as root).
set -euo pipefail
cd "$(dirname "$0")/.."

cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$(nproc)" --target chesslens chesslens-coordinator \
    chesslens-worker >/dev/null
cl=build/release/cli/chesslens
out=demo-out
db=$out/demo.db
mkdir -p "$out"
step() { printf '\n== %s\n' "$*"; }

step "dataset: 100 random legal games of at most 61 tokens -> $db"
"$cl" games generate --n 100 --seed 1 --max-tokens 61 --db "$db" --dataset random-100 --append

step "the sweep (deploy/demo-sweep.json): a coordinator and two workers on loopback"
bash deploy/local/run-sweep.sh deploy/demo-sweep.json "$db" 2 1

step "which layers carry the patching effect when black's to-square is corrupted?"
"$cl" query --db "$db" "
SELECT pe.component, pe.layer, round(avg(pe.value), 3) AS mean_effect, count(*) AS pairs
FROM patch_effects pe
JOIN game_positions gp ON gp.dataset = pe.dataset AND gp.game = pe.game AND gp.pos = pe.corrupt_pos
WHERE pe.sweep = 'demo' AND gp.phase = 'black_to' AND pe.pos = pe.corrupt_pos
  AND pe.component != 'resid_pre' AND pe.value IS NOT NULL
GROUP BY pe.component, pe.layer ORDER BY mean_effect DESC LIMIT 5"

step "which components separate legal from illegal next squares best (direct logit attribution)?"
"$cl" query --db "$db" "
SELECT component,
       round(avg(CASE statistic WHEN 'mean_legal' THEN value END)
           - avg(CASE statistic WHEN 'mean_illegal' THEN value END), 3) AS legal_minus_illegal
FROM legal_stats WHERE sweep = 'demo'
GROUP BY component ORDER BY legal_minus_illegal DESC LIMIT 5"

step "how often is the model's top prediction legal, by move number?"
"$cl" query --db "$db" "
SELECT gp.move_index / 5 * 5 AS from_move, round(avg(p.legal), 3) AS top1_legal, count(*) AS positions
FROM predictions p
JOIN game_positions gp ON gp.dataset = 'random-100' AND gp.game = p.game AND gp.pos = p.pos
WHERE p.sweep = 'demo' AND p.rank = 1 AND gp.move_index >= 0
GROUP BY 1 ORDER BY 1"

step "the same data from Python (sqlite3 + pandas): patching effect at the corrupted position"
/usr/bin/python3 - "$db" <<'PY'
import sqlite3, sys
import pandas as pd
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
df = pd.read_sql_query(
    "SELECT layer, component, avg(value) AS effect FROM patch_effects "
    "WHERE sweep = 'demo' AND pos = corrupt_pos AND value IS NOT NULL "
    "GROUP BY layer, component", con)
print(df.pivot(index="layer", columns="component", values="effect").round(3))
PY

step "figures: the HTML report and the board after 60 tokens of game 0 (docs/PLOTS.md)"
"$cl" report --db "$db" demo --out "$out/report.html"
"$cl" plot --db "$db" demo --kind board --game 0 --cutoff 60 --out "$out/board.svg"
echo "open $out/report.html in a browser (it works offline); $out/board.svg is the board"

step "done: ask your own questions with '$cl query --db $db \"SELECT ...\"' (docs/STORE.md)"
