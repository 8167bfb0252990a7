"""Live comparison of the C engine with the PyTorch reference on a freshly drawn random model.

Draws a random shape (layers, heads, d_head, context, vocabulary, stored dtype) and seed, has the
C command write a random model (`chesslens model random ... --out DIR`), draws a random UCI token
string (not necessarily legal), runs `chesslens forward --hooks all` on it with and without weight
processing, and compares the logits ([T, V]) and every hook (batch dimension dropped) with
tl_reference.py run on the same directory: relative L2 <= 1e-5 per tensor, logits max abs <= 1e-4,
attention scores -inf at exactly the masked places. Exits 0 on success, 1 on a mismatch or a
failed command, 77 when torch is not installed.

    /usr/bin/python3 tests/reference/test_reference_live.py PATH/TO/chesslens [--seed S]

The seed is printed; pass it back with --seed (or CHESSLENS_LIVE_SEED) to repeat a run.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError:
    print("test_reference_live: torch/numpy not installed; skipped")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import chess_vocab  # noqa: E402
import safetensors_io  # noqa: E402
import tl_reference as tl  # noqa: E402

REL_L2 = 1e-5
LOGITS_MAX_ABS = 1e-4
FILES = "abcdefgh"


def draw_shape(rng):
    heads = rng.randint(1, 4)
    d_head = rng.choice([4, 8, 12, 16, 20])
    return {
        "layers": rng.randint(1, 3),
        "d_model": heads * d_head,
        "heads": heads,
        "ctx": rng.randint(8, 40),
        "vocab": rng.randint(77, 90),
        "seed": rng.randint(1, 2**31 - 1),
        "dtype": rng.choice(["f32", "f16", "bf16"]),
    }


def draw_uci(rng, max_tokens):
    """Random from-to moves (some with a promotion letter) within max_tokens tokens incl. <s>."""
    moves = []
    budget = rng.randint(2, max_tokens) - 1
    while True:
        sq = lambda: FILES[rng.randrange(8)] + str(rng.randint(1, 8))  # noqa: E731
        move = sq() + sq() + (rng.choice("qrbn") if rng.random() < 0.1 else "")
        cost = 3 if len(move) == 5 else 2
        if cost > budget:
            break
        moves.append(move)
        budget -= cost
    return " ".join(moves) if moves else "e2e4"


def rel_l2(a, b):
    denom = float(np.linalg.norm(b.astype(np.float64)))
    num = float(np.linalg.norm((a.astype(np.float64) - b.astype(np.float64))))
    return num / denom if denom > 0 else num


def compare(name, got, want, failures, max_abs=None):
    """Append mismatches to failures; return the relative L2 error (None if not comparable)."""
    if list(got.shape) != list(want.shape):
        failures.append(f"{name}: shape {list(got.shape)}, reference {list(want.shape)}")
        return None
    inf_want = np.isneginf(want)
    if inf_want.any() or np.isneginf(got).any():
        if not np.array_equal(np.isneginf(got), inf_want):
            failures.append(f"{name}: -inf at different places")
            return None
        got, want = got[~inf_want], want[~inf_want]
    if not np.isfinite(got).all():
        failures.append(f"{name}: non-finite values")
        return None
    err = rel_l2(got, want)
    if err > REL_L2:
        failures.append(f"{name}: relative L2 {err:.3g} > {REL_L2}")
    if max_abs is not None:
        diff = float(np.abs(got - want).max())
        if diff > max_abs:
            failures.append(f"{name}: max abs {diff:.3g} > {max_abs}")
    return err


def run_cmd(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def check_mode(chesslens, model_dir, uci, processed, tmp, failures):
    out = os.path.join(tmp, f"forward-{'p' if processed else 'u'}.safetensors")
    cmd = [chesslens, "forward", "--model", model_dir, "--uci", uci, "--hooks", "all", "--out", out]
    if not processed:
        cmd.append("--no-processing")
    run_cmd(cmd)
    got, _ = safetensors_io.load(out)
    cfg, params = tl.load_hf(model_dir)
    if processed:
        cfg, params = tl.process(params, cfg)
    tok = tl.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tokens = torch.tensor([tok.encode(uci).ids])
    with torch.no_grad():
        logits, cache = tl.run(params, cfg, tokens, cache=True, use_attn_result=True)
    label = "processed" if processed else "unprocessed"
    before = len(failures)
    if "logits" not in got:
        failures.append(f"{label}: no logits in the output")
    else:
        err = compare(f"{label} logits", got["logits"], logits[0].numpy(), failures, LOGITS_MAX_ABS)
        worst = (err or 0.0, "logits")
    if "tokens" in got:
        if got["tokens"].reshape(-1).tolist() != tokens[0].tolist():
            failures.append(f"{label}: tokens {got['tokens'].tolist()} != {tokens[0].tolist()}")
    compared = 1
    worst = worst if "logits" in got else (0.0, "")
    for name in tl.hook_names(cfg, use_attn_result=True):
        if name not in got:
            if not name.endswith("hook_result"):
                failures.append(f"{label}: hook {name} missing from --hooks all output")
            continue
        err = compare(f"{label} {name}", got[name], cache[name][0].numpy(), failures)
        worst = max(worst, (err or 0.0, name))
        compared += 1
    print(f"{label}: compared {compared} tensors, {len(failures) - before} mismatches, "
          f"largest relative L2 {worst[0]:.2e} ({worst[1]})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chesslens")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CHESSLENS_LIVE_SEED", "0")) or None)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    seed = args.seed if args.seed else random.SystemRandom().randint(1, 2**31 - 1)
    rng = random.Random(seed)
    shape = draw_shape(rng)
    print(f"seed {seed}: {json.dumps(shape)}")
    torch.set_num_threads(1)
    base = os.environ.get("CHESSLENS_TEST_TMPDIR") or None
    if base:
        os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="live-", dir=base)
    failures = []
    try:
        model_dir = os.path.join(tmp, "model")
        run_cmd([
            args.chesslens, "model", "random",
            "--layers", str(shape["layers"]), "--d-model", str(shape["d_model"]),
            "--heads", str(shape["heads"]), "--ctx", str(shape["ctx"]),
            "--vocab", str(shape["vocab"]), "--seed", str(shape["seed"]),
            "--dtype", shape["dtype"], "--out", model_dir,
        ])
        cfg, _ = tl.load_hf(model_dir)
        want = (shape["layers"], shape["d_model"], shape["heads"], shape["ctx"], shape["vocab"])
        got = (cfg["n_layers"], cfg["d_model"], cfg["n_heads"], cfg["n_ctx"], cfg["d_vocab"])
        if got != want:
            failures.append(f"model random wrote shape {got}, asked for {want}")
        tok = tl.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        vocab = chess_vocab.vocabulary(shape["vocab"])
        if [tok.id_to_token[i] for i in range(len(vocab))] != vocab:
            failures.append("model random wrote a tokenizer.json with another vocabulary order")
        uci = draw_uci(rng, shape["ctx"])
        print(f"input ({len(tok.encode(uci).ids)} tokens): {uci}")
        for processed in (True, False):
            check_mode(args.chesslens, model_dir, uci, processed, tmp, failures)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        failures.append(str(e))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    for f in failures[:40]:
        print("FAIL:", f)
    if failures:
        print(f"test_reference_live: {len(failures)} failures (seed {seed})")
        return 1
    print(f"test_reference_live: all tensors match (seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
