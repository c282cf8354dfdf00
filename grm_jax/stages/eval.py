"""The evaluation stage: judge each benchmark with k samples, score Voting@k, draw the scaling curves, report.

`run(config, workdir)` reads `config.model`, `config.mesh`, `config.seed` and `config.eval` (the contract is
`experiments/eval.py`), and for each data set in `config.eval.datasets`:

1. loads the examples (`common.eval_items`: `limit` items per data set, from `benchmark_root`, chosen by
   `eval.subsample` and the seed; the btrm stage scores the same items);
2. samples k judgements per item with the responses shuffled per sample (`judges.judge`, paper §4). Single-response
   items (ReaLMistake) use the 1-10 "default" template, as the paper does at evaluation and as the ReaLMistake
   metric assumes (low score = error);
3. scores the benchmark's official metrics (`eval.score_benchmark`) at k=1 (the first sample alone) and at
   Voting@k_max (sum of the valid scores of all k samples; a single-response item gets their mean, the middle of
   its template's range when none parsed, `grm.item_votes`, so that parse failures do not make an item look
   erroneous to ReaLMistake's AUC across items), and the scaling curve Voting@k for k = 1, 2, 4, ...,
   k_max on the official metric (`eval.scaling_curve`, `num_subsets` random subsets per k). With `eval.meta_model`
   (a metarm stage folder) each valid sample is also scored by the meta RM on its own meta prompt (its response
   order and text), and MetaRM@k (votes of the top ⌈k/2⌉ samples by meta logit) is reported at k_max and along
   the curve, with the meta RM's ROC-AUC against the samples' correctness (Eq. 10; single-response items are
   left out of it and counted, since their 1-10 scores are not 0/1 labels: `meta_stats`);
   With a judge template (`config.grm.template` "judge" or "compact_judge", the paper's LLM-as-a-Judge baseline)
   each sample picks one response; Voting@k is then the majority vote (paper Eq. 13) and TokenProb@k (Tables 3/6,
   "w/ TokenProb") weights each vote by the probability of the chosen index token (`grm.token_prob`). The paper
   defines no best-of-one question for the judge, so its single-response items (ReaLMistake) are left out and
   counted, and a data set with no item of n >= 2 is skipped and named in the results ("skipped_datasets"). On
   RMB the judge sees a Best-of-N list as the benchmark's n-1 pairs of the best response against each other one,
   right only if every pair is (paper §5.1, `eval.pairs`: each pair judged with k samples and voted on its own;
   "pair_protocol" in its results counts the lists split and the pairs judged);
   With `eval.baseline` ("base", "rft", or several: "base,rft") each data set is judged again with those params
   (same items, seeds and k) for the before / after tables ("baselines" in results.json);
   Every column (k=1, Voting@k, MetaRM@k, TokenProb@k, the baselines') also carries its official metric's
   tie-expected value ("<metric>_expected": ties scored by their exact expectation instead of one draw,
   `eval.metrics`) and a 95% percentile bootstrap interval over items of it ("<metric>_ci95": [lo, hi],
   `eval.bootstrap_resamples` resamples, 0 = none); each scaling row the same for its mean over subsets
   ("voting_expected", "voting_ci95", "meta_..."). The meta RM's ROC-AUC comes with its Hanley-McNeil standard
   error ("auc_se"). Each data set (and baseline) also keeps every column's per-item tie-expected correctness
   ("outcomes"), for paired comparisons between runs on the same items (`eval.claims`);
4. sets the run's numbers beside the paper's Table 2 in its columns (RB, PPE-P, PPE-C, RMB) with its Overall, when
   at least one of those benchmarks was evaluated (`eval.paper`; no Overall unless all four were);
5. writes everything to `workdir/eval/` (`eval.report`: report.md, results.json, scaling.png, position_bias.png,
   judgements.jsonl).

A data set without an official metric (synthetic, jsonl, ...) is scored by plain accuracy. If
`workdir/eval/results.json` exists and was made with the same seed, model and eval settings, the stored results are
returned without loading the model (the mesh and stage list do not change the numbers).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from grm_jax import files, grm, judges, parallel
from grm_jax.data.example import PreferenceExample
from grm_jax.data.registry import hub_source
from grm_jax.eval import metrics as metrics_lib
from grm_jax.eval import paper, report, stats
from grm_jax.eval.metrics import benchmark_of, official_metric
from grm_jax.eval.pairs import PairProtocol, bon_pairs
from grm_jax.eval.scaling import scaling_curve
from grm_jax.grm.prompts import JUDGE_TEMPLATES, SCORE_RANGES
from grm_jax.judges import token_prob, trajectories
from grm_jax.judges.meta_rm import judgement_logits, load_meta_rm, meta_max_len
from grm_jax.stages import common
from grm_jax.train.checkpoint import restore_trained

STAGE_KEYS = ("seed", "model", "grm", "eval")
"""Config parts that decide the numbers (with the stages whose params are judged: `upstream`)."""


def _rows(examples: Sequence[PreferenceExample], votes: Any) -> list[np.ndarray]:
  """Per-example vote rows [n_i] from a padded [B, n_max] table (metrics then check each length)."""
  votes = np.asarray(votes, np.float64)
  return [votes[i, : ex.n] for i, ex in enumerate(examples)]


def neutral_scores(j: judges.Judgements) -> np.ndarray:
  """float [B]: the middle of each item's template score range (5.5 for 1-10), what a single-response item scores
  when none of its samples parsed (`grm.item_votes`)."""
  return np.array([sum(SCORE_RANGES[t]) / 2 for t in j.templates], np.float64)


def item_votes(j: judges.Judgements, meta: np.ndarray | None = None, k_meta: int | None = None,
               samples: slice = slice(None)) -> np.ndarray:
  """Votes [B, n_max] of `j`'s `samples` (`grm.item_votes`: sums, the mean for a single-response item)."""
  scores, valid = np.asarray(j.scores)[:, samples], np.asarray(j.valid)[:, samples]
  return np.asarray(grm.item_votes(scores, valid, np.asarray(j.response_mask), None if meta is None else
                                   np.asarray(meta)[:, samples], k_meta, neutral_scores(j)))


def config_dict(config: Any) -> dict[str, Any]:
  """The config as plain JSON values (ConfigDict, FrozenConfigDict or a mapping)."""
  raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return json.loads(files.dumps(raw))


def load_model(config: Any) -> Any:
  """`models.load` of `config.model`, sharded over the stage's mesh scope (`common.mesh_scope`: a mesh from
  `config.mesh` when more than one device is present)."""
  return common.load_base(config)


def load_meta(config: Any, model: Any, workdir: str | os.PathLike = ".") -> tuple[Any, Any, int]:
  """(meta model, meta params, max_len) of `config.eval.meta_model` (a metarm stage folder, absolute or relative
  to the workdir, e.g. "metarm" for this pipeline's own), on the GRM's mesh."""
  path = os.fspath(config.eval.meta_model)
  if not os.path.isabs(path) and not files.is_remote(path) and files.isdir(os.path.join(os.fspath(workdir), path)):
    path = os.path.join(os.fspath(workdir), path)
  with parallel.use_mesh(model.mesh, config.mesh.rules):
    meta_model, params = load_meta_rm(path, dtype=config.model.dtype)
  logging.info("eval: loaded meta RM %s", path)
  return meta_model, params, meta_max_len(path)


def pair_protocols(datasets: Mapping[str, Sequence[PreferenceExample]], config: Any) -> dict[str, PairProtocol]:
  """The RMB data sets' pair protocol for a pairwise judge (`eval.pairs.bon_pairs`, tied pairs drawn from the run's
  seed), for those that have a Best-of-N list to split."""
  out = {}
  for name, examples in datasets.items():
    if benchmark_of(name) == "rmb":
      protocol = bon_pairs(examples, int(config.seed))
      if protocol.num_split:
        out[name] = protocol
  return out


def evaluate_dataset(
  name: str, examples: Sequence[PreferenceExample], j: judges.Judgements, config: Any, meta: np.ndarray | None = None,
  token_probs: tuple[np.ndarray, np.ndarray] | None = None, judge_skipped: int = 0,
  protocol: PairProtocol | None = None,
) -> dict[str, Any]:
  """Official metrics at k=1, Voting@k_max, (with meta logits [B, k]) MetaRM@k_max and (with a judge template's
  (probs, located) [B, k], `token_prob.choice_probs`) TokenProb@k_max, the scaling table, and the judgement
  statistics of one data set. `judge_skipped`: single-response items left out for the judge template. With
  `protocol` (RMB for a pairwise judge) `j` judged `protocol.pairs` and every column's votes are folded back onto
  `examples` (`PairProtocol.fold`) before they are scored."""
  bench = benchmark_of(name)
  key = jax.random.PRNGKey(int(config.seed))
  scores, valid = np.asarray(j.scores), np.asarray(j.valid)
  fold = protocol.fold if protocol is not None else np.asarray
  (at_k1, first), (at_kmax, voted) = _k1_and_voting(bench, examples, j, key, config, fold)
  official = official_metric(bench, at_kmax)
  outcomes = {"ids": [f"{ex.source}/{ex.id}" for ex in examples], "k1": metrics_lib.item_outcomes(examples, [first]),
              "voting": metrics_lib.item_outcomes(examples, [voted])}
  seed, resamples = int(config.seed), int(config.eval.bootstrap_resamples)

  def metric(votes: np.ndarray, k: jax.Array) -> float:
    return metrics_lib.score_benchmark(bench, examples, _rows(examples, fold(votes)), k)[official]

  def band(subsets: np.ndarray) -> dict[str, Any]:
    """A scaling point's tie-expected value (mean over its subsets), 95% bootstrap interval over items and per-item
    outcomes (moved to the data set's "outcomes" below)."""
    tables = [_rows(examples, fold(v)) for v in subsets]
    out: dict[str, Any] = {"expected": float(np.mean(
      [metrics_lib.score_benchmark(bench, examples, t, None, "expected")[official] for t in tables])),
      "items": metrics_lib.item_outcomes(examples, tables)}
    if resamples > 0:
      out["ci95"] = list(metrics_lib.bootstrap_official(bench, examples, tables, official, seed, resamples))
    return out

  at_meta, meta_info = None, None
  if meta is not None:
    k_meta = grm.default_k_meta(j.k)
    meta_voted = fold(item_votes(j, meta, k_meta))
    at_meta = _scored(bench, examples, meta_voted, key, config)
    outcomes["meta"] = metrics_lib.item_outcomes(examples, [meta_voted])
    meta_info = {"k_meta": k_meta, **meta_stats(meta, list(protocol.pairs) if protocol else examples, j)}
    # The paper's k_meta ablation (Table 7) at k_max: the top 1, 2, ..., k samples by meta logit (k = Voting@k).
    meta_info["by_k_meta"] = {str(m): metrics_lib.score_benchmark(
      bench, examples, _rows(examples, fold(item_votes(j, meta, m))), None,
      "expected")[official] for m in range(1, j.k + 1)}
  at_token_prob, token_prob_info = None, None
  if token_probs is not None:
    probs, located = (np.asarray(a) for a in token_probs)
    weighted = fold(np.asarray(grm.token_prob_votes(scores, probs, valid)))
    at_token_prob = _scored(bench, examples, weighted, key, config)
    outcomes["token_prob"] = metrics_lib.item_outcomes(examples, [weighted])
    token_prob_info = {"valid": int(valid.sum()), "located": int((located & valid).sum()),
                       "mean_prob": float(probs[located & valid].mean()) if (located & valid).any() else float("nan")}
  table = scaling_curve(scores, valid, mask=np.asarray(j.response_mask), meta=meta,
                        num_subsets=int(config.eval.num_subsets), seed=seed, metric=metric, band=band,
                        neutral=neutral_scores(j))
  for k_point, row in table.items():
    for column in ("voting", "meta"):
      if f"{column}_items" in row:
        outcomes[f"{column}@{k_point}"] = row.pop(f"{column}_items")
  return {
    "benchmark": bench,
    "official_metric": official,
    "num_items": len(examples),
    "k": j.k,
    "skipped_rows": int(getattr(examples, "skipped", 0) or 0),
    "metrics": {"k1": at_k1, "voting": at_kmax, "meta": at_meta,
                **({"token_prob": at_token_prob} if token_probs is not None else {})},
    "meta_rm": meta_info,
    **({"token_prob": token_prob_info, "judge_skipped_single": int(judge_skipped)} if token_probs is not None else {}),
    **({"pair_protocol": {"lists_split": protocol.num_split, "pairs_judged": len(protocol.pairs)}}
       if protocol is not None else {}),
    "scaling": [{"k": int(k), **row} for k, row in sorted(table.items())],
    # Per item (ids in item order), each column's and scaling point's tie-expected correctness (None: no unique
    # best): what `eval.claims` compares between runs on the same items.
    "outcomes": outcomes,
    **report.judgement_stats(j),
  }


def _scored(bench: str, examples, votes: np.ndarray, key: jax.Array, config: Any) -> dict[str, Any]:
  """One column: the benchmark's metrics (random tie-break) and, for each of its headline metrics present (the
  official one; PPE: preference and correctness), the tie-expected value and 95% bootstrap interval over items.
  The bootstrap seed is the run's seed for every column, so all columns (and the baseline's) are resampled on the
  same items: their intervals are a paired comparison."""
  rows = _rows(examples, votes)
  values = metrics_lib.score_benchmark(bench, examples, rows, key)
  out = dict(values)
  # Every headline metric present, not only the official one: PPE's correctness is a paper column too.
  for name in metrics_lib.interval_metrics(bench, values):
    out.update(metrics_lib.official_with_interval(bench, examples, rows, name, int(config.seed),
                                                  int(config.eval.bootstrap_resamples)))
  return out


def _k1_and_voting(bench: str, examples, j: judges.Judgements, key: jax.Array, config: Any,
                   fold=np.asarray) -> tuple[tuple, tuple]:
  """((metrics, votes) at k=1: each item's first sample, (metrics, votes) of Voting@k over all of its samples);
  metrics as `_scored` gives them. `fold`: the votes of `j`'s items onto `examples` (`PairProtocol.fold`)."""
  first = fold(item_votes(j, samples=slice(0, 1)))
  voted = fold(item_votes(j))
  return (_scored(bench, examples, first, key, config), first), (_scored(bench, examples, voted, key, config), voted)


def eval_sampling(config: Any) -> judges.Sampling:
  """The evaluation's sampling (`eval.sampling`; single responses with the paper's 1-10 template), the same for the
  policy and every baseline, so they judge the same shuffles with the same keys."""
  return judges.Sampling.from_config(config, "eval.sampling", "eval", single_template="default")


def judge(model: Any, examples: Sequence[PreferenceExample], config: Any) -> judges.Judgements:
  """k judgements per item with the evaluation's sampling settings."""
  return judges.judge(model, examples, eval_sampling(config))


def with_stage_params(model: Any, stage: str, workdir: str | os.PathLike) -> Any:
  """`model` reading the params of `stage` ("base": its own; else `<workdir>/<stage>/final`)."""
  if stage == "base":
    return model
  path = os.path.join(os.fspath(workdir), stage, "final")
  return common.with_params(model, restore_trained(path, model.params, model.config.lora))


def compare_baseline(baseline: str, base_model: Any, datasets, per_dataset, config, workdir,
                     protocols: Mapping[str, PairProtocol] | None = None) -> dict[str, Any]:
  """Judges every data set again with the `baseline` params ("base", or a stage of this workdir) and the same
  seeds, items and k: the before / after table of a training run (k=1 and Voting@k on the official metric).
  `protocols`: the data sets a pairwise judge sees as pairs (`pair_protocols`), judged and folded the same way."""
  model = with_stage_params(base_model, baseline, workdir)
  key = jax.random.PRNGKey(int(config.seed))
  out: dict[str, Any] = {"policy": baseline, "datasets": {}}
  for name, examples in datasets.items():
    protocol = (protocols or {}).get(name)
    j = judge(model, list(protocol.pairs) if protocol else examples, config)
    official = per_dataset[name]["official_metric"]
    (at_k1, first), (at_kmax, voted) = _k1_and_voting(benchmark_of(name), examples, j, key, config,
                                                      protocol.fold if protocol else np.asarray)
    out["datasets"][name] = {"official_metric": official, "k1": at_k1[official], "voting": at_kmax[official],
                             "parse_failure_rate": j.parse_failure_rate,
                             "metrics": {"k1": at_k1, "voting": at_kmax},  # all of them: the paper's columns
                             "outcomes": {"ids": [f"{ex.source}/{ex.id}" for ex in examples],
                                          "k1": metrics_lib.item_outcomes(examples, [first]),
                                          "voting": metrics_lib.item_outcomes(examples, [voted])}}
    logging.info("eval: baseline %s on %s: %s", baseline, name, out["datasets"][name])
  return out


def meta_stats(meta: np.ndarray, examples: Sequence[PreferenceExample], j: judges.Judgements) -> dict[str, Any]:
  """How well the meta logits separate right from wrong valid samples (Eq. 10) on this data set: ROC-AUC and
  accuracy of logit > 0, with the counts, and the AUC's Hanley-McNeil standard error ("auc_se",
  `eval.stats.auc_standard_error`); the logits themselves go to judgements.jsonl.

  Evaluation judges a single response with the 1-10 template (paper App. D.1), and a 1-10 score has no Eq. 10
  answer against a 0/1 label (`trajectories.label_comparable`). Those items' samples are left out of the
  right/wrong numbers ("checked" counts the samples that are in) and counted: "single_excluded" items,
  "single_excluded_samples" of their scored samples. "scored" and "mean_logit" cover every scored sample.
  """
  valid = np.asarray(j.valid, bool)
  scored = valid & np.isfinite(meta)
  out: dict[str, Any] = {"scored": int(scored.sum()), "mean_logit": float(meta[scored].mean()) if scored.any()
                         else float("nan")}
  if all(ex.rewards is not None for ex in examples):
    comparable = trajectories.label_comparable(j, examples)
    checked = scored & comparable[:, None]
    right = np.asarray(trajectories.correctness(j, examples, skip_incomparable=True), bool)[checked]
    logits = meta[checked]
    out.update(checked=int(checked.sum()), single_excluded=int((~comparable).sum()),
               single_excluded_samples=int((scored & ~comparable[:, None]).sum()), positives=int(right.sum()),
               auc=metrics_lib.roc_auc(right, logits) if right.size else float("nan"),
               accuracy=float(np.mean((logits > 0) == right)) if right.size else float("nan"))
    out["auc_se"] = stats.auc_standard_error(out["auc"], int(right.sum()), int((~right).sum()))
  return out


def _totals(per_dataset: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
  pf = [d["parse_failures"] for d in per_dataset.values()]
  tp = [d["throughput"] for d in per_dataset.values()]
  invalid, samples = sum(p["invalid"] for p in pf), sum(p["samples"] for p in pf)
  secs = sum(t["sampler_seconds"] for t in tp)
  items, tokens = sum(t["items"] for t in tp), sum(t["generated_tokens"] for t in tp)
  stopped = [t["stopped_rate"] * t["samples"] for t in tp if t.get("stopped_rate") is not None]
  return {
    "parse_failures": {"invalid": invalid, "samples": samples, "rate": invalid / samples if samples else 0.0},
    "throughput": {
      "items": items,
      "samples": samples,
      "generated_tokens": tokens,
      "sampler_seconds": secs,
      "total_seconds": sum(t["total_seconds"] for t in tp),
      "items_per_s": items / secs if secs > 0 else float("nan"),
      "tokens_per_s": tokens / secs if secs > 0 else float("nan"),
      "stopped_rate": sum(stopped) / samples if samples and stopped else float("nan"),
    },
  }


def run(config: Any, workdir: str | os.PathLike) -> dict[str, Any]:
  """Evaluates `config.model` on `config.eval.datasets`; writes `workdir/eval/` and returns the results dict. A rerun
  with the same config and the same judged params returns the stored results.json."""
  return common.run_stage(config, os.fspath(workdir), "eval", lambda out: _run(config, workdir, out),
                          keys=STAGE_KEYS + (("hub_revisions",) if common.hub_revisions(config) else ()),
                          upstream=upstream(config, workdir),
                          reuse=lambda out, _: files.read_json(os.path.join(out, "results.json")))


def baselines(config: Any) -> tuple[str, ...]:
  """`eval.baseline` as a tuple: "base", "rft" or "base,rft" (each judged again on the same items), without the
  judged policy itself and without repeats."""
  policy = str(config.eval.policy)
  names = (n.strip() for n in str(config.eval.baseline).split(","))
  return tuple(dict.fromkeys(n for n in names if n and n != policy))


def upstream(config: Any, workdir: str | os.PathLike) -> tuple[str, ...]:
  """The stages of this workdir whose outputs evaluation reads: the judged policy, the baselines, the meta RM."""
  names = [str(config.eval.policy), *baselines(config)]
  meta = os.fspath(config.eval.meta_model)
  if meta and not os.path.isabs(meta) and not files.is_remote(meta):
    names.append(meta)
  return tuple(dict.fromkeys(n for n in names if n and n != "base" and files.isdir(os.path.join(os.fspath(workdir),
                                                                                                 n))))


def hub_revisions(config: Any, names: Sequence[str]) -> dict[str, dict[str, str | None]]:
  """{data set: {repo_id: revision}} for the data sets of `names` read from the hub (`data.registry.hub_source`)."""
  out = {}
  for name in names:
    source = hub_source(name, root=config.benchmark_root, hub_revisions=common.hub_revisions(config))
    if source is not None:
      out[name] = source
  return out


def _run(config: Any, workdir: str | os.PathLike, out_dir: str) -> dict[str, Any]:
  start = time.perf_counter()
  cfg = config_dict(config)
  datasets = common.eval_items(config)
  names = list(datasets)
  k = int(config.eval.sampling.k)

  template = common.grm_template(config)
  judging = template in JUDGE_TEMPLATES
  judge_skipped: dict[str, int] = {}
  skipped_datasets: dict[str, str] = {}
  for name in list(names):
    if judging:  # the judge picks the best of several responses; the paper defines no best-of-one question
      kept = [ex for ex in datasets[name] if ex.n >= 2]
      judge_skipped[name] = len(datasets[name]) - len(kept)
      if not kept:
        skipped_datasets[name] = (f"all {judge_skipped[name]} items have one response: the {template} template "
                                  "selects the best of several")
        del datasets[name]
        logging.warning("eval: %s skipped: %s", name, skipped_datasets[name])
        continue
      datasets[name] = kept
  names = [n for n in names if n in datasets]
  if not names:
    raise ValueError(f"config.eval.datasets: nothing to judge with template {template!r}: "
                     f"{skipped_datasets}")
  protocols = pair_protocols(datasets, config) if judging else {}

  model = load_model(config)
  base_model = model
  policy = str(config.eval.policy)
  model = with_stage_params(model, policy, workdir)
  compare_with = baselines(config)
  if not compare_with:
    base_model = None  # the base weights are only kept for a before / after comparison
  logging.info("eval: loaded %s (%s), params of %s", config.model.name, config.model.dtype, policy)
  meta_rm = load_meta(config, model, workdir) if config.eval.meta_model else None
  per_dataset: dict[str, dict[str, Any]] = {}
  judged: dict[str, tuple[Sequence[PreferenceExample], judges.Judgements]] = {}
  metas: dict[str, np.ndarray] = {}
  for i, name in enumerate(names):
    examples = datasets[name]
    logging.info("eval: [%d/%d] judging %s: %d items x k=%d", i + 1, len(names), name, len(examples), k)
    protocol = protocols.get(name)
    shown = list(protocol.pairs) if protocol else examples  # RMB's Best-of-N lists as pairs for the judge
    j = judge(model, shown, config)
    judged[name] = (shown, j)
    meta = (judgement_logits(meta_rm, shown, j, int(config.eval.meta_batch_size))
            if meta_rm is not None else None)
    if meta is not None:
      metas[name] = meta
    probs = token_prob.choice_probs(model, j, eval_sampling(config).items_per_call(len(shown))) if judging else None
    per_dataset[name] = evaluate_dataset(name, examples, j, config, meta, probs, judge_skipped.get(name, 0),
                                         protocol)
    d = per_dataset[name]
    logging.info(
      "eval: %s: %s k=1 %.4f, voting@%d %.4f; parse failures %.1f%%; %.2f items/s, %.1f tok/s",
      name,
      d["official_metric"],
      d["metrics"]["k1"][d["official_metric"]],
      k,
      d["metrics"]["voting"][d["official_metric"]],
      100 * d["parse_failures"]["rate"],
      d["throughput"]["items_per_s"],
      d["throughput"]["tokens_per_s"],
    )

  compared = [compare_baseline(b, base_model, datasets, per_dataset, config, workdir, protocols)
              for b in compare_with]

  results = {
    "model": str(config.model.name),
    "policy": policy,
    "baseline": compared[0] if compared else None,  # the first one: beside the paper's rows, compare's @baseline
    "baselines": compared,
    "config": cfg,
    "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
    "datasets": per_dataset,
    # The hub repositories and commits each data set read from the Hugging Face Hub was taken at (None: its default
    # branch, unpinned); a data set read from benchmark_root or a path is absent.
    "hub_revisions": hub_revisions(config, names),
    "skipped_datasets": skipped_datasets,
    "paper": paper.comparison(per_dataset, compared[0] if compared else None, policy),
    "totals": _totals(per_dataset),
    "seconds": time.perf_counter() - start,
  }
  paths = report.write_report(out_dir, results, judged, metas or None)
  logging.info("eval: wrote %s", ", ".join(paths.values()))
  return {"results": "results.json", "datasets": list(per_dataset), "seconds": results["seconds"]}
