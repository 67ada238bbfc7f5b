#!/usr/bin/env python3
"""Peer of `qn_bench --filter model` for machines that have torch but not Node (the GPU check):
the same random Qwen2.5-shaped model, batch, sequence length and LoRA (r, alpha = 2r, all seven
projections), trained with the same step (zero grad, forward, backward, clip to 1.0, AdamW), timed
the same way (median of --steps after --warmup). Prints one JSON line.

  python3 bench/peer_torch_train.py [--device cuda] [--preset qwen2.5-3b] [--batch 1] [--seq 2048]
      [--steps 5] [--warmup 1] [--r 16] [--impl auto|hf|torch]

--impl hf: transformers + PEFT (Qwen2ForCausalLM from a config, random init; with bitsandbytes
  installed and a GPU, the base linears load as bnb NF4 with double quant, the QLoRA stack itself).
--impl torch: the Qwen2 decoder written here in plain torch (used when transformers / PEFT are not
  installed): bf16 base weights (no NF4 dequantization, so it does less work than ours), fp32 RMSNorm
  statistics and loss, RoPE (half split), scaled_dot_product_attention (flash / memory-efficient
  kernels on a GPU), SwiGLU, LoRA in fp32 as PEFT computes it, full [tokens x vocab] logits.
auto: hf when importable, else torch. The JSON names what ran ("impl", "nf4").

Model FLOPs per token: the count of ts/bench/e2e.ts (and cuda/bench/bench_model.cpp), so the
tokens/s of both sides convert to the same model-FLOP rate. MFU is reported against the GPU's
datasheet dense bf16 rate when known (same table as cuda/bench/bench_main.cpp).
"""
import argparse
import json
import math
import statistics
import sys
import time

PRESETS = {
    "qwen2.5-0.5b": dict(hidden=896, inter=4864, layers=24, heads=14, kv=2, vocab=151936, theta=1e6),
    "qwen2.5-3b": dict(hidden=2048, inter=11008, layers=36, heads=16, kv=2, vocab=151936, theta=1e6),
    "tiny": dict(hidden=64, inter=160, layers=2, heads=4, kv=2, vocab=256, theta=1e4),
}
DATASHEET_TFLOPS = [("H200 NVL", 835.5), ("H200", 989.4), ("H100 NVL", 835.5), ("H100 PCIe", 756.5), ("H100", 989.4),
                    ("A100", 312.0), ("L40S", 362.1), ("4090", 165.2)]


def flops_per_token(p, t, r):
    h, i, l, hd = p["hidden"], p["inter"], p["layers"], p["hidden"] // p["heads"]
    q, kv = p["heads"] * hd, p["kv"] * hd
    io = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
    params = sum(a * b for a, b in io)
    lora = sum(6 * r * (a + b) for a, b in io)
    fwd = 2 * l * params + 2 * l * q * (t + 1) + 2 * h * p["vocab"]
    return 2 * fwd + l * lora


def build_torch(p, r, device, torch):
    """Plain-torch Qwen2 with LoRA; returns (forward(ids) -> loss, trainable params)."""
    import torch.nn.functional as F

    h, hd, nh, nkv = p["hidden"], p["hidden"] // p["heads"], p["heads"], p["kv"]
    bf = torch.bfloat16
    g = torch.Generator(device=device).manual_seed(0)

    def w(o, i):
        return (torch.randn(o, i, device=device, generator=g, dtype=torch.float32) * 0.02).to(bf)

    shapes = [(nh * hd, h), (nkv * hd, h), (nkv * hd, h), (h, nh * hd), (p["inter"], h), (p["inter"], h), (h, p["inter"])]
    layers, trainable = [], []
    for _ in range(p["layers"]):
        mods = []
        for k, (o, i) in enumerate(shapes):
            a = torch.empty(r, i, device=device, dtype=torch.float32).uniform_(-1 / math.sqrt(i), 1 / math.sqrt(i), generator=g)
            b = torch.zeros(o, r, device=device, dtype=torch.float32)
            a.requires_grad_(True)
            b.requires_grad_(True)
            trainable += [a, b]
            bias = torch.zeros(o, device=device, dtype=bf) if k < 3 else None
            mods.append((w(o, i), bias, a, b))
        layers.append(dict(mods=mods, n1=torch.ones(h, device=device, dtype=bf), n2=torch.ones(h, device=device, dtype=bf)))
    embed = w(p["vocab"], h)
    final_norm = torch.ones(h, device=device, dtype=bf)
    scale = 2.0  # alpha / r with alpha = 2r

    def lin(x, m):
        wt, bias, a, b = m
        y = F.linear(x, wt, bias)
        return y + (F.linear(F.linear(x.float(), a), b) * scale).to(y.dtype)

    def rms(x, wn):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * wn

    def forward(ids):
        bsz, t = ids.shape
        pos = torch.arange(t, device=device, dtype=torch.float32)
        inv = 1.0 / (p["theta"] ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
        ang = torch.outer(pos, inv)
        cos, sin = torch.cat([ang.cos()] * 2, -1).to(bf), torch.cat([ang.sin()] * 2, -1).to(bf)

        def rope(x):  # x [B, H, T, D]
            x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
            return x * cos + torch.cat([-x2, x1], -1) * sin

        x = embed[ids]
        for L in layers:
            hn = rms(x, L["n1"])
            q = lin(hn, L["mods"][0]).view(bsz, t, nh, hd).transpose(1, 2)
            k = lin(hn, L["mods"][1]).view(bsz, t, nkv, hd).transpose(1, 2)
            v = lin(hn, L["mods"][2]).view(bsz, t, nkv, hd).transpose(1, 2)
            o = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True, enable_gqa=True)
            x = x + lin(o.transpose(1, 2).reshape(bsz, t, nh * hd), L["mods"][3])
            hn = rms(x, L["n2"])
            x = x + lin(F.silu(lin(hn, L["mods"][4])) * lin(hn, L["mods"][5]), L["mods"][6])
        logits = F.linear(rms(x, final_norm), embed).float()
        return F.cross_entropy(logits[:, :-1].reshape(-1, p["vocab"]), ids[:, 1:].reshape(-1))

    return forward, trainable


def build_hf(p, r, device, torch):
    import transformers
    import peft
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from peft import LoraConfig, get_peft_model

    cfg = Qwen2Config(hidden_size=p["hidden"], intermediate_size=p["inter"], num_hidden_layers=p["layers"],
                      num_attention_heads=p["heads"], num_key_value_heads=p["kv"], vocab_size=p["vocab"],
                      rope_theta=p["theta"], tie_word_embeddings=True, max_position_embeddings=32768)
    nf4 = False
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(dtype=torch.bfloat16)
    if device != "cpu":
        try:
            import bitsandbytes as bnb  # noqa: F401
            from transformers import BitsAndBytesConfig
            import tempfile
            d = tempfile.mkdtemp(prefix="peer-qwen-")
            model.save_pretrained(d)
            q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
            model = Qwen2ForCausalLM.from_pretrained(d, quantization_config=q, dtype=torch.bfloat16, device_map={"": 0})
            nf4 = True
        except Exception as e:  # no bitsandbytes (or no GPU build of it): bf16 base weights
            print(f"peer: bitsandbytes NF4 unavailable ({type(e).__name__}: {e}); bf16 base weights", file=sys.stderr)
            model = model.to(device)
    lcfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, lcfg)
    model.train()
    trainable = [q for q in model.parameters() if q.requires_grad]

    def forward(ids):
        return model(input_ids=ids, labels=ids).loss

    versions = {"transformers": transformers.__version__, "peft": peft.__version__}
    return forward, trainable, nf4, versions


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="qwen2.5-3b", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--impl", default="auto", choices=["auto", "hf", "torch"])
    a = ap.parse_args()

    import torch
    p = PRESETS[a.preset]
    impl = a.impl
    if impl == "auto":
        try:
            import transformers  # noqa: F401
            import peft  # noqa: F401
            impl = "hf"
        except ImportError:
            impl = "torch"
    versions = {"torch": torch.__version__}
    nf4 = False
    t0 = time.perf_counter()
    if impl == "hf":
        forward, params, nf4, v = build_hf(p, a.r, a.device, torch)
        versions.update(v)
    else:
        forward, params = build_torch(p, a.r, a.device, torch)
    load_s = time.perf_counter() - t0
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, **({"fused": True} if a.device != "cpu" else {}))
    ids = ((torch.arange(a.batch * a.seq, dtype=torch.int64) * 7919 + 13) % p["vocab"]).view(a.batch, a.seq).to(a.device)
    sync = (lambda: torch.cuda.synchronize()) if a.device != "cpu" else (lambda: None)
    if a.device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(a.warmup + a.steps):
        sync()
        s0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = forward(ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - s0)
    med = statistics.median(times)
    tokens = a.batch * a.seq
    fpt = flops_per_token(p, a.seq, a.r)
    rate = tokens / med * fpt
    peak = 0.0
    name = ""
    if a.device != "cpu":
        name = torch.cuda.get_device_name()
        peak = next((tf * 1e12 for key, tf in DATASHEET_TFLOPS if key in name), 0.0)
    out = {
        "peer": "transformers+peft" + ("+bitsandbytes-nf4" if nf4 else "") if impl == "hf" else "torch-qwen2-lora",
        "impl": impl, "nf4": nf4, "device": a.device, "gpu": name, "preset": a.preset, "batch": a.batch, "seq": a.seq,
        "r": a.r, "tokens_per_s": tokens / med, "best_tokens_per_s": tokens / min(times), "step_s": times,
        "first_loss": losses[0], "ln_vocab": math.log(p["vocab"]), "model_flops_per_token": fpt,
        "model_flops_per_s": rate, "mfu": rate / peak if peak else None, "load_s": load_s,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if a.device != "cpu" else None, "versions": versions,
    }
    print(json.dumps(out))
    ok = math.isfinite(losses[0]) and abs(losses[0] - math.log(p["vocab"])) < 0.5
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
