"""Training metrics: an append-only JSONL file (the record experiments are read back from), TensorBoard when
available, and an optional progress-bar postfix.

JSONL rather than TensorBoard alone because it needs no extra dependency, survives partial writes line by line and
is trivially loaded by the analysis scripts (`read_jsonl`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

log = logging.getLogger(__name__)


def _to_float(name: str, value: Any) -> float:
  arr = np.asarray(jax.device_get(value))
  if arr.size != 1:
    raise ValueError(f"metric {name!r} must be a scalar, got shape {arr.shape}")
  return float(arr.reshape(()))


def _tensorboard_writer(logdir: str):
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    try:
      from torch.utils.tensorboard import SummaryWriter
    except ImportError:
      return None
  return SummaryWriter(logdir)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """All complete records of a metrics file; a torn last line (process killed mid-write) is skipped."""
  rows = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


class MetricsWriter:
  """Append-only JSONL of {"step": int, **scalars} per line (+ TensorBoard event files when `tensorboardX` or
  `torch.utils.tensorboard` is importable; silently skipped otherwise), plus an optional tqdm postfix.

  Only process 0 writes; on other processes every method is a no-op, so the training loop can call it
  unconditionally on all hosts.
  """

  def __init__(
    self,
    path_jsonl: str,
    *,
    tensorboard_dir: str | None = None,
    resume_from_step: int | None = None,
    pbar: Any = None,
  ):
    """`resume_from_step`: the step the run was restored from. Lines with a later step are dropped first: a run
    killed after logging step 7 but before checkpointing it redoes step 7, which would otherwise appear twice.
    `pbar`: anything with `set_postfix(dict)` (a tqdm bar) that should show the latest scalars.
    """
    self.path = str(path_jsonl)
    self.pbar = pbar
    self._active = jax.process_index() == 0
    self._file = None
    self._tb = None
    if not self._active:
      return
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    if resume_from_step is not None and os.path.exists(self.path):
      self._truncate_after(resume_from_step)
    self._file = open(self.path, "a")
    if tensorboard_dir is not None:
      self._tb = _tensorboard_writer(tensorboard_dir)
      if self._tb is None:
        log.info("no tensorboardX / torch.utils.tensorboard: metrics go to %s only", self.path)

  def _truncate_after(self, step: int) -> None:
    kept = [r for r in read_jsonl(self.path) if int(r.get("step", -1)) <= step]
    # Write-then-rename so a crash here cannot lose the metrics of the steps we keep.
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      for r in kept:
        f.write(json.dumps(r) + "\n")
    os.replace(tmp, self.path)

  def write(self, step: int, scalars: Mapping[str, Any]) -> dict:
    """Log one step; returns the record as written ({"step": step, name: float, ...}).

    Values may be python numbers, numpy or (fully replicated / addressable) jax scalars; they are pulled to host
    here. The file is flushed per record so a killed run keeps everything logged up to its last step.
    """
    record: dict[str, Any] = {"step": int(step)}
    for name, value in scalars.items():
      record[name] = _to_float(name, value)
    if not self._active:
      return record
    # NaN / inf are kept (json writes NaN / Infinity, which read_jsonl accepts): a diverging loss must be visible.
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for name, value in record.items():
        if name != "step" and math.isfinite(value):
          self._tb.add_scalar(name, value, global_step=step)
    if self.pbar is not None:
      self.pbar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step"}, refresh=False)
    return record

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
