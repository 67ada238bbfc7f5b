#!/usr/bin/env python3
"""Peer benchmark: transformers + PEFT LoRA forward+backward on torch CPU, same model folder, batch
and sequence length as bench/model-train.mjs. Prints one JSON line per dtype:
  {"peer": "transformers+peft", "dtype": "float32", "tokens_per_s": ..., "step_s": [...], ...}

  python3 bench/peer_transformers.py --model DIR [--batch 1] [--seq 256] [--threads 2]
      [--steps 3] [--warmup 1] [--r 16] [--dtypes float32,bfloat16] [--rounds R]

What is timed per step: model(input_ids, labels=input_ids).loss.backward() (LoRA on q, k, v, o,
gate, up, down; base weights frozen; the default eager/sdpa attention of transformers), then
zero_grad. Tokens per second = batch * seq / median step time.

As a hardware reference for both sides, torch's own matmul rate at the model's largest linear
([batch * seq, hidden] x [hidden, intermediate], median of 5) is measured per dtype after loading
and reported as "matmul_flops" (in the ready line with --rounds, and in every summary line).

--rounds R (used by bench/model-train.mjs to interleave with our steps on a shared machine): load
every dtype's model and warm it up, print {"ready": true}, then R times: wait for a line on stdin,
run --steps steps per dtype and print one JSON line per dtype with "round"; the summary lines
(all rounds' steps) follow at the end.
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
    ap.add_argument("--rounds", type=int, default=0)
    a = ap.parse_args()

    import torch
    import transformers
    import peft
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}

    def load(name):
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=getattr(torch, name))
        cfg = LoraConfig(r=a.r, lora_alpha=2 * a.r, lora_dropout=0.0,
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model = get_peft_model(model, cfg)
        model.train()
        return model

    def matmul_flops(cfg, name):
        dt = getattr(torch, name)
        m, h, i = a.batch * a.seq, cfg.hidden_size, cfg.intermediate_size
        x, w = torch.randn(m, h, dtype=dt), torch.randn(i, h, dtype=dt)
        with torch.no_grad():
            for _ in range(2):
                x @ w.T
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                x @ w.T
                times.append(time.perf_counter() - t0)
        return 2.0 * m * h * i / statistics.median(times)

    def steps(model, ids, n):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            model.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
        return times

    def summary(name, times):
        med = statistics.median(times)
        print(json.dumps({
            "peer": "transformers+peft", "dtype": name, "batch": a.batch, "seq": a.seq, "threads": a.threads,
            "tokens_per_s": a.batch * a.seq / med, "step_s": times, "versions": versions,
            "matmul_flops": mm,
        }), flush=True)

    names = a.dtypes.split(",")
    mm = {}
    if a.rounds > 0:
        models = {n: load(n) for n in names}
        ids = torch.randint(0, models[names[0]].config.vocab_size, (a.batch, a.seq))
        for n in names:
            steps(models[n], ids, a.warmup)
            mm[n] = matmul_flops(models[n].config, n)
        print(json.dumps({"ready": True, "matmul_flops": mm}), flush=True)
        all_times = {n: [] for n in names}
        for r in range(a.rounds):
            if not sys.stdin.readline():
                break
            for n in names:
                t = steps(models[n], ids, a.steps)
                all_times[n] += t
                print(json.dumps({"round": r, "dtype": n, "step_s": t}), flush=True)
        for n in names:
            summary(n, all_times[n])
        return 0
    for name in names:
        model = load(name)
        ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq))
        steps(model, ids, a.warmup)
        mm[name] = matmul_flops(model.config, name)
        summary(name, steps(model, ids, a.steps))
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
