"""The meta RM stage (paper §4): learn which sampled judgements are right, to guide voting at inference.

`run(config, workdir)` reads `config.model`, `config.mesh`, `config.data`, `config.seed` and `config.metarm`:

1. Data. Every line of `rft/judgements.jsonl` (the RFT stage's un-hinted samples, right and wrong) if present, plus
   `sampling.k` judgements per training item sampled from `policy` ("grpo": `grpo/final`, "rft": `rft/final`,
   "base": the base model), both without items whose ground truth ties at the top (no judgement of one is right
   under Eq. 10: its labels would all say "wrong"; counted in metrics.json). Each is labelled by Eq. 10
   (`trajectories.correctness`, the rule RFT and GRPO use). Written to `metarm/samples.jsonl` with the sampling
   fingerprint in `metarm/samples.json`; a rerun with the same sampling settings reuses them.
2. Input. The plain meta template with the responses in the order that sample saw, the judgement as the assistant
   turn (`grm.prompts.meta_prompt`), in the meta RM's chat template. A sequence over `max_len` loses the start of
   its prompt (the judgement and the context right before it are what decide correctness); one whose judgement
   alone does not fit is skipped. Both are counted.
3. Split. Items (source, id) are held out by a hash of their identity (`heldout_fraction`), so all samples of an
   item fall on the same side and the held-out AUC measures generalisation to new items, not to new samples.
4. Training, by `method`, from the decoder `init` names (default the base model; "policy": the sampled policy's
   params, whose states read these judgements as it wrote them):
   - "finetune" (the paper's): a zero scalar head (`models.scalar_head`) on the decoder, BCE on every training row
     and every weight, `epochs` passes in shuffled batches;
   - "probe" (ours): the decoder frozen; one forward pass gives each row's head input after every layer, a logistic
     head (`train.probe`) is fitted at each (depth, L2) of `probe_layers` x `probe_l2` and scored out of fold over
     `probe_folds` item folds; the best is refitted on every training row and the decoder cut to its depth.
   With `class_balance` each label gets half the total weight (ours; the paper states no class balance): judgements
   from a weak policy are mostly wrong, and an unweighted loss would first learn the prior (the bias) and little
   ranking. Held-out ROC-AUC (with its standard error) and accuracy before and after training go to
   `metarm/metrics.json` (with the probe's cross-validation table); params to `metarm/final/`, the decoder's model
   spec and depth to `metarm/model.json`.

`grm.meta_rm` holds the meta RM's input sequences and scoring, shared with evaluation (MetaRM@k), and loads the
result (`load_meta_rm`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from grm_jax import files, judges, models
from grm_jax.buckets import row_bucket
from grm_jax.data.example import PreferenceExample
from grm_jax.eval.metrics import roc_auc
from grm_jax.eval.stats import auc_standard_error
from grm_jax.judges import trajectories
from grm_jax.judges.meta_rm import meta_sequence
from grm_jax.judges.scalar_rm import score_sequences, sequence_depth_states
from grm_jax.models import lora
from grm_jax.models.scalar_head import head_scores, init_head_params, truncate
from grm_jax.stages import common
from grm_jax.train import losses
from grm_jax.train.batching import pad_rows
from grm_jax.train.checkpoint import restore_trained, save_params
from grm_jax.train.fit import FitConfig, fit
from grm_jax.train.probe import fit_logistic

POLICY_DIRS = {"grpo": "grpo", "rft": "rft", "base": None}  # keys: grm.meta_rm.META_POLICIES (checked by configs)
# What decides the policy's samples (`common.cached`, with the done markers of the stages they read: `_upstream`).
SAMPLING_KEYS = ("seed", "model", "data", "grm", "metarm.policy", "metarm.sampling")


# --------------------------------------------------------------------------------------------------
# Sequences.


def item_heldout(source: str, item_id: str, fraction: float) -> bool:
  """Whether an item is held out: a fixed hash of its identity, so every sample of it lands on the same side."""
  digest = hashlib.blake2b(f"{source}\0{item_id}".encode(), digest_size=8).digest()
  return int.from_bytes(digest, "big") % 10_000 < round(float(fraction) * 10_000)


def item_fold(source: str, item_id: str, folds: int) -> int:
  """The cross-validation fold of an item (by a hash of its identity, independent of `item_heldout`'s)."""
  digest = hashlib.blake2b(f"fold\0{source}\0{item_id}".encode(), digest_size=8).digest()
  return int.from_bytes(digest, "big") % int(folds)


def heldout_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
  """ROC-AUC (NaN if a class is missing) with its Hanley-McNeil standard error ("auc_se": the held-out set is often
  a few hundred rows, where an AUC moves by several points), and accuracy of logit > 0 on held-out rows."""
  labels = np.asarray(labels, bool)
  auc = roc_auc(labels, logits) if len(labels) else float("nan")
  return {
    "auc": auc,
    "auc_se": auc_standard_error(auc, int(labels.sum()), int((~labels).sum())),
    "accuracy": float(np.mean((np.asarray(logits) > 0) == labels)) if len(labels) else float("nan"),
    "rows": int(len(labels)),
    "positives": int(labels.sum()),
  }


# --------------------------------------------------------------------------------------------------
# Training.


def bce_loss_fn(cfg):
  def loss_fn(params, mb):
    logits = head_scores(cfg, params, mb["tokens"], mb["mask"], mb.get("rng"))
    return losses.bce_loss(logits, mb["label"], mb["weight"])

  return loss_fn


def class_weights(labels: np.ndarray, balance: bool) -> tuple[float, float]:
  """(negative, positive) row weights: both labels carry half the total weight when `balance` and both occur."""
  labels = np.asarray(labels, bool)
  n, pos = len(labels), int(labels.sum())
  if not balance or pos == 0 or pos == n:
    return 1.0, 1.0
  return n / (2.0 * (n - pos)), n / (2.0 * pos)


def row_weights(labels: np.ndarray, balance: bool) -> np.ndarray:
  """float32 [N]: each row's weight by its label (`class_weights`)."""
  labels = np.asarray(labels, bool)
  w_neg, w_pos = class_weights(labels, balance)
  return np.where(labels, w_pos, w_neg).astype(np.float32)


def train(model, params, train_seqs, train_labels, group, out_dir: str, seed: int, progress: bool = True,
          donate: bool = False) -> tuple[Any, list[dict]]:
  """BCE on (sequence, label) rows for `group.epochs` passes in batches of `group.batch_size`; (params, history).
  `donate`: the train state takes over `params`' buffers (deleted afterwards; no second copy on device)."""
  labels = np.asarray(train_labels, bool)
  weights = row_weights(labels, bool(group.class_balance))
  batch_size = int(group.batch_size)
  # One row length for the run (the longest sequence's bucket): one compiled step instead of one per bucket.
  length = min(row_bucket(max(len(s) for s in train_seqs)), max(int(group.max_len), 1))

  def make_batch(idx):
    tokens, mask = pad_rows([train_seqs[i] for i in idx], model.pad_id, batch_size, int(group.max_len),
                            length=length)
    return {"tokens": tokens, "mask": mask, "label": labels[idx].astype(np.float32),
            "weight": weights[idx]}

  trained, frozen = lora.split(params, model.config.lora)  # under LoRA: the adapters and the head train
  trained, history = fit(name="metarm", params=trained, loss_fn=bce_loss_fn(model.config), make_batch=make_batch,
                         num_rows=len(train_seqs), settings=FitConfig.from_config(group, "metarm"), out_dir=out_dir,
                         seed=seed, compute_dtype=model.config.dtype, donate=donate, progress=progress, frozen=frozen)
  return lora.join(trained, frozen), history


def probe_depths(text: str, num_layers: int) -> list[int]:
  """`metarm.probe_layers` ("" = every depth 1..L, else comma-separated depths) as a sorted list."""
  if not str(text).strip():
    return list(range(1, num_layers + 1))
  try:
    depths = sorted({int(d) for d in str(text).split(",") if d.strip()})
  except ValueError:
    raise ValueError(f"config metarm.probe_layers={text!r}: not comma-separated layer counts (e.g. '8,12')") from None
  if not depths or depths[0] < 1 or depths[-1] > num_layers:
    raise ValueError(f"config metarm.probe_layers={text!r}: each depth must be in 1..{num_layers} (the model's layers)")
  return depths


def choose_probe(states: np.ndarray, labels: np.ndarray, folds: np.ndarray, depths: Sequence[int],
                 l2s: Sequence[float], balance: bool) -> dict[str, Any]:
  """The (depth, L2) whose logistic probe ranks best out of fold: `states` [N, D, H] holds the rows' head inputs at
  `depths`, `folds` [N] each row's item fold (all samples of an item in one fold). Each candidate is fitted on the
  other folds and scores its fold; the pooled out-of-fold ROC-AUC decides. Candidates are tried in order and a tie
  keeps the earlier (the shallower, then the more regularised when `l2s` runs from strong to weak)."""
  labels = np.asarray(labels, bool)
  table = []
  for di, depth in enumerate(depths):
    for l2 in l2s:
      scores = np.zeros(len(labels))
      for f in np.unique(folds):
        fit_rows, test_rows = folds != f, folds == f
        if labels[fit_rows].all() or not labels[fit_rows].any():
          scores[test_rows] = 0.0  # one class left to fit on: the probe cannot rank this fold
          continue
        kernel, bias = fit_logistic(states[fit_rows, di], labels[fit_rows], row_weights(labels[fit_rows], balance),
                                    float(l2))
        scores[test_rows] = states[test_rows, di] @ kernel + bias
      table.append({"depth": int(depth), "l2": float(l2), "cv_auc": roc_auc(labels, scores)})
  best = max(table, key=lambda r: (np.nan_to_num(r["cv_auc"], nan=-1.0)))
  return {**best, "folds": int(len(np.unique(folds))), "table": table}


def fit_probe(model, seqs, labels: np.ndarray, folds: np.ndarray, group) -> tuple[Any, Any, dict]:
  """The meta RM as a logistic probe on frozen decoder states: one forward pass over the training rows gives the
  head input at every candidate depth; `choose_probe` picks (depth, L2) by item-fold cross-validation; the head is
  fitted on all rows there and the decoder cut to that depth. Returns (cut model, meta RM params, the choice)."""
  depths = probe_depths(group.probe_layers, model.config.num_layers)
  labels = np.asarray(labels, bool)
  if labels.all() or not labels.any():  # nothing to separate: a neutral meta RM (every logit 0), said loudly
    logging.warning("metarm: every training judgement is %s; the probe keeps a zero head",
                    "right" if labels.all() else "wrong")
    return model, init_head_params(model.params, model.config.hidden_size), {
      "depth": model.config.num_layers, "l2": None, "cv_auc": float("nan"), "folds": 0, "table": []}
  states = sequence_depth_states(model, seqs, int(group.batch_size), int(group.max_len), depths)
  choice = choose_probe(states, labels, folds, depths, [float(x) for x in group.probe_l2], bool(group.class_balance))
  di = depths.index(choice["depth"])
  kernel, bias = fit_logistic(states[:, di], labels, row_weights(labels, bool(group.class_balance)), choice["l2"])
  cut = truncate(model, choice["depth"])
  params = init_head_params(cut.params, model.config.hidden_size)
  head = {"kernel": np.asarray(kernel, np.float32), "bias": np.asarray(bias, np.float32)}
  params["head"] = jax.tree.map(lambda old, new: jax.device_put(new, old.sharding), params["head"], head)
  logging.info("metarm: probe at depth %d of %d, L2 %g: cross-validated AUC %.4f", choice["depth"],
               model.config.num_layers, choice["l2"], choice["cv_auc"])
  return cut, params, choice


# --------------------------------------------------------------------------------------------------
# Data.


def _upstream(config) -> tuple[str, ...]:
  """The stages of this workdir whose outputs the meta RM reads: RFT's judgements and the sampling policy's params."""
  policy_dir = POLICY_DIRS.get(str(config.metarm.policy))
  return ("rft",) + ((policy_dir,) if policy_dir and policy_dir != "rft" else ())


def policy_model(config, base: models.Model, workdir: str) -> models.Model:
  """The model whose judgements are sampled (`metarm.policy`): the base, or it with RFT's or GRPO's final params."""
  if not POLICY_DIRS[config.metarm.policy]:
    return base
  path = os.path.join(workdir, POLICY_DIRS[config.metarm.policy], "final")
  return common.with_params(base, restore_trained(path, base.params, base.config.lora))


def sample_policy(config, base: models.Model, examples: Sequence[PreferenceExample], workdir: str) -> list[dict]:
  """`metarm.sampling.k` judgements per item from the configured policy, labelled by Eq. 10."""
  mc = config.metarm
  if int(mc.sampling.k) <= 0 or not examples:
    return []
  policy = policy_model(config, base, workdir)
  j = judges.judge(policy, examples, judges.Sampling.from_config(config, "metarm.sampling", "metarm_policy"))
  correct = trajectories.correctness(j, examples)
  rows = []
  for b, ex in enumerate(examples):
    for s in range(j.k):
      rows.append({"id": ex.id, "source": ex.source, "n": ex.n, "context": list(ex.context),
                   "responses": list(ex.responses), "rewards": list(ex.rewards),
                   "perm": [int(i) for i in j.perms[b, s, : ex.n]], "text": j.texts[b][s], "valid": bool(j.valid[b, s]),
                   "correct": bool(correct[b, s]), "template": j.templates[b], "origin": f"policy:{mc.policy}"})
  return rows


def collect_samples(config, base, workdir: str, out: str) -> list[dict]:
  """RFT judgements + fresh policy samples, in `metarm/samples.jsonl`, made once per sampling fingerprint."""
  samples_path = os.path.join(out, "samples.jsonl")

  def make() -> dict[str, Any]:
    rows = []
    rft_path = os.path.join(workdir, "rft", "judgements.jsonl")
    if files.exists(rft_path):
      rows += [{**r, "origin": "rft"} for r in files.read_jsonl(rft_path)]
    rows += sample_policy(config, base, common.without_top_tied(common.training_items(config, "train"), "metarm")[0],
                          workdir)
    return {"rows": files.write_jsonl(samples_path, rows)}

  common.cached(os.path.join(out, "samples.json"), config, make, keys=SAMPLING_KEYS, workdir=workdir,
                upstream=_upstream(config))
  return files.read_jsonl(samples_path)


# --------------------------------------------------------------------------------------------------
# Stage.


STAGE_KEYS = ("seed", "model", "grm", "data", "metarm")


def run(config, workdir: str) -> dict[str, Any]:
  return common.run_stage(config, workdir, "metarm", lambda out: _run(config, workdir, out), keys=STAGE_KEYS,
                          upstream=_upstream(config))


def _run(config, workdir: str, out: str) -> dict[str, Any]:
  mc = config.metarm
  base = common.load_base(config)
  rows = collect_samples(config, base, workdir, out)
  meta_name = config.model.name if mc.init in ("", "policy") else mc.init
  if mc.init == "policy":  # the policy's own states: it read these judgements as it wrote them
    meta_model = policy_model(config, base, workdir)
  else:
    meta_model = base if meta_name == config.model.name else common.load_base(config, name=meta_name)
  del base  # the GRM's weights are not needed past sampling (when the meta RM starts from another model)

  max_len = int(mc.max_len)
  seqs, labels, items = [], [], []
  truncated = skipped = tied = 0
  for r in rows:
    if common.top_tied(int(r["n"]), r.get("rewards")):  # no Eq. 10 label (e.g. RFT judgements of an older run)
      tied += 1
      continue
    ids, cut = meta_sequence(meta_model, r["context"], r["responses"], r["text"], r["perm"], max_len)
    if ids is None:
      skipped += 1
      continue
    truncated += cut
    seqs.append(ids)
    labels.append(bool(r["correct"]))
    items.append((r["source"], str(r["id"])))
  labels_a = np.asarray(labels, bool)
  held = np.array([item_heldout(src, iid, float(mc.heldout_fraction)) for src, iid in items], bool)
  tr, ho = np.flatnonzero(~held), np.flatnonzero(held)
  counts = {
    "rows": len(rows), "dropped_top_tied": tied, "skipped_too_long": skipped, "truncated": truncated,
    "train": {"rows": len(tr), "positives": int(labels_a[tr].sum()), "negatives": int((~labels_a[tr]).sum())},
    "heldout": {"rows": len(ho), "positives": int(labels_a[ho].sum()), "negatives": int((~labels_a[ho]).sum())},
    "origins": {o: sum(r.get("origin") == o for r in rows) for o in sorted({r.get("origin", "") for r in rows})},
  }
  w_neg, w_pos = class_weights(labels_a[tr], bool(mc.class_balance))
  counts["class_weights"] = {"negative": w_neg, "positive": w_pos}
  logging.info("metarm: %s", json.dumps(counts))
  if not len(tr):
    raise ValueError(f"metarm: no training rows (of {len(rows)} samples, {skipped} too long for metarm.max_len="
                     f"{max_len}, {len(ho)} held out); run the rft stage or set metarm.sampling.k > 0")

  batch = int(mc.batch_size)
  ho_seqs = [seqs[i] for i in ho]
  # The untrained meta RM is neutral by construction (a zero head scores every judgement 0: `init_head_params`).
  before = heldout_metrics(np.zeros(len(ho)), labels_a[ho])
  probe = None
  if mc.method == "probe":
    folds = np.array([item_fold(*items[i], int(mc.probe_folds)) for i in tr])
    meta_model, params, probe = fit_probe(meta_model, [seqs[i] for i in tr], labels_a[tr], folds, mc)
    history = []
  else:
    params = init_head_params(meta_model.params, meta_model.config.hidden_size)
    # The meta RM's state takes over its decoder's buffers (those of meta_model.params, not read again).
    params, history = train(meta_model, params, [seqs[i] for i in tr], labels_a[tr], mc, out, int(config.seed),
                            donate=True)
  after = heldout_metrics(score_sequences(meta_model, params, ho_seqs, batch, max_len), labels_a[ho])
  logging.info("metarm: held-out AUC %.4f -> %.4f, accuracy %.4f -> %.4f", before["auc"], after["auc"],
               before["accuracy"], after["accuracy"])
  metrics = {"before": before, "after": after, "counts": counts, "method": str(mc.method), "init": str(mc.init),
             "layers": meta_model.config.num_layers, "probe": probe, "steps": len(history),
             "loss_first": history[0]["loss"] if history else None,
             "loss_last": history[-1]["loss"] if history else None}
  files.write_json(os.path.join(out, "metrics.json"), metrics)
  spec = meta_model.config.lora
  save_params(os.path.join(out, "final"), lora.split(params, spec)[0], meta_model)  # under LoRA: adapters and head
  files.write_json(os.path.join(out, "model.json"), {
    "name": meta_name, "dtype": config.model.dtype, "param_dtype": config.model.param_dtype, "max_len": max_len,
    "hidden_size": meta_model.config.hidden_size, "layers": meta_model.config.num_layers,
    "lora": spec.as_json()})
  # Strict JSON in done.json: an undefined AUC (one class held out) is null.
  return {"auc_before": before["auc"], "auc_after": after["auc"], "accuracy_before": before["accuracy"],
          "accuracy_after": after["accuracy"], "steps": len(history), "train_rows": len(tr), "heldout_rows": len(ho),
          "method": str(mc.method), "layers": meta_model.config.num_layers}
