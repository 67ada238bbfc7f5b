#!/usr/bin/env python3
"""Peer benchmark: transformers + PEFT LoRA forward+backward on torch CPU, same model folder, batch
and sequence length as bench/model-train.mjs. Prints one JSON line per dtype:
  {"peer": "transformers+peft", "dtype": "float32", "tokens_per_s": ..., "step_s": [...], ...}

  python3 bench/peer_transformers.py --model DIR [--batch 1] [--seq 256] [--threads 2]
      [--steps 3] [--warmup 1] [--r 16] [--dtypes float32,bfloat16]

What is timed per step: model(input_ids, labels=input_ids).loss.backward() (LoRA on q, k, v, o,
gate, up, down; base weights frozen; the default eager/sdpa attention of transformers), then
zero_grad. Tokens per second = batch * seq / median step time.
"""
import argparse
import json
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    a = ap.parse_args()

    import torch
    import transformers
    import peft
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for name in a.dtypes.split(","):
        dtype = getattr(torch, name)
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype)
        cfg = LoraConfig(r=a.r, lora_alpha=2 * a.r, lora_dropout=0.0,
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model = get_peft_model(model, cfg)
        model.train()
        ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq))
        times = []
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            model.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            if i >= a.warmup:
                times.append(dt)
        med = statistics.median(times)
        print(json.dumps({
            "peer": "transformers+peft", "dtype": name, "batch": a.batch, "seq": a.seq, "threads": a.threads,
            "tokens_per_s": a.batch * a.seq / med, "step_s": times,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        }), flush=True)
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
