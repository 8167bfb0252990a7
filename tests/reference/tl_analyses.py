"""TransformerLens analyses (docs/TL-SEMANTICS.md §4-§5) on top of the PyTorch reference tl_reference.py.

This is the yardstick for chesslens' interp/ component: residual-stream decompositions
(decompose_resid, accumulated_resid, stack_head_results, get_full_resid_decomposition,
apply_ln_to_stack, logit_attrs), activation patching with TL's generic algorithm (one full forward
per index, a hook replacing the slice), legal-move statistics, neuron statistics and predictions.
It is written from the specification, not from TL's code, and keeps TL's batch axes: stacks are
[n, B, T, D], caches map TL hook names to [B, ...] tensors.
"""

import itertools

import torch

import tl_reference as tl


def _n_layers(cfg, layer):
    return cfg["n_layers"] if layer is None or layer == -1 else layer


def _scale(cache, cfg, layer, mlp_input):
    if layer == cfg["n_layers"]:
        return cache["ln_final.hook_scale"]
    return cache[f"blocks.{layer}.ln{2 if mlp_input else 1}.hook_scale"]


def apply_ln_to_stack(cache, cfg, stack, layer=None, mlp_input=False):
    """Centre each row over d_model and divide by the cached scale of (layer, mlp_input)."""
    layer = _n_layers(cfg, layer)
    stack = stack - stack.mean(-1, keepdim=True)
    return stack / _scale(cache, cfg, layer, mlp_input)


def decompose_resid(cache, cfg, layer=None, mlp_input=False, mode="all", apply_ln=False,
                    incl_embeds=True):
    layer = _n_layers(cfg, layer)
    rows, labels = [], []
    if incl_embeds:
        rows += [cache["hook_embed"], cache["hook_pos_embed"]]
        labels += ["embed", "pos_embed"]
    for l in range(layer):
        if mode != "mlp":
            rows.append(cache[f"blocks.{l}.hook_attn_out"])
            labels.append(f"{l}_attn_out")
        if mode != "attn":
            rows.append(cache[f"blocks.{l}.hook_mlp_out"])
            labels.append(f"{l}_mlp_out")
    if mlp_input and mode != "mlp":
        rows.append(cache[f"blocks.{layer}.hook_attn_out"])
        labels.append(f"{layer}_attn_out")
    stack = torch.stack(rows)
    if apply_ln:
        stack = apply_ln_to_stack(cache, cfg, stack, layer, mlp_input)
    return stack, labels


def accumulated_resid(cache, cfg, layer=None, incl_mid=False, mlp_input=False, apply_ln=False):
    """HEAD / v2.18+ semantics: at layer n_layers apply_ln recomputes LNPre per row."""
    layer = _n_layers(cfg, layer)
    L = cfg["n_layers"]
    rows, labels = [], []
    for l in range(layer + 1):
        if l == L:
            rows.append(cache[f"blocks.{L - 1}.hook_resid_post"])
            labels.append("final_post")
            continue
        rows.append(cache[f"blocks.{l}.hook_resid_pre"])
        labels.append(f"{l}_pre")
        if (incl_mid and l < layer) or (mlp_input and l == layer):
            rows.append(cache[f"blocks.{l}.hook_resid_mid"])
            labels.append(f"{l}_mid")
    stack = torch.stack(rows)
    if apply_ln:
        if layer == L:
            x = stack - stack.mean(-1, keepdim=True)
            stack = x / (x.pow(2).mean(-1, keepdim=True) + cfg["eps"]).sqrt()
        else:
            stack = apply_ln_to_stack(cache, cfg, stack, layer, mlp_input)
    return stack, labels


def head_results(cache, params, layer):
    """[B, T, H, D] = sum_d z[..., h, d] * W_O[h, d, :] (no b_O), TL's compute_head_results."""
    z = cache[f"blocks.{layer}.attn.hook_z"]  # [B, T, H, Dh]
    W_O = params[f"blocks.{layer}.attn.W_O"]  # [H, Dh, D]
    return (z.unsqueeze(-1) * W_O).sum(-2)


def stack_head_results(cache, params, cfg, layer=None, incl_remainder=False, apply_ln=False):
    layer = _n_layers(cfg, layer)
    rows, labels = [], []
    for l in range(layer):
        res = head_results(cache, params, l)
        for h in range(cfg["n_heads"]):
            rows.append(res[:, :, h])
            labels.append(f"L{l}H{h}")
    stack = torch.stack(rows)
    if incl_remainder:
        rem = cache[f"blocks.{layer - 1}.hook_resid_post"] - stack.sum(0)
        stack = torch.cat([stack, rem[None]])
        labels.append("remainder")
    if apply_ln:
        stack = apply_ln_to_stack(cache, cfg, stack, layer, False)
    return stack, labels


def get_full_resid_decomposition(cache, params, cfg, layer=None, mlp_input=False,
                                 expand_neurons=True, apply_ln=False):
    """Materialises every row ([n, B, T, D]); only for small models."""
    layer = _n_layers(cfg, layer)
    rows, labels = [], []
    for l in range(layer + (1 if mlp_input else 0)):
        res = head_results(cache, params, l)
        for h in range(cfg["n_heads"]):
            rows.append(res[:, :, h])
            labels.append(f"L{l}H{h}")
    for l in range(layer):
        if expand_neurons:
            post = cache[f"blocks.{l}.mlp.hook_post"]  # [B, T, M]
            W_out = params[f"blocks.{l}.mlp.W_out"]  # [M, D]
            for n in range(cfg["d_mlp"]):
                rows.append(post[:, :, n, None] * W_out[n])
                labels.append(f"L{l}N{n}")
        else:
            rows.append(cache[f"blocks.{l}.hook_mlp_out"])
            labels.append(f"{l}_mlp_out")
    rows += [cache["hook_embed"], cache["hook_pos_embed"]]
    labels += ["embed", "pos_embed"]
    bias = torch.zeros(cfg["d_model"])
    for l in range(layer):
        bias = bias + params[f"blocks.{l}.attn.b_O"]
        if expand_neurons:
            bias = bias + params[f"blocks.{l}.mlp.b_out"]
    if mlp_input:
        bias = bias + params[f"blocks.{layer}.attn.b_O"]
    rows.append(bias.expand_as(cache["hook_embed"]))
    labels.append("bias")
    stack = torch.stack(rows)
    if apply_ln:
        stack = apply_ln_to_stack(cache, cfg, stack, layer, mlp_input)
    return stack, labels


def logit_attrs(cache, params, cfg, stack, tokens, incorrect_tokens=None):
    """stack [n, B, T, D]; tokens [B, T] (one direction per position) -> [n, B, T]."""
    W_U = params["unembed.W_U"]  # [D, V]
    dirs = W_U[:, tokens].permute(1, 2, 0)  # [B, T, D]
    if incorrect_tokens is not None:
        dirs = dirs - W_U[:, incorrect_tokens].permute(1, 2, 0)
    return (apply_ln_to_stack(cache, cfg, stack, -1) * dirs).sum(-1)


# ---------------------------------------------------------------------------------------------
# Activation patching (docs/TL-SEMANTICS.md §5): one full forward per index
# ---------------------------------------------------------------------------------------------

def _setter(kind):
    """kind -> function(act, clean, index) writing the clean slice into act (in place)."""
    if kind == "pos":
        def f(act, clean, idx):
            act[:, idx["pos"], ...] = clean[:, idx["pos"], ...]
    elif kind == "pos_head":
        def f(act, clean, idx):
            act[:, idx["pos"], idx["head"]] = clean[:, idx["pos"], idx["head"]]
    elif kind == "head":
        def f(act, clean, idx):
            act[:, :, idx["head"]] = clean[:, :, idx["head"]]
    elif kind == "pattern_head":
        def f(act, clean, idx):
            act[:, idx["head"]] = clean[:, idx["head"]]
    elif kind == "pattern_head_pos":
        def f(act, clean, idx):
            act[:, idx["head"], idx["pos"]] = clean[:, idx["head"], idx["pos"]]
    elif kind == "pattern_head_dest_src":
        def f(act, clean, idx):
            h, d, s = idx["head"], idx["dest_pos"], idx["src_pos"]
            act[:, h, d, s] = clean[:, h, d, s]
    else:
        raise ValueError(f"unknown patch setter {kind!r}")
    return f


# name -> (hook suffix, axis names, setter)
PATCH_KINDS = {
    "resid_pre": ("hook_resid_pre", ("layer", "pos"), "pos"),
    "resid_mid": ("hook_resid_mid", ("layer", "pos"), "pos"),
    "attn_out": ("hook_attn_out", ("layer", "pos"), "pos"),
    "mlp_out": ("hook_mlp_out", ("layer", "pos"), "pos"),
    "attn_head_out_all_pos": ("attn.hook_z", ("layer", "head"), "head"),
    "attn_head_q_all_pos": ("attn.hook_q", ("layer", "head"), "head"),
    "attn_head_k_all_pos": ("attn.hook_k", ("layer", "head"), "head"),
    "attn_head_v_all_pos": ("attn.hook_v", ("layer", "head"), "head"),
    "attn_head_pattern_all_pos": ("attn.hook_pattern", ("layer", "head"), "pattern_head"),
    "attn_head_out_by_pos": ("attn.hook_z", ("layer", "pos", "head"), "pos_head"),
    "attn_head_q_by_pos": ("attn.hook_q", ("layer", "pos", "head"), "pos_head"),
    "attn_head_k_by_pos": ("attn.hook_k", ("layer", "pos", "head"), "pos_head"),
    "attn_head_v_by_pos": ("attn.hook_v", ("layer", "pos", "head"), "pos_head"),
    "attn_head_pattern_by_pos": ("attn.hook_pattern", ("layer", "head", "pos"), "pattern_head_pos"),
    "attn_head_pattern_dest_src_pos": ("attn.hook_pattern", ("layer", "head", "dest_pos", "src_pos"),
                                       "pattern_head_dest_src"),
}


def generic_activation_patch(params, cfg, corrupted_tokens, clean_cache, metric, hook_suffix,
                             axes, setter):
    """One run_with_hooks per index of the product of the axis ranges (last axis fastest)."""
    T = corrupted_tokens.shape[-1]
    ranges = {"layer": cfg["n_layers"], "pos": T, "dest_pos": T, "src_pos": T,
              "head": cfg["n_heads"]}
    shape = [ranges[a] for a in axes]
    out = torch.zeros(shape)
    set_fn = _setter(setter)
    for index in itertools.product(*[range(n) for n in shape]):
        idx = dict(zip(axes, index))
        name = f"blocks.{idx['layer']}.{hook_suffix}"
        clean = clean_cache[name]

        def hook(act, clean=clean, idx=idx):
            act = act.clone()
            set_fn(act, clean, idx)
            return act

        with torch.no_grad():
            logits, _ = tl.run(params, cfg, corrupted_tokens, cache=False, fwd_hooks={name: hook})
        out[index] = metric(logits)
    return out


def act_patch(params, cfg, corrupted_tokens, clean_cache, metric, kind):
    """TL's get_act_patch_<kind>, including block_every and the attn_head *_every kinds."""
    if kind == "block_every":
        return torch.stack([act_patch(params, cfg, corrupted_tokens, clean_cache, metric, k)
                            for k in ("resid_pre", "attn_out", "mlp_out")])
    if kind == "attn_head_all_pos_every":
        return torch.stack([act_patch(params, cfg, corrupted_tokens, clean_cache, metric,
                                      f"attn_head_{c}_all_pos")
                            for c in ("out", "q", "k", "v", "pattern")])
    if kind == "attn_head_by_pos_every":
        parts = [act_patch(params, cfg, corrupted_tokens, clean_cache, metric,
                           f"attn_head_{c}_by_pos") for c in ("out", "q", "k", "v")]
        pattern = act_patch(params, cfg, corrupted_tokens, clean_cache, metric,
                            "attn_head_pattern_by_pos")  # [L, H, P]
        parts.append(pattern.permute(0, 2, 1))  # -> [L, P, H]
        return torch.stack(parts)
    hook_suffix, axes, setter = PATCH_KINDS[kind]
    return generic_activation_patch(params, cfg, corrupted_tokens, clean_cache, metric,
                                    hook_suffix, axes, setter)


ALL_PATCH_KINDS = ["block_every", "resid_pre", "resid_mid", "attn_out", "mlp_out"] + [
    k for k in PATCH_KINDS if k.startswith("attn_head")
] + ["attn_head_all_pos_every", "attn_head_by_pos_every"]


def logit_metric(token):
    return lambda logits: logits[0, -1, token].item()


def logprob_metric(token):
    return lambda logits: torch.log_softmax(logits[0, -1].double(), -1)[token].item()


def legal_mass_metric(legal):
    legal = torch.as_tensor(legal, dtype=torch.bool)
    return lambda logits: torch.softmax(logits[0, -1].double(), -1)[legal].sum().item()


def normalised(metric, clean_value, corrupted_value):
    return lambda logits: (metric(logits) - corrupted_value) / (clean_value - corrupted_value)


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

def legal_stats(logit_stacks, masks):
    """Per game a component logit stack [n, T, V] and its legal mask [T, V] (bool).

    Returns dict stat -> (sum [n, Tmax], count [n, Tmax]) for min_legal, max_illegal, mean_legal,
    mean_illegal, min_minus_max, mean_minus_mean; positions without both a legal and an illegal
    token are skipped."""
    n = logit_stacks[0].shape[0]
    T = max(s.shape[1] for s in logit_stacks)
    names = ["min_legal", "max_illegal", "mean_legal", "mean_illegal", "min_minus_max",
             "mean_minus_mean"]
    sums = {k: torch.zeros(n, T, dtype=torch.float64) for k in names}
    count = torch.zeros(n, T, dtype=torch.float64)
    for st, mask in zip(logit_stacks, masks):
        st = st.double()
        for t in range(st.shape[1]):
            m = mask[t]
            if m.all() or not m.any():
                continue
            legal, illegal = st[:, t, m], st[:, t, ~m]
            v = {
                "min_legal": legal.min(-1).values,
                "max_illegal": illegal.max(-1).values,
                "mean_legal": legal.mean(-1),
                "mean_illegal": illegal.mean(-1),
            }
            v["min_minus_max"] = v["min_legal"] - v["max_illegal"]
            v["mean_minus_mean"] = v["mean_legal"] - v["mean_illegal"]
            for k in names:
                sums[k][:, t] += v[k]
            count[:, t] += 1
    return {k: sums[k] / count for k in names}, count


def neuron_means(posts, phases, slice_begin, slice_end):
    """posts: per game [L, T, M]; phases: per game list of phase names. -> dict group -> [L, M]."""
    groups = ["all", "slice", "white_from", "white_to", "black_from", "black_to"]
    sums = {g: 0 for g in groups}
    counts = {g: 0 for g in groups}
    for post, ph in zip(posts, phases):
        T = post.shape[1]
        sel = {"all": list(range(T)), "slice": list(range(T))[slice_begin:slice_end]}
        for g in groups[2:]:
            sel[g] = [t for t in range(T) if ph[t] == g]
        for g in groups:
            if sel[g]:
                sums[g] = sums[g] + post[:, sel[g]].double().sum(1)
                counts[g] += len(sel[g])
    return {g: (sums[g] / counts[g]).float() for g in groups}


def predictions(logits, legal, k):
    """logits [T, V], legal [T, V] bool -> logprobs, top ids, top logprobs, legal mass, top1 legal."""
    lp = torch.log_softmax(logits.double(), -1)
    top = lp.topk(k, -1)
    mass = lp.exp()[legal].new_zeros(0)
    mass = torch.stack([lp[t].exp()[legal[t]].sum() for t in range(lp.shape[0])])
    top1_legal = torch.stack([legal[t, top.indices[t, 0]] for t in range(lp.shape[0])])
    return lp.float(), top.indices, top.values.float(), mass.float(), top1_legal
