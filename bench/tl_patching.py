"""TransformerLens's ready-made patching sweeps, reproduced in plain torch, as the baseline of `bench patching`.

TransformerLens itself cannot be installed here (no PyPI), so this is a GPT-2 written with torch ops
the way TL's HookedTransformer computes it (hook points as identity modules, forward hooks added per
run and removed after it, as run_with_hooks does), and TL's loop from transformer_lens/patching.py
(generic_activation_patch): one full forward per patch, with every position's logits, through the
patch setter hooked on get_act_name(activation_name, layer); metric(logits).item() stored per index.
The weights are the benchmark's checkpoint, unprocessed (LayerNorm kept: processing changes the
compute by one multiply-add per LN element).

usage: tl_patching.py DIR THREADS CLEAN_TOKENS CORRUPTED_TOKENS CORRECT INCORRECT
prints one JSON line: seconds per sweep and the grids (for the agreement check).
"""

import json
import math
import struct
import sys
import time

import numpy as np
import torch
from torch import nn


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", f"{k}: only F32 checkpoints ({v['dtype']})"
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data, dtype=np.float32, count=(b - a) // 4, offset=a).reshape(v["shape"]).copy())
    return out


class HookPoint(nn.Module):
    """TL's HookPoint: an identity whose forward hooks may replace the activation."""

    def forward(self, x):
        return x


def gelu_new(x):
    # TL's utils.gelu_new
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class LayerNorm(nn.Module):
    def __init__(self, w, b, eps):
        super().__init__()
        self.w, self.b, self.eps = w, b, eps
        self.hook_scale, self.hook_normalized = HookPoint(), HookPoint()

    def forward(self, x):
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale * self.w + self.b)


class Block(nn.Module):
    def __init__(self, sd, i, H, eps):
        super().__init__()
        p = f"h.{i}."
        M = sd[p + "attn.c_attn.weight"].shape[0]
        D = M // H
        self.H, self.D = H, D
        w, b = sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"]
        # TL's layouts: W_Q [H, M, D], W_O [H, D, M]
        self.W_Q, self.W_K, self.W_V = (w[:, j * M : (j + 1) * M].reshape(M, H, D).permute(1, 0, 2).contiguous() for j in range(3))
        self.b_Q, self.b_K, self.b_V = (b[j * M : (j + 1) * M].reshape(H, D) for j in range(3))
        self.W_O = sd[p + "attn.c_proj.weight"].reshape(H, D, M)
        self.b_O = sd[p + "attn.c_proj.bias"]
        self.W_in, self.b_in = sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"]
        self.W_out, self.b_out = sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"]
        self.ln1 = LayerNorm(sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], eps)
        self.ln2 = LayerNorm(sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], eps)
        for n in ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "q", "k", "v", "attn_scores", "pattern", "z", "pre", "post"]:
            setattr(self, "hook_" + n, HookPoint())

    def forward(self, resid):
        resid = self.hook_resid_pre(resid)
        x = self.ln1(resid)
        # TL's AbstractAttention: q, k, v [B, P, H, D]; scores [B, H, Pq, Pk]
        q = self.hook_q(torch.einsum("bpm,hmd->bphd", x, self.W_Q) + self.b_Q)
        k = self.hook_k(torch.einsum("bpm,hmd->bphd", x, self.W_K) + self.b_K)
        v = self.hook_v(torch.einsum("bpm,hmd->bphd", x, self.W_V) + self.b_V)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.D)
        P = scores.shape[-1]
        mask = torch.ones(P, P, dtype=torch.bool).tril()
        scores = self.hook_attn_scores(torch.where(mask, scores, torch.tensor(-math.inf)))
        pattern = self.hook_pattern(torch.softmax(scores, dim=-1))
        z = self.hook_z(torch.einsum("bkhd,bhqk->bqhd", v, pattern))
        attn_out = self.hook_attn_out(torch.einsum("bphd,hdm->bpm", z, self.W_O) + self.b_O)
        resid = self.hook_resid_mid(resid + attn_out)
        pre = self.hook_pre(self.ln2(resid) @ self.W_in + self.b_in)
        post = self.hook_post(gelu_new(pre))
        mlp_out = self.hook_mlp_out(post @ self.W_out + self.b_out)
        return self.hook_resid_post(resid + mlp_out)


class GPT2(nn.Module):
    def __init__(self, sd, H, eps=1e-5):
        super().__init__()
        self.W_E, self.W_pos = sd["wte.weight"], sd["wpe.weight"]
        self.W_U = self.W_E.t().contiguous()  # tied, as HF GPT-2 (b_U = 0)
        self.b_U = torch.zeros(self.W_U.shape[1])
        L = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("h."))
        self.blocks = nn.ModuleList(Block(sd, i, H, eps) for i in range(L))
        self.ln_final = LayerNorm(sd["ln_f.weight"], sd["ln_f.bias"], eps)
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.names = {n: m for n, m in self.named_modules() if isinstance(m, HookPoint)}

    def forward(self, tokens):
        P = tokens.shape[1]
        resid = self.hook_embed(self.W_E[tokens]) + self.hook_pos_embed(self.W_pos[:P].unsqueeze(0))
        for b in self.blocks:
            resid = b(resid)
        return self.ln_final(resid) @ self.W_U + self.b_U

    def run_with_hooks(self, tokens, fwd_hooks):
        # TL's run_with_hooks: add the hooks, run, remove them
        handles = [self.names[n].register_forward_hook(lambda mod, inp, out, f=f: f(out, hook=mod)) for n, f in fwd_hooks]
        try:
            return self(tokens)
        finally:
            for h in handles:
                h.remove()

    def run_with_cache(self, tokens):
        cache = {}
        hooks = [(n, (lambda n: lambda a, hook: cache.__setitem__(n, a.detach().clone()))(n)) for n in self.names]
        logits = self.run_with_hooks(tokens, hooks)
        return logits, cache


def hook_name(act, layer):
    # TL's utils.get_act_name(act, layer), with the attention hooks on the block (TL: blocks.L.attn.hook_z)
    return f"blocks.{layer}.hook_{act}"


def generic_activation_patch(model, corrupted, clean_cache, metric, setter, act, ranges):
    """TL's patching.generic_activation_patch: one full forward per index (itertools.product order)."""
    import itertools

    out = torch.zeros(ranges)
    for index in itertools.product(*[range(r) for r in ranges]):
        name = hook_name(act, index[0])
        clean = clean_cache[name]
        logits = model.run_with_hooks(corrupted, [(name, lambda a, hook, index=index, clean=clean: setter(a, index, clean))])
        out[index] = metric(logits).item()
    return out


def layer_pos_patch_setter(a, index, clean):
    _, pos = index
    a[:, pos, ...] = clean[:, pos, ...]
    return a


def layer_head_vector_patch_setter(a, index, clean):
    _, head = index
    a[:, :, head] = clean[:, :, head]
    return a


def blas_library():
    """The BLAS this torch calls: Debian's python3-torch links the system libblas.so.3, which is the
    reference BLAS (~2 GFLOP/s, ~30x slower than OpenBLAS) unless libopenblas0-pthread provides it."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.split()[-1]}
        return ", ".join(sorted(libs)) or "unknown"
    except OSError:
        return "unknown"


def main():
    d, threads, clean_s, corrupted_s, correct, incorrect = sys.argv[1:7]
    torch.set_num_threads(int(threads))
    torch.set_grad_enabled(False)
    cfg = json.load(open(f"{d}/config.json"))
    model = GPT2(load_safetensors(f"{d}/model.safetensors"), cfg["n_head"], cfg.get("layer_norm_epsilon", 1e-5))
    L, H = len(model.blocks), cfg["n_head"]
    clean = torch.tensor([[int(x) for x in clean_s.split(",")]])
    corrupted = torch.tensor([[int(x) for x in corrupted_s.split(",")]])
    c, w = int(correct), int(incorrect)

    def metric(logits):  # TL's logits_to_ave_logit_diff: last position, correct - incorrect, mean
        last = logits[:, -1, :]
        return (last[:, c] - last[:, w]).mean()

    _, cache = model.run_with_cache(clean)
    res = {"torch_version": torch.__version__, "threads": torch.get_num_threads(), "blas": blas_library()}
    sweeps = [
        ("get_act_patch_resid_pre", layer_pos_patch_setter, "resid_pre", [L, clean.shape[1]]),
        ("get_act_patch_attn_head_out_all_pos", layer_head_vector_patch_setter, "z", [L, H]),
    ]
    for name, setter, act, ranges in sweeps:
        t0 = time.perf_counter()
        grid = generic_activation_patch(model, corrupted, cache, metric, setter, act, ranges)
        res[name] = {"seconds": time.perf_counter() - t0, "grid": grid.flatten().tolist(), "shape": ranges}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
