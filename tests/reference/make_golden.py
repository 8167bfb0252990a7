"""Write the golden files the C model engine is tested against.

For each fixture model (tests/fixtures/random-tiny, models/chess-tiny) and each of the two
loading modes (TL's from_pretrained defaults = "processed", from_pretrained_no_processing =
"unprocessed") this writes tests/golden/<model>.<mode>.safetensors holding, for a batch of three
UCI sequences of different lengths (a legal game, a shorter legal game with a promotion, a
corrupted game that is not legal):
  tokens    I32 [B, T]   TL to_tokens: one <s> prepended, right-padded with id 0
  logits    F32 [B, T, V]
  <hook>    F32          every hook of a cached run under its TL name, batch dim kept
                         (hook_result included: per head, without b_O)
  params.<TL name> F32   the weights the run used (after processing in the processed file)
and the metadata key "inputs", a JSON array of the UCI text of each sequence.

    /usr/bin/python3 tests/reference/make_golden.py [--model random-tiny|chess-tiny|all]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import safetensors_io  # noqa: E402
import tl_reference as tl  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

# A legal game in promotion-free opening theory, a short legal game ending in a promotion
# (b7xa8=Q), and a corrupted game (a legal game with one destination square replaced so that
# the bishop "moves" f1-h4, which is illegal) -- all checked with `chesslens chess legal`.
RUY_LOPEZ = (
    "e2e4 e7e5 g1f3 b8c6 f1b5 a7a6 b5a4 g8f6 e1g1 f8e7 f1e1 b7b5 a4b3 d7d6 c2c3 e8g8 h2h3 c6a5 "
    "b3c2 c7c5 d2d4 d8c7"
)
PROMOTION = "a2a4 b7b5 a4b5 a7a6 b5a6 c8b7 a6b7 b8c6 b7a8q"
CORRUPTED = "e2e4 e7e5 g1f3 b8c6 f1h4 a7a6 b5a4 g8f6 e1g1 f8e7 f1e1 b7b5 a4b3 d7d6 c2c3"

INPUTS = {
    # T = 45 (n_ctx 48).
    "random-tiny": [RUY_LOPEZ, PROMOTION, CORRUPTED],
    # Shorter, so that the chess-tiny files stay under 3 MB: T = 25.
    "chess-tiny": [
        "e2e4 e7e5 g1f3 b8c6 f1b5 a7a6 b5a4 g8f6 e1g1 f8e7 f1e1 b7b5",
        PROMOTION,
        "e2e4 e7e5 g1f3 b8c6 f1h4 a7a6 b5a4 g8f6 e1g1 f8e7 f1e1",
    ],
}

MODEL_DIRS = {
    "random-tiny": os.path.join(ROOT, "tests", "fixtures", "random-tiny"),
    "chess-tiny": os.path.join(ROOT, "models", "chess-tiny"),
}


def golden_tensors(directory, texts, processed):
    """Return (tensors dict name -> float32/int32 numpy array, tokens tensor)."""
    cfg, params = tl.load_hf(directory)
    tok = tl.Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    tokens = tok.to_tokens(texts)
    if processed:
        cfg, params = tl.process(params, cfg)
    with torch.no_grad():
        logits, cache = tl.run(params, cfg, tokens, cache=True, use_attn_result=True)
    out = {"tokens": tokens.numpy().astype(np.int32), "logits": logits.numpy().astype(np.float32)}
    for name, value in cache.items():
        out[name] = value.contiguous().numpy().astype(np.float32)
    for name, value in params.items():
        out["params." + name] = value.contiguous().numpy().astype(np.float32)
    return out


def write_model(model, out_dir):
    directory = MODEL_DIRS[model]
    texts = INPUTS[model]
    for processed in (True, False):
        tensors = golden_tensors(directory, texts, processed)
        mode = "processed" if processed else "unprocessed"
        path = os.path.join(out_dir, f"{model}.{mode}.safetensors")
        safetensors_io.save(
            path,
            tensors,
            metadata={
                "inputs": json.dumps(texts),
                "model": model,
                "processing": "fold_ln,center_writing_weights,center_unembed,fold_value_biases"
                if processed
                else "none",
            },
        )
        print(f"{path}: {len(tensors)} tensors, tokens {list(tensors['tokens'].shape)}, "
              f"{os.path.getsize(path) / 1e6:.2f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all", choices=["all", *MODEL_DIRS])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    for model in MODEL_DIRS if args.model == "all" else [args.model]:
        write_model(model, args.out)


if __name__ == "__main__":
    main()
