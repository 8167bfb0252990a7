"""Train models/chess-tiny, a small GPT-2 that predicts the next UCI square of random legal games,
and measure how often its top-1 prediction is a legal next token.

The model is the reference implementation's GPT-2 (tests/reference/tl_reference.py) trained with
autograd on its unprocessed TransformerLens parameters, the unembedding tied to the token
embedding as in GPT-2. Games come from `chesslens chess random` (uniform over legal moves, at most
128 tokens including <s>); the held-out games use a different seed. Everything is seeded, and torch
runs on a fixed number of threads, so the same command writes the same model.

    /usr/bin/python3 models/train_chess_tiny.py train --chesslens BIN [--out models/chess-tiny]
    /usr/bin/python3 models/train_chess_tiny.py eval --chesslens BIN [--model models/chess-tiny]

The output directory is a HuggingFace GPT-2 directory: config.json, model.safetensors (F32,
`transformer.`-prefixed Conv1D layouts, no lm_head), tokenizer.json.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))

import chess_vocab  # noqa: E402
import safetensors_io  # noqa: E402
import tl_reference as tl  # noqa: E402

N_CTX = 128
TRAIN_SEED = 1
HELDOUT_SEED = 2


def random_games(chesslens, n, seed):
    """n random legal games (UCI strings) from the chesslens generator."""
    out = subprocess.run(
        [chesslens, "chess", "random", "--n", str(n), "--seed", str(seed), "--max-tokens", str(N_CTX)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    games = [line.strip() for line in out.splitlines() if line.strip()]
    if len(games) != n:
        raise RuntimeError(f"chesslens chess random gave {len(games)} games, asked for {n}")
    return games


def init_params(cfg, gen):
    """GPT-2 initialisation: N(0, 0.02) matrices, output projections scaled by 1/sqrt(2L)."""
    D, H, Dh, M, V, L = (cfg[k] for k in ("d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_layers"))
    std, proj_std = 0.02, 0.02 / math.sqrt(2 * L)

    def normal(*shape, s=std):
        return torch.randn(*shape, generator=gen) * s

    p = {"embed.W_E": normal(V, D), "pos_embed.W_pos": normal(N_CTX, D, s=0.01)}
    for l in range(L):
        b = f"blocks.{l}."
        for n in "QKV":
            p[b + f"attn.W_{n}"] = normal(H, D, Dh)
            p[b + f"attn.b_{n}"] = torch.zeros(H, Dh)
        p[b + "attn.W_O"] = normal(H, Dh, D, s=proj_std)
        p[b + "attn.b_O"] = torch.zeros(D)
        p[b + "mlp.W_in"] = normal(D, M)
        p[b + "mlp.b_in"] = torch.zeros(M)
        p[b + "mlp.W_out"] = normal(M, D, s=proj_std)
        p[b + "mlp.b_out"] = torch.zeros(D)
        for ln in ("ln1", "ln2"):
            p[b + ln + ".w"] = torch.ones(D)
            p[b + ln + ".b"] = torch.zeros(D)
    p["ln_final.w"] = torch.ones(D)
    p["ln_final.b"] = torch.zeros(D)
    return p


def with_tied_unembed(p, V):
    """The forward's parameter dict: W_U is wte transposed, b_U zero (GPT-2 has no lm_head bias)."""
    q = dict(p)
    q["unembed.W_U"] = p["embed.W_E"].t()
    q["unembed.b_U"] = torch.zeros(V)
    return q


def encode_games(tok, games):
    """tokens [N, N_CTX] right-padded with 0 and the number of real tokens per game."""
    rows = [tok.encode(g).ids for g in games]
    lengths = torch.tensor([len(r) for r in rows])
    if int(lengths.max()) > N_CTX:
        raise ValueError("a game is longer than the context")
    tokens = torch.zeros(len(rows), N_CTX, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
    return tokens, lengths


def save_model(out, cfg, params):
    os.makedirs(out, exist_ok=True)
    state = tl.hf_state_from_params(params, cfg)
    safetensors_io.save(os.path.join(out, "model.safetensors"), state, metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(tl.hf_config(cfg), f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(chess_vocab.tokenizer_spec(77), f, indent=2)
        f.write("\n")


def legal_sets(chesslens, game):
    """Per token position (0 = <s>), the set of legal next token strings."""
    out = subprocess.run(
        [chesslens, "chess", "legal", "--uci", game], check=True, capture_output=True, text=True
    ).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    rows.sort(key=lambda r: r["position"])
    return [set(r["legal_next"]) for r in rows]


def legal_accuracy(chesslens, model_dir, n, seed):
    """(correct, counted) over every position of n held-out games that has a legal next token."""
    cfg, params = tl.load_hf(model_dir)
    tok = tl.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    games = random_games(chesslens, n, seed)
    correct = counted = 0
    for game in games:
        ids = tok.encode(game).ids
        with torch.no_grad():
            logits, _ = tl.run(params, cfg, torch.tensor([ids]), cache=False)
        top = logits[0].argmax(-1).tolist()
        legal = legal_sets(chesslens, game)
        if len(legal) != len(ids):
            raise RuntimeError(f"chess legal gave {len(legal)} positions for {len(ids)} tokens")
        for pos, allowed in enumerate(legal):
            if not allowed:
                continue  # game over: no legal next token exists
            counted += 1
            correct += tok.id_to_token[top[pos]] in allowed
    return correct, counted


def train(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    cfg = {
        "d_model": args.d_model,
        "n_heads": args.heads,
        "d_head": args.d_model // args.heads,
        "n_layers": args.layers,
        "n_ctx": N_CTX,
        "d_vocab": 77,
        "d_mlp": 4 * args.d_model,
        "eps": 1e-5,
        "act_fn": "gelu_new",
        "scale_attn_by_inverse_layer_idx": False,
        "normalization_type": "LN",
    }
    tok = tl.Tokenizer(chess_vocab.tokenizer_spec(77))
    t0 = time.time()
    games = random_games(args.chesslens, args.games, TRAIN_SEED)
    tokens, lengths = encode_games(tok, games)
    print(f"{len(games)} training games, mean {lengths.float().mean():.1f} tokens "
          f"({time.time() - t0:.1f} s)", flush=True)
    params = init_params(cfg, gen)
    for v in params.values():
        v.requires_grad_(True)
    decay = [v for k, v in params.items() if k.split(".")[-1].startswith("W_")]
    no_decay = [v for k, v in params.items() if not k.split(".")[-1].startswith("W_")]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))),
    )
    t0 = time.time()
    for step in range(args.steps):
        idx = torch.randint(0, len(games), (args.batch,), generator=gen)
        batch, lens = tokens[idx], lengths[idx]
        T = int(lens.max())
        inp, target = batch[:, : T - 1], batch[:, 1:T]
        valid = torch.arange(T - 1)[None] < (lens[:, None] - 1)  # target is a real token
        logits, _ = tl.run(with_tied_unembed(params, 77), cfg, inp, cache=False)
        loss = torch.nn.functional.cross_entropy(logits[valid], target[valid])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{time.time() - t0:.0f} s", flush=True)
    final = with_tied_unembed({k: v.detach() for k, v in params.items()}, 77)
    save_model(args.out, cfg, final)
    print(f"saved {args.out}", flush=True)
    if args.eval_games:
        correct, counted = legal_accuracy(args.chesslens, args.out, args.eval_games, HELDOUT_SEED)
        print(f"legal top-1 accuracy on {args.eval_games} held-out games: {correct}/{counted} = "
              f"{correct / counted:.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="generate games, train, save, evaluate")
    t.add_argument("--chesslens", required=True, help="path of the chesslens binary")
    t.add_argument("--out", default=os.path.join(HERE, "chess-tiny"))
    t.add_argument("--layers", type=int, default=4)
    t.add_argument("--d-model", type=int, default=64)
    t.add_argument("--heads", type=int, default=4)
    t.add_argument("--games", type=int, default=20000)
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--eval-games", type=int, default=200)
    e = sub.add_parser("eval", help="legal-move top-1 accuracy on held-out random games")
    e.add_argument("--chesslens", required=True)
    e.add_argument("--model", default=os.path.join(HERE, "chess-tiny"))
    e.add_argument("--games", type=int, default=200)
    e.add_argument("--seed", type=int, default=HELDOUT_SEED)
    e.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.cmd == "train":
        train(args)
    else:
        torch.set_num_threads(args.threads)
        correct, counted = legal_accuracy(args.chesslens, args.model, args.games, args.seed)
        print(f"legal top-1 accuracy on {args.games} held-out games (seed {args.seed}): "
              f"{correct}/{counted} = {correct / counted:.4f}")


if __name__ == "__main__":
    main()
