"""Host-side packing of (prompt, completion) token lists into right-padded training arrays.

Rows are right-padded (positions then count real tokens, as in the sampler, so trainer and sampler see the same
positions) to a length bucket: a multiple of `multiple` tokens, so the jitted steps compile once per bucket
instead of once per batch. `loss_mask[t] = 1` marks token t as a training target (a completion token); the
log-prob of token t comes from the model's state after token t-1 (`logprobs.token_logprobs`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from grm_jax.buckets import row_bucket


def pack(
  prompts: Sequence[Sequence[int]],
  completions: Sequence[Sequence[int]],
  *,
  pad_id: int,
  max_len: int,
  multiple: int = 64,
  rows: int | None = None,
  values: dict[str, Sequence[Sequence[float]]] | None = None,
  length: int | None = None,
) -> tuple[dict[str, np.ndarray], int]:
  """Arrays {"tokens" int32, "mask" bool, "loss_mask" float32} of shape [rows, T], and the number of rows cut.

  A row longer than `max_len` keeps its whole prompt and loses the end of its completion (an SFT target cut
  short still teaches its beginning); a prompt that alone reaches `max_len` is an error naming the limit.
  `rows` pads the batch with empty rows (loss_mask 0) to a fixed count. `length` fixes T: a training loop that
  knows its longest sequence passes it, so every step runs one compiled program instead of one per bucket.
  `values` are per-completion-token float lists (e.g. sampler log-probs) placed at the completion's positions as
  extra [rows, T] float32 arrays.
  """
  if len(prompts) != len(completions):
    raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
  rows = len(prompts) if rows is None else rows
  if rows < len(prompts):
    raise ValueError(f"rows={rows} is smaller than the {len(prompts)} sequences")
  longest = max((len(p) + len(c) for p, c in zip(prompts, completions, strict=True)), default=1)
  T = min(row_bucket(longest, multiple), row_bucket(max_len, multiple))
  T = min(T, max_len) if max_len % multiple else T
  if length is not None:
    if length < min(longest, max_len):
      raise ValueError(f"length={length} is shorter than the longest row ({min(longest, max_len)} tokens)")
    T = length
  tokens = np.full((rows, T), pad_id, np.int32)
  mask = np.zeros((rows, T), bool)
  loss_mask = np.zeros((rows, T), np.float32)
  extra = {k: np.zeros((rows, T), np.float32) for k in (values or {})}
  cut = 0
  for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
    if len(p) >= max_len:
      raise ValueError(f"a prompt of {len(p)} tokens does not fit max_len={max_len} (raise the config's max_len)")
    c = list(c)[: max_len - len(p)]
    cut += len(c) < len(completions[i])
    row = list(p) + c
    tokens[i, : len(row)] = row
    mask[i, : len(row)] = True
    loss_mask[i, len(p) : len(row)] = 1.0
    for k, v in (values or {}).items():
      vals = np.asarray(v[i], np.float32)[: len(c)]  # may be shorter than the completion (no stop-token value)
      extra[k][i, len(p) : len(p) + len(vals)] = vals
  return {"tokens": tokens, "mask": mask, "loss_mask": loss_mask, **extra}, cut


def pad_rows(seqs: Sequence[Sequence[int]], pad_id: int, rows: int, max_len: int, multiple: int = 64,
             length: int | None = None):
  """Right-padded int32 tokens and bool mask [rows, T], T a multiple of `multiple` (one compile per bucket), or
  `length` when the caller fixes it for a whole run."""
  longest = max((len(s) for s in seqs), default=1)
  t = min(row_bucket(longest, multiple), max(max_len, longest))
  if length is not None and length >= longest:
    t = length
  tokens = np.full((rows, t), pad_id, np.int32)
  mask = np.zeros((rows, t), bool)
  for i, s in enumerate(seqs):
    tokens[i, : len(s)] = s
    mask[i, : len(s)] = True
  return tokens, mask
