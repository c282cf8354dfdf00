"""The server's worker: HTTP requests become requests of the continuous-batching engine (`sampling.engine`).

Every handler submits its prompt as a job (token ids, n, max new tokens, sampling settings, seed) and awaits it. One
worker thread owns the model and the engine's fixed row slots: between two engine calls it takes every job that has
arrived, places it (a free group of rows gets its prompt prefilled), and a request's future is answered as soon as
its n samples are done - a new request starts when a row frees, not when a whole batch ends. Temperature, top-p,
top-k and stop ids are per row, so requests with different settings share the same decode steps. Sample j of a job
draws from `row_keys(seed, 0, j)`: the same tokens whatever it is batched with.

On a pod every process runs the same engine: process 0's worker broadcasts the jobs it adds before each engine call
(`Broadcast`), and the other processes' `follow` loop adds the same jobs and makes the same call.
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

from grm_jax.buckets import length_bucket
from grm_jax.sampling import engine as core


@dataclasses.dataclass(frozen=True)
class Settings:
  """A request's sampling settings (all per row in the engine)."""

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

  def to_json(self) -> dict[str, Any]:
    return {"ids": self.ids, "n": self.n, "max_new_tokens": self.max_new_tokens, "seed": self.seed,
            "settings": dataclasses.asdict(self.settings)}

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> Job:
    s = d["settings"]
    settings = Settings(s["temperature"], s["top_p"], s["top_k"], None if s["stop_ids"] is None else
                        tuple(s["stop_ids"]))
    return cls(d["ids"], d["n"], d["max_new_tokens"], settings, d["seed"])


@dataclasses.dataclass
class CallStats:
  """One engine call, for the server's metrics: requests finished, live rows at its start, tokens, occupancy."""

  prompts: int
  rows: int
  new_tokens: int
  seconds: float
  occupancy: float = 0.0


class Broadcast:
  """Process 0's jobs sent to every process (`jax.experimental.multihost_utils.broadcast_one_to_all`): a length
  header, then the jobs as JSON bytes padded to a power of two (few distinct shapes to compile)."""

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

  def send(self, jobs: list[dict[str, Any]] | None) -> None:
    if self.active and self.leader:
      self._send(None if jobs is None else json.dumps(jobs).encode())

  def receive(self) -> list[dict[str, Any]] | None:
    data = self._send(None)
    return None if data is None else json.loads(data)


class Engine:
  """The worker that owns the model (module docstring). `on_call` receives each engine call's `CallStats`.

  slots: row slots decoded together; rows_per_prompt: rows sharing one prompt's prefix (a request's n samples read
  it once per step; 1 wastes no row on requests with fewer samples); max_prompt_tokens / max_new_tokens: the
  longest prompt and generation a request may ask for (they size the KV cache); steps_per_call: decode steps
  between two looks at the queue while every row is busy."""

  def __init__(self, model: Any, *, slots: int = 16, rows_per_prompt: int = 1, max_prompt_tokens: int = 1024,
               max_new_tokens: int = 1024, steps_per_call: int = 16,
               on_call: Callable[[CallStats], None] | None = None) -> None:
    if steps_per_call < 1:
      raise ValueError(f"steps_per_call={steps_per_call}: need >= 1")
    self.model, self.on_call = model, on_call
    self.layout = core.Layout(rows=int(slots), per_prefix=int(rows_per_prompt),
                              prefix_len=length_bucket(int(max_prompt_tokens)), new_tokens=int(max_new_tokens),
                              num_stop=max(8, len(model.eos_ids)))
    self.max_prompt_tokens, self.max_new_tokens = int(max_prompt_tokens), int(max_new_tokens)
    self.core = core.Engine(model, self.layout, steps_per_call=steps_per_call)
    self._queue: queue.Queue[Job | None] = queue.Queue()
    self._channel = Broadcast()
    self._thread = None
    if not self._channel.active or self._channel.leader:
      self._thread = threading.Thread(target=self._loop, name="grm-engine", daemon=True)
      self._thread.start()

  @property
  def waiting(self) -> int:
    """Jobs submitted and not yet taken by the worker, plus requests the engine has not placed yet."""
    return self._queue.qsize() + len(self.core.queue)

  def submit(self, ids: Sequence[int], n: int, max_new_tokens: int, settings: Settings, seed: int) -> Job:
    job = Job([int(t) for t in ids], int(n), int(max_new_tokens), settings, int(seed))
    self._queue.put(job)
    return job

  def close(self, timeout: float | None = None) -> None:
    """Finish the jobs already submitted, then stop (and tell a pod's other processes to stop)."""
    if self._thread is not None:
      self._queue.put(None)
      self._thread.join(timeout)

  def _request(self, job: Job | dict[str, Any]) -> core.Request:
    if isinstance(job, dict):
      job = Job.from_json(job)
    s = job.settings
    stops = tuple(self.model.eos_ids if s.stop_ids is None else s.stop_ids)

    def done(req: core.Request) -> None:
      if not job.future.done():
        job.future.set_result(Result(req.tokens, req.logprobs, [bool(x) for x in req.stopped]))

    return core.Request(job.ids, job.n, job.max_new_tokens, s.temperature, s.top_p, s.top_k, stops, job.seed, 0,
                        on_done=done, tag=job)

  def _add(self, jobs: list[Job] | list[dict[str, Any]]) -> None:
    for job in jobs:
      try:
        self.core.submit(self._request(job))
      except ValueError as e:  # a bad request fails alone, never the worker
        if isinstance(job, Job):
          job.future.set_exception(e)

  def _take(self) -> tuple[list[Job], bool]:
    """Every job waiting now; blocks for the first one only when the engine has nothing to do."""
    jobs: list[Job] = []
    block = not self.core.busy
    while True:
      try:
        job = self._queue.get(block=block)
      except queue.Empty:
        return jobs, False
      if job is None:
        return jobs, True
      jobs.append(job)
      block = False

  def _loop(self) -> None:
    stop = False
    while True:
      jobs, closing = self._take()
      stop = stop or closing
      self._channel.send([j.to_json() for j in jobs])
      self._add(jobs)
      if not self.core.busy:
        if stop:
          break
        continue
      self._advance()
    self._channel.send(None)

  def _advance(self) -> None:
    before = dataclasses.replace(self.core.stats)
    t0 = time.perf_counter()
    try:
      finished = self.core.advance()
    except Exception as e:  # noqa: BLE001 - a device error fails the requests in flight, never the worker
      in_flight = {id(x[0]): x[0] for x in self.core.row_req if x is not None}
      in_flight.update({id(r): r for r in self.core.queue})
      for req in in_flight.values():
        if isinstance(req.tag, Job) and not req.tag.future.done():
          req.tag.future.set_exception(e)
      self.core = core.Engine(self.model, self.layout, steps_per_call=self.core.steps_per_call)
      return
    if self.on_call is not None:
      s = self.core.stats
      busy, rows, steps = (s.busy_row_steps - before.busy_row_steps, s.row_steps - before.row_steps,
                           s.steps - before.steps)
      self.on_call(CallStats(len(finished), busy // max(steps, 1), s.tokens - before.tokens,
                             time.perf_counter() - t0, busy / rows if rows else 0.0))

  def follow(self) -> None:
    """The loop of every process but 0 on a pod: add the jobs process 0 broadcasts and make the same engine call,
    until it says stop."""
    while (jobs := self._channel.receive()) is not None:
      self._add(jobs)
      if self.core.busy:
        self.core.advance()
