"""Claims over seeds: per-item outcomes, the two-level bootstrap, the verdict rule, and the claims stage on results
files written by hand (no model)."""

import json

import numpy as np
import pytest

from grm_jax import configs
from grm_jax.data import PreferenceExample
from grm_jax.eval import claims, metrics
from grm_jax.stages import claims as claims_stage


def pair(i, best=0, n=2):
  rewards = tuple(1.0 if r == best else 0.0 for r in range(n))
  return PreferenceExample("q", tuple("abcd"[:n]), rewards, source="syn", id=str(i))


def test_item_outcomes_count_a_tie_as_one_over_its_size():
  examples = [pair(0), pair(1, best=1), pair(2, n=3), PreferenceExample("q", ("a", "b"), (1.0, 1.0), id="tie")]
  votes = [[9.0, 1.0], [5.0, 5.0], [7.0, 7.0, 7.0], [3.0, 1.0]]
  # right; a 2-way tie holding the best; a 3-way tie holding it; no unique best in the truth
  assert metrics.item_outcomes(examples, [votes]) == [1.0, 0.5, pytest.approx(1 / 3, abs=1e-6), None]
  # Averaged over tables (a scaling point's subsets): item 0 right in one of two
  assert metrics.item_outcomes(examples[:1], [[[9.0, 1.0]], [[1.0, 9.0]]]) == [0.5]


def test_interval_of_constant_differences_is_that_constant():
  lo, hi, p = claims.seed_interval([np.full(20, 0.25), np.full(30, 0.25), np.full(10, 0.25)])
  assert (lo, hi, p) == pytest.approx((0.25, 0.25, 0.0))
  assert claims.verdict(lo, hi) == "holds"
  assert claims.verdict(*claims.seed_interval([np.full(5, -0.5), np.full(5, -0.5)])[:2]) == "does not hold"
  assert claims.seed_interval([np.zeros(4), np.zeros(4)])[2] == 1.0  # no difference at all: no evidence


def test_interval_one_seed_is_the_t_interval_over_its_items():
  # One seed: a t-interval over the 60 items, mean 0.5, sd 0.5 * sqrt(60 / 59), t(0.975, 59) = 2.0010.
  x = np.array([1.0, 0.0] * 30)
  lo, hi, _ = claims.seed_interval([x])
  half = 2.000995 * 0.5 * np.sqrt(60 / 59) / np.sqrt(60)
  assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-5)


def test_interval_over_three_seeds_is_the_t_interval_with_two_degrees_of_freedom():
  # Items agree perfectly within each seed, but the seeds disagree: mean 0.1, sd 0.2, t(0.975, 2) = 4.3027.
  per_seed = [np.full(50, 0.3), np.full(50, -0.1), np.full(50, 0.1)]
  lo, hi, p = claims.seed_interval(per_seed)
  half = 4.302653 * 0.2 / np.sqrt(3)
  assert (lo, hi) == pytest.approx((0.1 - half, 0.1 + half), abs=1e-6)
  t = 0.1 / (0.2 / np.sqrt(3))
  assert p == pytest.approx(1 - t / np.sqrt(2 + t * t))  # two-sided tail of t with 2 df in closed form
  assert claims.verdict(lo, hi) == "inconclusive"
  # The example, "RFT alone > base (k=1)" per seed +25.0 / +9.4 / +21.9 points (8, 3, 7 of 32 items):
  # the bootstrap said (+7.3, +30.2), holds; the t-interval (-1.8, +39.3) contains 0.
  lo, hi, _ = claims.seed_interval([np.array([8 / 32]), np.array([3 / 32]), np.array([7 / 32])])
  assert (round(100 * lo, 1), round(100 * hi, 1)) == (-1.8, 39.3)


def test_holm_adjusts_step_down_and_caps_at_one():
  # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
  assert claims.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert claims.holm([0.5, 0.9]) == [1.0, 1.0]
  assert claims.holm([]) == []


def test_family_verdict_follows_the_adjusted_p_and_the_sign():
  assert claims.family_verdict(0.1, 0.049) == "holds"
  assert claims.family_verdict(-0.1, 0.01) == "does not hold"
  assert claims.family_verdict(0.1, 0.05) == "inconclusive"  # not below alpha
  assert claims.family_verdict(0.1, 0.07, alpha=0.1) == "holds"


def test_score_marks_claims_that_hold_alone_but_not_over_the_family():
  # Three claims, per seed d - 0.05, d, d + 0.05 (sd 0.05, t = d / 0.0289 with 2 df); p alone 0.020, 0.020, 0.56:
  # Holm multiplies the two small ones by 3 and 2 (both 0.060 after the running max), so neither holds over the
  # table although each one's own interval excludes 0.
  rows = [{"difference": d} for d in (0.2, 0.2, 0.02)]
  values = [[np.array([x]) for x in (d - 0.05, d, d + 0.05)] for d in (0.2, 0.2, 0.02)]
  claims.score(rows, values)
  assert [r["verdict_single"] for r in rows] == ["holds", "holds", "inconclusive"]
  assert [r["verdict"] for r in rows] == ["inconclusive"] * 3
  t = 0.2 / (0.05 / np.sqrt(3))
  assert rows[0]["p"] == pytest.approx(1 - t / np.sqrt(2 + t * t))
  assert rows[0]["p_holm"] == pytest.approx(3 * rows[0]["p"])


def test_verdict_rule():
  assert claims.verdict(0.01, 0.2) == "holds"
  assert claims.verdict(-0.2, -0.01) == "does not hold"
  assert claims.verdict(-0.01, 0.2) == "inconclusive"
  assert claims.verdict(0.0, 0.2) == "inconclusive"  # the interval touches 0: not above it
  assert claims.verdict(float("nan"), float("nan")) == "inconclusive"


def test_claim_list_and_system_names():
  listed = claims.claims(8, "seed{seed}/eval", "seed{seed}_np/eval", "seed{seed}/btrm")
  by_id = {c["id"]: c for c in listed}
  assert [by_id[i]["b"] for i in ("1.1", "1.2", "1.3")] == [f"seed{{seed}}/eval:voting@{k}" for k in (1, 2, 4)]
  assert by_id["1"]["a"] == "seed{seed}/eval:voting@8" and by_id["2"]["a"] == "seed{seed}/eval:meta"
  assert by_id["3.3"] == {"id": "3.3", "claim": "RFT alone > base (k=1)", "a": "seed{seed}/eval@rft:k1",
                          "b": "seed{seed}/eval@base:k1", "a_label": "RFT alone, k=1", "b_label": "base model, k=1"}
  assert (by_id["1"]["a_label"], by_id["2"]["a_label"]) == ("SPCT GRM, Voting@8", "SPCT GRM, MetaRM@8")
  assert (by_id["4.2"]["b_label"], by_id["5"]["b_label"]) == ("GRM w/o principles, Voting@8", "Bradley-Terry RM")
  assert by_id["5"]["b"] == "seed{seed}/btrm:k1"
  assert [c["id"] for c in claims.claims(6, "g{seed}", "n{seed}", "b{seed}")][:5] == ["1", "1.1", "1.2", "1.3", "2"]
  assert claims.parse_system("seed{seed}/eval@rft:voting@8") == ("seed{seed}/eval", "rft", "voting@8")
  with pytest.raises(ValueError, match="is not '<results folder>"):
    claims.parse_system("eval")


def test_systems_on_other_items_are_refused():
  with pytest.raises(ValueError, match="not scored on the same items"):
    claims.paired({"a/1": 1.0, "a/2": 0.0}, {"a/1": 1.0, "a/3": 0.0}, "claim 9")


# --------------------------------------------------------------------------------------------------
# The stage on hand-written results.


def _eval_results(k1, voting, meta, base, rft, ids):
  """An evaluation's results.json with per-item outcomes: each argument a list of per-item values."""
  scaling = [{"k": k, "voting": float(np.mean(voting)), "voting_expected": float(np.mean(voting))} for k in (1, 2, 4)]
  outcomes = {"ids": ids, "k1": k1, "voting": voting, "meta": meta, "voting@1": k1, "voting@2": voting,
              "voting@4": voting, "meta@4": meta}

  def baseline(policy, values):
    return {"policy": policy, "datasets": {"syn": {"official_metric": "accuracy",
                                                   "outcomes": {"ids": ids, "k1": values, "voting": values}}}}

  return {"policy": "grpo", "datasets": {"syn": {"k": 4, "official_metric": "accuracy", "scaling": scaling,
                                                 "outcomes": outcomes}},
          "baseline": baseline("base", base), "baselines": [baseline("base", base), baseline("rft", rft)]}


def _write(path, results):
  path.mkdir(parents=True)
  (path / "results.json").write_text(json.dumps(results))
  (path / "done.json").write_text(json.dumps({"fingerprint": "x"}))


def test_claims_stage_on_written_results(tmp_path):
  ids = [f"i{i}" for i in range(8)]
  ones, zeros, half = [1.0] * 8, [0.0] * 8, [1.0, 0.0] * 4
  for s in (0, 1):
    _write(tmp_path / f"seed{s}" / "eval", _eval_results(k1=half, voting=ones, meta=ones, base=zeros, rft=half,
                                                          ids=ids))
    _write(tmp_path / f"seed{s}_np" / "eval", {"datasets": {"syn": {"k": 4, "outcomes": {
      "ids": ids, "k1": half, "voting": [1.0] * 7 + [None]}}}})  # an item with no unique best drops out of both
    _write(tmp_path / f"seed{s}" / "btrm", {"datasets": {"syn": {"k": 1, "outcomes": {"ids": ids, "k1": half}}}})
  c = configs.base(("claims",))
  c.claims = configs.claims()
  c.claims.seeds = "0,1"
  with pytest.raises(ValueError, match="not scored on the same items"):
    claims_stage.run(c, str(tmp_path))  # 4.2 pairs 8 items with 7
  for s in (0, 1):
    _write_np = tmp_path / f"seed{s}_np" / "eval" / "results.json"
    _write_np.write_text(json.dumps({"datasets": {"syn": {"k": 4, "outcomes": {"ids": ids, "k1": half,
                                                                                "voting": half}}}}))
  claims_stage.run(c, str(tmp_path))
  out = json.loads((tmp_path / "claims" / "results.json").read_text())
  verdicts = {r["id"]: r["verdict"] for r in out["claims"]}
  assert verdicts["1"] == "holds"  # voting@4 (all right) vs voting@1 (half)
  assert verdicts["2"] == "inconclusive"  # meta = voting: the difference is exactly 0
  assert verdicts["3.2"] == "holds" and verdicts["3.4"] == "holds"  # voting 1 > rft 0.5 > base 0
  assert verdicts["4.1"] == "inconclusive" and verdicts["4.2"] == "holds" and verdicts["5"] == "holds"
  assert out["systems"]["seed{seed}/eval@base:voting"]["per_seed"] == {"0": 0.0, "1": 0.0}
  assert out["claims"][0]["per_seed"] == {"0": 0.5, "1": 0.5} and out["k"] == 4
  report = (tmp_path / "claims" / "report.md").read_text()
  assert ("| 1 | Voting@k rises with k: Voting@4 > Voting@1 | +50.0 (+50.0 to +50.0) | +50.0, +50.0 | <0.001 | holds "
          "| <0.001 | **holds** |") in report, report
  assert (tmp_path / "claims" / "claims.png").stat().st_size > 0
  # RFT from the synthetic critic (one fixed principle line): the principles claims say they test the template only
  c.rft = configs.rft()
  c.rft.sampler = "synthetic-critic"
  claims_stage.run(c, str(tmp_path))
  out = json.loads((tmp_path / "claims" / "results.json").read_text())
  assert {r["id"]: r["claim"] for r in out["claims"]}["4.1"].endswith(f"(k=1; {claims.TEMPLATE_ONLY})")


def test_claims_config_errors_name_the_key(tmp_path):
  c = configs.base(("claims",))
  c.claims = configs.claims()
  c.claims.seeds = "0,x"
  with pytest.raises(ValueError, match="claims.seeds='0,x'"):
    claims_stage.run(c, str(tmp_path))
  c.claims.seeds, c.claims.grm = "0", "eval"
  with pytest.raises(ValueError, match=r"claims.grm='eval': the folder must name the seed"):
    claims_stage.run(c, str(tmp_path))
  c.claims.grm = "seed{seed}/eval"
  with pytest.raises(FileNotFoundError, match="seed0/eval/results.json does not exist"):
    claims_stage.run(c, str(tmp_path))


def test_rescore_from_stored_per_seed_means():
  # A results.json written by the earlier bootstrap: its interval for 3.3 held; from the per-seed means alone the
  # t-interval contains 0, and the labels of the principles claims say they test the template only.
  system = {"label": "x", "per_seed": {"0": 0.5, "1": 0.5, "2": 0.5}, "mean": 0.5, "ci95": [0.5, 0.5]}
  rft = {"id": "3.3", "claim": "RFT alone > base (k=1)", "per_seed": {"0": 8 / 32, "1": 3 / 32, "2": 7 / 32},
         "difference": 0.1875, "ci95": [0.073, 0.302], "verdict": "holds", "items": 96}
  principles = {"id": "4.1", "claim": "with principles > without principles (k=1)",
                "per_seed": {"0": 0.1, "1": 0.1, "2": 0.1}, "difference": 0.1, "ci95": [0.1, 0.1], "verdict": "holds",
                "items": 96}
  old = {"seeds": [0, 1, 2], "systems": {"x": system}, "claims": [rft, principles]}
  new = claims.rescore(old, fixed_principles=True)
  assert [round(100 * x, 1) for x in new["claims"][0]["ci95"]] == [-1.8, 39.3]
  assert new["claims"][0]["verdict"] == new["claims"][0]["verdict_single"] == "inconclusive"
  assert new["claims"][1]["verdict"] == "holds" and new["claims"][1]["p_holm"] == 0.0  # no spread: certain
  assert new["claims"][1]["claim"] == f"with principles > without principles (k=1; {claims.TEMPLATE_ONLY})"
  assert new["systems"]["x"]["ci95"] == [0.5, 0.5] and old["claims"][0]["verdict"] == "holds"  # input untouched
  with pytest.raises(ValueError, match="rescoring needs two seeds"):
    claims.rescore({**old, "seeds": [0]})


def test_principles_claims_are_labelled_template_only_with_a_fixed_principle_critic():
  plain = {c["id"]: c["claim"] for c in claims.claims(8, "g{seed}", "n{seed}", "b{seed}")}
  fixed = {c["id"]: c["claim"] for c in claims.claims(8, "g{seed}", "n{seed}", "b{seed}", fixed_principles=True)}
  assert fixed["4.1"] == f"with principles > without principles (k=1; {claims.TEMPLATE_ONLY})"
  assert fixed["4.2"] == f"with principles > without principles (Voting@8; {claims.TEMPLATE_ONLY})"
  assert plain["4.1"] == "with principles > without principles (k=1)"
  assert {k: v for k, v in fixed.items() if not k.startswith("4.")} == {k: v for k, v in plain.items()
                                                                        if not k.startswith("4.")}
