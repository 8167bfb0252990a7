"""An independent PyTorch implementation of TransformerLens semantics for GPT-2 chess models.

chesslens must reproduce TransformerLens (TL) numbers; this module is the yardstick its C engine is
tested against. It is written from the specification in docs/TL-SEMANTICS.md (state-dict conversion,
from_pretrained weight processing, the forward pass with every hook point, the WordLevel
tokenizer), not from TL's code, and it depends only on torch, numpy and safetensors_io.py in this
directory. It is also small enough to serve as the training model for the fixture models
(autograd flows through `run` on unprocessed parameters) and as the PyTorch speed baseline
(`run(prepare(params, cfg), ...)` under torch.inference_mode(), caching only the hooks read).

Conventions: row vectors (y = x @ W + b); B batch, T positions, D d_model, H heads, Dh d_head,
M d_mlp, V vocabulary. Parameters live in a dict keyed by TL names (`blocks.0.attn.W_Q`, ...);
the cache maps TL hook names to tensors that keep the batch dimension.
"""

import json
import math
import os
import re

import numpy as np
import torch

import safetensors_io

# TL's attention mask value since v1.7.0.
IGNORE = float("-inf")


# ---------------------------------------------------------------------------------------------
# Loading a HuggingFace GPT-2 directory (docs/TL-SEMANTICS.md §1)
# ---------------------------------------------------------------------------------------------


def config_from_hf(hf):
    """Map a GPT-2 config.json dict to the TL config fields this reference uses (§1.1)."""
    archs = hf.get("architectures") or ["GPT2LMHeadModel"]
    if archs[0] not in ("GPT2LMHeadModel", "GPT2Model"):
        raise ValueError(f"config.json: unsupported architecture {archs[0]}")
    if "n_ctx" not in hf:
        # TL reads hf_config.n_ctx and fails without it.
        raise ValueError("config.json: no n_ctx (TransformerLens reads n_ctx, not n_positions)")
    d_model = int(hf["n_embd"])
    n_heads = int(hf["n_head"])
    if d_model % n_heads:
        raise ValueError(f"config.json: n_embd {d_model} is not a multiple of n_head {n_heads}")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu", "gelu_fast", "relu"):
        raise ValueError(f"config.json: unsupported activation_function {act}")
    return {
        "d_model": d_model,
        "n_heads": n_heads,
        "d_head": d_model // n_heads,
        "n_layers": int(hf["n_layer"]),
        "n_ctx": int(hf["n_ctx"]),
        "d_vocab": int(hf["vocab_size"]),
        "d_mlp": 4 * d_model,  # TL ignores n_inner for GPT-2
        "eps": float(hf.get("layer_norm_epsilon", 1e-5)),
        "act_fn": act,
        "scale_attn_by_inverse_layer_idx": bool(hf.get("scale_attn_by_inverse_layer_idx", False)),
        "normalization_type": "LN",
    }


def params_from_hf_state(state, cfg):
    """Convert a GPT-2 state dict (numpy arrays, Conv1D [in,out] layouts) to TL params (§1.3).

    Keys may carry the `transformer.` prefix (GPT2LMHeadModel) or not (GPT2Model). All floats are
    upcast to float32. lm_head.weight is used when present, else the tied wte.
    """
    prefix = "transformer." if any(k.startswith("transformer.") for k in state) else ""

    def get(name):
        key = prefix + name
        if key not in state:
            raise KeyError(f"model.safetensors: missing tensor {key}")
        return torch.from_numpy(np.asarray(state[key], dtype=np.float32).copy())

    D, H, Dh, M = cfg["d_model"], cfg["n_heads"], cfg["d_head"], cfg["d_mlp"]
    V, n_ctx = cfg["d_vocab"], cfg["n_ctx"]

    def check(name, t, shape):
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"model.safetensors: {name} has shape {list(t.shape)}, want {shape}")

    p = {}
    wte = get("wte.weight")
    check("wte.weight", wte, [V, D])
    wpe = get("wpe.weight")
    if wpe.shape[0] < n_ctx or wpe.shape[1] != D:
        raise ValueError(f"model.safetensors: wpe.weight {list(wpe.shape)} has < n_ctx={n_ctx} rows")
    p["embed.W_E"] = wte  # [V, D]
    p["pos_embed.W_pos"] = wpe[:n_ctx].clone()  # [n_ctx, D]
    for l in range(cfg["n_layers"]):
        h = f"h.{l}."
        b = f"blocks.{l}."
        p[b + "ln1.w"] = get(h + "ln_1.weight")  # [D]
        p[b + "ln1.b"] = get(h + "ln_1.bias")
        c_attn_w = get(h + "attn.c_attn.weight")  # [D, 3D], columns [q | k | v], each h*Dh + d
        c_attn_b = get(h + "attn.c_attn.bias")  # [3D]
        check(h + "attn.c_attn.weight", c_attn_w, [D, 3 * D])
        for i, name in enumerate("QKV"):
            w = c_attn_w[:, i * D : (i + 1) * D]  # [D, H*Dh]
            p[b + f"attn.W_{name}"] = w.reshape(D, H, Dh).permute(1, 0, 2).contiguous()  # [H,D,Dh]
            p[b + f"attn.b_{name}"] = c_attn_b[i * D : (i + 1) * D].reshape(H, Dh).clone()
        c_proj_w = get(h + "attn.c_proj.weight")  # [H*Dh, D]
        check(h + "attn.c_proj.weight", c_proj_w, [D, D])
        p[b + "attn.W_O"] = c_proj_w.reshape(H, Dh, D).clone()  # [H, Dh, D]
        p[b + "attn.b_O"] = get(h + "attn.c_proj.bias")  # [D]
        p[b + "ln2.w"] = get(h + "ln_2.weight")
        p[b + "ln2.b"] = get(h + "ln_2.bias")
        p[b + "mlp.W_in"] = get(h + "mlp.c_fc.weight")  # [D, M]
        check(h + "mlp.c_fc.weight", p[b + "mlp.W_in"], [D, M])
        p[b + "mlp.b_in"] = get(h + "mlp.c_fc.bias")  # [M]
        p[b + "mlp.W_out"] = get(h + "mlp.c_proj.weight")  # [M, D]
        check(h + "mlp.c_proj.weight", p[b + "mlp.W_out"], [M, D])
        p[b + "mlp.b_out"] = get(h + "mlp.c_proj.bias")  # [D]
    p["ln_final.w"] = get("ln_f.weight")
    p["ln_final.b"] = get("ln_f.bias")
    if "lm_head.weight" in state:
        lm_head = torch.from_numpy(np.asarray(state["lm_head.weight"], dtype=np.float32).copy())
    else:
        lm_head = wte
    p["unembed.W_U"] = lm_head.t().contiguous()  # [D, V]
    p["unembed.b_U"] = torch.zeros(V)  # GPT-2 has no lm_head bias
    return p


def load_hf(directory):
    """Load config.json + model.safetensors of an HF GPT-2 directory -> (cfg, params)."""
    with open(os.path.join(directory, "config.json")) as f:
        cfg = config_from_hf(json.load(f))
    state, _ = safetensors_io.load(os.path.join(directory, "model.safetensors"))
    return cfg, params_from_hf_state(state, cfg)


def hf_state_from_params(params, cfg):
    """Inverse of params_from_hf_state for unprocessed params: TL names -> GPT-2 state dict.

    Returns numpy float32 arrays with `transformer.` prefixed names, Conv1D layouts and no
    lm_head (the unembedding is tied to wte). Used to save trained models.
    """
    D, H, Dh = cfg["d_model"], cfg["n_heads"], cfg["d_head"]

    def np32(t):
        return t.detach().to(torch.float32).cpu().numpy().copy()

    s = {
        "transformer.wte.weight": np32(params["embed.W_E"]),
        "transformer.wpe.weight": np32(params["pos_embed.W_pos"]),
        "transformer.ln_f.weight": np32(params["ln_final.w"]),
        "transformer.ln_f.bias": np32(params["ln_final.b"]),
    }
    for l in range(cfg["n_layers"]):
        h = f"transformer.h.{l}."
        b = f"blocks.{l}."
        s[h + "ln_1.weight"] = np32(params[b + "ln1.w"])
        s[h + "ln_1.bias"] = np32(params[b + "ln1.b"])
        ws = [params[b + f"attn.W_{n}"].permute(1, 0, 2).reshape(D, H * Dh) for n in "QKV"]
        bs = [params[b + f"attn.b_{n}"].reshape(H * Dh) for n in "QKV"]
        s[h + "attn.c_attn.weight"] = np32(torch.cat(ws, dim=1))  # [D, 3D]
        s[h + "attn.c_attn.bias"] = np32(torch.cat(bs))  # [3D]
        s[h + "attn.c_proj.weight"] = np32(params[b + "attn.W_O"].reshape(H * Dh, D))
        s[h + "attn.c_proj.bias"] = np32(params[b + "attn.b_O"])
        s[h + "ln_2.weight"] = np32(params[b + "ln2.w"])
        s[h + "ln_2.bias"] = np32(params[b + "ln2.b"])
        s[h + "mlp.c_fc.weight"] = np32(params[b + "mlp.W_in"])
        s[h + "mlp.c_fc.bias"] = np32(params[b + "mlp.b_in"])
        s[h + "mlp.c_proj.weight"] = np32(params[b + "mlp.W_out"])
        s[h + "mlp.c_proj.bias"] = np32(params[b + "mlp.b_out"])
    return s


def hf_config(cfg, n_positions=None):
    """A GPT-2 config.json dict for cfg (both n_ctx and n_positions, as TL needs n_ctx)."""
    return {
        "activation_function": cfg["act_fn"],
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": 2,
        "initializer_range": 0.02,
        "layer_norm_epsilon": cfg["eps"],
        "model_type": "gpt2",
        "n_ctx": cfg["n_ctx"],
        "n_embd": cfg["d_model"],
        "n_head": cfg["n_heads"],
        "n_inner": None,
        "n_layer": cfg["n_layers"],
        "n_positions": n_positions if n_positions is not None else cfg["n_ctx"],
        "pad_token_id": 0,
        "resid_pdrop": 0.0,
        "scale_attn_by_inverse_layer_idx": cfg["scale_attn_by_inverse_layer_idx"],
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "vocab_size": cfg["d_vocab"],
    }


# ---------------------------------------------------------------------------------------------
# Weight processing (docs/TL-SEMANTICS.md §3): fold_ln -> center_writing_weights -> center_unembed
# -> fold_value_biases
# ---------------------------------------------------------------------------------------------


def _fold_ln(p, cfg):
    for l in range(cfg["n_layers"]):
        b = f"blocks.{l}."
        w1, b1 = p.pop(b + "ln1.w"), p.pop(b + "ln1.b")  # [D]
        for n in "QKV":
            W = p[b + f"attn.W_{n}"]  # [H, D, Dh]
            # Bias first, with the unscaled weights: b[h,d] += sum_m W[h,m,d] * ln.b[m].
            p[b + f"attn.b_{n}"] = p[b + f"attn.b_{n}"] + (W * b1[None, :, None]).sum(-2)
            W = W * w1[None, :, None]
            p[b + f"attn.W_{n}"] = W - W.mean(-2, keepdim=True)  # centre reading weights over m
        w2, b2 = p.pop(b + "ln2.w"), p.pop(b + "ln2.b")
        W_in = p[b + "mlp.W_in"]  # [D, M]
        p[b + "mlp.b_in"] = p[b + "mlp.b_in"] + (W_in * b2[:, None]).sum(-2)
        W_in = W_in * w2[:, None]
        p[b + "mlp.W_in"] = W_in - W_in.mean(-2, keepdim=True)
    wf, bf = p.pop("ln_final.w"), p.pop("ln_final.b")
    W_U = p["unembed.W_U"]  # [D, V]
    p["unembed.b_U"] = p["unembed.b_U"] + (W_U * bf[:, None]).sum(-2)
    W_U = W_U * wf[:, None]
    p["unembed.W_U"] = W_U - W_U.mean(-2, keepdim=True)


def _center_writing_weights(p, cfg):
    def centre_rows(t):
        return t - t.mean(-1, keepdim=True)

    p["embed.W_E"] = centre_rows(p["embed.W_E"])
    p["pos_embed.W_pos"] = centre_rows(p["pos_embed.W_pos"])
    for l in range(cfg["n_layers"]):
        b = f"blocks.{l}."
        p[b + "attn.W_O"] = centre_rows(p[b + "attn.W_O"])  # over the written d_model axis
        p[b + "attn.b_O"] = centre_rows(p[b + "attn.b_O"])
        p[b + "mlp.W_out"] = centre_rows(p[b + "mlp.W_out"])
        p[b + "mlp.b_out"] = centre_rows(p[b + "mlp.b_out"])


def _center_unembed(p):
    p["unembed.W_U"] = p["unembed.W_U"] - p["unembed.W_U"].mean(-1, keepdim=True)
    p["unembed.b_U"] = p["unembed.b_U"] - p["unembed.b_U"].mean()


def _fold_value_biases(p, cfg):
    for l in range(cfg["n_layers"]):
        b = f"blocks.{l}."
        b_V = p[b + "attn.b_V"]  # [H, Dh]
        W_O = p[b + "attn.W_O"]  # [H, Dh, D]
        p[b + "attn.b_O"] = p[b + "attn.b_O"] + (b_V[:, :, None] * W_O).sum((0, 1))
        p[b + "attn.b_V"] = torch.zeros_like(b_V)


def process(
    params,
    cfg,
    fold_ln=True,
    center_writing_weights=True,
    center_unembed=True,
    fold_value_biases=True,
):
    """Return (cfg, params) after TL's from_pretrained weight processing; inputs are untouched.

    With fold_ln the LayerNorm parameters disappear and cfg["normalization_type"] becomes "LNPre".
    """
    p = {
        k: v.detach().clone().to(torch.float32)
        for k, v in params.items()
        if not k.startswith(_PREPARED)
    }
    cfg = dict(cfg)
    if fold_ln:
        _fold_ln(p, cfg)
        cfg["normalization_type"] = "LNPre"
    if center_writing_weights:
        _center_writing_weights(p, cfg)
    if center_unembed:
        _center_unembed(p)
    if fold_value_biases:
        _fold_value_biases(p, cfg)
    return cfg, p


# ---------------------------------------------------------------------------------------------
# Forward pass with hook points (docs/TL-SEMANTICS.md §2)
# ---------------------------------------------------------------------------------------------

# Key prefix of the forward-ready copies that prepare() adds; process() drops them.
_PREPARED = "prepared."


def prepare(params, cfg):
    """Return params plus the Q/K/V weights laid out once as `run` multiplies them.

    run multiplies by W_{Q,K,V} as [D, H*Dh] matrices; from [H, D, Dh] that layout is a copy,
    which run otherwise makes on every call (85 MB copied per forward at the chess-GPT
    shape). The returned dict shares every tensor of params and adds
    `prepared.blocks.{l}.attn.W_{Q,K,V}` [D, H*Dh]; the values are the same copies, so results
    are bit for bit those of run(params, ...). It is a snapshot: modify params afterwards and
    prepare again. Not for training (the copies are detached).
    """
    H, Dh, D = cfg["n_heads"], cfg["d_head"], cfg["d_model"]
    out = {k: v for k, v in params.items() if not k.startswith(_PREPARED)}
    for l in range(cfg["n_layers"]):
        for n in "QKV":
            W = params[f"blocks.{l}.attn.W_{n}"].detach()  # [H, D, Dh]
            out[f"{_PREPARED}blocks.{l}.attn.W_{n}"] = W.permute(1, 0, 2).reshape(D, H * Dh)
    return out


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _act(cfg, x):
    name = cfg["act_fn"]
    if name == "gelu_new":
        return gelu_new(x)
    if name == "gelu":
        return torch.nn.functional.gelu(x)
    if name == "gelu_fast":
        return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))
    return torch.relu(x)


def hook_names(cfg, use_attn_result=True):
    """Every hook a cached run records, in firing order."""
    names = ["hook_embed", "hook_pos_embed"]
    for l in range(cfg["n_layers"]):
        b = f"blocks.{l}."
        names += [b + "hook_resid_pre", b + "ln1.hook_scale", b + "ln1.hook_normalized"]
        names += [b + "attn.hook_" + n for n in ("q", "k", "v", "attn_scores", "pattern", "z")]
        if use_attn_result:
            names.append(b + "attn.hook_result")
        names += [b + "hook_attn_out", b + "hook_resid_mid"]
        names += [b + "ln2.hook_scale", b + "ln2.hook_normalized"]
        names += [b + "mlp.hook_pre", b + "mlp.hook_post", b + "hook_mlp_out", b + "hook_resid_post"]
    names += ["ln_final.hook_scale", "ln_final.hook_normalized"]
    return names


def run(params, cfg, tokens, cache=True, use_attn_result=True, fwd_hooks=None, names=None):
    """Run the model on tokens (int tensor [B, T], T <= n_ctx).

    Returns (logits [B, T, V], cache) where cache maps each hook name to its value (batch dim
    kept), or None when cache=False. names (a collection of hook names, or a predicate on a
    name, as TL's names_filter) limits the cache to those hooks; None records every hook.
    fwd_hooks optionally maps hook names to functions f(tensor) -> tensor or None; a returned
    tensor replaces the activation (TL run_with_hooks). hook_result (per head, without b_O) is
    computed only when caching it with use_attn_result; the attention output is always the
    single product z @ W_O + b_O, as TL's default path. params may come from prepare().
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.dim() == 1:
        tokens = tokens[None]
    B, T = tokens.shape
    if T > cfg["n_ctx"]:
        raise ValueError(f"{T} positions exceed n_ctx {cfg['n_ctx']}")
    H, Dh, D = cfg["n_heads"], cfg["d_head"], cfg["d_model"]
    store = {} if cache else None
    if names is None:
        wanted = None
    elif callable(names):
        wanted = names
    else:
        wanted = frozenset(names).__contains__
    fwd_hooks = fwd_hooks or {}
    p = params
    has_ln_params = cfg["normalization_type"] == "LN"

    def recorded(name):
        return store is not None and (wanted is None or wanted(name))

    def hook(name, x):
        fn = fwd_hooks.get(name)
        if fn is not None:
            y = fn(x)
            if y is not None:
                x = y
        if recorded(name):
            store[name] = x.detach()
        return x

    def layer_norm(prefix, x, w_name, b_name):
        x = x - x.mean(-1, keepdim=True)
        scale = hook(prefix + "hook_scale", (x.pow(2).mean(-1, keepdim=True) + cfg["eps"]).sqrt())
        x = hook(prefix + "hook_normalized", x / scale)
        if has_ln_params:
            x = x * p[w_name] + p[b_name]
        return x

    causal = torch.ones(T, T, dtype=torch.bool).tril()  # allowed iff key <= query

    embed = hook("hook_embed", p["embed.W_E"][tokens])  # [B, T, D]
    pos = hook("hook_pos_embed", p["pos_embed.W_pos"][:T].unsqueeze(0).expand(B, T, D))
    resid = embed + pos  # [B, T, D]
    for l in range(cfg["n_layers"]):
        b = f"blocks.{l}."
        resid = hook(b + "hook_resid_pre", resid)
        x = layer_norm(b + "ln1.", resid, b + "ln1.w", b + "ln1.b")  # [B, T, D]

        def project(n):
            W = p.get(f"{_PREPARED}{b}attn.W_{n}")  # [D, H*Dh]
            if W is None:
                W = p[b + f"attn.W_{n}"].permute(1, 0, 2).reshape(D, H * Dh)
            y = x @ W + p[b + f"attn.b_{n}"].reshape(H * Dh)
            return hook(b + f"attn.hook_{n.lower()}", y.reshape(B, T, H, Dh))

        q, k, v = project("Q"), project("K"), project("V")  # [B, T, H, Dh]
        attn_scale = math.sqrt(Dh)
        if cfg["scale_attn_by_inverse_layer_idx"]:
            attn_scale *= l + 1
        scores = q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1) / attn_scale  # [B, H, T, T]
        scores = torch.where(causal, scores, torch.full_like(scores, IGNORE))
        scores = hook(b + "attn.hook_attn_scores", scores)
        pattern = torch.softmax(scores, dim=-1)
        pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern)
        pattern = hook(b + "attn.hook_pattern", pattern)  # [B, H, T, T]
        z = (pattern @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)  # [B, T, H, Dh]
        z = hook(b + "attn.hook_z", z)
        W_O = p[b + "attn.W_O"]  # [H, Dh, D]
        if use_attn_result and recorded(b + "attn.hook_result"):
            result = (z.unsqueeze(-1) * W_O).sum(-2)  # [B, T, H, D], no b_O
            hook(b + "attn.hook_result", result)
        attn_out = z.reshape(B, T, H * Dh) @ W_O.reshape(H * Dh, D) + p[b + "attn.b_O"]
        attn_out = hook(b + "hook_attn_out", attn_out)  # [B, T, D]
        resid = hook(b + "hook_resid_mid", resid + attn_out)
        x = layer_norm(b + "ln2.", resid, b + "ln2.w", b + "ln2.b")
        pre = hook(b + "mlp.hook_pre", x @ p[b + "mlp.W_in"] + p[b + "mlp.b_in"])  # [B, T, M]
        post = hook(b + "mlp.hook_post", _act(cfg, pre))
        mlp_out = hook(b + "hook_mlp_out", post @ p[b + "mlp.W_out"] + p[b + "mlp.b_out"])
        resid = hook(b + "hook_resid_post", resid + mlp_out)
    x = layer_norm("ln_final.", resid, "ln_final.w", "ln_final.b")
    logits = x @ p["unembed.W_U"] + p["unembed.b_U"]  # [B, T, V]
    return logits, store


# ---------------------------------------------------------------------------------------------
# WordLevel tokenizer.json (docs/TL-SEMANTICS.md §6.3, §6.4)
# ---------------------------------------------------------------------------------------------

_WHITESPACE_RE = re.compile(r"\w+|[^\w\s]+")
_SPLIT_BEHAVIOURS = ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous")


def _split_pieces(pieces, pattern, behaviour, invert):
    """HF `Split`: split each (text, start) piece around the pattern's matches."""
    out = []
    for text, start in pieces:
        segments = []  # (begin, end, is_match) covering text
        last = 0
        for m in pattern.finditer(text):
            if m.start() == m.end():
                continue
            if m.start() > last:
                segments.append((last, m.start(), False))
            segments.append((m.start(), m.end(), True))
            last = m.end()
        if last < len(text):
            segments.append((last, len(text), False))
        if invert:
            segments = [(s, e, not is_m) for s, e, is_m in segments]
        merged = []
        if behaviour == "Removed":
            merged = [(s, e) for s, e, is_m in segments if not is_m]
        elif behaviour == "Isolated":
            merged = [(s, e) for s, e, _ in segments]
        elif behaviour == "MergedWithPrevious":
            previous_match = False
            for s, e, is_m in segments:
                if is_m and not previous_match and merged:
                    merged[-1] = (merged[-1][0], e)
                else:
                    merged.append((s, e))
                previous_match = is_m
        elif behaviour == "MergedWithNext":
            previous_match = False
            for s, e, is_m in reversed(segments):
                if is_m and not previous_match and merged:
                    merged[-1] = (s, merged[-1][1])
                else:
                    merged.append((s, e))
                previous_match = is_m
            merged.reverse()
        else:  # Contiguous: runs of matches become one piece
            for s, e, is_m in segments:
                if is_m and merged and merged[-1][2]:
                    merged[-1] = (merged[-1][0], e, True)
                else:
                    merged.append((s, e, is_m))
            merged = [(s, e) for s, e, _ in merged]
        out += [(text[s:e], start + s) for s, e in merged if e > s]
    return out


class Encoding:
    """ids, token strings and (start, end) character offsets of one encoded text."""

    def __init__(self, ids, tokens, offsets):
        self.ids = ids
        self.tokens = tokens
        self.offsets = offsets


class Tokenizer:
    """A HuggingFace tokenizer.json with a WordLevel model, as the chess models use."""

    def __init__(self, spec):
        model = spec.get("model") or {}
        if model.get("type") != "WordLevel":
            raise ValueError(f"tokenizer.json: model type {model.get('type')} is not WordLevel")
        if spec.get("normalizer") is not None:
            raise ValueError("tokenizer.json: normalizers are not supported")
        self.vocab = dict(model["vocab"])
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.unk_token = model.get("unk_token")
        self.added = sorted(spec.get("added_tokens") or [], key=lambda a: -len(a["content"]))
        for a in self.added:
            self.id_to_token[a["id"]] = a["content"]
        self.added_re = (
            re.compile("|".join(re.escape(a["content"]) for a in self.added)) if self.added else None
        )
        self.added_ids = {a["content"]: a["id"] for a in self.added}
        self.pre_tokenizers = self._flatten_pre(spec.get("pre_tokenizer"))
        self.bos = None
        post = spec.get("post_processor")
        if post is not None:
            if post.get("type") != "TemplateProcessing":
                raise ValueError(f"tokenizer.json: post_processor {post.get('type')} unsupported")
            single = post["single"]
            specials = post.get("special_tokens", {})
            head = [item["SpecialToken"]["id"] for item in single if "SpecialToken" in item]
            if head:
                if "SpecialToken" not in single[0] or len(head) != 1:
                    raise ValueError("tokenizer.json: only a single leading special token is supported")
                name = head[0]
                ids = specials[name]["ids"] if name in specials else [self.vocab[name]]
                self.bos = (name, ids[0])

    @staticmethod
    def _flatten_pre(pre):
        if pre is None:
            return []
        if pre["type"] == "Sequence":
            out = []
            for sub in pre["pretokenizers"]:
                out += Tokenizer._flatten_pre(sub)
            return out
        if pre["type"] in ("Whitespace", "WhitespaceSplit"):
            return [pre]
        if pre["type"] == "Split":
            if pre["behavior"] not in _SPLIT_BEHAVIOURS:
                raise ValueError(f"tokenizer.json: Split behavior {pre['behavior']} unknown")
            return [pre]
        raise ValueError(f"tokenizer.json: pre_tokenizer {pre['type']} unsupported")

    @classmethod
    def from_file(cls, path):
        with open(path) as f:
            return cls(json.load(f))

    def _pre_tokenize(self, text, start):
        pieces = [(text, start)]
        for pre in self.pre_tokenizers:
            if pre["type"] == "Whitespace":
                pieces = [(m.group(), s + m.start()) for t, s in pieces for m in _WHITESPACE_RE.finditer(t)]
            elif pre["type"] == "WhitespaceSplit":
                pieces = [(m.group(), s + m.start()) for t, s in pieces for m in re.finditer(r"\S+", t)]
            else:
                pat = pre["pattern"]
                regex = re.compile(pat["Regex"]) if "Regex" in pat else re.compile(re.escape(pat["String"]))
                pieces = _split_pieces(pieces, regex, pre["behavior"], pre.get("invert", False))
        return pieces

    def _lookup(self, piece):
        if piece in self.vocab:
            return self.vocab[piece]
        if self.unk_token is None or self.unk_token not in self.vocab:
            raise KeyError(f"tokenizer: unknown piece {piece!r} and no usable unk_token")
        return self.vocab[self.unk_token]

    def encode(self, text, prepend_bos=True):
        """Encode one string as TL's to_tokens does for one sequence -> Encoding.

        The post-processor's BOS gets offsets (0, 0); prepend_bos=False drops it. Unknown pieces
        become the unk_token's id, as HF tokenizers do.
        """
        ids, toks, offs = [], [], []
        segments = []
        last = 0
        if self.added_re is not None:
            for m in self.added_re.finditer(text):
                if m.start() > last:
                    segments.append((text[last : m.start()], last, False))
                segments.append((m.group(), m.start(), True))
                last = m.end()
        if last < len(text):
            segments.append((text[last:], last, False))
        for seg, start, is_added in segments:
            if is_added:
                ids.append(self.added_ids[seg])
                toks.append(seg)
                offs.append((start, start + len(seg)))
                continue
            for piece, s in self._pre_tokenize(seg, start):
                ids.append(self._lookup(piece))
                toks.append(piece)
                offs.append((s, s + len(piece)))
        if self.bos is not None and prepend_bos:
            ids.insert(0, self.bos[1])
            toks.insert(0, self.bos[0])
            offs.insert(0, (0, 0))
        return Encoding(ids, toks, offs)

    def to_tokens(self, texts, prepend_bos=True, pad_id=0):
        """TL to_tokens for a list of strings: int64 tensor [B, T], right-padded with pad_id."""
        rows = [self.encode(t, prepend_bos).ids for t in texts]
        T = max(len(r) for r in rows)
        out = torch.full((len(rows), T), pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    def decode(self, ids):
        """Join token strings with single spaces (decoder: null)."""
        return " ".join(self.id_to_token[int(i)] for i in ids)
