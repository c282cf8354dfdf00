"""Named random streams: every random choice of a run is drawn from the run's `config.seed` and the name of what it
is for, so two uses never share draws by accident and a reader finds every stream here.

Each stream has a fixed tag. Its seed is `seed + tag` (`seed_for(seed, name)`), or with an index (a GRPO step),
`numpy.random.default_rng([seed, *index, tag])`'s first draw. The tags are the values the recorded runs used
(docs/results), so naming them changed no result; a new stream takes a tag no other stream uses.
"""

from __future__ import annotations

import numpy as np

STREAMS: dict[str, int] = {
  "rft": 0,  # RFT's N non-hinted samples per item (paper §3.2)
  "rft_hinted": 1,  # RFT's hinted sample per item
  "metarm_policy": 2,  # the meta RM's training judgements sampled from the policy
  "grpo_rollouts": 7,  # GRPO's G rollouts per item, one draw per step
  "rl_filter": 11,  # the RL-data filter's samples (paper App. C.1)
  "rft_general_mix": 17,  # which general chats RFT mixes into SFT
  "lora_init": 23,  # fresh LoRA adapters' A matrices (B starts at zero)
  "lora_dropout": 29,  # LoRA dropout's masks in a training step, one key per step and micro-batch
  "eval": 0,  # evaluation: the k samples per item, the random item subset, the vote's tie-break, the held-out check
}


def seed_for(seed: int, stream: str, *index: int) -> int:
  """The integer seed of `stream` (with `index`: one draw per index, e.g. per GRPO step) under the run's `seed`."""
  if stream not in STREAMS:
    raise KeyError(f"unknown random stream {stream!r}; streams are {sorted(STREAMS)}")
  if index:
    return int(rng(seed, stream, *index).integers(2**31 - 1))
  return int(seed) + STREAMS[stream]


def rng(seed: int, stream: str, *index: int) -> np.random.Generator:
  """A numpy Generator for `stream`: `default_rng([seed, *index, tag])`."""
  if stream not in STREAMS:
    raise KeyError(f"unknown random stream {stream!r}; streams are {sorted(STREAMS)}")
  return np.random.default_rng([int(seed), *(int(i) for i in index), STREAMS[stream]])
