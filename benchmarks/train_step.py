"""Train-step time and peak memory of SmolLM2-135M (f32) at batch 8 x 1,024 tokens on this machine.

  python benchmarks/train_step.py [--batch 8] [--length 1024] [--micro 1] [--remat] [--steps 3] [--skip-head]

One SFT step (chunked log-probs, NLL on the second half of each row, AdamW) through `train.step.make_train_step`,
the step every stage uses. Prints the compile time, the steady-state step time, tokens/s and the process's peak RSS
(`ru_maxrss`).
"""

import argparse
import resource
import time

import jax
import numpy as np

from grm_jax import configs, models
from grm_jax.train import losses
from grm_jax.train.logprobs import token_logprobs
from grm_jax.train.optimizer import make_optimizer
from grm_jax.train.step import init_state, make_train_step, place_batch, split_micro_batches


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--length", type=int, default=1024)
  ap.add_argument("--micro", type=int, default=1)
  ap.add_argument("--remat", action="store_true")
  ap.add_argument("--steps", type=int, default=3)
  # As RFT's SFT and GRPO do: the loss mask goes to the head, whose chunks without a loss position are skipped.
  ap.add_argument("--skip-head", dest="skip_head", action="store_true")
  args = ap.parse_args()
  model = models.load("builtin:smollm2-135m-instruct", remat=args.remat)
  cfg = model.config
  rng = np.random.default_rng(0)
  batch = {
    "tokens": rng.integers(0, cfg.vocab_size, (args.batch, args.length)).astype(np.int32),
    "mask": np.ones((args.batch, args.length), bool),
    "loss_mask": (np.arange(args.length)[None] >= args.length // 2).repeat(args.batch, 0).astype(np.float32),
  }

  def loss_fn(params, mb):
    logp, _ = token_logprobs(cfg, params, mb["tokens"], mb["mask"], needed=mb["loss_mask"] if args.skip_head else None)
    return losses.nll_loss(logp, mb["loss_mask"]), {}

  group = configs.optim(1e-5)
  group.schedule, group.warmup_steps = "constant", 0
  optimizer, schedule = make_optimizer(group, 100)
  step = make_train_step(loss_fn, optimizer, schedule)
  state = init_state(model.params, optimizer)
  dev = place_batch(split_micro_batches(batch, args.micro))
  t0 = time.perf_counter()
  state, m = step(state, dev)
  jax.block_until_ready(m["loss"])
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, m = step(state, dev)
    jax.block_until_ready(m["loss"])
    times.append(time.perf_counter() - t0)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  tokens = args.batch * args.length
  print(f"SmolLM2-135M f32, batch {args.batch} x {args.length} tokens, micro-batches {args.micro}, remat {args.remat}")
  print(f"first step (compile + run): {first:.1f} s")
  print(f"step time: {np.median(times):.2f} s (median of {len(times)}), {tokens / np.median(times):.0f} tokens/s")
  print(f"peak RSS: {rss:.2f} GiB; loss {float(m['loss']):.3f}")


if __name__ == "__main__":
  main()
