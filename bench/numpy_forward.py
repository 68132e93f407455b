"""Reference GPT-2 forward in numpy (float32) for `npm run bench -- forward`: reads the same
HF checkpoint (config.json + model.safetensors), runs the unprocessed model on the given token
ids keeping a copy of every activation TL would cache, and prints {"median_ms": ...}."""
import json, struct, sys, time
import numpy as np

def load(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == '__metadata__': continue
        b, e = v['data_offsets']
        assert v['dtype'] == 'F32'
        out[k] = np.frombuffer(data[b:e], dtype=np.float32).reshape(v['shape'])
    return out

def ln(x, w, b, eps, cache, name):
    x = x - x.mean(-1, keepdims=True)
    s = np.sqrt((x * x).mean(-1, keepdims=True) + eps); cache[name + '.hook_scale'] = s
    y = x / s * w + b; cache[name + '.hook_normalized'] = y
    return y

def forward(W, cfg, tok):
    L, M, H = cfg['n_layer'], cfg['n_embd'], cfg['n_head']; D = M // H; eps = cfg['layer_norm_epsilon']
    B, P = tok.shape
    cache = {}
    e = W['wte.weight'][tok]; cache['hook_embed'] = e
    p = np.broadcast_to(W['wpe.weight'][:P], (B, P, M)).copy(); cache['hook_pos_embed'] = p
    x = e + p
    mask = np.triu(np.ones((P, P), bool), 1)
    for l in range(L):
        h = f'h.{l}.'; c = f'blocks.{l}.'
        cache[c + 'hook_resid_pre'] = x
        y = ln(x, W[h + 'ln_1.weight'], W[h + 'ln_1.bias'], eps, cache, c + 'ln1')
        qkv = y @ W[h + 'attn.c_attn.weight'] + W[h + 'attn.c_attn.bias']
        q, k, v = [qkv[..., i * M:(i + 1) * M].reshape(B, P, H, D) for i in range(3)]
        cache[c + 'attn.hook_q'], cache[c + 'attn.hook_k'], cache[c + 'attn.hook_v'] = q, k, v
        s = np.einsum('bqhd,bkhd->bhqk', q, k) / np.float32(np.sqrt(D)); s[..., mask] = -np.inf
        cache[c + 'attn.hook_attn_scores'] = s
        s = np.exp(s - s.max(-1, keepdims=True)); pat = s / s.sum(-1, keepdims=True); cache[c + 'attn.hook_pattern'] = pat
        z = np.einsum('bhqk,bkhd->bqhd', pat, v); cache[c + 'attn.hook_z'] = z
        a = z.reshape(B, P, M) @ W[h + 'attn.c_proj.weight'] + W[h + 'attn.c_proj.bias']; cache[c + 'hook_attn_out'] = a
        x = x + a; cache[c + 'hook_resid_mid'] = x
        y = ln(x, W[h + 'ln_2.weight'], W[h + 'ln_2.bias'], eps, cache, c + 'ln2')
        pre = y @ W[h + 'mlp.c_fc.weight'] + W[h + 'mlp.c_fc.bias']; cache[c + 'mlp.hook_pre'] = pre
        post = 0.5 * pre * (1 + np.tanh(np.float32(np.sqrt(2 / np.pi)) * (pre + np.float32(0.044715) * pre ** 3))); cache[c + 'mlp.hook_post'] = post
        m = post @ W[h + 'mlp.c_proj.weight'] + W[h + 'mlp.c_proj.bias']; cache[c + 'hook_mlp_out'] = m
        x = x + m; cache[c + 'hook_resid_post'] = x
    y = ln(x, W['ln_f.weight'], W['ln_f.bias'], eps, cache, 'ln_final')
    return y @ W['wte.weight'].T, cache

if __name__ == '__main__':
    d, toks, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = json.load(open(d + '/config.json'))
    W = load(d + '/model.safetensors')
    W['wte.weight'] = np.ascontiguousarray(W['wte.weight'])
    tok = np.array([[int(x) for x in r.split(',')] for r in toks.split(';')])
    forward(W, cfg, tok)
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); forward(W, cfg, tok); ts.append((time.perf_counter() - t) * 1000)
    print(json.dumps({'median_ms': sorted(ts)[len(ts) // 2]}))
