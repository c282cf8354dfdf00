"""An optimizer config group for tests: `configs.optim()` (where every default lives) with a constant schedule and no
warmup unless a test asks for them, so a test's learning rate is the rate every step sees."""

from grm_jax import configs


def optim(learning_rate: float = 1e-3, **overrides) -> dict:
  return {**configs.optim(learning_rate).to_dict(), "schedule": "constant", "warmup_steps": 0, **overrides}
