"""PyTorch baselines for bench_patch: what a TransformerLens user runs, on tl_reference, as fast as
that user would run it: the thread settings of bench/torch_settings.py (set before torch loads),
the processed weights laid out once (tl_reference.prepare), torch.inference_mode, and a cache
holding only the hooks the analysis reads.

patch   block_every for one clean/corrupted pair as TL's generic_activation_patch does it: one
        clean run caching resid_pre, attn_out and mlp_out, one corrupted run, then one full
        forward per (component, layer, position) with a hook writing the clean slice into the
        corrupted activation in place, metric = normalised logit of a token at the last
        position. Writes the values (float32, [3, L, T]) to OUT for comparison with chesslens.
        `seconds` covers everything from the clean run on.
sample  the same patched forwards for the listed indices only ("c:l:p,..."; c 0 resid_pre,
        1 attn_out, 2 mlp_out), each timed alone; `per_forward_s` is their median, the cost of
        one of the 3·L·T forwards of the loop above, for extrapolating it to long games. The
        sampled values go to OUT (float32, in list order).
legal   legal-move statistics over games, batched as chesslens batches them (right-padded):
        run with the hooks decompose_resid reads (embed, pos_embed, attn_out, mlp_out, the final
        LayerNorm scale), decompose_resid(apply_ln=True), @ W_U, then min/max/mean over legal and
        illegal tokens per component x position, summed over games. Writes the means over games
        (float32 [6, n_components, n_ctx], NaN where no game counts) to OUT.

Each mode prints `settings ...` (torch_settings.describe), then `seconds X` (and for sample
`per_forward_s X`) and `peak_rss_kb K`, one per line.

    /usr/bin/python3 torch_patch_loop.py patch  MODEL_DIR TOKENS_FILE METRIC_TOKEN THREADS OUT
    /usr/bin/python3 torch_patch_loop.py sample MODEL_DIR TOKENS_FILE METRIC_TOKEN THREADS OUT IDX
    /usr/bin/python3 torch_patch_loop.py legal  MODEL_DIR GAMES_FILE BATCH THREADS OUT
TOKENS_FILE: the clean ids on line 1, the corrupted ids on line 2 (space-separated).
GAMES_FILE: per game one line "ids;mask-rows" written by bench_patch (ids comma-separated, the
legal mask as V-character 0/1 strings separated by '|').
"""

import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "reference"))

import torch_settings  # noqa: E402

COMPONENTS = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")  # block_every's order


def peak_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Patching:
    """The clean and corrupted runs of one pair and the patched forward of one index."""

    def __init__(self, torch, tl, ta, model_dir, tokens_file, metric_token):
        self.torch, self.tl = torch, tl
        cfg, raw = tl.load_hf(model_dir)
        cfg, params = tl.process(raw, cfg)
        self.cfg, self.params = cfg, tl.prepare(params, cfg)
        with open(tokens_file) as f:
            self.clean = torch.tensor([[int(x) for x in f.readline().split()]])  # [1, T]
            self.corrupted = torch.tensor([[int(x) for x in f.readline().split()]])  # [1, T]
        self.ta, self.metric_token = ta, metric_token

    def start(self):
        """Clean run (caching the patched hooks) and corrupted run; sets the normalised metric."""
        names = [f"blocks.{l}.{c}" for c in COMPONENTS for l in range(self.cfg["n_layers"])]
        clean_logits, self.clean_cache = self.tl.run(
            self.params, self.cfg, self.clean, use_attn_result=False, names=names
        )
        corr_logits, _ = self.tl.run(self.params, self.cfg, self.corrupted, cache=False)
        base = self.ta.logit_metric(self.metric_token)
        self.metric = self.ta.normalised(base, base(clean_logits), base(corr_logits))

    def patched(self, component, layer, pos):
        """One full corrupted forward with the clean activation at (component, layer, pos)."""
        name = f"blocks.{layer}.{COMPONENTS[component]}"
        clean = self.clean_cache[name]  # [1, T, D]

        def hook(act):
            act[:, pos] = clean[:, pos]
            return act

        logits, _ = self.tl.run(self.params, self.cfg, self.corrupted, cache=False,
                                fwd_hooks={name: hook})
        return self.metric(logits)


def patch(torch, tl, ta, np, model_dir, tokens_file, metric_token, out):
    pt = Patching(torch, tl, ta, model_dir, tokens_file, metric_token)
    L, T = pt.cfg["n_layers"], pt.clean.shape[1]
    values = torch.zeros(3, L, T)
    t0 = time.perf_counter()
    with torch.inference_mode():
        pt.start()
        for c in range(3):
            for l in range(L):
                for p in range(T):
                    values[c, l, p] = pt.patched(c, l, p)
    secs = time.perf_counter() - t0
    values.numpy().astype(np.float32).tofile(out)
    print(f"seconds {secs:.6f}")


def sample(torch, tl, ta, np, model_dir, tokens_file, metric_token, out, indices):
    pt = Patching(torch, tl, ta, model_dir, tokens_file, metric_token)
    idx = [tuple(int(x) for x in s.split(":")) for s in indices.split(",")]
    times, values = [], []
    t0 = time.perf_counter()
    with torch.inference_mode():
        pt.start()  # also the warm-up
        for c, l, p in idx:
            t1 = time.perf_counter()
            values.append(pt.patched(c, l, p))
            times.append(time.perf_counter() - t1)
    secs = time.perf_counter() - t0
    np.array(values, dtype=np.float32).tofile(out)
    print(f"seconds {secs:.6f}")
    print(f"per_forward_s {statistics.median(times):.6f}")


def legal(torch, tl, ta, np, model_dir, games_file, batch, out):
    cfg, raw = tl.load_hf(model_dir)
    cfg, params = tl.process(raw, cfg)
    params = tl.prepare(params, cfg)
    L, V, n_ctx = cfg["n_layers"], cfg["d_vocab"], cfg["n_ctx"]
    games = []
    with open(games_file) as f:
        for line in f:
            ids, rows = line.strip().split(";")
            mask = torch.tensor([[c == "1" for c in r] for r in rows.split("|")])  # [T, V]
            games.append((torch.tensor([int(x) for x in ids.split(",")]), mask))
    names = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale"]
    names += [f"blocks.{l}.hook_{c}_out" for l in range(L) for c in ("attn", "mlp")]
    W_U = params["unembed.W_U"]  # [D, V]
    n_comp = 2 + 2 * L
    sums = torch.zeros(6, n_comp, n_ctx, dtype=torch.float64)
    count = torch.zeros(n_ctx, dtype=torch.float64)
    inf = torch.tensor(float("inf"))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for g0 in range(0, len(games), batch):
            chunk = games[g0 : g0 + batch]
            T = max(len(ids) for ids, _ in chunk)
            toks = torch.zeros(len(chunk), T, dtype=torch.long)  # [B, T], right-padded with 0
            mask = torch.zeros(len(chunk), T, V, dtype=torch.bool)  # [B, T, V], padding all False
            for b, (ids, m) in enumerate(chunk):
                toks[b, : len(ids)] = ids
                mask[b, : len(ids)] = m
            _, cache = tl.run(params, cfg, toks, use_attn_result=False, names=names)
            stack, _ = ta.decompose_resid(cache, cfg, apply_ln=True)  # [n, B, T, D]
            logits = stack @ W_U  # [n, B, T, V]
            n_legal = mask.sum(-1)  # [B, T]
            ok = (n_legal > 0) & (n_legal < V)  # padding has no legal token
            min_legal = torch.where(mask, logits, inf).min(-1).values  # [n, B, T]
            max_illegal = torch.where(~mask, logits, -inf).max(-1).values
            mean_legal = (logits * mask).sum(-1) / n_legal.clamp(min=1)
            mean_illegal = (logits * ~mask).sum(-1) / (V - n_legal).clamp(min=1)
            stats = torch.stack([min_legal, max_illegal, mean_legal, mean_illegal,
                                 min_legal - max_illegal, mean_legal - mean_illegal])
            stats = torch.where(ok, stats, torch.zeros(()))  # [6, n, B, T]
            sums[:, :, :T] += stats.double().sum(2)
            count[:T] += ok.double().sum(0)
    secs = time.perf_counter() - t0
    means = sums / count  # NaN where count is 0
    means.numpy().astype(np.float32).tofile(out)
    print(f"seconds {secs:.6f}")


def main():
    mode = sys.argv[1]
    threads = int(sys.argv[5])
    torch_settings.configure(threads)
    torch = torch_settings.start(threads)
    import numpy as np
    import tl_analyses as ta
    import tl_reference as tl

    print("settings " + torch_settings.describe(threads), flush=True)
    if mode == "patch":
        patch(torch, tl, ta, np, sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[6])
    elif mode == "sample":
        sample(torch, tl, ta, np, sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[6],
               sys.argv[7])
    elif mode == "legal":
        legal(torch, tl, ta, np, sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[6])
    else:
        sys.exit(f"torch_patch_loop.py: unknown mode {mode!r}")
    print(f"peak_rss_kb {peak_rss_kb()}")


if __name__ == "__main__":
    main()
