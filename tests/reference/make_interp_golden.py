"""Write the golden files chesslens' interp/ analyses are tested against.

For each fixture model (tests/fixtures/random-tiny, models/chess-tiny), with TL's default weight
processing, this writes tests/golden/interp/<model>.safetensors holding, computed by
tl_analyses.py on top of tl_reference.py:
  tokens.clean / tokens.corrupted / tokens.other   I32 [T] the patched pair and a second
                                                   corruption (a whole other game prefix)
  patch.<kind>          every patch kind, metric logit of `metric_token` at the last position,
                        normalised (m - corrupted) / (clean - corrupted), TL's shapes
  patch_other.block_every   corruption by the other game prefix, metric logprob, unnormalised
  patch_mass.resid_pre  metric: probability on the legal next tokens of the clean game
  decompose_resid, decompose_resid_l1, accumulated_resid, accumulated_resid_l2,
  stack_head_results, full_decomp_neurons_dirs ([n, T, 2], projected onto two token
  directions), full_decomp_mlp, dla (decompose_resid @ W_U), logit_attrs,
  predictions.*, legal_stats.<stat> + legal_stats.count, neuron_means.<group>,
  pattern_diff, neuron_diff_dla, weight_dla.{layers,neurons,scores}
and metadata: the UCI texts, corruption, metric token, labels of each stack (JSON).

Legal masks and phases come from `chesslens chess legal` (the chess rules are tested on their
own); pass the binary with --chesslens.

    /usr/bin/python3 tests/reference/make_interp_golden.py --chesslens build/cli/chesslens
    /usr/bin/python3 tests/reference/make_interp_golden.py --chesslens ... --model-dir DIR --out F
"""

import argparse
import json
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import safetensors_io  # noqa: E402
import tl_analyses as ta  # noqa: E402
import tl_reference as tl  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

# The clean game (10 moves, T = 21), the same game with its last token replaced, and another
# game prefix of the same length (a different opening).
CLEAN = "e2e4 e7e5 g1f3 b8c6 f1b5 a7a6 b5a4 g8f6 e1g1 f8e7"
CORRUPT_POS = 20
CORRUPT_TOKEN = "d6"
OTHER = "d2d4 d7d5 c2c4 e7e6 b1c3 g8f6 c1g5 f8e7 e2e3 e8g8"
# Games for the dataset statistics (different lengths).
GAMES = [
    CLEAN,
    "d2d4 g7g6 d1d3 h7h5 b2b3 b8c6 c1g5 a7a6 d3d2 e7e6 g5f6 f8e7",
    "g1h3 d7d6 g2g4 d6d5 b1a3 b8d7 a3b5",
    "e2e4 c7c5 g1f3 d7d6 d2d4 c5d4 f3d4 g8f6 b1c3 a7a6 c1e3 e7e5 d4b3",
]
SLICE = (3, -3)

MODEL_DIRS = {
    "random-tiny": os.path.join(ROOT, "tests", "fixtures", "random-tiny"),
    "chess-tiny": os.path.join(ROOT, "models", "chess-tiny"),
}


def legal_view(chesslens, uci):
    out = subprocess.run([chesslens, "chess", "legal", "--uci", uci], check=True,
                         capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def masks_and_phases(chesslens, tok, V, uci):
    rows = legal_view(chesslens, uci)
    mask = torch.zeros(len(rows), V, dtype=torch.bool)
    for t, r in enumerate(rows):
        for name in r["legal_next"]:
            mask[t, tok.vocab[name]] = True
    return mask, [r["phase"] for r in rows]


def squeeze(stack):
    return stack[:, 0].contiguous()


def make(name, chesslens, directory=None, path=None):
    directory = directory or MODEL_DIRS[name]
    cfg, raw = tl.load_hf(directory)
    cfg, params = tl.process(raw, cfg)
    tok = tl.Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    V, L, H, M = cfg["d_vocab"], cfg["n_layers"], cfg["n_heads"], cfg["d_mlp"]
    out, meta = {}, {}

    clean = torch.tensor([tok.encode(CLEAN).ids])
    T = clean.shape[1]
    corrupted = clean.clone()
    corrupted[0, CORRUPT_POS] = tok.vocab[CORRUPT_TOKEN]
    other = torch.tensor([tok.encode(OTHER).ids])
    assert other.shape[1] == T
    with torch.no_grad():
        clean_logits, clean_cache = tl.run(params, cfg, clean)
        corr_logits, corr_cache = tl.run(params, cfg, corrupted)
        other_logits, _ = tl.run(params, cfg, other)

    # The metric token: the square whose last-position logit the corruption moves most.
    squares = [i for t, i in tok.vocab.items() if len(t) == 2 and t[0] in "abcdefgh"]
    delta = (clean_logits[0, -1] - corr_logits[0, -1]).abs()
    metric_token = max(squares, key=lambda i: delta[i].item())
    meta["metric_token"] = tok.id_to_token[metric_token]

    base = ta.logit_metric(metric_token)
    metric = ta.normalised(base, base(clean_logits), base(corr_logits))
    for kind in ta.ALL_PATCH_KINDS:
        out[f"patch.{kind}"] = ta.act_patch(params, cfg, corrupted, clean_cache, metric, kind)
    lp = ta.logprob_metric(metric_token)
    out["patch_other.block_every"] = ta.act_patch(params, cfg, other, clean_cache, lp,
                                                  "block_every")
    clean_mask, clean_phases = masks_and_phases(chesslens, tok, V, CLEAN)
    mass = ta.legal_mass_metric(clean_mask[-1])
    out["patch_mass.resid_pre"] = ta.act_patch(params, cfg, corrupted, clean_cache, mass,
                                               "resid_pre")
    out["tokens.clean"] = clean[0].to(torch.int32)
    out["tokens.corrupted"] = corrupted[0].to(torch.int32)
    out["tokens.other"] = other[0].to(torch.int32)

    labels = {}

    def put(key, stack_labels, squeeze_batch=True):
        stack, lab = stack_labels
        out[key] = squeeze(stack) if squeeze_batch else stack
        labels[key] = lab

    c = clean_cache
    put("decompose_resid", ta.decompose_resid(c, cfg, apply_ln=True))
    put("decompose_resid_l1", ta.decompose_resid(c, cfg, layer=1, mlp_input=True, mode="attn",
                                                 apply_ln=True))
    put("accumulated_resid", ta.accumulated_resid(c, cfg, incl_mid=True, apply_ln=True))
    put("accumulated_resid_l2", ta.accumulated_resid(c, cfg, layer=2, incl_mid=True,
                                                     mlp_input=True, apply_ln=True))
    put("stack_head_results", ta.stack_head_results(c, params, cfg, incl_remainder=True,
                                                    apply_ln=True))
    full, full_labels = ta.get_full_resid_decomposition(c, params, cfg, apply_ln=True)
    dir_tokens = [metric_token, tok.vocab[CORRUPT_TOKEN]]
    dirs = params["unembed.W_U"][:, dir_tokens]  # [D, 2]
    out["full_decomp_neurons_dirs"] = squeeze(full @ dirs)
    labels["full_decomp_neurons_dirs"] = full_labels
    out["full_decomp_dir_tokens"] = torch.tensor(dir_tokens, dtype=torch.int32)
    put("full_decomp_mlp", ta.get_full_resid_decomposition(c, params, cfg, expand_neurons=False,
                                                           apply_ln=True))
    dec, dec_labels = ta.decompose_resid(c, cfg, apply_ln=True)
    out["dla"] = squeeze(dec @ params["unembed.W_U"])
    raw_dec, _ = ta.decompose_resid(c, cfg)
    next_tokens = torch.cat([clean[:, 1:], clean[:, -1:]], 1)  # [1, T]
    wrong = torch.full_like(clean, metric_token)
    out["logit_attrs"] = ta.logit_attrs(c, params, cfg, raw_dec, next_tokens, wrong)[:, 0]
    labels["dla"] = dec_labels
    labels["logit_attrs"] = dec_labels

    pred = ta.predictions(clean_logits[0], clean_mask, 5)
    for key, val in zip(("logprobs", "top_ids", "top_logprobs", "legal_mass", "top1_legal"), pred):
        out[f"predictions.{key}"] = val.to(torch.int32) if val.dtype in (torch.int64, torch.bool) else val

    stacks, masks, posts, phases = [], [], [], []
    for g in GAMES:
        toks = torch.tensor([tok.encode(g).ids])
        with torch.no_grad():
            _, gc = tl.run(params, cfg, toks)
        st, _ = ta.decompose_resid(gc, cfg, apply_ln=True)
        stacks.append(squeeze(st) @ params["unembed.W_U"])
        mk, ph = masks_and_phases(chesslens, tok, V, g)
        masks.append(mk)
        phases.append(ph)
        posts.append(torch.stack([gc[f"blocks.{l}.mlp.hook_post"][0] for l in range(L)]))
    means, count = ta.legal_stats(stacks, masks)
    for k, v in means.items():
        out[f"legal_stats.{k}"] = v.float()
    out["legal_stats.count"] = count.float()
    for g, v in ta.neuron_means(posts, phases, *SLICE).items():
        out[f"neuron_means.{g}"] = v

    out["pattern_diff"] = torch.stack([
        clean_cache[f"blocks.{l}.attn.hook_pattern"][0, :, -1] -
        corr_cache[f"blocks.{l}.attn.hook_pattern"][0, :, -1] for l in range(L)])  # [L, H, T]
    w = torch.stack([params[f"blocks.{l}.mlp.W_out"] @ params["unembed.W_U"][:, metric_token]
                     for l in range(L)])  # [L, M]
    diff = torch.stack([clean_cache[f"blocks.{l}.mlp.hook_post"][0, -1] -
                        corr_cache[f"blocks.{l}.mlp.hook_post"][0, -1] for l in range(L)])
    out["neuron_diff_dla"] = diff * w
    top = w.flatten().topk(10)
    out["weight_dla.layers"] = (top.indices // M).to(torch.int32)
    out["weight_dla.neurons"] = (top.indices % M).to(torch.int32)
    out["weight_dla.scores"] = top.values

    meta.update({
        "clean": CLEAN, "corrupt_pos": str(CORRUPT_POS), "corrupt_token": CORRUPT_TOKEN,
        "other": OTHER, "games": json.dumps(GAMES), "slice": json.dumps(list(SLICE)),
        "labels": json.dumps(labels),
    })
    tensors = {k: v.detach().contiguous().numpy() for k, v in out.items()}
    path = path or os.path.join(ROOT, "tests", "golden", "interp", f"{name}.safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    safetensors_io.save(path, tensors, metadata=meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all", choices=["all", *MODEL_DIRS])
    ap.add_argument("--chesslens", required=True, help="the chesslens binary (for legal masks)")
    ap.add_argument("--model-dir", help="any model directory instead of the fixtures (with --out)")
    ap.add_argument("--out", help="output file for --model-dir")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.model_dir:
        make("live", args.chesslens, args.model_dir, args.out)
        return
    for name in MODEL_DIRS if args.model == "all" else [args.model]:
        if not os.path.exists(os.path.join(MODEL_DIRS[name], "model.safetensors")):
            print(f"skipping {name}: no model.safetensors yet")
            continue
        make(name, args.chesslens)


if __name__ == "__main__":
    main()
