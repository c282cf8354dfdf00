"""Concurrent requests merged into one sampler call: the server's batching engine.

Every HTTP handler submits its prompts as jobs (token ids, n, max new tokens, sampling settings, seed) and awaits
them. One worker thread owns the model: it takes the first waiting job, waits up to `max_wait` seconds for more (up
to `max_prompts` prompts), splits what it took by the settings the compiled program depends on (temperature 0 or
not, top-k, top-p on or off, stop ids) and runs one `sampling.generate` per split, every prompt with its own seed and
n (its samples share its prefix KV). A job's outputs are cut to its own max new tokens, which changes nothing: a
sample's tokens depend only on its prompt, seed and sample index (`sampling.generate.row_keys`), never on the call.

On a pod every process runs the same calls: process 0's worker broadcasts each call's arguments
(`Broadcast`) before running it, and the other processes' `follow` loop receives and runs them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from grm_jax import sampling


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the compiled sampler program depends on, plus the values it reads: requests differing only in
  `max_new_tokens` or `seed` share a call; others go to separate calls of the same batch."""

  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  stop_ids: tuple[int, ...] | None = None  # None: the model's EOS ids


@dataclasses.dataclass
class Result:
  """A job's samples: token ids, their log-probs, and whether each ended on a stop token (else its length cap)."""

  tokens: list[list[int]]
  logprobs: list[list[float]]
  stopped: list[bool]


@dataclasses.dataclass
class Job:
  ids: list[int]
  n: int
  max_new_tokens: int
  settings: Settings
  seed: int
  future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)


@dataclasses.dataclass
class CallStats:
  """One sampler call, for the server's metrics."""

  prompts: int
  rows: int
  new_tokens: int
  seconds: float


class Broadcast:
  """Process 0's sampler calls sent to every process (`jax.experimental.multihost_utils.broadcast_one_to_all`): a
  length header, then the call's arguments as JSON bytes padded to a power of two (few distinct shapes to compile)."""

  def __init__(self) -> None:
    import jax  # noqa: PLC0415

    self.active = jax.process_count() > 1
    self.leader = jax.process_index() == 0

  def _send(self, payload: bytes | None) -> bytes | None:
    from jax.experimental import multihost_utils  # noqa: PLC0415

    length = np.array([-1 if payload is None else len(payload)], np.int64)
    length = int(multihost_utils.broadcast_one_to_all(length)[0])
    if length < 0:
      return None
    size = 1 << max(length - 1, 0).bit_length()
    buf = np.zeros(size, np.uint8)
    if payload is not None:
      buf[:length] = np.frombuffer(payload, np.uint8)
    return np.asarray(multihost_utils.broadcast_one_to_all(buf))[:length].tobytes()

  def send(self, call: dict[str, Any] | None) -> None:
    if self.active and self.leader:
      self._send(None if call is None else json.dumps(call).encode())

  def receive(self) -> dict[str, Any] | None:
    data = self._send(None)
    return None if data is None else json.loads(data)


def _run_call(model: Any, call: dict[str, Any]) -> sampling.GenerateOutput:
  return sampling.generate(model, call["prompts"], n=call["n"], max_new_tokens=call["max_new_tokens"],
                           temperature=call["temperature"], top_p=call["top_p"], top_k=call["top_k"],
                           seed=call["seeds"], stop_token_ids=call["stop_ids"])


def follow(model: Any) -> None:
  """The loop of every process but 0 on a pod: run each call process 0 broadcasts, until it says stop."""
  channel = Broadcast()
  while (call := channel.receive()) is not None:
    _run_call(model, call)


class Engine:
  """The worker that owns the model (module docstring). `on_call` receives each call's `CallStats`."""

  def __init__(self, model: Any, *, max_prompts: int = 32, max_wait: float = 0.005,
               on_call: Callable[[CallStats], None] | None = None) -> None:
    if max_prompts < 1 or max_wait < 0:
      raise ValueError(f"max_prompts={max_prompts}, max_wait={max_wait}: need >= 1 and >= 0")
    self.model, self.max_prompts, self.max_wait, self.on_call = model, int(max_prompts), float(max_wait), on_call
    self._queue: queue.Queue[Job | None] = queue.Queue()
    self._channel = Broadcast()
    self._thread = threading.Thread(target=self._loop, name="grm-engine", daemon=True)
    self._thread.start()

  @property
  def waiting(self) -> int:
    """Jobs submitted and not yet taken by the worker."""
    return self._queue.qsize()

  def submit(self, ids: Sequence[int], n: int, max_new_tokens: int, settings: Settings, seed: int) -> Job:
    job = Job([int(t) for t in ids], int(n), int(max_new_tokens), settings, int(seed))
    self._queue.put(job)
    return job

  def close(self, timeout: float | None = None) -> None:
    """Finish the jobs already submitted, then stop (and tell a pod's other processes to stop)."""
    self._queue.put(None)
    self._thread.join(timeout)

  def _take(self) -> tuple[list[Job], bool]:
    first = self._queue.get()
    if first is None:
      return [], True
    jobs, deadline = [first], time.monotonic() + self.max_wait
    while len(jobs) < self.max_prompts:
      try:
        job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
      except queue.Empty:
        break
      if job is None:
        return jobs, True
      jobs.append(job)
    return jobs, False

  def _loop(self) -> None:
    stop = False
    while not stop:
      jobs, stop = self._take()
      groups: dict[tuple[Any, ...], list[Job]] = {}
      for job in jobs:
        groups.setdefault(job.settings, []).append(job)
      for group in groups.values():
        self._run(group)
    self._channel.send(None)

  def _run(self, jobs: list[Job]) -> None:
    s = jobs[0].settings
    stops = list(self.model.eos_ids) if s.stop_ids is None else list(s.stop_ids)
    call = {"prompts": [j.ids for j in jobs], "n": [j.n for j in jobs], "seeds": [j.seed for j in jobs],
            "max_new_tokens": max(j.max_new_tokens for j in jobs), "temperature": s.temperature, "top_p": s.top_p,
            "top_k": s.top_k, "stop_ids": stops}
    t0 = time.perf_counter()
    try:
      self._channel.send(call)
      out = _run_call(self.model, call)
    except Exception as e:  # noqa: BLE001 - a bad batch fails its own requests, never the worker
      for job in jobs:
        job.future.set_exception(e)
      return
    seconds = time.perf_counter() - t0
    new = 0
    for i, job in enumerate(jobs):
      cap = job.max_new_tokens
      tokens = [t[:cap] for t in out.tokens[i]]
      logprobs = [lp[:cap] for lp in out.logprobs[i]]
      stopped = [bool(st) and len(t) < cap for st, t in zip(out.stopped[i], out.tokens[i], strict=True)]
      new += sum(len(t) for t in tokens)
      job.future.set_result(Result(tokens, logprobs, stopped))
    if self.on_call is not None:
      self.on_call(CallStats(len(jobs), sum(j.n for j in jobs), new, seconds))
