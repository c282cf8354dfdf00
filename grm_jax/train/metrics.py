"""Training metrics: an append-only JSONL file (the record experiments are read back from), TensorBoard events
(tensorboardX, a dependency) next to it, the job's W&B run when one is started (`train.tracking`), and an optional
progress-bar postfix.

JSONL as the record rather than TensorBoard alone because it survives partial writes line by line and is trivially
loaded by the analysis scripts (`read_jsonl`).
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
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


class _RemoteEventFile:
  """One TensorBoard event file on an object store, written through `etils.epath` (the path layer of every other
  file here, so gcsfs's credentials serve it and a test's fsspec memory file system stands in for a bucket). An
  object has no append: the events are kept in memory and the object is replaced whole on each flush (tensorboardX
  flushes every `flush_secs`, 120 s, and on close). Scalars are a few dozen bytes a step, so the object stays small;
  tensorboardX's own gs:// writer (google-cloud-storage) does the same."""

  def __init__(self, path: str):
    self.path = path
    self.buffer = io.BytesIO()
    self.lock = threading.Lock()  # the flushing thread and the writing one share the buffer

  def write(self, data: bytes) -> None:
    with self.lock:
      self.buffer.write(data)

  def flush(self) -> None:
    with self.lock:
      data = self.buffer.getvalue()
    files.path(self.path).write_bytes(data)

  def close(self) -> None:
    self.flush()


class _RemoteEventFiles:
  """tensorboardX's writer factory for one URL scheme (`record_writer.register_writer_factory`)."""

  def open(self, path: str) -> _RemoteEventFile:
    return _RemoteEventFile(path)

  def directory_check(self, path: str) -> None:
    files.path(path).mkdir(parents=True, exist_ok=True)  # a no-op on a bucket; fsspec's memory fs keeps folders


def _tensorboard_writer(logdir: str):
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    try:
      from torch.utils.tensorboard import SummaryWriter
    except ImportError:
      return None
  if files.is_remote(logdir):
    if "torch" in SummaryWriter.__module__:
      return None  # torch's writer reaches object stores only through TensorFlow's file system
    from tensorboardX import record_writer

    # Events on gs:// (and any fsspec scheme) go through epath, replacing tensorboardX's google-cloud-storage
    # writer: one storage layer and one dependency (gcsfs, the `gcs` / `tpu` / `gpu` extras) for every file of a run.
    record_writer.register_writer_factory(logdir.split("://", 1)[0], _RemoteEventFiles())
  return SummaryWriter(logdir)


class MetricsWriter:
  """Append-only JSONL of {"step": int, **scalars} per line (one object per step on an object store), TensorBoard
  event files when `tensorboardX` or `torch.utils.tensorboard` is importable (silently skipped otherwise; on an object
  store through tensorboardX only), plus an optional tqdm postfix.

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
    if resume_from_step is not None:
      files.filter_jsonl(self.path, lambda r: int(r.get("step", -1)) <= resume_from_step)
    if tensorboard_dir is not None and files.is_writer():
      self._tb = _tensorboard_writer(tensorboard_dir)
      if self._tb is None:
        log.info("no tensorboardX / torch.utils.tensorboard: metrics go to %s only", self.path)

  def write(self, step: int, scalars: Mapping[str, Any]) -> dict:
    """Log one step; returns the record as written ({"step": step, name: float, ...}).

    Values may be python numbers, numpy or (fully replicated / addressable) jax scalars; they are pulled to host
    here. The file is flushed per record so a killed run keeps everything logged up to its last step.
    """
    record: dict[str, Any] = {"step": int(step)}
    for name, value in scalars.items():
      record[name] = _to_float(name, value)
    # A NaN or infinite value is written as null (strict JSON); the returned record keeps it.
    files.append_jsonl(self.path, [record], shard=files.step_shard(step))  # on an object store: one object a step
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
