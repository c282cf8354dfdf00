"""Training metrics: an append-only JSONL file (the record experiments are read back from), TensorBoard events
(tensorboardX, a dependency) next to it, the job's W&B run when one is started (`train.tracking`), and an optional
progress-bar postfix.

JSONL as the record rather than TensorBoard alone because it survives partial writes line by line and is trivially
loaded by the analysis scripts (`read_jsonl`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from grm_jax import files
from grm_jax.train import tracking

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


class MetricsWriter:
  """Append-only JSONL of {"step": int, **scalars} per line (+ TensorBoard event files when `tensorboardX` or
  `torch.utils.tensorboard` is importable and the folder is local; silently skipped otherwise), plus an optional
  tqdm postfix.

  Every process calls it alike (the file writes wait for each other, see `grm_jax.files`); process 0 writes.
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
    self.path = os.fspath(path_jsonl)
    self.pbar = pbar
    self._tb = None
    if resume_from_step is not None and files.exists(self.path):
      self._truncate_after(resume_from_step)
    if tensorboard_dir is not None and files.is_writer() and not files.is_remote(tensorboard_dir):
      self._tb = _tensorboard_writer(tensorboard_dir)
      if self._tb is None:
        log.info("no tensorboardX / torch.utils.tensorboard: metrics go to %s only", self.path)

  def _truncate_after(self, step: int) -> None:
    # Written whole and renamed into place: a crash here cannot lose the metrics of the steps we keep.
    files.write_jsonl(self.path, [r for r in files.read_jsonl(self.path) if int(r.get("step", -1)) <= step])

  def write(self, step: int, scalars: Mapping[str, Any]) -> dict:
    """Log one step; returns the record as written ({"step": step, name: float, ...}).

    Values may be python numbers, numpy or (fully replicated / addressable) jax scalars; they are pulled to host
    here. The file is flushed per record so a killed run keeps everything logged up to its last step.
    """
    record: dict[str, Any] = {"step": int(step)}
    for name, value in scalars.items():
      record[name] = _to_float(name, value)
    # A NaN or infinite value is written as null (strict JSON); the returned record keeps it.
    files.append_jsonl(self.path, [record])
    tracking.log(self.path, step, record)
    if self._tb is not None:
      for name, value in record.items():
        if name != "step" and math.isfinite(value):
          self._tb.add_scalar(name, value, global_step=step)
    if self.pbar is not None and files.is_writer():
      self.pbar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step"}, refresh=False)
    return record

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
