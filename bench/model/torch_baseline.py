"""PyTorch baseline for bench_forward: the reference TL forward (tests/reference/tl_reference.py)
timed on the same model, batch and thread count as chesslens, as a user would run it fast: the
thread settings of bench/torch_settings.py, the processed weights laid out once with
tl_reference.prepare, cache=False under torch.inference_mode. Prints `settings ...` (what the
process ran with) and `tokens_per_s X` for the best of ITERS timed forwards after one warm-up.

usage: torch_baseline.py MODEL_DIR BATCH TOKENS THREADS ITERS SEED
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "reference"))

import torch_settings  # noqa: E402


def main():
    model_dir, batch, tokens, threads, iters, seed = sys.argv[1:7]
    batch, tokens, threads, iters, seed = int(batch), int(tokens), int(threads), int(iters), int(seed)
    torch_settings.configure(threads)
    torch = torch_settings.start(threads)
    import tl_reference

    cfg, params = tl_reference.load_hf(model_dir)
    cfg, params = tl_reference.process(params, cfg)
    params = tl_reference.prepare(params, cfg)
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(3, 77, (batch, tokens), generator=g)
    toks[:, 0] = 1
    print("settings " + torch_settings.describe(threads), flush=True)
    with torch.inference_mode():
        tl_reference.run(params, cfg, toks, cache=False)  # warm-up
        best = float("inf")
        for _ in range(iters):
            t0 = time.perf_counter()
            tl_reference.run(params, cfg, toks, cache=False)
            best = min(best, time.perf_counter() - t0)
    print(f"tokens_per_s {batch * tokens / best:.1f}")


if __name__ == "__main__":
    main()
