"""PyTorch baselines for bench_patch: what a TransformerLens notebook does, on tl_reference.

patch   block_every for one clean/corrupted pair as TL's generic_activation_patch does it: one
        clean run_with_cache, then one full forward per (component, layer, position) with a hook
        writing the clean slice into the corrupted run, metric = normalised logit of a token at
        the last position. Prints the seconds and writes the values (float32, [3, L, T]) so the
        caller can compare them with chesslens.
legal   legal-move statistics over games: run_with_cache, decompose_resid, apply_ln_to_stack,
        @ W_U, then min/max/mean over legal and illegal tokens per component x position
        (vectorised with masks). Prints the seconds.
Each mode prints "SECONDS PEAK_RSS_KB" on one line.

    /usr/bin/python3 torch_patch_loop.py patch MODEL_DIR TOKENS_FILE METRIC_TOKEN THREADS OUT
    /usr/bin/python3 torch_patch_loop.py legal MODEL_DIR GAMES_FILE THREADS
GAMES_FILE: per game one line "ids;mask-rows" written by bench_patch (ids comma-separated, the
legal mask as V-character 0/1 strings separated by '|').
"""

import os
import resource
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "reference"))

import tl_analyses as ta  # noqa: E402
import tl_reference as tl  # noqa: E402


def patch(model_dir, tokens_file, metric_token, threads, out):
    torch.set_num_threads(threads)
    cfg, raw = tl.load_hf(model_dir)
    cfg, params = tl.process(raw, cfg)
    with open(tokens_file) as f:
        clean = torch.tensor([[int(x) for x in f.readline().split()]])
        corrupted = torch.tensor([[int(x) for x in f.readline().split()]])
    t0 = time.perf_counter()
    with torch.no_grad():
        clean_logits, clean_cache = tl.run(params, cfg, clean)
        corr_logits, _ = tl.run(params, cfg, corrupted, cache=False)
        base = ta.logit_metric(metric_token)
        metric = ta.normalised(base, base(clean_logits), base(corr_logits))
        values = ta.act_patch(params, cfg, corrupted, clean_cache, metric, "block_every")
    secs = time.perf_counter() - t0
    values.numpy().astype(np.float32).tofile(out)
    print(f"{secs:.6f} {peak_rss_kb()}")


def legal(model_dir, games_file, threads):
    torch.set_num_threads(threads)
    cfg, raw = tl.load_hf(model_dir)
    cfg, params = tl.process(raw, cfg)
    games = []
    with open(games_file) as f:
        for line in f:
            ids, rows = line.strip().split(";")
            mask = torch.tensor([[c == "1" for c in r] for r in rows.split("|")])
            games.append((torch.tensor([[int(x) for x in ids.split(",")]]), mask))
    W_U = params["unembed.W_U"]
    t0 = time.perf_counter()
    sums = None
    with torch.no_grad():
        for toks, mask in games:
            _, cache = tl.run(params, cfg, toks)
            stack, _ = ta.decompose_resid(cache, cfg, apply_ln=True)
            logits = stack[:, 0] @ W_U  # [n, T, V]
            inf = torch.tensor(float("inf"))
            n_legal = mask.sum(-1)  # [T]
            ok = (n_legal > 0) & (n_legal < mask.shape[-1])
            min_legal = torch.where(mask, logits, inf).min(-1).values
            max_illegal = torch.where(~mask, logits, -inf).max(-1).values
            mean_legal = (logits * mask).sum(-1) / n_legal.clamp(min=1)
            mean_illegal = (logits * ~mask).sum(-1) / (mask.shape[-1] - n_legal).clamp(min=1)
            stats = torch.stack([min_legal, max_illegal, mean_legal, mean_illegal,
                                 min_legal - max_illegal, mean_legal - mean_illegal])
            stats = torch.where(ok, stats, torch.zeros(()))
            s = stats.double().sum(-1)
            sums = s if sums is None else sums + s
    secs = time.perf_counter() - t0
    print(f"{secs:.6f} {peak_rss_kb()}")


def peak_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    if sys.argv[1] == "patch":
        patch(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        legal(sys.argv[2], sys.argv[3], int(sys.argv[4]))
