"""The evaluation stage end to end on a tiny random model with a scripted judge (fast and deterministic)."""

import dataclasses
import json

import jax
import ml_collections
import numpy as np
import pytest

from experiments import eval as eval_experiment
from grm_jax import judges, models, parallel
from grm_jax.data import registry
from grm_jax.data.example import PreferenceExample
from grm_jax.eval import metrics as metrics_lib
from grm_jax.eval import report
from grm_jax.judges.model_judge import Judgements, judge_texts_to_arrays
from grm_jax.stages import common
from grm_jax.stages import eval as eval_stage
from grm_jax.train.checkpoint import save_params


def scripted_judge(calls):
  """A stand-in for `judges.judge`: seeded shuffles, mostly prefers the true best, one unparseable sample per item."""

  def judge(model, examples, sampling, **kwargs):
    k, seed = sampling.k, sampling.seed
    calls.append({"model": model, "n_items": len(examples), "k": k, "seed": seed, "sampling": sampling, **kwargs})
    rng = np.random.default_rng(seed)
    texts, perms = [], []
    for b, ex in enumerate(examples):
      item_texts, item_perms = [], []
      for j in range(k):
        perm = tuple(int(i) for i in rng.permutation(ex.n))
        good = ex.rewards[perm[0]] if ex.n == 1 else None
        shown = [9 if ex.rewards[i] == max(ex.rewards) and (b + j) % 3 else 4 for i in perm]
        if ex.n == 1:
          shown = [8 if good else 3]
        text = "no verdict" if j == k - 1 and b % 2 else f"Critique...\nScores: \\boxed{{{', '.join(map(str, shown))}}}"
        item_texts.append(text)
        item_perms.append(perm)
      texts.append(item_texts)
      perms.append(item_perms)
    scores, valid, mask, perm_arr = judge_texts_to_arrays(texts, perms, k=k)
    B = len(examples)
    return Judgements(
      scores=scores,
      valid=valid,
      response_mask=mask,
      perms=perm_arr,
      texts=texts,
      tokens=[[[5] * 7 for _ in range(k)] for _ in range(B)],
      logprobs=[[[-1.0] * 7 for _ in range(k)] for _ in range(B)],
      prompt_ids=[[[1, 2] for _ in range(k)] for _ in range(B)],
      prompt_tokens=np.full((B, k), 2, np.int32),
      generated_tokens=np.full((B, k), 7, np.int32),
      stopped=np.ones((B, k), bool),
      templates=["default"] * B,
      sampler_seconds=0.5,
      total_seconds=0.6,
    )

  return judge


@pytest.fixture
def config():
  c = eval_experiment.get_config("smoke")
  c.model.name = "tiny:llama"
  c.benchmark_root = registry.DEFAULT_ROOT
  c.eval.datasets = "synthetic"
  c.eval.limit = 4
  c.eval.sampling.k = 4
  return c


@pytest.fixture
def patched(monkeypatch):
  calls, loads = [], []

  def fake_load(name, dtype="float32", **kwargs):
    loads.append({"name": name, "dtype": dtype, "mesh": parallel.current_mesh()})
    with parallel.use_mesh(None):  # one device, whatever the stage's mesh
      return models.from_config(models.tiny("llama"))

  monkeypatch.setattr(models, "load", fake_load)
  monkeypatch.setattr(judges, "judge", scripted_judge(calls))
  return calls, loads


def scripted_k1_expected(examples):
  """Tie-expected k=1 accuracy of each item under `scripted_judge`, worked out from its rule: sample 0 of item b shows
  the true best 9 and every other response 4 when b % 3 != 0 (right), else 4 everywhere (a tie among the n responses:
  right with probability 1/n)."""
  return [1.0 if b % 3 else 1.0 / ex.n for b, ex in enumerate(examples)]


@pytest.fixture(params=["synthetic", "rewardbench,synthetic"])
def datasets(request, benchmark_root):
  """The data sets of the stage test; with RewardBench only where its folder is there (else a skip that says so, a
  failure under --require-benchmarks)."""
  if "rewardbench" in request.param:
    benchmark_root("rewardbench")
  return request.param


def test_run_writes_report_and_second_run_skips(config, tmp_path, patched, datasets):
  calls, loads = patched
  config.eval.datasets = datasets
  results = eval_stage.run(config, tmp_path)
  names = common.datasets_of(config)
  assert list(results["datasets"]) == names
  assert len(loads) == 1 and loads[0]["dtype"] == "float32"
  # The config reaches the judge.
  assert [c["n_items"] for c in calls] == [4] * len(names)
  for c in calls:
    assert c["k"] == 4 and c["seed"] == config.seed
    s, want = c["sampling"], config.eval.sampling
    assert (s.temperature, s.top_p, s.top_k, s.max_new_tokens, s.batch_items) == (
      want.temperature, want.top_p, want.top_k, want.max_new_tokens, want.batch_items)
    assert (s.template, s.single_template) == (config.grm.template, "default")
  out = tmp_path / "eval"
  for name in ("report.md", "results.json", "scaling.png", "position_bias.png", "judgements.jsonl"):
    assert (out / name).stat().st_size > 0, name
  for name, d in results["datasets"].items():
    off = d["official_metric"]
    assert off == ("overall" if name == "rewardbench" else "accuracy")
    # The numbers the scripted judge's rule gives (worked out by hand, not read back from the stage): Voting@4 is right
    # on every item (each has a valid sample that shows the true best 9, the rest 4), so its value is 1.0 whatever
    # the tie-break; k=1 is right on items 1 and 2 and ties on items 0 and 3.
    assert d["metrics"]["voting"][off] == 1.0 and d["metrics"]["voting"][f"{off}_expected"] == 1.0, name
    items = common.select_items(name, config, 4)
    if name == "rewardbench":
      # The 4 items config.seed draws: llmbar-adver-manual (Chat Hard; a tie: 1/2), donotanswer (Safety; right),
      # hep-cpp (right) and hep-java (a tie) of Reasoning: the mean of the three sections (1/2 + 1 + 3/4) / 3.
      assert [ex.source.split("/")[-1] for ex in items] == ["llmbar-adver-manual", "donotanswer", "hep-cpp",
                                                            "hep-java"]
      assert d["metrics"]["k1"]["overall_expected"] == pytest.approx(0.75)
      assert d["metrics"]["k1"]["n_sections"] == 3
    else:
      assert d["metrics"]["k1"]["accuracy_expected"] == pytest.approx(np.mean(scripted_k1_expected(items)))
    assert d["metrics"]["k1"][off] is not None, name  # drawn tie-breaks: one of the values the ties allow
    assert [row["k"] for row in d["scaling"]] == [1, 2, 4]
    assert all(row["voting"] is not None for row in d["scaling"]), d["scaling"]
    assert d["scaling"][-1]["voting_expected"] == 1.0  # every k=4 subset of 4 samples is the full vote
    assert d["parse_failures"]["invalid"] == 2 and d["parse_failures"]["samples"] == 16
    assert d["throughput"]["items"] == 4 and d["throughput"]["samples"] == 16
  if "rewardbench" in datasets:
    # RB alone: the paper's columns are shown, but no Overall without PPE and RMB.
    assert results["paper"]["missing"] == ["PPE-P (ppe not evaluated)", "PPE-C (ppe not evaluated)",
                                           "RMB (rmb not evaluated)"]
    assert [r["Overall"] for r in results["paper"]["rows"]] == [None, None]
    assert "## Against the paper" in (tmp_path / "eval" / "report.md").read_text()
  else:
    assert results["paper"] is None
  assert json.loads((out / "results.json").read_text()) == results
  lines = (out / "judgements.jsonl").read_text().splitlines()
  assert len(lines) == 4 * len(names)

  # Second run: same config -> stored results, no model load, no judging.
  again = eval_stage.run(config, tmp_path)
  assert again == results and len(loads) == 1 and len(calls) == len(names)

  # A changed eval setting is evaluated again.
  config.eval.num_subsets = 3
  eval_stage.run(config, tmp_path)
  assert len(loads) == 2


def test_meta_model_reports_metarm_at_k(config, tmp_path, monkeypatch):
  """A saved meta RM (tiny model, hand-set head) scores every valid sample; MetaRM@k sits next to Voting@k."""
  import jax.numpy as jnp  # noqa: PLC0415

  from grm_jax.models.scalar_head import init_head_params  # noqa: PLC0415

  calls = []

  def fake_load(name, dtype="float32", **kw):
    with parallel.use_mesh(None):  # one device, whatever the stage's mesh
      m = models.from_config(models.tiny("llama"), eos_ids=(0,))
    m.tokenizer = ByteTokenizer()
    return m

  monkeypatch.setattr(models, "load", fake_load)
  monkeypatch.setattr(judges, "judge", scripted_judge(calls))
  meta_dir = tmp_path / "metarm"
  meta_dir.mkdir()
  base = fake_load("tiny:llama")
  params = init_head_params(base.params, base.config.hidden_size)
  params["head"] = {"kernel": jnp.linspace(-1.0, 1.0, base.config.hidden_size), "bias": jnp.asarray(0.1)}
  save_params(str(meta_dir / "final"), params)
  (meta_dir / "model.json").write_text(json.dumps({"name": "tiny:llama", "max_len": 256}))
  config.eval.datasets = "synthetic"
  config.eval.meta_model = str(meta_dir)
  results = eval_stage.run(config, tmp_path)
  d = results["datasets"]["synthetic"]
  meta = d["metrics"]["meta"]["accuracy"]
  print("Voting@4", d["metrics"]["voting"]["accuracy"], "MetaRM@4", meta, "meta RM", d["meta_rm"])
  assert 0.0 <= meta <= 1.0 and d["meta_rm"]["k_meta"] == 2 and d["meta_rm"]["scored"] == 14
  assert all(row["meta"] is not None and "meta_std" in row for row in d["scaling"])
  # The k_meta ablation: every sample kept is Voting@4, the default half is MetaRM@4 (both tie-expected).
  by = d["meta_rm"]["by_k_meta"]
  assert list(by) == ["1", "2", "3", "4"]
  assert by["4"] == pytest.approx(d["metrics"]["voting"]["accuracy_expected"])
  assert by["2"] == pytest.approx(d["metrics"]["meta"]["accuracy_expected"])
  out = tmp_path / "eval"
  assert "MetaRM@4" in (out / "report.md").read_text() and "MetaRM@4 by k_meta" in (out / "report.md").read_text()
  lines = [json.loads(x) for x in (out / "judgements.jsonl").read_text().splitlines()]
  metas = [s["meta"] for line in lines for s in line["samples"] if s["valid"]]
  assert len(metas) == 14 and len(set(metas)) > 1  # per-sample logits, not a constant


def _judgements(texts, perms, templates):
  scores, valid, mask, perm_arr = judge_texts_to_arrays(texts, perms)
  B, k = valid.shape
  return Judgements(scores=scores, valid=valid, response_mask=mask, perms=perm_arr, texts=texts,
                    tokens=[[[5]] * k] * B, logprobs=[[[-1.0]] * k] * B, prompt_ids=[[[1]] * k] * B,
                    prompt_tokens=np.ones((B, k), np.int32), generated_tokens=np.ones((B, k), np.int32),
                    stopped=np.ones((B, k), bool), templates=templates)


def test_meta_stats_leave_single_response_1_to_10_scores_out():
  """A 1-10 score of one response is no 0/1 label: its samples stay out of the meta RM's right/wrong numbers."""
  pair = PreferenceExample("q", ("a", "b"), rewards=(1.0, 0.0), source="s", id="p")
  single = PreferenceExample("q", ("a",), rewards=(1.0,), source="s", id="s")
  # The pair: sample 0 right (8 > 3), sample 1 wrong. The single item's score 1 equals its label 1 only by accident.
  j = _judgements([["\\boxed{8, 3}", "\\boxed{2, 9}"], ["\\boxed{1}", "\\boxed{1}"]], [[(0, 1)] * 2, [(0,)] * 2],
                  ["default", "default"])
  meta = np.array([[2.0, -1.0], [-5.0, -4.0]])
  got = eval_stage.meta_stats(meta, [pair, single], j)
  # Right {2.0} vs wrong {-1.0}: AUC 1 (counting the single item's two "right" samples would give 1/3).
  assert got["auc"] == 1.0 and got["accuracy"] == 1.0 and got["positives"] == 1
  assert got["checked"] == 2 and got["scored"] == 4 and got["mean_logit"] == -2.0
  assert got["single_excluded"] == 1 and got["single_excluded_samples"] == 2
  # With the 0/1 template the single item is checked: S_1 == r_1 on both samples.
  got = eval_stage.meta_stats(meta, [pair, single], dataclasses.replace(j, templates=["default", "single"]))
  assert got["checked"] == 4 and got["single_excluded"] == 0 and got["positives"] == 3
  assert got["auc"] == pytest.approx(1 / 3)


def test_baseline_keeps_every_metric_for_the_paper_columns(config, tmp_path, patched):
  """The before / after table reads the official metric; the paper's columns need PPE's both parts."""
  examples = [PreferenceExample("q", ("a", "b"), rewards=(1.0, 0.0), source="ppe/human-preference",
                                category="PPE Preference", id=str(i)) for i in range(3)]
  examples += [PreferenceExample("q", ("a", "b"), rewards=(1.0, 0.0), source="ppe/math", category="PPE Correctness",
                                 id=str(i)) for i in range(3, 6)]
  model = models.from_config(models.tiny("llama"))
  per_dataset = {"ppe": {"official_metric": "preference"}}
  got = eval_stage.compare_baseline("base", model, {"ppe": examples}, per_dataset, config, tmp_path)
  d = got["datasets"]["ppe"]
  assert got["policy"] == "base" and d["official_metric"] == "preference"
  assert d["k1"] == d["metrics"]["k1"]["preference"] and d["voting"] == d["metrics"]["voting"]["preference"]
  assert {"preference", "correctness", "correctness/math"} <= set(d["metrics"]["voting"])


def test_benchmark_of():
  assert metrics_lib.benchmark_of("rewardbench") == "rewardbench"
  assert metrics_lib.benchmark_of("rmb_bon") == "rmb"
  assert metrics_lib.benchmark_of("rm_bench") == "rm-bench"
  assert metrics_lib.benchmark_of("synthetic") == "accuracy"
  assert metrics_lib.benchmark_of("jsonl:/x.jsonl") == "accuracy"


class ByteTokenizer:
  """A stub chat tokenizer for the 256-token tiny model: bytes of the last 48 characters of the chat, and back."""

  def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
    text = "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" if add_generation_prompt else "")
    return list(text.encode("utf-8")[-48:])

  def decode(self, ids, skip_special_tokens=True):
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def test_run_with_real_judge_on_tiny_model(config, tmp_path, monkeypatch):
  """The real `judges.judge` and sampler on a random model: its texts do not parse, and the stage copes."""
  loads = []

  def fake_load(name, dtype="float32", **kw):
    loads.append(parallel.current_mesh())
    m = models.from_config(models.tiny("llama"), eos_ids=(0,))  # on the stage's mesh
    m.tokenizer = ByteTokenizer()
    return m

  monkeypatch.setattr(models, "load", fake_load)
  config.eval.datasets = "synthetic"
  config.eval.limit = 2
  config.eval.sampling.k = 2
  config.eval.sampling.max_new_tokens = 4
  results = eval_stage.run(config, tmp_path)
  assert (loads[0] is not None) == (jax.device_count() > 1)  # sharded over the 8 fake CPU devices in tests
  d = results["datasets"]["synthetic"]
  # 4 random tokens never make a verdict: every sample is a parse failure, so every item is a tie among its n
  # responses. Its tie-expected accuracy is then 1/n, whatever the drawn tie-breaks; a None or NaN fails.
  assert d["parse_failures"]["samples"] == 4 and d["parse_failures"]["invalid"] == 4
  assert d["throughput"]["generated_tokens"] > 0
  chance = np.mean([1.0 / ex.n for ex in common.select_items("synthetic", config, 2)])
  for col in ("k1", "voting"):
    m = d["metrics"][col]
    assert m["accuracy_expected"] == pytest.approx(chance), (col, m)
    assert m["accuracy"] in (0.0, 0.5, 1.0), (col, m)  # 2 items, each won or lost by its tie-break
  assert (tmp_path / "eval" / "report.md").exists()


def test_dataset_list_keeps_synthetic_options_together():
  config = ml_collections.ConfigDict({"eval": {"datasets": "synthetic:n=2,tasks=letter+upper, rewardbench,rmb"}})
  assert common.datasets_of(config) == ["synthetic:n=2,tasks=letter+upper", "rewardbench", "rmb"]
  config.eval.datasets = " , "
  with pytest.raises(ValueError, match="eval.datasets"):
    common.datasets_of(config)


def test_judge_template_reports_majority_and_token_prob(config, tmp_path, monkeypatch):
  """grm.template="judge": the judge's index picks are majority-voted, TokenProb@k sits beside them (probabilities
  from the tiny model's forward over the scripted judgements' real token ids), single-response items are left out
  and a data set of only single responses is skipped and named."""
  model = models.load("tiny:llama")  # random weights, the embedded model's tokenizer
  tok = model.tokenizer
  calls = []
  monkeypatch.setattr(models, "load", lambda name, **kw: model)

  def judge(m, examples, sampling, **kwargs):
    k, seed, template = sampling.k, sampling.seed, sampling.template
    calls.append({"n": [ex.n for ex in examples], "template": template})
    rng = np.random.default_rng(seed)
    texts, perms, tokens = [], [], []
    for b, ex in enumerate(examples):
      row_p = [tuple(int(i) for i in rng.permutation(ex.n)) for _ in range(k)]
      best = int(np.argmax(ex.rewards))
      # Mostly the true best's shown index; every third sample the first shown; the last sample of odd items garbage.
      row_t = ["no verdict" if s == k - 1 and b % 2 else
               f"Specific Criteria: c.\nAnalysis: a.\nScores: \\boxed{{{(p.index(best) if (b + s) % 3 else 0) + 1}}}"
               for s, p in enumerate(row_p)]
      texts.append(row_t)
      perms.append(row_p)
      tokens.append([tok.encode(t, add_special_tokens=False) for t in row_t])
    scores, valid, mask, perm_arr = judge_texts_to_arrays(texts, perms, templates=[template] * len(examples))
    B = len(examples)
    return Judgements(scores=scores, valid=valid, response_mask=mask, perms=perm_arr, texts=texts, tokens=tokens,
                      logprobs=[[[] for _ in range(k)] for _ in range(B)],
                      prompt_ids=[[[1, 2, 3] for _ in range(k)] for _ in range(B)],
                      prompt_tokens=np.full((B, k), 3, np.int32), generated_tokens=np.full((B, k), 9, np.int32),
                      stopped=np.ones((B, k), bool), templates=[template] * B, sampler_seconds=0.5, total_seconds=0.6)

  monkeypatch.setattr(judges, "judge", judge)
  config.grm.template = "judge"
  config.eval.datasets = "synthetic:n=1+2,synthetic:n=1"
  config.eval.limit = 8
  results = eval_stage.run(config, tmp_path)
  assert list(results["datasets"]) == ["synthetic:n=1+2"]
  assert "synthetic:n=1" in results["skipped_datasets"]
  assert all(c["template"] == "judge" and min(c["n"]) >= 2 for c in calls) and len(calls) == 1
  d = results["datasets"]["synthetic:n=1+2"]
  kept = d["num_items"]
  assert d["judge_skipped_single"] == 8 - kept and 0 < kept < 8
  assert set(d["metrics"]) == {"k1", "voting", "meta", "token_prob"}
  assert 0.0 <= d["metrics"]["token_prob"]["accuracy"] <= 1.0
  tp = d["token_prob"]
  assert tp["valid"] == 4 * kept - kept // 2 and tp["located"] == tp["valid"] and 0.0 < tp["mean_prob"] < 1.0
  report_md = (tmp_path / "eval" / "report.md").read_text()
  assert "TokenProb@4" in report_md and "**Skipped** `synthetic:n=1`" in report_md
  assert json.loads((tmp_path / "eval" / "results.json").read_text())["datasets"] == results["datasets"]


def test_every_column_and_scaling_row_carries_its_interval(config):
  """No model: scripted judgements of 8 pairs; each column has the tie-expected official value and its 95% bootstrap
  interval, each scaling row its band; the meta RM's AUC its standard error."""
  examples = [PreferenceExample("q", ("a", "b"), rewards=(1.0, 0.0), source="synthetic", id=str(i)) for i in range(8)]
  texts = [[("\\boxed{5, 5}" if (b + s) % 3 == 0 else "\\boxed{8, 3}" if b % 4 else "\\boxed{2, 9}")
            for s in range(4)] for b in range(8)]
  j = _judgements(texts, [[(0, 1)] * 4] * 8, ["default"] * 8)
  config.eval.bootstrap_resamples = 200
  meta = np.linspace(-1.0, 1.0, 32).reshape(8, 4)
  d = eval_stage.evaluate_dataset("synthetic", examples, j, config, meta)
  assert d["official_metric"] == "accuracy"
  for col in ("k1", "voting", "meta"):
    m = d["metrics"][col]
    lo, hi = m["accuracy_ci95"]
    assert 0.0 <= lo <= m["accuracy_expected"] <= hi <= 1.0, (col, m)
  # k=1 (sample 0): items 0, 3, 6 tie (1/2 each), item 4 prefers the wrong response, 1, 2, 5, 7 the right one.
  assert d["metrics"]["k1"]["accuracy_expected"] == pytest.approx((4 + 3 * 0.5) / 8)
  for row in d["scaling"]:
    assert row["voting_ci95"][0] <= row["voting_expected"] <= row["voting_ci95"][1]
    assert "meta_ci95" in row and "meta_expected" in row
  assert d["meta_rm"]["auc_se"] > 0
  config.eval.bootstrap_resamples = 0
  d = eval_stage.evaluate_dataset("synthetic", examples, j, config)
  assert "accuracy_ci95" not in d["metrics"]["k1"] and "accuracy_expected" in d["metrics"]["k1"]
  assert "voting_ci95" not in d["scaling"][0]


def test_several_baselines_and_per_item_outcomes(config, tmp_path, patched):
  """eval.baseline="base,rft" judges both again on the same items (the policy itself is no baseline); every column
  keeps its per-item outcomes, whose mean is the column's tie-expected accuracy."""
  config.eval.datasets, config.eval.policy, config.eval.baseline = "synthetic", "grpo", "base,rft,grpo"
  for stage in ("rft", "grpo"):
    save_params(str(tmp_path / stage / "final"), models.from_config(models.tiny("llama")).params)
  results = eval_stage.run(config, tmp_path)
  assert [b["policy"] for b in results["baselines"]] == ["base", "rft"]
  assert results["baseline"] == results["baselines"][0]
  d = results["datasets"]["synthetic"]
  outcomes = d["outcomes"]
  assert set(outcomes) == {"ids", "k1", "voting", "voting@1", "voting@2", "voting@4"}
  assert len(outcomes["ids"]) == 4 and len(set(outcomes["ids"])) == 4
  for column in ("k1", "voting"):
    assert np.mean(outcomes[column]) == pytest.approx(d["metrics"][column]["accuracy_expected"])
  for row in d["scaling"]:
    assert "voting_items" not in row
    assert np.mean(outcomes[f"voting@{row['k']}"]) == pytest.approx(row["voting_expected"], abs=1e-6)
  for b in results["baselines"]:
    got = b["datasets"]["synthetic"]["outcomes"]
    assert got["ids"] == outcomes["ids"] and len(got["k1"]) == 4
  report = (tmp_path / "eval" / "report.md").read_text()
  assert "`base` params vs `grpo` params" in report and "`rft` params vs `grpo` params" in report


def test_realmistake_scores_an_item_by_the_mean_of_its_valid_samples(config):
  """ReaLMistake's AUC compares items: an item's score is the mean of its valid samples (no valid one: 5.5, the middle
  of 1-10), at k=1, Voting@k, MetaRM@k and the scaling points. Five single-response items, k = 4 ("x": unparseable):
  errors E1 [3, 3, 3, 3] and E2 [8, 8, x, x], correct G1 [8, 8, 8, 8], G2 [9, x, x, x], G3 [x, x, x, x]. Means
  3, 8 | 8, 9, 5.5: error scores -3, -8 | -8, -9, -5.5, AUC = (1 + 1 + 1 + 0.5 + 1 + 0) / 6 = 0.75. Sums (the old
  votes) 12, 16 | 32, 9, 0 give 2/6. At k=1 (first samples 3, 8 | 8, 9, x) the means give 0.75 too, sums 3.5/6;
  MetaRM@4 (equal logits: the first 2 valid) keeps the same means, 0.75; sums 2.5/6."""
  x = "no verdict"
  plan = [(1, ["3", "3", "3", "3"]), (1, ["8", "8", x, x]), (0, ["8"] * 4), (0, ["9", x, x, x]), (0, [x] * 4)]
  examples = [PreferenceExample("q", ("r",), rewards=(float(1 - err),), source="realmistake/math/gpt", category="math",
                                id=str(i), metadata={"label": err}) for i, (err, _) in enumerate(plan)]
  texts = [[t if t == x else f"Scores: \\boxed{{{t}}}" for t in samples] for _, samples in plan]
  j = _judgements(texts, [[(0,)] * 4] * 5, ["default"] * 5)
  assert j.valid.sum() == 11
  config.eval.bootstrap_resamples = 50
  meta = np.zeros((5, 4))
  d = eval_stage.evaluate_dataset("realmistake", examples, j, config, meta)
  assert d["official_metric"] == "auc"
  for column in ("k1", "voting", "meta"):
    m = d["metrics"][column]
    assert m["auc"] == pytest.approx(0.75) and m["auc_expected"] == pytest.approx(0.75), (column, m)
  k4 = d["scaling"][-1]
  assert k4["k"] == 4 and k4["voting"] == pytest.approx(0.75) and k4["meta"] == pytest.approx(0.75)
  assert k4["voting_expected"] == pytest.approx(0.75) and k4["meta_expected"] == pytest.approx(0.75)
  assert d["meta_rm"]["by_k_meta"]["4"] == pytest.approx(0.75) and d["meta_rm"]["by_k_meta"]["2"] == pytest.approx(0.75)


def test_ppe_correctness_gets_its_tie_expected_value_and_interval(config):
  """PPE has two paper columns (Table 2): preference is the official metric, and correctness gets a tie-expected value
  and a 95% interval too, in every column, and the report shows them. Correctness items (all 4 samples alike): MATH a
  tie (1/2) and a right pick (1), GPQA a wrong pick (0) and a tie (1/2): subset means 0.75 and 0.25, mean 0.5."""
  def item(i, category, source, text):
    return PreferenceExample("q", ("a", "b"), rewards=(1.0, 0.0), source=source, category=category, id=str(i)), text

  right, wrong, tie = "\\boxed{8, 3}", "\\boxed{2, 9}", "\\boxed{5, 5}"
  rows = [item(i, "PPE Preference", "ppe/human-preference", right) for i in range(4)]
  rows += [item(4, "PPE Correctness", "ppe/MATH", tie), item(5, "PPE Correctness", "ppe/MATH", right),
           item(6, "PPE Correctness", "ppe/GPQA", wrong), item(7, "PPE Correctness", "ppe/GPQA", tie)]
  examples = [ex for ex, _ in rows]
  j = _judgements([[text] * 4 for _, text in rows], [[(0, 1)] * 4] * 8, ["default"] * 8)
  config.eval.bootstrap_resamples = 200
  d = eval_stage.evaluate_dataset("ppe", examples, j, config)
  assert d["official_metric"] == "preference"
  for column in ("k1", "voting"):
    m = d["metrics"][column]
    assert m["preference_expected"] == 1.0 and m["n_correctness_subsets"] == 2.0
    assert m["correctness_expected"] == pytest.approx(0.5), (column, m)
    lo, hi = m["correctness_ci95"]
    assert 0.0 <= lo < 0.5 < hi <= 1.0, (column, m)
  md = report.render_markdown({"model": "m", "config": {}, "datasets": {"ppe": d}})
  assert "| correctness, tie-expected | 50.0 | 50.0 |" in md
  lo, hi = d["metrics"]["k1"]["correctness_ci95"]
  assert f"({100 * lo:.1f}–{100 * hi:.1f})" in md


@pytest.fixture
def hub_rewardbench(tmp_path, monkeypatch):
  """An offline Hugging Face cache holding RewardBench at its pinned commit and at tests' COMMIT (4 pairs)."""
  import huggingface_hub.constants  # noqa: PLC0415

  from grm_jax.data import hub  # noqa: PLC0415
  from tests.data.test_hub_data import COMMIT, _pair, cached  # noqa: PLC0415

  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
  rows = [_pair(i) for i in range(4)]
  for commit in (hub.REVISIONS["allenai/reward-bench"], COMMIT):
    cached(tmp_path / "hub", "allenai/reward-bench", {"data/filtered-00000-of-00001.parquet": rows}, commit=commit)
  return hub.REVISIONS["allenai/reward-bench"], COMMIT


def test_hub_revisions_name_the_commit_of_each_data_set_read_from_the_hub(config, tmp_path, hub_rewardbench):
  pinned, other = hub_rewardbench
  config.benchmark_root = str(tmp_path / "no-benchmarks")
  assert eval_stage.hub_revisions(config, ["rewardbench", "synthetic"]) == {
    "rewardbench": {"allenai/reward-bench": pinned}}
  config.hub_revisions = f"rewardbench={other}"
  assert eval_stage.hub_revisions(config, ["rewardbench"]) == {"rewardbench": {"allenai/reward-bench": other}}
  (tmp_path / "no-benchmarks" / "rewardbench").mkdir(parents=True)
  assert eval_stage.hub_revisions(config, ["rewardbench"]) == {}  # read from benchmark_root: no hub revision


# Slow tier: two runs of the stage (~30 s of compiles on 2 CPU cores); the test above covers the function it records.
@pytest.mark.slow
def test_results_record_the_hub_revision_of_each_hub_benchmark(config, tmp_path, patched, hub_rewardbench):
  pinned, other = hub_rewardbench
  config.benchmark_root = str(tmp_path / "no-benchmarks")  # RewardBench comes from the hub cache
  config.eval.datasets = "rewardbench,synthetic"
  results = eval_stage.run(config, tmp_path / "w")
  stored = json.loads((tmp_path / "w" / "eval" / "results.json").read_text())
  assert results["hub_revisions"] == stored["hub_revisions"] == {"rewardbench": {"allenai/reward-bench": pinned}}
  config.hub_revisions = f"allenai/reward-bench={other}"
  again = eval_stage.run(config, tmp_path / "w")  # another revision is other data: the stage runs again
  assert again["hub_revisions"] == {"rewardbench": {"allenai/reward-bench": other}}
  assert len(patched[0]) == 4
