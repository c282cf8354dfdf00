"""The baselines table: systems' results side by side, flagged when their items differ."""

import pytest

from grm_jax import configs
from grm_jax.eval import comparison


def _results(policy, k1, voting, meta=None, token_prob=None, limit=32, seed=0, items=32, baseline=None):
  metrics = {"k1": {"accuracy": k1, "n": 32.0}, "voting": {"accuracy": voting}}
  if meta is not None:
    metrics["meta"] = {"accuracy": meta}
  if token_prob is not None:
    metrics["token_prob"] = {"accuracy": token_prob}
  out = {"policy": policy, "config": {"seed": seed, "eval": {"limit": limit, "subsample": "random"}},
         "datasets": {"syn": {"benchmark": "accuracy", "official_metric": "accuracy", "k": 4, "num_items": items,
                              "metrics": metrics}}}
  if baseline:
    out["baseline"] = {"policy": "base", "datasets": {"syn": {"official_metric": "accuracy", "k1": baseline[0],
                                                              "voting": baseline[1]}}}
  return out


def test_rows_columns_and_render():
  spct = _results("grpo", 0.75, 0.8125, meta=0.71875, baseline=(0.40625, 0.40625))
  btrm = {"policy": "btrm", "config": spct["config"], "datasets": {"syn": {
    "benchmark": "accuracy", "official_metric": "accuracy", "k": 1, "num_items": 32, "metrics": {"k1": {
      "accuracy": 0.625}}}}}
  judge = _results("grpo", 0.5, 0.59375, token_prob=0.625)
  table = comparison.compare([("base GRM", spct, "baseline"), ("SPCT GRM", spct, ""), ("BT RM", btrm, ""),
                              ("pairwise judge", judge, "")])
  rows = {r["system"]: r for r in table["datasets"]["syn"]}
  assert rows["base GRM"] == {"system": "base GRM", "policy": "base", "official_metric": "accuracy", "k": 4,
                              "num_items": 32, "k1": 0.40625, "voting": 0.40625}
  assert rows["SPCT GRM"]["meta"] == 0.71875 and "token_prob" not in rows["SPCT GRM"]
  assert rows["BT RM"] == {"system": "BT RM", "policy": "btrm", "official_metric": "accuracy", "k": 1,
                           "num_items": 32, "k1": 0.625}
  assert rows["pairwise judge"]["token_prob"] == 0.625 and table["mismatched"] == []
  text = "\n".join(comparison.render(table, {"btrm": 95.0}))
  assert "| system | params | items | k=1 | Voting@4 | MetaRM@4 | TokenProb@4 |" in text
  assert "| SPCT GRM | grpo | 32 | 75.0 | 81.2 | 71.9 | – |" in text
  assert "| BT RM | btrm | 32 | 62.5 | – | – | – |" in text
  assert "| pairwise judge | grpo | 32 | 50.0 | 59.4 | – | 62.5 |" in text
  assert "btrm 95" in text and "Not the same items" not in text


def test_other_items_are_flagged():
  a = _results("grpo", 0.75, 0.8)
  table = comparison.compare([("a", a, ""), ("b", _results("grpo", 0.7, 0.7, limit=16, items=16), ""),
                              ("c", _results("grpo", 0.7, 0.7, seed=1), "")])
  assert table["mismatched"] == ["b", "c"]
  assert "**Not the same items**: b, c" in "\n".join(comparison.render(table))


def test_system_specs():
  assert comparison.parse_systems("SPCT GRM=eval; base=eval@baseline;judge=judge/eval/;RFT=eval@rft") == [
    ("SPCT GRM", "eval", ""), ("base", "eval", "baseline"), ("judge", "judge/eval", ""), ("RFT", "eval", "rft")]
  for bad, why in (("eval", "not 'label=results folder'"), ("a=eval@", "name a baseline"),
                   ("a=eval;a=btrm", "used twice"), ("", "no system")):
    with pytest.raises(ValueError, match=why):
      comparison.parse_systems(bad)


def test_variant_config_overrides_by_type_and_names_bad_keys():
  config = configs.base(("rft",))
  config.rft = configs.rft()
  config.variants = {"v": "grm.template=compact;rft.sampling.k=5;rft.sampling.temperature=0.7;rft.hinted=false;"
                          "rft.general_data="}
  v = configs.variant_config(config, "v")
  assert (v.grm.template, v.rft.sampling.k, v.rft.sampling.temperature, v.rft.hinted) == ("compact", 5, 0.7, False)
  assert config.grm.template == "default" and config.rft.sampling.k == 3  # the base config is untouched
  assert configs.split_stage("v/rft") == ("v", "rft") and configs.split_stage("rft") == (None, "rft")
  for text, why in (("rft.nope=1", "unknown key 'rft.nope'"), ("rft.sampling.k=x", "'x' is not a int"),
                    ("rft=1", "unknown key 'rft'"), ("grm.template", "not 'dotted.key=value'")):
    config.variants.v = text
    with pytest.raises(ValueError, match=why):
      configs.variant_config(config, "v")
  with pytest.raises(ValueError, match=r"no variant 'w'"):
    configs.variant_config(config, "w")


def test_a_baseline_is_picked_by_its_params():
  spct = _results("grpo", 0.75, 0.8125, baseline=(0.40625, 0.40625))
  rft = {"policy": "rft", "datasets": {"syn": {"official_metric": "accuracy", "k1": 0.6875, "voting": 0.71875}}}
  spct["baselines"] = [spct["baseline"], rft]
  table = comparison.compare([("base", spct, "baseline"), ("RFT", spct, "rft"), ("base again", spct, "base")])
  rows = {r["system"]: (r["policy"], r["k1"], r["voting"]) for r in table["datasets"]["syn"]}
  assert rows == {"base": ("base", 0.40625, 0.40625), "RFT": ("rft", 0.6875, 0.71875),
                  "base again": ("base", 0.40625, 0.40625)}
  assert comparison.baseline_part(spct, "grpo") is None
