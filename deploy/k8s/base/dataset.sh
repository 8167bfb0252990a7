#!/bin/sh
# Puts the dataset the sweep reads into the coordinator's database; run by the coordinator
# pod's init container on every start, with CHESSLENS_DB set. Adding games a dataset already
# holds adds nothing (--append), so a restart changes nothing. Replace the command with your own
# data, e.g. games from a PGN file on a volume mounted into the init container:
#   chesslens games import /data/games.pgn --db "$CHESSLENS_DB" --dataset lichess-2024 --append
set -eu
# deploy/demo-sweep.json's dataset: 100 random legal games of at most 61 tokens
chesslens games generate --n 100 --seed 1 --max-tokens 61 --db "$CHESSLENS_DB" \
    --dataset random-100 --append
