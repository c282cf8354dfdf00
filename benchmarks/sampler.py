"""Sampler throughput: grm_jax `sampling.generate` vs transformers `generate`, same run.

Cases (issue "Sampler"):
  b1     SmolLM2-135M f32, one 300-token prompt, 128 new tokens
  b8     8 distinct 300-token prompts, 128 new tokens
  n8     n=8 samples of one 1,500-token prompt (transformers: 8 copies of the prompt)

Both sides sample at temperature 0.5 with top-k/top-p off, stop tokens off, so every row
produces exactly 128 tokens. Tokens/s = generated tokens / wall time (prefill included).
Ours is timed after one warm-up call (compile time reported separately).

  python benchmarks/sampler.py [--model builtin:smollm2-135m-instruct] [--cases b1,b8,n8] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

# Ceilings measured on the project's 2-core CPU machine (docs/benchmarks.md): reading all f32 weights
# once per step bounds batch 1; batch >= 8 is compute-bound.
CPU_CEILING_TOKS = {"b1": 86.0, "b8": 430.0, "n8": 430.0}

CASES = {
  "b1": dict(prompts=1, prompt_len=300, n=1),
  "b8": dict(prompts=8, prompt_len=300, n=1),
  "n8": dict(prompts=1, prompt_len=1500, n=8),
}


def _prompts(rng, count, length, vocab):
  # Ordinary (non-special) token ids; content does not matter for speed.
  return [rng.integers(100, vocab - 100, size=length).tolist() for _ in range(count)]


def run_ours(model, prompts, n, new_tokens, repeats):
  from grm_jax import sampling

  kw = dict(n=n, max_new_tokens=new_tokens, temperature=0.5, top_p=1.0, top_k=0, stop_token_ids=[])
  t0 = time.perf_counter()
  out = sampling.generate(model, prompts, seed=0, **kw)
  first = time.perf_counter() - t0
  times = []
  for r in range(repeats):
    t0 = time.perf_counter()
    out = sampling.generate(model, prompts, seed=r + 1, **kw)
    times.append(time.perf_counter() - t0)
  tokens = out.num_tokens()
  assert tokens == len(prompts) * n * new_tokens, tokens
  best = min(times)
  return tokens / best, first - best


def run_hf(hf_model, prompts, n, new_tokens):
  import torch

  rows = [p for p in prompts for _ in range(n)]
  ids = torch.tensor(rows)
  t0 = time.perf_counter()
  with torch.no_grad():
    out = hf_model.generate(
      ids,
      attention_mask=torch.ones_like(ids),
      do_sample=True,
      temperature=0.5,
      top_k=0,
      top_p=1.0,
      max_new_tokens=new_tokens,
      min_new_tokens=new_tokens,
      pad_token_id=0,
    )
  dt = time.perf_counter() - t0
  return (out.shape[0] * (out.shape[1] - ids.shape[1])) / dt


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
  ap.add_argument("--cases", default="b1,b8,n8")
  ap.add_argument("--new-tokens", type=int, default=128)
  ap.add_argument("--repeats", type=int, default=2)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--no-hf", action="store_true", help="skip transformers (e.g. on an accelerator)")
  ap.add_argument("--out", default=None, help="append the Markdown table to this file")
  args = ap.parse_args()

  import jax

  from grm_jax import models

  model = models.load(args.model, dtype=args.dtype, tokenizer=False)
  hf_model = None
  if not args.no_hf:
    import torch
    from transformers import AutoModelForCausalLM

    from grm_jax.models import builtin

    torch.set_num_threads(os.cpu_count() or 1)
    if args.model.startswith("builtin:"):
      path = builtin.locate(args.model.removeprefix("builtin:"))
      hf_model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
      )
    else:
      hf_model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    hf_model.eval()

  rng = np.random.default_rng(0)
  device = jax.devices()[0]
  machine = f"{platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} on {device.device_kind}"
  lines = [
    f"Sampler benchmark: {args.model} ({args.dtype}), {args.new_tokens} new tokens, {machine}",
    "",
    "| case | ours tok/s | transformers tok/s | ratio | ours / CPU ceiling | compile s |",
    "|---|---:|---:|---:|---:|---:|",
  ]
  print("\n".join(lines), flush=True)
  for name in args.cases.split(","):
    c = CASES[name]
    prompts = _prompts(rng, c["prompts"], c["prompt_len"], model.config.vocab_size)
    ours, compile_s = run_ours(model, prompts, c["n"], args.new_tokens, args.repeats)
    hf = run_hf(hf_model, prompts, c["n"], args.new_tokens) if hf_model is not None else float("nan")
    ceiling = CPU_CEILING_TOKS[name] if device.platform == "cpu" else float("nan")
    row = (
      f"| {name}: {c['prompts']}×{c['prompt_len']} tok, n={c['n']} | {ours:.1f} | {hf:.1f} | "
      f"{ours / hf:.2f}× | {ours / ceiling:.0%} | {compile_s:.1f} |"
    )
    lines.append(row)
    print(row, flush=True)
  if args.out:
    with open(args.out, "a") as f:
      f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
  main()
