"""Reward-server throughput: `python -m grm_jax.serve`'s POST /v1/rewards under concurrent load vs a transformers
`generate` loop judging the same requests one at a time.

Why: the server's claim is that decoding concurrent requests together on the continuous engine (grm_jax/serve/engine.py,
grm_jax/sampling/engine.py: a request takes a row slot as soon as one frees) makes a
GRM cheap enough to serve as an RL reward. This measures that claim end to end (HTTP, judging, parsing, voting) on the
same GRM, recipe and requests as the obvious alternative, so a regression in batching or in the sampler shows here.

Requests: the first --requests pairs of the built-in synthetic test split (`grm_jax.data.synthetic`, the default
run's held-out data, n=2), each `{"prompt", "responses": [2], "k", "mode": "group", "seed": i}`: fixed and seeded, so
both sides sample the same GRM prompts (`judging.plan`) and every run sends the same set.

Ours: the server built as `python -m grm_jax.serve` builds it (`build_server`: `runs.policy_model` + `runs.recipe` for
--workdir, `models.load` + the chat-framed paper recipe for --model), without the meta RM (the peer has none; the
sampler is the cost under test), in this process under uvicorn on a free localhost port. Per concurrency c it is
first sent the whole set once at c, untimed, so every sampler shape that level produces is compiled (--warmup
highest: only once, at the highest c), then the whole set again with at most c requests in flight (asyncio +
httpx), again (up to --tries) while a timed pass still compiles a new shape. Judged tokens/s = the server's
`grm_generated_tokens_total` delta / wall time; "compiles" counts sampler programs first built during the reported
pass (0 = its timings hold no compile time).

Peer: the same weights exported in memory (`models.save_pretrained`, float32) and loaded with transformers
`AutoModelForCausalLM` on the CPU (torch threads = all cores), the same token ids (`model.encode_chat`) per
completion, `generate(num_return_sequences=n)` with the recipe's temperature / top-p (top-k off, as ours), the same
decode and `judging.combine`. Concurrency 1 by construction. Its tokens exclude the stop token, as ours.

  python benchmarks/serve.py [--workdir W --stage grpo | --model SPEC] [--k 4] [--max-new-tokens 128] \
    [--requests 32] [--concurrency 1,8,32] [--out FILE.md]

The last stdout line is one JSON object (date, device, model, settings, per-row metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import tempfile
import time

import numpy as np


def build(args):
  """The served GRM exactly as `python -m grm_jax.serve` builds it from the same flags (no meta RM, a queue that
  never refuses, a timeout no CPU run reaches), so the benchmark cannot drift from the real server's setup."""
  from grm_jax.serve.__main__ import _parser, build_server

  argv = ["--workdir", args.workdir, "--stage", args.stage] if args.workdir else ["--model", args.model]
  argv += ["--meta", "none", "--max-queue", str(max(4096, 2 * args.requests)), "--request-timeout", "86400",
           "--slots", str(args.slots), "--k", str(args.k), "--max-new-tokens", str(args.max_new_tokens)]
  if args.dtype:
    argv += ["--dtype", args.dtype]
  return build_server(_parser().parse_args(argv))


def request_set(count: int, k: int) -> list[dict]:
  """The fixed requests (module docstring): synthetic test pairs, seed i for request i."""
  from grm_jax.data.synthetic import synthetic

  items = synthetic("test", size=count, seed=0, n=2)
  if len(items) < count:
    raise ValueError(f"--requests={count}: the synthetic test split gave only {len(items)} pairs")
  out = []
  for i, ex in enumerate(items):
    turns = [dict(t) for t in ex.context]
    prompt = turns[0]["content"] if len(turns) == 1 else turns
    out.append({"prompt": prompt, "responses": list(ex.responses), "k": k, "mode": "group", "seed": i})
  return out


# ----------------------------------------------------------------------------------------------- ours


def _scrape(url: str) -> dict[str, float]:
  """The server's Prometheus samples by name (only the unlabelled ones this benchmark reads)."""
  import httpx
  from prometheus_client.parser import text_string_to_metric_families

  text = httpx.get(f"{url}/metrics", timeout=30).text
  return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if not s.labels}


def _programs() -> int:
  """Engine programs built so far in this process: each new layout, prompt bucket or prefix view is one compile."""
  from grm_jax.sampling import engine

  return engine.step_program.cache_info().misses + engine.insert_program.cache_info().misses


async def _load(url: str, requests: list[dict], concurrency: int) -> tuple[float, list[float], list[dict]]:
  """All `requests`, at most `concurrency` in flight: (wall seconds, per-request latencies, response bodies)."""
  import httpx

  gate = asyncio.Semaphore(concurrency)
  limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
  async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as client:

    async def one(body):
      async with gate:
        t0 = time.perf_counter()
        r = await client.post("/v1/rewards", json=body)
        dt = time.perf_counter() - t0
      if r.status_code != 200:
        raise RuntimeError(f"/v1/rewards answered {r.status_code}: {r.text[:300]}")
      return dt, r.json()

    t0 = time.perf_counter()
    done = await asyncio.gather(*(one(b) for b in requests))
    wall = time.perf_counter() - t0
  return wall, [d for d, _ in done], [b for _, b in done]


def run_ours(url: str, requests: list[dict], concurrency: int) -> dict:
  before, programs = _scrape(url), _programs()
  wall, latencies, bodies = asyncio.run(_load(url, requests, concurrency))
  after = _scrape(url)
  tokens = after["grm_generated_tokens_total"] - before["grm_generated_tokens_total"]
  calls = after["grm_batch_rows_count"] - before["grm_batch_rows_count"]
  rows_per_step = (after["grm_batch_rows_sum"] - before["grm_batch_rows_sum"]) / max(calls, 1)
  return _row(wall, latencies, tokens, bodies, requests, rows_per_step, _programs() - programs)


def _row(wall, latencies, tokens, bodies, requests, rows_per_step=None, compiles=None) -> dict:
  parsed = sum(b["parsed"][0] for b in bodies) / sum(r["k"] for r in requests)
  return {"rps": len(requests) / wall, "tokens_per_s": tokens / wall, "p50_s": float(np.percentile(latencies, 50)),
          "p99_s": float(np.percentile(latencies, 99)), "parsed": parsed, "rows_per_step": rows_per_step,
          "compiles": compiles, "tokens": int(tokens), "wall_s": wall}


# ----------------------------------------------------------------------------------------------- the peer


def load_hf(model):
  """`model` as a transformers model on the CPU in float32, through the repo's own HF export."""
  import torch
  from transformers import AutoModelForCausalLM

  from grm_jax.models import save_pretrained

  torch.set_num_threads(os.cpu_count() or 1)
  with tempfile.TemporaryDirectory() as tmp:
    save_pretrained(model, tmp, dtype="float32")
    hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
  return hf.eval()


def hf_judge(hf, model, recipe, req: dict) -> tuple[dict, int]:
  """One request the way a transformers user would judge it: `judging.plan`, one `generate` per completion (its n
  samples as num_return_sequences), decode as the server does, `judging.combine`. (result dict, generated tokens)."""
  import torch

  from grm_jax.reward import judging

  chunks = judging.plan(recipe, req["prompt"], req["responses"], k=req["k"], mode=req["mode"], seed=req["seed"])
  stops = set(model.eos_ids)
  sampled = dict(do_sample=True, temperature=recipe.temperature, top_p=recipe.top_p, top_k=0)
  settings = sampled if recipe.temperature > 0 else dict(do_sample=False)
  texts, tokens = [], 0
  for chunk in chunks:
    outputs = []
    for c in chunk.completions:
      ids = torch.tensor([model.encode_chat([{"role": "user", "content": c.content}])])
      torch.manual_seed(c.seed)
      with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=recipe.max_new_tokens,
                          num_return_sequences=c.n, eos_token_id=list(model.eos_ids), pad_token_id=model.pad_id,
                          **settings)
      samples = []
      for row in out[:, ids.shape[1]:].tolist():
        cut = next((j for j, t in enumerate(row) if t in stops), len(row))  # the stop token is not counted
        tokens += cut
        samples.append(model.tokenizer.decode(row[:cut], skip_special_tokens=True))
      outputs.append(samples)
    texts.append(judging.sample_texts(chunk, outputs))
  return judging.combine(recipe, len(req["responses"]), chunks, texts).to_dict(), tokens


def run_hf(hf, model, recipe, requests: list[dict]) -> dict:
  hf_judge(hf, model, recipe, requests[0])  # untimed: torch's first call allocates and picks kernels
  latencies, bodies, tokens = [], [], 0
  t0 = time.perf_counter()
  for req in requests:
    t = time.perf_counter()
    body, n = hf_judge(hf, model, recipe, req)
    latencies.append(time.perf_counter() - t)
    bodies.append(body)
    tokens += n
  return _row(time.perf_counter() - t0, latencies, tokens, bodies, requests)


# ----------------------------------------------------------------------------------------------- main


def _fmt(x, spec: str) -> str:
  return "–" if x is None else format(x, spec)


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", default=None, help="a trained grm_jax run (serves --stage); else --model")
  ap.add_argument("--stage", default="grpo")
  ap.add_argument("--model", default="builtin:smollm2-135m-instruct", help="a models.load spec (without --workdir)")
  ap.add_argument("--dtype", default=None, help="ours: float32 / bfloat16 (default as the server: the run's, else f32)")
  ap.add_argument("--k", type=int, default=4)
  ap.add_argument("--max-new-tokens", type=int, default=128)
  ap.add_argument("--requests", type=int, default=32)
  ap.add_argument("--concurrency", default="1,8,32")
  ap.add_argument("--slots", type=int, default=16, help="the server's engine row slots (its default)")
  ap.add_argument("--warmup", choices=("each", "highest"), default="each",
                  help="untimed pass of the whole set before every concurrency, or once at the highest")
  ap.add_argument("--tries", type=int, default=3, help="timed passes per level until one compiles nothing")
  ap.add_argument("--no-hf", action="store_true", help="skip the transformers loop")
  ap.add_argument("--out", default=None, help="append the Markdown table to this file")
  args = ap.parse_args()
  levels = sorted({int(c) for c in args.concurrency.split(",")})
  if min(levels) < 1:
    raise SystemExit(f"--concurrency={args.concurrency}: levels must be >= 1")

  import jax

  try:
    server = build(args)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"benchmarks/serve.py: {e}") from None
  model, recipe = server.model, server.recipe
  requests = request_set(args.requests, args.k)
  spec = f"{args.workdir}:{args.stage}" if args.workdir else args.model
  dtype = str(jax.tree.leaves(model.params)[0].dtype)
  device = jax.devices()[0]
  machine = f"{platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} on {device.device_kind}"
  print(f"Reward-server benchmark: {spec} ({dtype}), {args.requests} requests x 2 responses, k={args.k}, "
        f"{recipe.max_new_tokens} new tokens at T={recipe.temperature:g}, {machine}", flush=True)

  from grm_jax.serve.inprocess import serving  # noqa: PLC0415

  ours = {}
  with serving(server) as url:
    t0 = time.perf_counter()
    asyncio.run(_load(url, requests, levels[-1]))
    more = " and again before each lower level" if args.warmup == "each" and len(levels) > 1 else ""
    print(f"warm-up (compile; timings discarded): the whole set once at concurrency {levels[-1]} in "
          f"{time.perf_counter() - t0:.1f} s{more}; {_programs()} sampler programs so far", flush=True)
    for c in levels:
      if args.warmup == "each" and c != levels[-1]:
        asyncio.run(_load(url, requests, c))  # this level's call shapes, compiled before it is timed
      for attempt in range(1, args.tries + 1):
        # Which call shapes a level produces depends on timing, so a warm-up can miss one: a pass that compiled
        # is a warm-up too, and is timed again (its compiles column says if the last try still compiled).
        ours[c] = run_ours(url, requests, c)
        print(f"  ours c={c}: {ours[c]['rps']:.2f} req/s, {ours[c]['tokens_per_s']:.1f} tok/s, "
              f"{ours[c]['compiles']} compiles (try {attempt})", flush=True)
        if not ours[c]["compiles"]:
          break
  hf = None
  if not args.no_hf:
    import torch

    hf = run_hf(load_hf(model), model, recipe, requests)
    print(f"  transformers loop: {hf['rps']:.2f} req/s, {hf['tokens_per_s']:.1f} tok/s "
          f"(torch {torch.__version__}, CPU, {torch.get_num_threads()} threads)", flush=True)

  lines = [
    "",
    f"Reward server: {spec} ({dtype}), {args.requests} requests x 2 responses, k={args.k}, "
    f"{recipe.max_new_tokens} new tokens, {machine}",
    "",
    "| run | concurrency | requests/s | judged tokens/s | p50 s | p99 s | live rows / step | parsed | compiles |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for c, r in ours.items():
    lines.append(f"| ours (grm_jax.serve) | {c} | {r['rps']:.2f} | {r['tokens_per_s']:.1f} | {r['p50_s']:.2f} | "
                 f"{r['p99_s']:.2f} | {r['rows_per_step']:.1f} | {r['parsed']:.0%} | {r['compiles']} |")
  if hf is not None:
    lines.append(f"| transformers generate loop | 1 | {hf['rps']:.2f} | {hf['tokens_per_s']:.1f} | {hf['p50_s']:.2f} | "
                 f"{hf['p99_s']:.2f} | – | {hf['parsed']:.0%} | – |")
  print("\n".join(lines), flush=True)
  if args.out:
    with open(args.out, "a") as f:
      f.write("\n".join(lines[1:]) + "\n\n")

  top = levels[-1]
  result = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "device": machine,
            "model": spec, "dtype": dtype, "k": args.k, "max_new_tokens": recipe.max_new_tokens,
            "temperature": recipe.temperature, "requests": args.requests, "warmup": args.warmup}
  for c, r in ours.items():
    for key in ("rps", "tokens_per_s", "p50_s", "p99_s", "parsed", "rows_per_step", "compiles"):
      result[f"ours_c{c}_{key}"] = r[key]
  for key in ("rps", "tokens_per_s", "p50_s", "p99_s", "parsed"):
    result[f"hf_{key}"] = None if hf is None else hf[key]
  result[f"speedup_c{top}_vs_hf_rps"] = None if hf is None else ours[top]["rps"] / hf["rps"]
  print(json.dumps(result))


if __name__ == "__main__":
  main()
