"""RMB Best-of-N for pairwise systems: n-1 pairs of the best response against each other one, all of which must be
right (arXiv 2504.02495v3 §5.1: the paper's baselines follow the benchmark's own protocol; only the pointwise GRM
scores the whole list in one prompt).

A pairwise system (the LLM-as-a-Judge baseline, `grm.template` "judge" / "compact_judge") is asked about each pair
on its own: `bon_pairs` splits every list of n > 2 responses with a single best into the n-1 pair items the judge
sees, and `PairProtocol.fold` turns the votes of those pairs back into one vote row per original item whose argmax
is the best response exactly when the best won every one of its pairs. Every metric, interval and per-item outcome
is then computed on the original items, as for any other system.

A pair whose two votes tie (Voting@k with an even k, or no sample parsed) is decided by a draw, as the paper's
shuffle-then-argmax decides a tie. The draws come from `seed` and are the same for every column of a run (k = 1,
Voting@k, TokenProb@k, each scaling subset), so a folded row has no tie left: its tie-expected value is exact for
the pairs that did not tie and the draw's outcome for those that did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from grm_jax.data.example import PreferenceExample


@dataclasses.dataclass(frozen=True)
class PairProtocol:
  """What the judge sees (`pairs`) and how its votes fold back onto `items`."""

  items: tuple[PreferenceExample, ...]
  pairs: tuple[PreferenceExample, ...]
  spans: tuple[tuple[int, int], ...]  # item i's rows in `pairs`: pairs[a:b]
  split: tuple[bool, ...]  # item i was split into best-vs-other pairs (else its row in `pairs` is the item itself)
  draws: np.ndarray  # float [len(pairs)] in [0, 1): a tied pair goes to the best response when its draw < 0.5

  @property
  def num_split(self) -> int:
    return sum(self.split)

  def fold(self, votes: Any) -> np.ndarray:
    """float [len(items), n_max] item votes from the pairs' votes ([len(pairs), >= 2], padded as the judge's).

    A split item's row: 1 for the best response if it won all its pairs, else 0; 1 for each other response that
    beat the best in its pair, else 0. So the item is right (unique argmax = best) exactly when every pair is
    right. An item that was not split keeps its own row."""
    v = np.asarray(votes, np.float64)
    if v.ndim != 2 or v.shape[0] != len(self.pairs):
      raise ValueError(f"pair votes of shape {v.shape}: expected [{len(self.pairs)}, n] (one row per judged pair)")
    n_max = max(ex.n for ex in self.items)
    out = np.zeros((len(self.items), n_max))
    for i, (ex, (a, b), split) in enumerate(zip(self.items, self.spans, self.split, strict=True)):
      if not split:
        out[i, : ex.n] = v[a, : ex.n]
        continue
      best_wins = (v[a:b, 0] > v[a:b, 1]) | ((v[a:b, 0] == v[a:b, 1]) & (self.draws[a:b] < 0.5))
      others = [o for o in range(ex.n) if o != ex.best]
      out[i, ex.best] = float(best_wins.all())
      out[i, others] = (~best_wins).astype(np.float64)
    return out


def bon_pairs(examples: Sequence[PreferenceExample], seed: int) -> PairProtocol:
  """The pair protocol for `examples`: each item of n > 2 responses with a single best becomes n-1 pair items
  (best first, then the other response, in the item's order of the others), ids `<id>#pair<j>` with j the other's
  index; every other item (pairs, single responses, lists without a single best) is judged as it is."""
  pairs: list[PreferenceExample] = []
  spans, split = [], []
  for ex in examples:
    start = len(pairs)
    if ex.n > 2 and ex.best is not None and ex.rewards is not None:
      for o in range(ex.n):
        if o != ex.best:
          pairs.append(dataclasses.replace(
            ex, responses=(ex.responses[ex.best], ex.responses[o]), rewards=(ex.rewards[ex.best], ex.rewards[o]),
            best=0, id=f"{ex.id}#pair{o}"))
      split.append(True)
    else:
      pairs.append(ex)
      split.append(False)
    spans.append((start, len(pairs)))
  draws = np.random.default_rng(seed).random(len(pairs))
  return PairProtocol(tuple(examples), tuple(pairs), tuple(spans), tuple(split), draws)
