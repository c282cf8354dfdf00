"""GRPO loss, gradient, advantages and metrics against golden numbers computed by TRL's own GRPOTrainer.

The JSON is written by golden/make_grpo_trl.py (it runs TRL's `_generate_and_score_completions` and `_compute_loss`;
see its docstring), so this test needs neither torch nor trl. Each case maps our settings to TRL's GRPOConfig:

  ours (losses.grpo_loss mode)  TRL loss_type  note
  seq_mean_token_mean           grpo           mean over rows of each row's token mean
  token_mean                    bnpo, dapo     equal for one micro-batch on one process (dapo normalises by the
                                               generation batch's token count, bnpo by the micro-batch's)
  seq_mean_token_sum_norm       dr_grpo        our max_len = TRL max_completion_length (GrpoUpdater passes
                                               grpo.sampling.max_new_tokens + 1)
  group_advantages scale group/batch/none = scale_rewards group/batch/none, with ddof=1 (TRL's nanstd is
    Bessel-corrected) and eps=1e-4 (TRL's std + 1e-4)
  kl "k3" = TRL's k3 with use_bias_correction_kl=False (TRL 1.16's default, True, multiplies it by pi/pi_old; k1 and
    k2 have no TRL counterpart); epsilon_high None (config 0) = TRL epsilon_high None

Cases whose `expect` is not "equal" differ on purpose and are checked to differ in the documented way:
  row_denominator: with a row that has no loss tokens (TRL's mask_truncated_completions), TRL's grpo / dr_grpo
    divide by all B rows, ours by the rows with tokens.
  kl_importance_weighted: TRL's default importance-weighted k3, which ours does not implement.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.train import losses as L

GOLDEN = json.loads((Path(__file__).parent / "golden" / "grpo_trl.json").read_text())
INPUTS = {k: np.asarray(v, np.float32) for k, v in GOLDEN["inputs"].items()
          if k in ("rewards", "logp", "old_logp", "ref_logp", "mask")}
CASES = {c["name"]: c for c in GOLDEN["cases"]}
RTOL = 1e-6


def _ours(o, logp, adv, mask):
  """Our loss on the golden log-probs, with the case's settings."""
  ref = jnp.asarray(INPUTS["ref_logp"]) if o["beta"] > 0 else None
  return L.grpo_loss(logp, jnp.asarray(INPUTS["old_logp"]), ref, adv, mask, epsilon=o["epsilon"],
                     epsilon_high=o["epsilon_high"], beta=o["beta"], kl=o["kl"], mode=o["mode"], max_len=o["max_len"])


def _rel(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
               / max(float(np.max(np.abs(np.asarray(b, np.float64)))), 1e-30))


def _run(case):
  o = case["ours"]
  exp = case["expected"]
  adv = L.group_advantages(jnp.asarray(INPUTS["rewards"]), ddof=o["adv_ddof"], scale=o["adv_scale"], eps=o["adv_eps"])
  mask = jnp.asarray(exp["mask"], jnp.float32)
  logp = jnp.asarray(INPUTS["logp"])
  flat_adv = adv.reshape(-1)
  loss, metrics = _ours(o, logp, flat_adv, mask)
  grad = jax.grad(lambda lp: _ours(o, lp, flat_adv, mask)[0].value)(logp)
  # How our loss relates to TRL's: equal, or (row_denominator) TRL's is ours * (rows with tokens) / B.
  scale = float(jnp.sum(jnp.sum(mask, -1) > 0)) / mask.shape[0] if case["expect"] == "row_denominator" else 1.0
  return adv, loss, metrics, grad, scale


def test_golden_file_is_from_trl_and_exercises_the_clip_bounds():
  assert GOLDEN["versions"]["trl"] == "1.16.0"
  assert {c["trl"]["loss_type"] for c in GOLDEN["cases"]} == {"grpo", "bnpo", "dapo", "dr_grpo"}
  assert {c["ours"]["mode"] for c in GOLDEN["cases"]} == set(L.AGG_MODES)
  for c in GOLDEN["cases"]:
    assert c["expected"]["clip_ratio_low"] > 0 and c["expected"]["clip_ratio_high"] > 0, c["name"]
    assert c["expect"] in ("equal", "row_denominator", "kl_importance_weighted")
    assert c["trl"]["use_bias_correction_kl"] == (c["expect"] == "kl_importance_weighted")
  # TRL builds the mask from the completion lengths we gave it; junk sits in the padding positions.
  assert np.array_equal(np.asarray(CASES["grpo_k3_group"]["expected"]["mask"], np.float32), INPUTS["mask"])
  assert np.all(INPUTS["logp"][INPUTS["mask"] == 0] == -7.0)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["expect"] != "kl_importance_weighted"])
def test_loss_matches_trl(name):
  case = CASES[name]
  exp = case["expected"]
  adv, loss, metrics, grad, scale = _run(case)
  np.testing.assert_allclose(np.asarray(adv), np.asarray(exp["advantages"]), rtol=RTOL, atol=1e-6)
  assert abs(float(loss.value) * scale - exp["loss"]) <= RTOL * abs(exp["loss"]), (float(loss.value), exp["loss"])
  # d loss / d logp per token, padding included (zero on both sides).
  assert _rel(np.asarray(grad) * scale, exp["grad_logp"]) <= 2 * RTOL
  assert abs(float(metrics["clip_fraction"].value) - exp["clip_ratio_region"]) <= 1e-7
  if "kl" in exp:
    assert abs(float(metrics["kl"].value) - exp["kl"]) <= RTOL * exp["kl"]
  else:
    assert "kl" not in metrics


def test_known_differences_are_real():
  """The documented differences are real: ours is not accidentally equal to TRL there."""
  for name in ("grpo_empty_row", "dr_grpo_empty_row"):
    _, loss, _, _, scale = _run(CASES[name])
    assert scale == 11 / 12
    assert float(loss.value) > CASES[name]["expected"]["loss"] * (1 + 1e-3)
  # TRL's default importance-weighted KL: same clipping and advantages, another KL value and loss.
  plain, weighted = CASES["grpo_k3_group"], CASES["grpo_k3_is_weighted_kl"]
  assert plain["ours"] == weighted["ours"]
  _, loss, metrics, _, _ = _run(weighted)
  assert abs(float(loss.value) - plain["expected"]["loss"]) <= RTOL * plain["expected"]["loss"]
  assert abs(float(loss.value) - weighted["expected"]["loss"]) > 1e-3 * weighted["expected"]["loss"]
  assert abs(float(metrics["kl"].value) - weighted["expected"]["kl"]) > 1e-3
