"""The Bradley–Terry scalar RM baseline (paper Table 2, DeepSeek-BTRM-27B): one scalar per response, trained on the
same data and scored on the same evaluation items as the GRM, so the two can stand side by side.

`run(config, workdir)` reads `config.model`, `config.mesh`, `config.data`, `config.seed`, `config.btrm` and
`config.eval`:

1. Data. The RL data (paper App. C.2: "the RL-stage data minus single-response data"): the training items
   (`common.training_items(config, "train")`) minus those the RL-data filter dropped (`grpo.filter`, App. C.1: read
   from the grpo stage's verdicts, `common.rl_filter_dropped`, so run it first; none without a filter judge), minus
   the single-response ones, minus lists whose rewards are all equal (no pair to learn from) and minus the other
   lists whose best response is tied (as every training stage); all are counted ("dropped_filter",
   "dropped_single", ...). The held-out items (`config.data.test`; no filter) are dropped the same way otherwise
   and give the pair accuracy before and after training.
2. Input. Each response is the assistant turn after the item's context, in the scalar RM's chat template
   (`response_sequence`); the scalar is a head on the last real token's hidden state (`models.scalar_head`, the
   meta RM's model too: a zero head, so every pair starts tied), scored by `judges.scalar_rm`. A sequence over
   `max_len` loses the start of its context (ours: the response is what is compared); counted.
3. Training. `train.fit` with the Bradley–Terry loss over every ordered pair of an item's responses with different
   rewards (`losses.bradley_terry_loss`, mean over the pairs of a step). A batch row is an item: its responses
   [n_max, T], padded with empty rows to the longest list of the run (one compiled step). `epochs` or `steps`,
   `batch_size` items per step, lr, schedule: the paper states none for its BTRM, ours.
4. Evaluation by the eval stage's harness: the items of `common.eval_items` (the data sets of
   `config.eval.datasets`, `eval.limit` of each chosen by `eval.subsample` and the seed: the GRM's held-out items),
   each response's scalar as its vote, the benchmark's official metrics by `eval.score_benchmark` with the evaluate
   stage's tie-break key, with the official metric's tie-expected value and 95% bootstrap interval over items
   (`eval.metrics.official_with_interval`, the eval stage's seed and `eval.bootstrap_resamples`). A higher
   scalar means a better response, the orientation of the GRM's scores, so
   ReaLMistake's single responses (error score = -vote) are scored as they are.

Writes `btrm/final/` (params: `{"decoder", "head"}`), `btrm/model.json` (the base model spec), `btrm/metrics.jsonl`
(per step: loss, pair accuracy, pairs), `btrm/metrics.json` (counts, held-out pairs before / after) and
`btrm/results.json`: `{"policy": "btrm", "datasets": {name: {"benchmark", "official_metric", "k": 1, "k1",
"metrics": {"k1": {...}}, ...}}, "paper": ...}`, each data set's entry in the keys of the eval stage's
results.json, so a report can set it beside the GRM.
"""

from __future__ import annotations

import os
import time
from collections.abc import Container, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from grm_jax import files
from grm_jax.buckets import row_bucket
from grm_jax.data.example import PreferenceExample
from grm_jax.eval import metrics as metrics_lib
from grm_jax.eval import paper
from grm_jax.judges.scalar_rm import score_sequences
from grm_jax.models import lora
from grm_jax.models.scalar_head import head_scores, init_head_params
from grm_jax.stages import common
from grm_jax.train import losses
from grm_jax.train.batching import pad_rows
from grm_jax.train.checkpoint import save_params
from grm_jax.train.fit import FitConfig, fit

STAGE_KEYS = ("seed", "model", "data", "grpo.filter", "btrm", "eval")
"""Config parts that decide the numbers: the training items (data, seed, the RL-data filter), the model, the
training, the eval items."""


# --------------------------------------------------------------------------------------------------
# Items and sequences.


def trainable(examples: Sequence[PreferenceExample], filtered: Container[tuple[str, str]] = frozenset(),
              ) -> tuple[list[PreferenceExample], dict[str, int]]:
  """The items with at least one pair of different rewards and a single best response, and how many were dropped:
  those the RL-data filter dropped (`filtered`: their (source, id)), single responses (the paper's "minus
  single-response data"), lists whose rewards are all equal (no Bradley–Terry pair) and other lists whose best
  response is tied (the RM data the GRM trains on has none: `common.top_tied`)."""
  kept, dropped, single, no_pair, top_tied = [], 0, 0, 0, 0
  for ex in examples:
    if (ex.source, ex.id) in filtered:
      dropped += 1
    elif ex.n < 2:
      single += 1
    elif ex.rewards is None or len(set(ex.rewards)) < 2:
      no_pair += 1
    elif common.top_tied(ex.n, ex.rewards):
      top_tied += 1
    else:
      kept.append(ex)
  return kept, {"items": len(examples), "kept": len(kept), "dropped_filter": dropped, "dropped_single": single,
                "dropped_no_pair": no_pair, "dropped_top_tied": top_tied}


def response_sequence(model, context, response: str, max_len: int) -> tuple[list[int], bool]:
  """(token ids, truncated) of one response as the assistant turn after `context`; over `max_len` it keeps the end
  (the response and the context right before it)."""
  ids = [int(t) for t in model.encode_chat([*context, {"role": "assistant", "content": response}],
                                           add_generation_prompt=False)]
  return (ids, False) if len(ids) <= max_len else (ids[-max_len:], True)


def item_sequences(model, examples: Sequence[PreferenceExample], max_len: int) -> tuple[list[list[list[int]]], int]:
  """Per item, the token ids of each response; and how many sequences were cut to `max_len`."""
  out, cut = [], 0
  for ex in examples:
    row = []
    for response in ex.responses:
      ids, c = response_sequence(model, ex.context, response, max_len)
      row.append(ids)
      cut += c
    out.append(row)
  return out, cut


def score_items(model, params, seqs: Sequence[Sequence[Sequence[int]]], batch_size: int,
                max_len: int) -> list[np.ndarray]:
  """The scalar of every response: one float32 [n_i] per item."""
  flat = [s for row in seqs for s in row]
  scores = score_sequences(model, params, flat, batch_size, max_len)
  bounds = np.cumsum([0] + [len(row) for row in seqs])
  return [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def padded(rows: Sequence[Sequence[float]], n_max: int) -> tuple[np.ndarray, np.ndarray]:
  """float32 [B, n_max] values (0 on padding) and bool mask of ragged rows."""
  out = np.zeros((len(rows), n_max), np.float32)
  mask = np.zeros((len(rows), n_max), bool)
  for i, row in enumerate(rows):
    out[i, : len(row)] = row
    mask[i, : len(row)] = True
  return out, mask


def pair_metrics(scores: Sequence[np.ndarray], examples: Sequence[PreferenceExample]) -> dict[str, Any]:
  """Held-out pairs: the Bradley–Terry loss, pair accuracy (s_i > s_j strictly) and ties, by the training loss."""
  n_max = max((ex.n for ex in examples), default=1)
  s, mask = padded(scores, n_max)
  r, _ = padded([ex.rewards for ex in examples], n_max)
  loss, aux = losses.bradley_terry_loss(s, r, mask)
  pairs = int(loss.weight)
  if not pairs:
    return {"pairs": 0, "loss": None, "accuracy": None, "ties": None}
  return {"pairs": pairs, "loss": float(loss.value), "accuracy": float(aux["accuracy"].value),
          "ties": float(aux["ties"].value)}


# --------------------------------------------------------------------------------------------------
# Training.


def bt_loss_fn(cfg):
  """Scores every response of a batch of items as one [B * n_max, T] forward, then the pairs within each item."""

  def loss_fn(params, mb):
    b, n, t = mb["tokens"].shape
    scores = head_scores(cfg, params, mb["tokens"].reshape(b * n, t), mb["mask"].reshape(b * n, t),
                         mb.get("rng"))
    return losses.bradley_terry_loss(scores.reshape(b, n), mb["rewards"], mb["valid"])

  return loss_fn


def train(model, params, seqs, examples: Sequence[PreferenceExample], group, out_dir: str, seed: int,
          progress: bool = True, donate: bool = False) -> tuple[Any, list[dict]]:
  """Bradley–Terry training on items (`seqs[i]`: the token ids of item i's responses); (params, history)."""
  n_max = max(len(row) for row in seqs)
  max_len = int(group.max_len)
  # One row length for the run (the longest sequence's bucket): one compiled step instead of one per bucket.
  length = min(row_bucket(max(len(s) for row in seqs for s in row)), max(max_len, 1))
  rewards, valid = padded([ex.rewards for ex in examples], n_max)

  def make_batch(idx):
    tokens = np.full((len(idx), n_max, length), model.pad_id, np.int32)
    mask = np.zeros((len(idx), n_max, length), bool)
    for row, i in enumerate(idx):
      t, m = pad_rows(seqs[i], model.pad_id, n_max, max_len, length=length)
      tokens[row], mask[row] = t, m
    return {"tokens": tokens, "mask": mask, "rewards": rewards[idx], "valid": valid[idx]}

  trained, frozen = lora.split(params, model.config.lora)  # under LoRA: the adapters and the head train
  trained, history = fit(name="btrm", params=trained, loss_fn=bt_loss_fn(model.config), make_batch=make_batch,
                         num_rows=len(seqs), settings=FitConfig.from_config(group, "btrm"), out_dir=out_dir, seed=seed,
                         compute_dtype=model.config.dtype, donate=donate, progress=progress, frozen=frozen)
  return lora.join(trained, frozen), history


# --------------------------------------------------------------------------------------------------
# Evaluation.


def evaluate_items(model, params, datasets: dict[str, list[PreferenceExample]], config,
                   batch_size: int) -> dict[str, dict[str, Any]]:
  """Each data set's official metrics with each response's scalar as its vote (k = 1: one score per response)."""
  key = jax.random.PRNGKey(int(config.seed))  # the eval stage's tie-break key
  max_len = int(config.btrm.max_len)
  out = {}
  for name, examples in datasets.items():
    seqs, cut = item_sequences(model, examples, max_len)
    votes = [v.astype(np.float64) for v in score_items(model, params, seqs, batch_size, max_len)]
    bench = metrics_lib.benchmark_of(name)
    values = metrics_lib.score_benchmark(bench, examples, votes, key)
    official = metrics_lib.official_metric(bench, values)
    # The eval stage's tie-expected value and bootstrap interval (same seed: the GRM's columns' resampled items).
    values.update(metrics_lib.official_with_interval(bench, examples, votes, official, int(config.seed),
                                                     int(config.eval.bootstrap_resamples)))
    out[name] = {"benchmark": bench, "official_metric": official, "num_items": len(examples), "k": 1,
                 "skipped_rows": int(getattr(examples, "skipped", 0) or 0), "truncated": cut,
                 "k1": values[official], "metrics": {"k1": values},
                 # per item, as the eval stage keeps them (`eval.claims` pairs the two on the same items)
                 "outcomes": {"ids": [f"{ex.source}/{ex.id}" for ex in examples],
                              "k1": metrics_lib.item_outcomes(examples, [votes])}}
    logging.info("btrm: %s: %s %.4f (%d items)", name, official, values[official], len(examples))
  return out


# --------------------------------------------------------------------------------------------------
# Stage.


def run(config, workdir: str) -> dict[str, Any]:
  # With a filter judge the grpo stage's verdicts are read: a remade grpo stage makes the BT RM again.
  upstream = ("grpo",) if "grpo" in config and str(config.grpo.filter.judge) else ()
  return common.run_stage(config, workdir, "btrm", lambda out: _run(config, workdir, out), keys=STAGE_KEYS,
                          upstream=upstream)


def _run(config, workdir: str, out: str) -> dict[str, Any]:
  start = time.perf_counter()
  bc = config.btrm
  max_len = int(bc.max_len)
  train_items, train_counts = trainable(common.training_items(config, "train"),
                                        common.rl_filter_dropped(config, workdir) or frozenset())
  test_items, test_counts = trainable(common.training_items(config, "test"))
  logging.info("btrm: training items %s, held-out items %s", train_counts, test_counts)
  if not train_items:
    raise ValueError(f"btrm: no training item with two responses of different rewards in config.data.train="
                     f"{config.data.train!r} ({train_counts})")
  datasets = common.eval_items(config)  # loaded before the model: a missing benchmark fails in seconds

  name = bc.init or config.model.name
  model = common.load_base(config, name=name)
  train_seqs, train_cut = item_sequences(model, train_items, max_len)
  test_seqs, test_cut = item_sequences(model, test_items, max_len)
  counts = {"train": {**train_counts, "truncated": train_cut}, "heldout": {**test_counts, "truncated": test_cut}}

  params = init_head_params(model.params, model.config.hidden_size)
  batch = max(1, int(bc.batch_size) // int(bc.micro_batches)) * max(len(r) for r in train_seqs)  # a micro-batch
  before = pair_metrics(score_items(model, params, test_seqs, batch, max_len), test_items)
  # The state takes over the decoder's buffers (model.params is not read again).
  params, history = train(model, params, train_seqs, train_items, bc, out, int(config.seed), donate=True)
  after = pair_metrics(score_items(model, params, test_seqs, batch, max_len), test_items)
  logging.info("btrm: held-out pair accuracy %s -> %s (%d pairs)", before["accuracy"], after["accuracy"],
               after["pairs"])
  save_params(os.path.join(out, "final"), lora.split(params, model.config.lora)[0], model)
  files.write_json(os.path.join(out, "model.json"), {
    "name": name, "dtype": config.model.dtype, "param_dtype": config.model.param_dtype, "max_len": max_len,
    "hidden_size": model.config.hidden_size, "lora": model.config.lora.as_json()})
  files.write_json(os.path.join(out, "metrics.json"), {
    "counts": counts, "before": before, "after": after, "steps": len(history),
    "loss_first": history[0]["loss"] if history else None, "loss_last": history[-1]["loss"] if history else None})

  per_dataset = evaluate_items(model, params, datasets, config, batch)
  # The item selection (seed, eval settings) as the eval stage records it, so a comparison can check the items.
  selection = {"seed": int(config.seed), "eval": config.eval.to_dict()}
  results = {"model": name, "policy": "btrm", "config": selection, "datasets": per_dataset,
             "paper": paper.comparison(per_dataset, None, "btrm"), "heldout": {"before": before, "after": after},
             "seconds": time.perf_counter() - start}
  files.write_json(os.path.join(out, "results.json"), results)
  return {"results": "results.json", "steps": len(history), "train_items": len(train_items),
          "dropped_single": train_counts["dropped_single"], "dropped_filter": train_counts["dropped_filter"],
          "heldout_accuracy_before": before["accuracy"],
          "heldout_accuracy_after": after["accuracy"],
          **{f"{n}/{d['official_metric']}": d["k1"] for n, d in per_dataset.items()}}
