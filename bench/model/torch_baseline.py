"""PyTorch baseline for bench_forward: the reference TL implementation (tests/reference) timed on
the same model, batch and thread count, cache=False under no_grad. Prints `tokens_per_s X` for the
best of ITERS timed forwards after one warm-up.

usage: torch_baseline.py MODEL_DIR BATCH TOKENS THREADS ITERS SEED
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "reference"))
import tl_reference  # noqa: E402


def main():
    model_dir, batch, tokens, threads, iters, seed = sys.argv[1:7]
    batch, tokens, threads, iters, seed = int(batch), int(tokens), int(threads), int(iters), int(seed)
    torch.set_num_threads(threads)
    cfg, params = tl_reference.load_hf(model_dir)
    cfg, params = tl_reference.process(params, cfg)
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(3, 77, (batch, tokens), generator=g)
    toks[:, 0] = 1
    with torch.no_grad():
        tl_reference.run(params, cfg, toks, cache=False)  # warm-up
        best = float("inf")
        for _ in range(iters):
            t0 = time.perf_counter()
            tl_reference.run(params, cfg, toks, cache=False)
            best = min(best, time.perf_counter() - t0)
    print(f"tokens_per_s {batch * tokens / best:.1f}")


if __name__ == "__main__":
    main()
