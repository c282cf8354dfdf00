"""The paper's Overall (mean of RB, PPE-P, PPE-C, RMB), its Table 2 rows, and our rows beside them."""

import pytest

from grm_jax.eval import paper, report


def _bench(benchmark, k1, voting, meta=None, k=4):
  return {"benchmark": benchmark, "k": k, "metrics": {"k1": k1, "voting": voting, "meta": meta},
          "meta_rm": {"k_meta": 2} if meta else None}


# DeepSeek-GRM-27B greedy in Table 2, as our fractions: 86.0 / 64.7 / 59.8 / 69.0.
RB = {"overall": 0.860, "n_sections": 4.0}
PPE = {"preference": 0.647, "correctness": 0.598, "n_correctness_subsets": 5.0}
RMB = {"overall": 0.690, "n_parts": 4.0}


def test_overall_is_the_mean_of_the_four():
  assert paper.overall({"RB": 86.0, "PPE-P": 64.7, "PPE-C": 59.8, "RMB": 69.0}) == pytest.approx(69.875)
  assert paper.overall({"RB": 86.0, "PPE-P": 64.7, "PPE-C": None, "RMB": 69.0}) is None
  assert paper.overall({"RB": 86.0, "PPE-P": 64.7, "RMB": 69.0}) is None
  assert paper.overall({"RB": float("nan"), "PPE-P": 64.7, "PPE-C": 59.8, "RMB": 69.0}) is None


def test_table2_overall_is_recomputed_from_its_four_columns():
  """Each stored row's printed Overall, recomputed here from the row's own four columns (their plain mean, without
  `paper.overall`): equal to the printed one decimal up to the rounding of the printed cells (69.875 -> 69.9; the
  paper averaged unrounded values, so DeepSeek-BTRM-27B's 68.65 is printed 68.6). `paper.overall` gives that mean.
  A column of TABLE2 off by more than 0.4, or an Overall off by more than 0.1, breaks it (PAPER_TABLE2 pins every
  cell)."""
  assert len(paper.TABLE2) == 8
  for row in paper.TABLE2:
    mean = (row["RB"] + row["PPE-P"] + row["PPE-C"] + row["RMB"]) / 4
    assert abs(mean - row["Overall"]) <= 0.05 + 1e-9, (row, mean)
    assert paper.overall(row) == pytest.approx(mean, abs=1e-12)


# Table 2 of arXiv 2504.02495v3 ("Overall results of different methods and models on RM benchmarks"), the cells of the
# columns grm_jax reports, in the paper's order, written once here from the paper: (RB, PPE-P, PPE-C, RMB, Overall).
# The equal-Overall checks above cannot see two columns of a row swapped, or a row under another model's name.
PAPER_TABLE2 = {
  ("LLM-as-a-Judge", "greedy"): (83.4, 64.2, 58.8, 64.8, 67.8),
  ("DeepSeek-BTRM-27B", "greedy"): (81.7, 68.3, 66.7, 57.9, 68.6),
  ("CLoud-Gemma-2-27B", "greedy"): (82.0, 67.1, 62.4, 63.4, 68.7),
  ("DeepSeek-PairRM-27B", "greedy"): (87.1, 65.8, 64.8, 58.2, 69.0),
  ("DeepSeek-GRM-27B-RFT", "greedy"): (84.5, 64.1, 59.6, 67.0, 68.8),
  ("DeepSeek-GRM-27B", "greedy"): (86.0, 64.7, 59.8, 69.0, 69.9),
  ("DeepSeek-GRM-27B", "Voting@32"): (88.5, 65.3, 60.4, 69.7, 71.0),
  ("DeepSeek-GRM-27B", "MetaRM@32 (k_meta=16)"): (90.4, 67.2, 63.2, 70.3, 72.8),
}


def test_table2_cells_are_the_papers():
  assert paper.SOURCE == "arXiv 2504.02495v3, Table 2"
  got = {(r["model"], r["setting"]): tuple(r[c] for c in paper.COLUMNS) for r in paper.TABLE2}
  assert paper.COLUMNS == ("RB", "PPE-P", "PPE-C", "RMB", "Overall")
  assert got == PAPER_TABLE2
  # The paper's headline ordering (§5.1): inference-time scaling lifts DeepSeek-GRM-27B's Overall, MetaRM most.
  grm = [got["DeepSeek-GRM-27B", s][-1] for s in ("greedy", "Voting@32", "MetaRM@32 (k_meta=16)")]
  assert grm == sorted(grm) and grm[-1] == max(row[-1] for row in got.values())


def test_comparison_with_all_four_benchmarks():
  datasets = {
    "rewardbench": _bench("rewardbench", RB, {"overall": 0.9, "n_sections": 4.0}, meta=RB),
    "ppe": _bench("ppe", PPE, {"preference": 0.7, "correctness": 0.6, "n_correctness_subsets": 5.0}, meta=PPE),
    "rmb": _bench("rmb", RMB, {"overall": 0.7, "n_parts": 4.0}, meta=RMB),
    "realmistake": _bench("realmistake", {"auc": 0.7}, {"auc": 0.8}, meta={"auc": 0.8}),
  }
  baseline = {"policy": "base", "datasets": {
    name: {"metrics": {"k1": d["metrics"]["k1"], "voting": d["metrics"]["k1"]}} for name, d in datasets.items()}}
  got = paper.comparison(datasets, baseline, policy="grpo")
  assert got["datasets"] == {"rewardbench": "rewardbench", "ppe": "ppe", "rmb": "rmb"} and got["missing"] == []
  rows = {r["row"]: r for r in got["rows"]}
  assert list(rows) == ["ours k=1", "ours Voting@4", "ours MetaRM@4 (k_meta=2)", "baseline k=1", "baseline Voting@4"]
  assert rows["ours k=1"]["Overall"] == pytest.approx(0.69875) and rows["ours k=1"]["missing"] == []
  assert rows["ours Voting@4"]["Overall"] == pytest.approx((0.9 + 0.7 + 0.6 + 0.7) / 4)
  assert rows["ours k=1"]["PPE-P"] == 0.647 and rows["ours k=1"]["PPE-C"] == 0.598
  assert rows["ours MetaRM@4 (k_meta=2)"]["Overall"] == pytest.approx(0.69875)
  assert rows["baseline Voting@4"]["policy"] == "base" and rows["baseline Voting@4"]["Overall"] == pytest.approx(
    0.69875)
  assert got["paper"] == [dict(r) for r in paper.TABLE2] and got["source"] == "arXiv 2504.02495v3, Table 2"


def test_no_overall_when_a_benchmark_is_missing():
  datasets = {"rewardbench": _bench("rewardbench", RB, RB), "rmb": _bench("rmb", RMB, RMB)}
  got = paper.comparison(datasets)
  assert got["missing"] == ["PPE-P (ppe not evaluated)", "PPE-C (ppe not evaluated)"]
  for r in got["rows"]:
    assert r["Overall"] is None and r["RB"] == 0.86 and r["RMB"] == 0.69 and r["PPE-P"] is None
  assert [r["row"] for r in got["rows"]] == ["ours k=1", "ours Voting@4"]  # no meta, no baseline


def test_a_partly_scored_benchmark_is_missing_too():
  """RMB from its BoN files alone (2 of 4 parts) or PPE without correctness items is not the paper's number."""
  datasets = {"rewardbench": _bench("rewardbench", RB, RB), "ppe": _bench("ppe", {"preference": 0.6}, PPE),
              "rmb": _bench("rmb", {"overall": 0.5, "n_parts": 2.0}, RMB)}
  rows = {r["row"]: r for r in paper.comparison(datasets)["rows"]}
  assert rows["ours k=1"]["Overall"] is None and rows["ours k=1"]["RMB"] is None
  assert rows["ours k=1"]["missing"] == ["PPE-C (no correctness in ppe)", "RMB (rmb has 2 of 4 parts)"]
  assert rows["ours Voting@4"]["Overall"] == pytest.approx(0.69875)


def test_overall_uses_the_tie_expected_values():
  """Where a column carries "<metric>_expected" (every eval column does), the cells and Overall are those: here each
  drawn value is 0.1 off its tie-expected one, so Overall from the drawn values would be 0.1 off too."""
  def with_expected(m, keys):
    return {**m, **{k: m[k] - 0.1 for k in keys}, **{f"{k}_expected": m[k] for k in keys}}

  datasets = {"rewardbench": _bench("rewardbench", with_expected(RB, ["overall"]), RB),
              "ppe": _bench("ppe", with_expected(PPE, ["preference", "correctness"]), PPE),
              "rmb": _bench("rmb", with_expected(RMB, ["overall"]), RMB)}
  rows = {r["row"]: r for r in paper.comparison(datasets)["rows"]}
  k1 = rows["ours k=1"]
  assert (k1["RB"], k1["PPE-P"], k1["PPE-C"], k1["RMB"]) == (0.86, 0.647, 0.598, 0.69)
  assert k1["Overall"] == pytest.approx(0.69875) and k1["ties"] == "expected"
  # Results without tie-expected values (older runs) fall back to the drawn ones, and the report says so.
  assert rows["ours Voting@4"]["ties"] == "random" and rows["ours Voting@4"]["Overall"] == pytest.approx(0.69875)
  md = "\n".join(paper.render(paper.comparison(datasets)))
  assert "ours Voting@4: these results carry no tie-expected values" in md and "ours k=1: these" not in md
  assert "| **ours k=1** | 86.0 | 64.7 | 59.8 | 69.0 | 69.9 |" in md


def test_an_incomplete_ppe_set_is_kept_out_of_overall():
  """PPE-Correctness averages five subsets (paper Table 9): three of them are not the paper's number, so no PPE-C
  and no Overall, with a note that says why (as RewardBench's sections and RMB's parts)."""
  part = {**PPE, "n_correctness_subsets": 3.0}
  datasets = {"rewardbench": _bench("rewardbench", RB, RB), "ppe": _bench("ppe", part, PPE),
              "rmb": _bench("rmb", RMB, RMB)}
  rows = {r["row"]: r for r in paper.comparison(datasets)["rows"]}
  assert rows["ours k=1"]["PPE-C"] is None and rows["ours k=1"]["Overall"] is None
  assert rows["ours k=1"]["PPE-P"] == 0.647  # the preference set is whole
  assert rows["ours k=1"]["missing"] == ["PPE-C (ppe has 3 of 5 correctness subsets)"]
  assert rows["ours Voting@4"]["Overall"] == pytest.approx(0.69875)
  md = "\n".join(paper.render(paper.comparison(datasets)))
  assert "No Overall for ours k=1: missing PPE-C (ppe has 3 of 5 correctness subsets)." in md
  assert "| **ours k=1** | 86.0 | 64.7 | – | 69.0 | – |" in md


def test_no_block_without_a_paper_benchmark():
  assert paper.comparison({"synthetic": _bench("accuracy", {"accuracy": 1.0}, {"accuracy": 1.0})}) is None
  assert paper.comparison({"realmistake": _bench("realmistake", {"auc": 0.7}, {"auc": 0.7})}) is None
  assert paper.render(None) == []


def test_render_puts_our_rows_beside_the_papers():
  datasets = {name: _bench(name, m, m) for name, m in (("rewardbench", RB), ("ppe", PPE), ("rmb", RMB))}
  md = "\n".join(paper.render(paper.comparison(datasets, policy="grpo")))
  assert "| row | RB | PPE-P | PPE-C | RMB | Overall |" in md
  assert "| **ours k=1** (`grpo`) | 86.0 | 64.7 | 59.8 | 69.0 | 69.9 |" in md
  assert "| paper: DeepSeek-GRM-27B, greedy | 86.0 | 64.7 | 59.8 | 69.0 | 69.9 |" in md
  assert "| paper: DeepSeek-GRM-27B, MetaRM@32 (k_meta=16) | 90.4 | 67.2 | 63.2 | 70.3 | 72.8 |" in md
  assert "| paper: LLM-as-a-Judge, greedy | 83.4 | 64.2 | 58.8 | 64.8 | 67.8 |" in md
  assert "No Overall" not in md
  # Without PPE: our row has dashes and the report says what is missing; the paper rows stay.
  del datasets["ppe"]
  md = "\n".join(paper.render(paper.comparison(datasets)))
  assert "| **ours k=1** | 86.0 | – | – | 69.0 | – |" in md
  assert "No Overall: not evaluated in this run: PPE-P (ppe not evaluated), PPE-C (ppe not evaluated)." in md
  assert "| paper: DeepSeek-GRM-27B, Voting@32 | 88.5 | 65.3 | 60.4 | 69.7 | 71.0 |" in md


def test_report_markdown_includes_the_table():
  results = {"model": "m", "config": {}, "datasets": {}, "paper": paper.comparison(
    {"rewardbench": _bench("rewardbench", RB, RB)}, policy="rft")}
  md = report.render_markdown(results)
  assert "## Against the paper (arXiv 2504.02495v3, Table 2)" in md
  assert "| **ours Voting@4** (`rft`) | 86.0 | – | – | – | – |" in md
  assert "Against the paper" not in report.render_markdown({"model": "m", "config": {}, "datasets": {}})
