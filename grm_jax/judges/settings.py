"""How a stage samples judgements, as one typed object: `Sampling`.

Every sampling stage (RFT, the RL-data filter, GRPO's rollouts, the meta RM's policy samples, evaluation, the
held-out check during training) has a `sampling` subgroup built by `configs.sampling()`; `Sampling.from_config`
reads it once, with the run's GRM template and the stage's named random stream (`grm_jax.seeds`), and the judge
takes the object whole. The checks are one function, so `configs.validate` and the stage reject the same values with the
same message.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from grm_jax import seeds
from grm_jax.grm.prompts import GRM_TEMPLATES, TEMPLATES

# The keys of a `sampling` config group and their types (configs.sampling() builds it).
_CASTS = {"k": int, "temperature": float, "top_p": float, "top_k": int, "max_new_tokens": int, "batch_items": int}
KEYS = tuple(_CASTS)


@dataclasses.dataclass(frozen=True)
class Sampling:
  """k judgements per item and how they are drawn.

  Attributes:
    k: samples per item (each with its own shuffle of the responses).
    temperature, top_p, top_k, max_new_tokens: the sampler's settings (`sampling.generate`; temperature 0 = greedy).
    batch_items: items per sampler call (bounds host memory and the prompts the engine holds at once); 0 = all.
    seed: the seed of everything random in one judge call (shuffles and sampler keys).
    template: the template of items with n >= 2 (`prompts.GRM_TEMPLATES`).
    single_template: the template of n = 1 items: "single" (the 0/1 training template) or "default" (the 1-10
      template the paper uses for single responses at evaluation, e.g. ReaLMistake).
  """

  k: int = 1
  temperature: float = 0.5
  top_p: float = 1.0
  top_k: int = 0
  max_new_tokens: int = 512
  batch_items: int = 0
  seed: int = 0
  template: str = "default"
  single_template: str = "single"

  def __post_init__(self):
    _check("Sampling", dataclasses.asdict(self))

  @classmethod
  def from_config(cls, config: Any, group: str, stream: str, *index: int, k: int | None = None,
                  single_template: str = "single") -> Sampling:
    """The settings of `config.<group>` (a dotted path to a `sampling` subgroup, e.g. "rft.sampling"), seeded from
    `config.seed` by the named `stream` (and `index`, e.g. a GRPO step). `k` replaces the group's own (GRPO: G)."""
    node = config
    for part in group.split("."):
      node = node[part]
    values = {key: node[key] for key in KEYS if key in node}
    if k is not None:
      values["k"] = k
    missing = [key for key in KEYS if key not in values]
    if missing:
      raise ValueError(f"config {group}: missing sampling keys {missing}")
    out = {key: _CASTS[key](values[key]) for key in KEYS}
    out.update(seed=seeds.seed_for(int(config.seed), stream, *index), single_template=single_template,
               template=str(config.grm.template) if "grm" in config else "default")
    _check(f"config {group}", out)
    return cls(**out)

  def replace(self, **changes) -> Sampling:
    return dataclasses.replace(self, **changes)

  def greedy(self) -> Sampling:
    """One greedy sample per item (the held-out check during training)."""
    return self.replace(k=1, temperature=0.0)

  def items_per_call(self, num_items: int) -> int:
    return self.batch_items or max(num_items, 1)


def _check(where: str, v: dict[str, Any]) -> None:
  """ValueError naming `where.<key>` for a value the sampler or the judge would reject later."""
  if v["k"] < 1:
    raise ValueError(f"{where}.k={v['k']}: samples per item must be >= 1")
  if not v["temperature"] >= 0:
    raise ValueError(f"{where}.temperature={v['temperature']}: must be >= 0 (0 = greedy)")
  if not 0 < v["top_p"] <= 1:
    raise ValueError(f"{where}.top_p={v['top_p']}: must be in (0, 1]")
  if v["top_k"] < 0:
    raise ValueError(f"{where}.top_k={v['top_k']}: must be >= 0 (0 = off)")
  if v["max_new_tokens"] < 1:
    raise ValueError(f"{where}.max_new_tokens={v['max_new_tokens']}: must be >= 1")
  if v["batch_items"] < 0:
    raise ValueError(f"{where}.batch_items={v['batch_items']}: items per sampler call, >= 1 (0 = all at once)")
  if v["template"] not in GRM_TEMPLATES:
    raise ValueError(f"{where}: template {v['template']!r} is not one of {GRM_TEMPLATES} (config grm.template)")
  if v["single_template"] not in TEMPLATES:
    raise ValueError(f"{where}: single_template {v['single_template']!r} is not one of {TEMPLATES}")
