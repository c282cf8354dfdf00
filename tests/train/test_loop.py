"""The training loop's stop on non-finite steps: skipped steps in a row end the stage with an error that names it."""

import jax.numpy as jnp
import pytest

from grm_jax.train.errors import TrainingDiverged
from grm_jax.train.loop import run_loop


def _run(out_dir, skipped, max_nonfinite):
  def step_fn(state, step):
    return {"n": state["n"] + 1}, {"loss": float("nan") if skipped[step] else 1.0, "skipped": float(skipped[step])}

  return run_loop(name="toy", state={"n": jnp.zeros((), jnp.int32)}, step_fn=step_fn, num_steps=len(skipped),
                  out_dir=str(out_dir), save_every=1, keep=1, progress=False, max_nonfinite=max_nonfinite)


def test_skipped_steps_in_a_row_stop_the_stage_naming_it(tmp_path):
  with pytest.raises(TrainingDiverged) as e:
    _run(tmp_path / "a", [0, 1, 1, 1, 0], 3)
  message = str(e.value)
  assert "toy: step 4" in message and "3 steps in a row" in message and "Last good checkpoint: step 3" in message


def test_isolated_skips_go_on_and_zero_never_stops(tmp_path):
  skipped = [0, 1, 0, 1, 1, 0]
  _, history = _run(tmp_path / "b", skipped, 3)
  assert [h["skipped"] for h in history] == skipped
  _, history = _run(tmp_path / "c", [1, 1, 1, 1], 0)
  assert len(history) == 4
