"""Continuous batching vs the static sampler on the same long-tailed judging work.

Why: GRM judgements have long-tailed lengths. The static sampler (`grm_jax.sampling.static`, one while_loop per
call) runs every call until its longest row stops, so most of its row slots idle through the tail; the engine
(`grm_jax.sampling.engine`) refills a slot as soon as its sample ends. This measures what that is worth, on one
machine in one run, with both samplers given exactly the same requests, keys and row slots.

Work: --requests GRM prompts (the first pairs of the built-in synthetic test split, n = 2, rendered with the run's
recipe by `judging.plan`, one shuffle each: the prompts `/v1/rewards` sends the sampler), each asking for one sample
at the recipe's temperature with seed i. Output lengths are a fixed long-tailed mix, set per request with stopping
off so both samplers do exactly the same work whatever the model says: request i asks for LENGTHS[i % 16] tokens -
eleven of 20-60, three of 61-160 and two of --max-new-tokens (256): a mean of ~72 and a tail at the cap, the shape
of the default run's judgements (most stop within ~60 tokens, a few ramble to the cap).

Static: the requests in arrival order, --slots at a time (`generate_static(..., max_prompts_per_call=slots)`), each
call run to its longest request's length (the least a static call can do) and each sample cut to its own length.
Engine: one `Engine` with --slots row slots (one row per prompt), all requests submitted, run to completion.
Useful tokens/s = the tokens the requests asked for / wall seconds (prefill included on both sides). Occupancy = the
fraction of row slots holding a live sample, per decode step. Each side runs the whole set once untimed first
(compiles), then timed. Both draw with the same key streams, so sampled outputs agree unless a float-level difference
(the engine prefills one prompt where the static sampler prefills eight: other matmul blockings) moves a uniform
across a token boundary, after which that sample differs: `sampled_equal_requests` counts the identical ones.
`greedy_equal` compares a greedy pass of both samplers over the same requests.

  python benchmarks/continuous.py [--workdir W --stage grpo | --model SPEC] [--requests 64] [--slots 8]

The last stdout line is one JSON object (static_tokens_per_s, continuous_tokens_per_s, ratio, greedy_equal, ...).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

import numpy as np

SHORT = (20, 24, 28, 31, 35, 38, 42, 46, 50, 55, 60)
MEDIUM = (75, 110, 160)


def lengths_mix(count: int, cap: int) -> list[int]:
  """Request i's length: a fixed 16-cycle of eleven short, three medium and two at the cap, interleaved."""
  cycle = [SHORT[0], MEDIUM[0], SHORT[1], SHORT[2], cap, SHORT[3], SHORT[4], MEDIUM[1], SHORT[5], SHORT[6],
           SHORT[7], cap, SHORT[8], MEDIUM[2], SHORT[9], SHORT[10]]
  return [min(cycle[i % len(cycle)], cap) for i in range(count)]


def load(args):
  from grm_jax import models, runs
  from grm_jax.reward.recipe import Recipe, chat_frame

  if args.workdir and os.path.exists(os.path.join(args.workdir, args.stage, "final")):
    model, _ = runs.policy_model(args.workdir, args.stage)
    recipe = runs.recipe(args.workdir, args.stage, model.tokenizer)
    return model, recipe, f"{args.workdir}:{args.stage}"
  if args.workdir:
    print(f"no {args.workdir}/{args.stage}/final: using {args.model}", flush=True)
  model = models.load(args.model, dtype="float32")
  return model, Recipe(chat=tuple(chat_frame(model.tokenizer))), args.model


def prompts_of(model, recipe, count: int) -> list[list[int]]:
  from grm_jax.data.synthetic import synthetic
  from grm_jax.reward.judging import plan

  items = synthetic("test", size=count, seed=0, n=2)
  if len(items) < count:
    raise SystemExit(f"--requests={count}: the synthetic test split gave only {len(items)} pairs")
  out = []
  for i, ex in enumerate(items):
    turns = [dict(t) for t in ex.context]
    query = turns[0]["content"] if len(turns) == 1 else turns
    chunk = plan(recipe, query, list(ex.responses), k=1, mode="group", seed=i)[0]
    out.append(model.encode_chat([{"role": "user", "content": chunk.completions[0].content}]))
  return out


def run_static(model, prompts, lengths, slots, temperature):
  from grm_jax.sampling.static import generate_static

  tokens, logprobs, steps = [], [], 0
  for c in range(0, len(prompts), slots):
    batch, want = prompts[c : c + slots], lengths[c : c + slots]
    out = generate_static(model, batch, n=1, max_new_tokens=max(want), temperature=temperature, top_p=1.0,
                          seed=list(range(c, c + len(batch))), stop_token_ids=[], max_prompts_per_call=slots)
    tokens += [t[0][:k] for t, k in zip(out.tokens, want, strict=True)]
    logprobs += [lp[0][:k] for lp, k in zip(out.logprobs, want, strict=True)]
    steps += max(want) - 1  # decode iterations (the first token comes from the prefill)
  return tokens, logprobs, sum(k - 1 for k in lengths) / (steps * slots)


def run_engine(model, prompts, lengths, slots, temperature):
  from grm_jax.buckets import length_bucket
  from grm_jax.sampling import engine as eng

  layout = eng.Layout(rows=slots, per_prefix=1, prefix_len=length_bucket(max(len(p) for p in prompts)),
                      new_tokens=max(lengths))
  engine = eng.Engine(model, layout)
  reqs = [engine.submit(eng.Request(p, 1, k, temperature=temperature, seed=i))
          for i, (p, k) in enumerate(zip(prompts, lengths, strict=True))]
  engine.run()
  return [r.tokens[0] for r in reqs], [r.logprobs[0] for r in reqs], engine.stats.occupancy


def timed(fn, *args):
  fn(*args)  # compiles every shape this work produces
  t0 = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - t0


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", default="/tmp/spct", help="a trained run (its --stage judges); else --model")
  ap.add_argument("--stage", default="grpo")
  ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
  ap.add_argument("--requests", type=int, default=64)
  ap.add_argument("--slots", type=int, default=8)
  ap.add_argument("--max-new-tokens", type=int, default=256)
  args = ap.parse_args()

  import jax

  model, recipe, spec = load(args)
  prompts = prompts_of(model, recipe, args.requests)
  lengths = lengths_mix(args.requests, args.max_new_tokens)
  useful = sum(lengths)
  device = jax.devices()[0]
  machine = f"{platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} on {device.device_kind}"
  print(f"Continuous vs static sampler: {spec}, {args.requests} requests (prompts {min(map(len, prompts))}-"
        f"{max(map(len, prompts))} tokens), lengths {min(lengths)}-{max(lengths)} (mean {useful / len(lengths):.1f}),"
        f" {args.slots} row slots, T={recipe.temperature:g}, {machine}", flush=True)

  t = recipe.temperature
  (s_tok, s_lp, s_occ), s_sec = timed(run_static, model, prompts, lengths, args.slots, t)
  print(f"  static:     {s_sec:7.1f} s  {useful / s_sec:6.1f} useful tok/s  occupancy {s_occ:.2f}", flush=True)
  (c_tok, c_lp, c_occ), c_sec = timed(run_engine, model, prompts, lengths, args.slots, t)
  print(f"  continuous: {c_sec:7.1f} s  {useful / c_sec:6.1f} useful tok/s  occupancy {c_occ:.2f}", flush=True)
  same = [a == b for a, b in zip(s_tok, c_tok, strict=True)]
  sampled_equal = all(same)
  # Log-probs compared where the tokens agree (a sample that drew another token differs from there on).
  lp_diff = max(float(np.max(np.abs(np.subtract(a, b)))) for a, b, e in zip(s_lp, c_lp, same, strict=True) if a and e)
  g_static = run_static(model, prompts, lengths, args.slots, 0.0)[0]
  g_engine = run_engine(model, prompts, lengths, args.slots, 0.0)[0]
  greedy_equal = g_static == g_engine
  ratio = s_sec / c_sec
  print(f"  ratio {ratio:.2f}x; sampled outputs equal for {sum(same)}/{len(same)} requests (max |log-prob diff| "
        f"{lp_diff:.1e} where equal); greedy outputs equal: {greedy_equal}", flush=True)
  print(json.dumps({
    "date": datetime.date.today().isoformat(), "machine": machine, "model": spec, "requests": args.requests,
    "slots": args.slots, "max_new_tokens": args.max_new_tokens, "useful_tokens": useful,
    "static_seconds": round(s_sec, 2), "continuous_seconds": round(c_sec, 2),
    "static_tokens_per_s": round(useful / s_sec, 2), "continuous_tokens_per_s": round(useful / c_sec, 2),
    "ratio": round(ratio, 3), "static_occupancy": round(s_occ, 3), "continuous_occupancy": round(c_occ, 3),
    "sampled_equal": sampled_equal, "sampled_equal_requests": sum(same), "max_logprob_diff": lp_diff,
    "greedy_equal": greedy_equal,
  }))


if __name__ == "__main__":
  main()
