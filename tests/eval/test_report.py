"""The evaluation report: files written, JSON round trip, valid PNGs, position bias on hand-made cases."""

import json

import numpy as np
import pytest

from grm_jax.data.example import PreferenceExample
from grm_jax.eval import report
from grm_jax.judges.model_judge import Judgements, judge_texts_to_arrays

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_judgements(texts, perms, ranges=None, sampler_seconds=2.0):
  scores, valid, mask, perm_arr = judge_texts_to_arrays(texts, perms, ranges)
  b, k = valid.shape
  gen = np.full((b, k), 10, np.int32)
  return Judgements(
    scores=scores,
    valid=valid,
    response_mask=mask,
    perms=perm_arr,
    texts=[list(t) for t in texts],
    tokens=[[[1] * 10 for _ in range(k)] for _ in range(b)],
    logprobs=[[[-0.1] * 10 for _ in range(k)] for _ in range(b)],
    prompt_ids=[[[1, 2, 3] for _ in range(k)] for _ in range(b)],
    prompt_tokens=np.full((b, k), 3, np.int32),
    generated_tokens=gen,
    stopped=np.ones((b, k), bool),
    templates=["default"] * b,
    sampler_seconds=sampler_seconds,
    total_seconds=sampler_seconds + 1.0,
  )


def first_shown_wins(perms):
  """A judge that always gives the response shown first 9 and the others 2 (texts in shown order)."""
  return [[f"Scores: \\boxed{{{', '.join(['9'] + ['2'] * (len(p) - 1))}}}" for p in item] for item in perms]


def test_position_bias_first_always_preferred():
  perms = [[(0, 1), (1, 0), (1, 0), (0, 1)], [(1, 0), (0, 1), (0, 1), (0, 1)]]
  j = make_judgements(first_shown_wins(perms), perms)
  pb = report.position_bias(j.scores, j.valid, j.perms, j.response_mask)
  assert set(pb) == {"n=2"}
  assert pb["n=2"]["decisive"] == 8 and pb["n=2"]["ties"] == 0
  assert pb["n=2"]["first_rate"] == 1.0
  assert pb["n=2"]["rates"] == [1.0, 0.0]
  assert pb["n=2"]["expected"] == 0.5


def test_position_bias_content_judge_is_unbiased_and_ties_excluded():
  # The judge always prefers original response 0 (content, not position); perms balance positions.
  perms = [[(0, 1), (1, 0)], [(1, 0), (0, 1)]]
  texts = [["Scores: \\boxed{8, 3}", "Scores: \\boxed{3, 8}"], ["Scores: \\boxed{3, 8}", "Scores: \\boxed{5, 5}"]]
  j = make_judgements(texts, perms)
  pb = report.position_bias(j.scores, j.valid, j.perms, j.response_mask)["n=2"]
  # Samples 0,1 of item 0 and sample 0 of item 1 choose original 0, shown first, second, second.
  assert pb["decisive"] == 3 and pb["ties"] == 1
  assert pb["counts"] == [1, 2]
  assert pb["first_rate"] == pytest.approx(1 / 3)


def test_position_bias_n3_and_invalid_skipped():
  perms = [[(2, 0, 1), (1, 2, 0), (0, 1, 2)]]
  texts = [["Scores: \\boxed{1, 9, 1}", "Scores: \\boxed{1, 9, 1}", "no scores here"]]
  j = make_judgements(texts, perms)
  pb = report.position_bias(j.scores, j.valid, j.perms, j.response_mask)
  assert pb["n=3"]["counts"] == [0, 2, 0]
  assert pb["n=3"]["samples"] == 2
  assert pb["n=3"]["expected"] == pytest.approx(1 / 3)


def _results(j):
  stats = report.judgement_stats(j)
  return {
    "model": "random-tiny",
    "config": {"seed": 0, "model": {"name": "random-tiny", "dtype": "float32"}, "eval": {"k": 4, "limit": 2}},
    "devices": "1 x cpu",
    "datasets": {
      "rewardbench": {
        "benchmark": "rewardbench",
        "official_metric": "overall",
        "num_items": 2,
        "k": 4,
        "metrics": {
          "k1": {"overall": 0.5, "n": 2.0, "subset/alpacaeval-easy": 0.5, "section/Chat": float("nan")},
          "voting": {"overall": 1.0, "n": 2.0, "subset/alpacaeval-easy": 1.0, "section/Chat": 1.0},
          "meta": {"overall": 1.0, "n": 2.0, "subset/alpacaeval-easy": 1.0, "section/Chat": 1.0},
        },
        "scaling": [
          {"k": 1, "voting": 0.5, "voting_std": 0.1, "meta": 0.5, "meta_std": 0.1, "subsets": 2.0},
          {"k": 2, "voting": 0.75, "voting_std": 0.1, "meta": 0.8, "meta_std": 0.0, "subsets": 2.0},
          {"k": 4, "voting": 1.0, "voting_std": 0.0, "meta": 1.0, "meta_std": 0.0, "subsets": 2.0},
        ],
        **stats,
      }
    },
    "totals": {k: stats[k] for k in ("parse_failures", "throughput")},
    "seconds": 3.5,
  }


def test_write_report_files(tmp_path):
  perms = [[(0, 1), (1, 0), (1, 0), (0, 1)], [(1, 0), (0, 1), (0, 1), (0, 1)]]
  texts = first_shown_wins(perms)
  texts[1][3] = "I cannot decide."
  j = make_judgements(texts, perms)
  results = _results(j)
  examples = [
    PreferenceExample("q1", ("a", "b"), (1.0, 0.0), source="rewardbench/alpacaeval-easy", id="1"),
    PreferenceExample("q2", ("c", "d"), (0.0, 1.0), source="realmistake/math/gpt4", id="2"),
  ]
  paths = report.write_report(tmp_path, results, {"rewardbench": (examples, j)})
  for name in ("report.md", "scaling.png", "position_bias.png", "results.json", "judgements.jsonl"):
    assert (tmp_path / name).exists(), name
  for png in ("scaling.png", "position_bias.png"):
    data = (tmp_path / png).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
  # JSON: strict (NaN -> null) and round-trips to the jsonable form.
  text = (tmp_path / "results.json").read_text()
  assert "NaN" not in text
  loaded = json.loads(text)
  assert loaded == report.jsonable(results)
  assert loaded["datasets"]["rewardbench"]["metrics"]["k1"]["section/Chat"] is None
  assert loaded["datasets"]["rewardbench"]["parse_failures"] == {"invalid": 1, "samples": 8, "rate": 0.125}
  assert loaded["datasets"]["rewardbench"]["throughput"]["items_per_s"] == pytest.approx(1.0)
  assert loaded["datasets"]["rewardbench"]["throughput"]["tokens_per_s"] == pytest.approx(40.0)
  assert loaded["datasets"]["rewardbench"]["position_bias"]["n=2"]["first_rate"] == 1.0
  md = (tmp_path / "report.md").read_text()
  for needle in ("random-tiny", "Voting@4", "MetaRM@4", "**overall**", "Position bias", "scaling.png", "12.5"):
    assert needle in md, needle
  rows = [json.loads(line) for line in (tmp_path / "judgements.jsonl").read_text().splitlines()]
  assert len(rows) == 2 and paths["judgements"].endswith("judgements.jsonl")
  assert rows[0]["samples"][1]["text"] == texts[0][1] and rows[0]["samples"][1]["perm"] == [1, 0]
  assert rows[0]["samples"][1]["scores"] == [2, 9] and rows[0]["samples"][1]["valid"]
  assert rows[1]["text_withheld"] and all(s["text"] is None for s in rows[1]["samples"])
  assert not rows[1]["samples"][3]["valid"]


def test_report_without_meta_or_pairs(tmp_path):
  perms = [[(0,), (0,)]]
  j = make_judgements([["Scores: \\boxed{7}", "Scores: \\boxed{3}"]], perms)
  results = _results(j)
  d = results["datasets"]["rewardbench"]
  d["metrics"]["meta"] = None
  d["scaling"] = [{k: v for k, v in row.items() if not k.startswith("meta")} for row in d["scaling"]]
  assert d["position_bias"] == {}
  report.write_report(tmp_path, results)
  md = (tmp_path / "report.md").read_text()
  assert "MetaRM@4" not in md
  assert (tmp_path / "position_bias.png").read_bytes().startswith(PNG_MAGIC)
  assert not (tmp_path / "judgements.jsonl").exists()


def test_report_renders_intervals(tmp_path):
  """The official metric reads "value (lo–hi)", its tie-expected value has a row, the scaling table its CI."""
  perms = [[(0, 1), (1, 0), (1, 0), (0, 1)], [(1, 0), (0, 1), (0, 1), (0, 1)]]
  results = _results(make_judgements(first_shown_wins(perms), perms))
  results["config"]["eval"]["bootstrap_resamples"] = 1000
  d = results["datasets"]["rewardbench"]
  d["metrics"]["k1"].update(overall_expected=0.5, overall_ci95=[0.25, 0.75])
  d["metrics"]["voting"].update(overall_expected=0.9375, overall_ci95=[0.8125, 1.0])
  d["meta_rm"] = {"k_meta": 2, "checked": 6, "auc": 0.8, "auc_se": 0.0936, "accuracy": 0.75, "positives": 3}
  for row in d["scaling"]:
    row.update(voting_expected=row["voting"], voting_ci95=[row["voting"] - 0.2, min(1.0, row["voting"] + 0.2)])
  report.write_report(tmp_path, results)
  md = (tmp_path / "report.md").read_text()
  assert "| **overall** | 50.0 (25.0–75.0) | 100.0 (81.2–100.0) | 100.0 |" in md
  assert "| overall, tie-expected | 50.0 | 93.8 | – |" in md
  assert "overall_ci95" not in md and "overall_expected" not in md
  assert "percentile bootstrap interval over items" in md and "1000 resamples" in md
  assert "| rewardbench | 2 | 75.0 | 10.0 | 75.0 | 55.0–95.0 | 80.0 | 0.0 | – | – |" in md
  assert "ROC-AUC 80.0 ± 9.4 (standard error, Hanley & McNeil 1982)" in md
  assert (tmp_path / "scaling.png").read_bytes().startswith(PNG_MAGIC)
  loaded = json.loads((tmp_path / "results.json").read_text())
  assert loaded["datasets"]["rewardbench"]["metrics"]["k1"]["overall_ci95"] == [0.25, 0.75]


def test_figures_leave_pyplot_alone(tmp_path):
  """Report figures are drawn outside pyplot: a notebook's own figures and backend stay as they were."""
  import matplotlib  # noqa: PLC0415
  import matplotlib.pyplot as plt  # noqa: PLC0415

  backend, before = matplotlib.get_backend(), plt.get_fignums()
  report.plot_scaling({"datasets": {}}, str(tmp_path / "s.png"))
  report.plot_position_bias({"datasets": {}}, str(tmp_path / "p.png"))
  assert plt.get_fignums() == before and matplotlib.get_backend() == backend
  assert (tmp_path / "s.png").stat().st_size > 0 and (tmp_path / "p.png").stat().st_size > 0
