"""Self-check of the PyTorch reference (tl_reference.py); exits 0 on success, 1 on a failure,
77 when torch is not installed.

The checks do not trust the reference's own conversion: a second forward pass written directly
on the HuggingFace state dict (Conv1D matrices, torch.nn.functional.layer_norm, HF's masking) must
give the same log-probabilities, and the TL-specific relations of docs/TL-SEMANTICS.md §2.6 must hold
between the two (processed residuals are the HF ones minus their d_model mean, processed values
are the HF ones minus the effective value bias). On top of that: processed and unprocessed runs
agree in log_softmax, cache decomposition identities hold, the processed weights are centred, and
the tokenizer gives the documented ids and offsets.

    /usr/bin/python3 tests/reference/check_reference.py [MODEL_DIR ...]
"""

import json
import math
import os
import sys

try:
    import torch
except ImportError:
    print("check_reference: torch is not installed; skipped")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import safetensors_io  # noqa: E402
import tl_reference as tl  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)


def close(a, b, atol, what):
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    check(diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol}")


def close_logprobs(a, b, what):
    """log-probabilities agree to 1e-5, relative to their size where they exceed 1 in magnitude
    (float32 spacing grows with the value: a log-prob of -20 is only stored to ~2e-6)."""
    a, b = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    diff = ((a - b).abs() / b.abs().clamp(min=1.0)).max().item()
    check(diff <= 1e-5, f"{what}: log_softmax differs by {diff:.3g} (relative) > 1e-5")


def hf_forward(state, hf_cfg, tokens):
    """GPT-2 as HuggingFace computes it, straight from the state dict (independent path)."""
    pre = "transformer." if any(k.startswith("transformer.") for k in state) else ""

    def t(name):
        return torch.from_numpy(state[pre + name].astype("float32"))

    D, H = hf_cfg["n_embd"], hf_cfg["n_head"]
    Dh = D // H
    eps = hf_cfg["layer_norm_epsilon"]
    B, T = tokens.shape
    x = t("wte.weight")[tokens] + t("wpe.weight")[torch.arange(T)][None]
    hidden = [x]
    values = []
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(hf_cfg["n_layer"]):
        h = f"h.{l}."
        a = torch.nn.functional.layer_norm(x, (D,), t(h + "ln_1.weight"), t(h + "ln_1.bias"), eps)
        qkv = torch.addmm(t(h + "attn.c_attn.bias"), a.reshape(-1, D), t(h + "attn.c_attn.weight"))
        q, k, v = qkv.reshape(B, T, 3, H, Dh).unbind(2)  # each [B, T, H, Dh]
        values.append(v)
        w = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(Dh)
        w = w.masked_fill(~mask, torch.finfo(torch.float32).min).softmax(-1)
        z = torch.einsum("bhqk,bkhd->bqhd", w, v).reshape(B * T, D)
        x = x + torch.addmm(t(h + "attn.c_proj.bias"), z, t(h + "attn.c_proj.weight")).reshape(B, T, D)
        hidden.append(x)
        m = torch.nn.functional.layer_norm(x, (D,), t(h + "ln_2.weight"), t(h + "ln_2.bias"), eps)
        m = torch.addmm(t(h + "mlp.c_fc.bias"), m.reshape(-1, D), t(h + "mlp.c_fc.weight"))
        m = tl.gelu_new(m)
        x = x + torch.addmm(t(h + "mlp.c_proj.bias"), m, t(h + "mlp.c_proj.weight")).reshape(B, T, D)
        hidden.append(x)
    x = torch.nn.functional.layer_norm(x, (D,), t("ln_f.weight"), t("ln_f.bias"), eps)
    return x @ t("wte.weight").t(), hidden, values


def check_model(directory, texts):
    name = os.path.basename(os.path.normpath(directory))
    with open(os.path.join(directory, "config.json")) as f:
        hf_cfg = json.load(f)
    state, _ = safetensors_io.load(os.path.join(directory, "model.safetensors"))
    tok = tl.Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    tokens = tok.to_tokens(texts)
    cfg, params = tl.load_hf(directory)
    pcfg, pparams = tl.process(params, cfg)
    with torch.no_grad():
        logits_u, cache_u = tl.run(params, cfg, tokens)
        logits_p, cache_p = tl.run(pparams, pcfg, tokens)
        logits_hf, hidden, values = hf_forward(state, hf_cfg, tokens)
        logits_nc, none = tl.run(pparams, pcfg, tokens, cache=False)
    back = tl.params_from_hf_state(tl.hf_state_from_params(params, cfg), cfg)
    check(
        sorted(back) == sorted(params) and all(torch.equal(back[k], params[k]) for k in params),
        f"{name}: TL params -> HF state dict -> TL params is not the identity",
    )
    close_logprobs(logits_u, logits_p, f"{name}: processed vs unprocessed")
    close_logprobs(logits_u, logits_hf, f"{name}: unprocessed vs HF path")
    close(logits_u, logits_hf, 1e-5, f"{name}: unprocessed logits vs HF path (b_U = 0)")
    check(none is None and torch.equal(logits_nc, logits_p), f"{name}: cache=False changes logits")
    check(
        list(cache_p) == tl.hook_names(cfg),
        f"{name}: cache keys differ from the hook list in firing order",
    )
    B, T = tokens.shape
    H, Dh, D, M = cfg["n_heads"], cfg["d_head"], cfg["d_model"], cfg["d_mlp"]
    shapes = {
        "attn.hook_q": [B, T, H, Dh],
        "attn.hook_z": [B, T, H, Dh],
        "attn.hook_attn_scores": [B, H, T, T],
        "attn.hook_pattern": [B, H, T, T],
        "attn.hook_result": [B, T, H, D],
        "ln1.hook_scale": [B, T, 1],
        "mlp.hook_post": [B, T, M],
        "hook_resid_post": [B, T, D],
    }
    for suffix, shape in shapes.items():
        got = list(cache_p[f"blocks.{cfg['n_layers'] - 1}.{suffix}"].shape)
        check(got == shape, f"{name}: {suffix} shape {got}, want {shape}")
    upper = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)  # key > query: masked
    for cache, ps, label in ((cache_u, params, "unprocessed"), (cache_p, pparams, "processed")):
        tag = f"{name} {label}"
        for l in range(cfg["n_layers"]):
            def c(hook):
                return cache[f"blocks.{l}.{hook}"]

            close(c("hook_resid_mid"), c("hook_resid_pre") + c("hook_attn_out"), 1e-6,
                  f"{tag}: resid_mid = resid_pre + attn_out (layer {l})")
            close(c("hook_resid_post"), c("hook_resid_mid") + c("hook_mlp_out"), 1e-6,
                  f"{tag}: resid_post = resid_mid + mlp_out (layer {l})")
            close(c("attn.hook_result").sum(2) + ps[f"blocks.{l}.attn.b_O"], c("hook_attn_out"),
                  1e-5, f"{tag}: sum over heads of result + b_O = attn_out (layer {l})")
            scores = c("attn.hook_attn_scores")
            check(bool(torch.isneginf(scores[..., upper]).all()), f"{tag}: masked scores not -inf")
            check(bool(torch.isfinite(scores[..., ~upper]).all()), f"{tag}: causal scores not finite")
            close(c("attn.hook_pattern").sum(-1), torch.ones(B, H, T), 1e-5,
                  f"{tag}: pattern rows sum to 1 (layer {l})")
            x = c("hook_resid_pre")
            close(c("ln1.hook_normalized") * c("ln1.hook_scale"), x - x.mean(-1, keepdim=True),
                  1e-5, f"{tag}: ln1 normalized * scale = centred resid (layer {l})")
        close(cache["hook_embed"] + cache["hook_pos_embed"], cache["blocks.0.hook_resid_pre"],
              1e-6, f"{tag}: embed + pos_embed = resid_pre 0")
    # docs/TL-SEMANTICS.md §2.6 relations between processed TL and HF.
    L = cfg["n_layers"]
    for l in range(L):
        b = f"blocks.{l}."
        for hf_h, tl_h in ((hidden[2 * l], b + "hook_resid_pre"),
                           (hidden[2 * l + 1], b + "hook_resid_mid")):
            close(cache_p[tl_h], hf_h - hf_h.mean(-1, keepdim=True), 1e-5,
                  f"{name}: {tl_h} = HF minus its mean")
            close(cache_u[tl_h], hf_h, 1e-5, f"{name}: unprocessed {tl_h} = HF")
        v_bias = params[b + "attn.b_V"] + torch.einsum(
            "hmd,m->hd", params[b + "attn.W_V"], params[b + "ln1.b"])
        close(cache_p[b + "attn.hook_v"], values[l] - v_bias, 1e-5,
              f"{name}: processed v = HF v - effective b_V (layer {l})")
        for hook in ("attn.hook_pattern", "mlp.hook_post", "ln1.hook_scale", "attn.hook_q"):
            close(cache_p[b + hook], cache_u[b + hook], 1e-5,
                  f"{name}: {hook} unchanged by processing (layer {l})")
        close(pparams[b + "attn.W_Q"].mean(1), torch.zeros(H, Dh), 1e-6, f"{name}: W_Q centred")
        close(pparams[b + "attn.W_O"].mean(-1), torch.zeros(H, Dh), 1e-6, f"{name}: W_O centred")
        close(pparams[b + "mlp.W_in"].mean(0), torch.zeros(M), 1e-6, f"{name}: W_in centred")
        close(pparams[b + "mlp.W_out"].mean(-1), torch.zeros(M), 1e-6, f"{name}: W_out centred")
        check(torch.equal(pparams[b + "attn.b_V"], torch.zeros(H, Dh)), f"{name}: b_V not zero")
        check(b + "ln1.w" not in pparams, f"{name}: LN params left after fold_ln")
    W_U = pparams["unembed.W_U"]
    close(W_U.mean(-1), torch.zeros(D), 1e-6, f"{name}: W_U centred over vocab")
    close(W_U.mean(0), torch.zeros(cfg["d_vocab"]), 1e-6, f"{name}: W_U centred over d_model")
    close(pparams["embed.W_E"].mean(-1), torch.zeros(cfg["d_vocab"]), 1e-6, f"{name}: W_E centred")
    close(cache_p["ln_final.hook_scale"], cache_u["ln_final.hook_scale"], 1e-5,
          f"{name}: ln_final scale unchanged by processing")
    # Each processing step alone must also keep log-probs.
    for flags in ((True, False, False, False), (False, True, False, False), (False, False, True, False),
                  (False, False, False, True), (True, True, False, False)):
        c, p = tl.process(params, cfg, *flags)
        with torch.no_grad():
            lg, _ = tl.run(p, c, tokens, cache=False)
        close_logprobs(lg, logits_u, f"{name}: processing {flags}")
    # A hook that replaces an activation changes the run from there on (run_with_hooks).
    with torch.no_grad():
        zero_mlp = {"blocks.0.hook_mlp_out": lambda x: x * 0}
        patched, pc = tl.run(pparams, pcfg, tokens, fwd_hooks=zero_mlp)
    check(torch.equal(pc["blocks.0.hook_mlp_out"], torch.zeros(B, T, D)),
          f"{name}: replacement hook not applied")
    check(torch.equal(pc["blocks.0.hook_attn_out"], cache_p["blocks.0.hook_attn_out"]),
          f"{name}: replacement changed earlier hooks")
    check(not torch.allclose(patched, logits_p), f"{name}: replacement did not change the logits")
    print(f"{name}: checked {len(cache_p)} hooks on {B} sequences of up to {T} tokens")


def check_tokenizer(path):
    tok = tl.Tokenizer.from_file(path)
    enc = tok.encode("e2e4 e7e8q")
    check(enc.tokens == ["<s>", "e2", "e4", "e7", "e8", "q"], f"tokens {enc.tokens}")
    check(enc.offsets == [(0, 0), (0, 2), (2, 4), (5, 7), (7, 9), (9, 10)], f"offsets {enc.offsets}")
    check(enc.ids == [1, 26, 28, 11, 25, 73], f"ids {enc.ids}")
    enc = tok.encode("d2d4 d7d5 c2c4 d5c4", prepend_bos=False)
    check(enc.ids == [38, 45, 49, 24, 9, 10, 24, 10], f"ids without BOS {enc.ids}")
    # Special tokens are split out before pre-tokenization; unknown pieces become <pad> (unk).
    enc = tok.encode("<s>e2e4</s> Pe2 z9")
    check(enc.ids == [1, 1, 26, 28, 2, 0, 0], f"specials and unknowns {enc.ids} {enc.tokens}")
    check(enc.offsets[1:5] == [(0, 3), (3, 5), (5, 7), (7, 11)], f"special offsets {enc.offsets}")
    rows = tok.to_tokens(["e2e4 e7e5", "d2d4"])
    check(rows.tolist() == [[1, 26, 28, 11, 12], [1, 38, 45, 0, 0]], f"to_tokens padding {rows.tolist()}")
    check(tok.decode([1, 26, 28]) == "<s> e2 e4", "decode joins with spaces")


def main():
    torch.manual_seed(0)
    dirs = sys.argv[1:] or [
        d
        for d in (
            os.path.join(ROOT, "tests", "fixtures", "random-tiny"),
            os.path.join(ROOT, "models", "chess-tiny"),
        )
        if os.path.exists(os.path.join(d, "model.safetensors"))
    ]
    check_tokenizer(os.path.join(dirs[0], "tokenizer.json"))
    texts = [
        "e2e4 e7e5 g1f3 b8c6 f1b5 a7a6",
        "d2d4 d7d5 c2c4",
        "e2e4 e7e5 g1f3 b8c6 f1b5 a7a6 b5a4 g8f6 e1g1",
    ]
    for d in dirs:
        check_model(d, texts)
    # safetensors round trip of every supported dtype.
    import numpy as np

    tmp = os.path.join(os.environ.get("CHESSLENS_TEST_TMPDIR", "/tmp"), "check_reference.safetensors")
    arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        "b": np.arange(5, dtype=np.float16),
        "c": np.array([[1, -2]], dtype=np.int32),
        "d": np.array([2**40], dtype=np.int64),
        "e": np.array([1.0, -2.5, 3.140625], dtype=np.float32),
    }
    safetensors_io.save(tmp, arrays, metadata={"inputs": '["e2e4"]'}, dtypes={"e": "BF16"})
    back, meta = safetensors_io.load(tmp)
    check(meta == {"inputs": '["e2e4"]'}, "safetensors metadata round trip")
    for k, v in arrays.items():
        check(back[k].shape == v.shape and np.array_equal(back[k], v), f"safetensors round trip of {k}")
    header, _, _ = safetensors_io.read_header(tmp)
    check(header["e"]["dtype"] == "BF16" and header["b"]["dtype"] == "F16", "stored dtypes")
    os.remove(tmp)
    if FAILURES:
        print(f"check_reference: {len(FAILURES)} failures")
        return 1
    print("check_reference: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
