"""Continuous batching: a fixed set of row slots kept busy, a finished row's slot refilled at once.

Device (three jitted programs per `Layout`, text never enters them):
  `init`    an empty `State`;
  `insert`  prefill a bucket of prompts [b, Lb] and write each into a prefix slot: its KV, valid mask, positions,
            real length and next-token logits (the first token of every row that will read it);
  `step`    start the rows the host assigned (first token from their prefix slot's logits), then decode every row
            slot one token per iteration of a `while_loop`, until `max_steps`, until no row is live, or - when the
            host has work waiting (`refill`) - until some row finishes.
Rows are grouped: row r reads prefix slot r // per_prefix, so the n samples of a prompt placed in one group read its
prefix KV once per step, as one batched dot (decoder.Attention), exactly as the static sampler's rows do. A row's
own KV is a ring of `new_tokens` slots written at one shared index (every row writes the same slot each step, so the
write stays a single in-place update); masks come from stored positions, not slot distances, so a row may start at
any point of the ring.

Host (`Engine`): a queue of requests (prompt, n, settings, seed); a group whose rows are all idle is given to the
oldest request that still has samples to start; its prompt is prefilled into the group's prefix slot; idle rows of
a group take the next samples of the group's request. Each finished sample goes back to its request, and a request
is done when its n samples are.

Reproducible per request: sample j of a request draws step t with fold_in(row_keys(seed, salt, j), t), and reads
only its own prefix and ring, so its tokens do not depend on what else is running, the slot count or arrival order.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from grm_jax import parallel
from grm_jax.buckets import batch_bucket, length_bucket
from grm_jax.models.decoder import Decoder, LayerCaches, decode_step, default_positions, split_layer_params
from grm_jax.sampling.filters import sample_rows
from grm_jax.sampling.keys import key_data
from grm_jax.sampling.params import place


@dataclasses.dataclass(frozen=True)
class Layout:
  """The engine's shapes (static: one compiled `step` per layout).

  rows: row slots decoded every step; per_prefix: rows sharing one prefix slot (rows // per_prefix prefix slots);
  prefix_len: prompt slots per prefix slot (the longest prompt's bucket); new_tokens: the most tokens a row may
  generate (its ring of KV slots); num_stop: stop ids per row."""

  rows: int
  per_prefix: int
  prefix_len: int
  new_tokens: int
  num_stop: int = 1

  def __post_init__(self):
    if self.rows < 1 or self.per_prefix < 1 or self.rows % self.per_prefix:
      raise ValueError(f"Layout: rows={self.rows} must be a positive multiple of per_prefix={self.per_prefix}")
    if self.prefix_len < 1 or self.new_tokens < 1 or self.num_stop < 1:
      raise ValueError(f"Layout: prefix_len, new_tokens and num_stop must be >= 1 (got {self})")

  @property
  def prefixes(self) -> int:
    return self.rows // self.per_prefix


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class State:
  """Everything the engine keeps on device between calls.

  cache: rows' rings [R, ..., S] and the prefix slots [P, ..., Lp], with key positions (`LayerCaches`);
  last_logits [P, V]: each prefix slot's next-token logits; prompt_len [P];
  per row [R]: tok (last sampled token), step (index of the next token to sample), n_out (tokens kept), live,
  stopped (ended on a stop id), keys [R, 2] (uint32 key data), temperature, top_p, top_k, max_new,
  stop_ids [R, K] (-1 = none); out_t / out_lp [R, S]: the row's tokens and log-probs so far."""

  cache: LayerCaches
  last_logits: jax.Array
  prompt_len: jax.Array
  tok: jax.Array
  step: jax.Array
  n_out: jax.Array
  live: jax.Array
  stopped: jax.Array
  keys: jax.Array
  temperature: jax.Array
  top_p: jax.Array
  top_k: jax.Array
  max_new: jax.Array
  stop_ids: jax.Array
  out_t: jax.Array
  out_lp: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Starts:
  """Rows to start in a `step` call, one entry per row slot (`new` False: leave the row as it is)."""

  new: jax.Array  # [R] bool
  keys: jax.Array  # [R, 2] uint32
  temperature: jax.Array  # [R] f32 (0 = greedy)
  top_p: jax.Array  # [R] f32
  top_k: jax.Array  # [R] int32
  max_new: jax.Array  # [R] int32
  stop_ids: jax.Array  # [R, K] int32


_ROW = ("activation_batch",)
_CACHE = ("cache_batch", "cache_heads", None, None)


def _constrain_state(state: State) -> State:
  if parallel.current_mesh() is None:
    return state

  def place(x):
    if x.ndim == 0:
      return x
    names = _CACHE if x.ndim == 4 else _ROW + (None,) * (x.ndim - 1)
    return parallel.constrain(x, names)

  return jax.tree.map(place, state)


@parallel.per_mesh(maxsize=16)
def init_program(cfg, layout: Layout):
  """jit() -> an empty `State` (no live rows, empty prefix slots)."""
  r, p, s, lp = layout.rows, layout.prefixes, layout.new_tokens, layout.prefix_len
  kvh, hd, n_layers = cfg.num_kv_heads, cfg.head_dim, cfg.num_layers
  dt = jnp.dtype(cfg.cache_dtype or cfg.dtype)

  def init():
    zeros = jnp.zeros
    cache = LayerCaches(
      k=tuple(zeros((r, kvh, hd, s), dt) for _ in range(n_layers)),
      v=tuple(zeros((r, kvh, s, hd), dt) for _ in range(n_layers)),
      valid=zeros((r, s), bool),
      index=jnp.zeros((), jnp.int32),
      prefix_k=tuple(zeros((p, kvh, hd, lp), dt) for _ in range(n_layers)),
      prefix_v=tuple(zeros((p, kvh, lp, hd), dt) for _ in range(n_layers)),
      prefix_valid=zeros((p, lp), bool),
      positions=zeros((r, s), jnp.int32),
      prefix_positions=zeros((p, lp), jnp.int32),
    )
    state = State(
      cache=cache, last_logits=zeros((p, cfg.vocab_size), jnp.float32), prompt_len=zeros((p,), jnp.int32),
      tok=zeros((r,), jnp.int32), step=zeros((r,), jnp.int32), n_out=zeros((r,), jnp.int32),
      live=zeros((r,), bool), stopped=zeros((r,), bool), keys=zeros((r, 2), jnp.uint32),
      temperature=jnp.ones((r,), jnp.float32), top_p=jnp.ones((r,), jnp.float32), top_k=zeros((r,), jnp.int32),
      max_new=zeros((r,), jnp.int32), stop_ids=jnp.full((r, layout.num_stop), -1, jnp.int32),
      out_t=zeros((r, s), jnp.int32), out_lp=zeros((r, s), jnp.float32),
    )
    return _constrain_state(state)

  return jax.jit(init)


@parallel.per_mesh(maxsize=64)
def insert_program(cfg, layout: Layout, batch: int, length: int):
  """jit(insert)(state, params, tokens [batch, length], mask, slots [batch]) -> state: the prompts prefilled (one
  forward, `last_only` logits) and written into prefix slots `slots` (a slot >= layout.prefixes: a bucket filler,
  dropped). The state is donated: the slots are updated in place."""
  if length > layout.prefix_len:
    raise ValueError(f"insert: prompt bucket {length} > the layout's prefix_len {layout.prefix_len}")
  module = Decoder(cfg)
  pad = layout.prefix_len - length

  def insert(state: State, params, tokens, mask, slots):
    positions = default_positions(mask)
    logits, pre = module.apply({"params": params}, tokens, positions, mask, cache_slots=length, last_only=True)
    c = state.cache

    def put(old, new, axis_pad):
      widths = [(0, 0)] * new.ndim
      widths[-1 if axis_pad == "last" else -2] = (0, pad)
      return old.at[slots].set(jnp.pad(new.astype(old.dtype), widths), mode="drop")

    cache = dataclasses.replace(
      c,
      prefix_k=tuple(put(c.prefix_k[i], pre.k[i], "last") for i in range(cfg.num_layers)),
      prefix_v=tuple(put(c.prefix_v[i], pre.v[i], "rows") for i in range(cfg.num_layers)),
      prefix_valid=put(c.prefix_valid, mask, "last"),
      prefix_positions=put(c.prefix_positions, positions.astype(jnp.int32), "last"),
    )
    state = dataclasses.replace(
      state, cache=cache,
      last_logits=state.last_logits.at[slots].set(logits[:, -1], mode="drop"),
      prompt_len=state.prompt_len.at[slots].set(mask.sum(-1).astype(jnp.int32), mode="drop"),
    )
    return _constrain_state(state)

  return jax.jit(insert, donate_argnums=(0,))


@parallel.per_mesh(maxsize=32)
def step_program(cfg, layout: Layout, view: int | None = None):
  """jit(step)(state, params, starts, max_steps, refill) -> state (donated): start the `starts.new` rows, then
  decode all row slots until max_steps iterations, no live row, or (refill) a row finished. `params` are the
  sampler's (`params.place`).

  `view` (<= prefix_len): the prefix slots' first `view` slots are all the live prompts occupy (prompts are written
  from slot 0), so the loop reads a copy of just those, taken once per call: a server sized for long prompts pays
  for the prompts it has, not for its capacity."""
  view = layout.prefix_len if view is None else int(view)
  if not 1 <= view <= layout.prefix_len:
    raise ValueError(f"step_program: view={view} outside [1, {layout.prefix_len}]")
  r, m, s = layout.rows, layout.per_prefix, layout.new_tokens
  rows = jnp.arange(r)

  def record(st: State, active, tok, logp) -> tuple[State, jax.Array]:
    """Row-wise: keep tok at the row's step unless it is a stop id; a row ends on a stop id or its max_new."""
    stop = jnp.any(tok[:, None] == st.stop_ids, axis=-1)
    keep = active & ~stop
    at = jnp.where(active, st.step, s)  # inactive rows write nowhere (dropped)
    out_t = st.out_t.at[rows, at].set(jnp.where(keep, tok, 0), mode="drop")
    out_lp = st.out_lp.at[rows, at].set(jnp.where(keep, logp, 0.0), mode="drop")
    live = keep & (st.step + 1 < st.max_new)
    st = dataclasses.replace(
      st, tok=jnp.where(active, tok, st.tok), out_t=out_t, out_lp=out_lp,
      n_out=jnp.where(keep, st.step + 1, st.n_out), stopped=jnp.where(active, stop, st.stopped),
      step=jnp.where(active, st.step + 1, st.step), live=jnp.where(active, live, st.live),
    )
    return st, active & ~live

  def draw(st: State, logits):
    keys = jax.vmap(jax.random.fold_in)(jax.random.wrap_key_data(st.keys), st.step)
    return sample_rows(keys, logits, st.temperature, st.top_p, st.top_k)

  def run(state: State, params, starts: Starts, max_steps, refill):
    new = starts.new

    def pick(a, b):
      return jnp.where(new.reshape(new.shape + (1,) * (a.ndim - 1)), a, b)

    st = dataclasses.replace(
      state, keys=pick(starts.keys, state.keys), temperature=pick(starts.temperature, state.temperature),
      top_p=pick(starts.top_p, state.top_p), top_k=pick(starts.top_k, state.top_k),
      max_new=pick(starts.max_new, state.max_new), stop_ids=pick(starts.stop_ids, state.stop_ids),
      step=jnp.where(new, 0, state.step), n_out=jnp.where(new, 0, state.n_out),
      stopped=jnp.where(new, False, state.stopped), live=state.live & ~new,
      cache=dataclasses.replace(state.cache, valid=state.cache.valid & ~new[:, None]),
    )
    tok, logp = draw(st, st.last_logits[rows // m])  # each row its prefix slot's logits
    st, ended = record(st, new, tok, logp)
    layer_params = split_layer_params(params)
    prompt_len = jnp.repeat(st.prompt_len, m)
    full = st.cache
    prefix = dict(
      prefix_k=tuple(k[..., :view] for k in full.prefix_k), prefix_v=tuple(v[:, :, :view] for v in full.prefix_v),
      prefix_valid=full.prefix_valid[:, :view], prefix_positions=full.prefix_positions[:, :view],
    )
    no_prefix = dict.fromkeys(prefix)  # the loop carries only the rows' rings; the prefix view is loop-invariant
    st = dataclasses.replace(st, cache=dataclasses.replace(full, **no_prefix))

    def cond(carry):
      i, st, ended = carry
      return (i < max_steps) & jnp.any(st.live) & ~(refill & jnp.any(ended))

    def body(carry):
      i, st, ended = carry
      pos = prompt_len + st.step - 1
      logits, cache = decode_step(cfg, params, layer_params, st.tok[:, None], pos[:, None], jnp.ones((r, 1), bool),
                                  dataclasses.replace(st.cache, **prefix))
      cache = dataclasses.replace(cache, index=(st.cache.index + 1) % s, **no_prefix)
      st = dataclasses.replace(st, cache=cache)
      tok, logp = draw(st, logits[:, 0])
      st, now = record(st, st.live, tok, logp)
      return i + 1, st, ended | now

    _, st, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), st, ended))
    restored = {k: getattr(full, k) for k in prefix}
    return _constrain_state(dataclasses.replace(st, cache=dataclasses.replace(st.cache, **restored)))

  return jax.jit(run, donate_argnums=(0,))


# --------------------------------------------------------------------------- host side


@dataclasses.dataclass
class Request:
  """One prompt's n samples with their settings. Sample j's key stream is `row_keys([seed], [salt], .)[j]`."""

  ids: list[int]
  n: int
  max_new_tokens: int
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  stop_ids: tuple[int, ...] = ()
  seed: int = 0
  salt: int = 0
  on_done: Callable[[Request], None] | None = None
  tag: Any = None  # the owner's handle (the server's job)
  tokens: list[list[int] | None] = dataclasses.field(default_factory=list)
  logprobs: list[list[float] | None] = dataclasses.field(default_factory=list)
  stopped: list[bool | None] = dataclasses.field(default_factory=list)
  started: int = 0  # samples handed to a row
  finished: int = 0

  def __post_init__(self):
    self.tokens = [None] * self.n
    self.logprobs = [None] * self.n
    self.stopped = [None] * self.n

  @property
  def done(self) -> bool:
    return self.finished == self.n

  @property
  def pending(self) -> int:
    return self.n - self.started


@dataclasses.dataclass
class Stats:
  """What the engine did: decode iterations x row slots, rows that held a live sample, tokens kept, calls."""

  steps: int = 0
  row_steps: int = 0
  busy_row_steps: int = 0
  tokens: int = 0
  prefills: int = 0
  step_calls: int = 0

  @property
  def occupancy(self) -> float:
    """Mean fraction of row slots holding a live sample over the decode iterations run."""
    return self.busy_row_steps / self.row_steps if self.row_steps else 0.0


class Engine:
  """The host scheduler over one `Layout`'s programs (module docstring). Not thread-safe: one owner calls
  `submit` and `run`/`advance` (the server's worker thread). It runs on the model's own mesh (`Model.scope`),
  whatever the scope of its caller."""

  def __init__(self, model, layout: Layout, params=None, steps_per_call: int | None = None):
    self.model, self.layout = model, layout
    self.mesh = model.mesh
    cfg = model.config
    with model.scope():
      self._params = place(cfg, model.params if params is None else params)
      self._state = init_program(cfg, layout)()
    self.steps_per_call = int(steps_per_call or layout.new_tokens)
    # Requests in arrival order with samples not yet started. Fully started ones leave from the front; one that a
    # later request overtook (a long request streaming through its groups) is skipped until it reaches the front,
    # so a long queue costs O(1) per round, not a rebuild.
    self.queue: collections.deque[Request] = collections.deque()
    self.group_req: list[Request | None] = [None] * layout.prefixes
    self.row_req: list[tuple[Request, int] | None] = [None] * layout.rows
    self.stats = Stats()

  # ---- requests

  def check(self, req: Request) -> None:
    lay = self.layout
    if not req.ids:
      raise ValueError("engine: a request's prompt is empty")
    if len(req.ids) > lay.prefix_len:
      raise ValueError(f"engine: prompt of {len(req.ids)} tokens > the engine's prefix_len {lay.prefix_len}")
    if not 1 <= req.max_new_tokens <= lay.new_tokens:
      raise ValueError(f"engine: max_new_tokens={req.max_new_tokens} outside [1, {lay.new_tokens}]")
    if len(req.stop_ids) > lay.num_stop:
      raise ValueError(f"engine: {len(req.stop_ids)} stop ids > the engine's num_stop {lay.num_stop}")
    if req.n < 1:
      raise ValueError(f"engine: n={req.n}; need >= 1")

  def submit(self, req: Request) -> Request:
    self.check(req)
    self.queue.append(req)
    return req

  @property
  def busy(self) -> bool:
    return bool(self.queue) or any(r is not None for r in self.row_req)

  # ---- scheduling

  def _rows_of(self, g: int) -> range:
    m = self.layout.per_prefix
    return range(g * m, (g + 1) * m)

  def _free_rows(self, req: Request) -> int:
    return sum(1 for g, q in enumerate(self.group_req) if q is req for r in self._rows_of(g) if self.row_req[r] is None)

  def _assign_groups(self) -> list[tuple[int, Request]]:
    """Groups whose rows are idle and whose request has nothing left to start go to the oldest requests that still
    need room (more samples to start than idle rows in the groups they hold)."""
    for g, q in enumerate(self.group_req):
      if q is not None and q.pending == 0 and all(self.row_req[r] is None for r in self._rows_of(g)):
        self.group_req[g] = None
    free = [g for g, q in enumerate(self.group_req) if q is None]
    placed = []
    for req in self.queue:
      if req.pending == 0:
        continue
      while free and req.pending > self._free_rows(req):
        g = free.pop(0)
        self.group_req[g] = req
        placed.append((g, req))
      if not free:
        break
    return placed

  def _prefill(self, placed: list[tuple[int, Request]]) -> None:
    by_len: dict[int, list[tuple[int, Request]]] = {}
    for g, req in placed:
      by_len.setdefault(min(length_bucket(len(req.ids)), self.layout.prefix_len), []).append((g, req))
    cfg, lay, shard = self.model.config, self.layout, self._shards()
    for length, items in sorted(by_len.items()):
      for c in range(0, len(items), lay.prefixes):
        chunk = items[c : c + lay.prefixes]
        b = min(batch_bucket(len(chunk), shard), math.lcm(lay.prefixes, shard))
        tokens = np.full((b, length), self.model.pad_id, np.int32)
        mask = np.zeros((b, length), bool)
        slots = np.full((b,), lay.prefixes, np.int32)
        for i, (g, req) in enumerate(chunk):
          tokens[i, length - len(req.ids):] = req.ids
          mask[i, length - len(req.ids):] = True
          slots[i] = g
        prog = insert_program(cfg, lay, b, length)
        self._state = prog(self._state, self._params, *self._put(tokens, mask, slots))
        self.stats.prefills += len(chunk)

  def _starts(self) -> Starts:
    lay = self.layout
    r = lay.rows
    new = np.zeros(r, bool)
    seeds, salts, samples = np.zeros(r, np.int64), np.zeros(r, np.int64), np.zeros(r, np.int64)
    temperature, top_p = np.ones(r, np.float32), np.ones(r, np.float32)
    top_k, max_new = np.zeros(r, np.int32), np.zeros(r, np.int32)
    stop_ids = np.full((r, lay.num_stop), -1, np.int32)
    for g, req in enumerate(self.group_req):
      if req is None:
        continue
      for row in self._rows_of(g):
        if self.row_req[row] is not None or req.pending == 0:
          continue
        j = req.started
        req.started += 1
        self.row_req[row] = (req, j)
        new[row] = True
        seeds[row], salts[row], samples[row] = req.seed, req.salt, j
        temperature[row], top_p[row], top_k[row], max_new[row] = req.temperature, req.top_p, req.top_k, \
          req.max_new_tokens
        stop_ids[row, : len(req.stop_ids)] = req.stop_ids
    while self.queue and self.queue[0].pending == 0:
      self.queue.popleft()
    keys = key_data(seeds, salts, samples)
    starts = Starts(new, keys, temperature, top_p, top_k, max_new, stop_ids)
    return starts

  def _shards(self) -> int:
    return parallel.batch_shards()

  def _put(self, *arrays):
    if self.mesh is None:
      return arrays
    out = []
    for a in arrays:
      names = ("activation_batch",) + ("activation_length",) * (a.ndim > 1) + (None,) * max(a.ndim - 2, 0)
      out.append(parallel.shard_batch(a, names=names))
    return tuple(out)

  def advance(self) -> list[Request]:
    """One round: place waiting requests, start idle rows, run one `step` call; returns the requests it finished."""
    with self.model.scope():
      return self._advance()

  def _advance(self) -> list[Request]:
    self._prefill(self._assign_groups())
    starts = self._starts()
    running = [row for row, x in enumerate(self.row_req) if x is not None]
    if not running:
      return []
    refill = bool(self.queue)
    starts_d = Starts(*self._put(*dataclasses.astuple(starts))) if self.mesh is not None else starts
    longest = max(len(q.ids) for q in self.group_req if q is not None)
    program = step_program(self.model.config, self.layout, min(length_bucket(longest), self.layout.prefix_len))
    self._state = program(self._state, self._params, starts_d, jnp.int32(self.steps_per_call), jnp.bool_(refill))
    live, n_out, stopped, step = (parallel.to_host(x) for x in (self._state.live, self._state.n_out,
                                                                self._state.stopped, self._state.step))
    finished_rows = [row for row in running if not live[row]]
    out_t = out_lp = None
    if finished_rows:
      out_t, out_lp = parallel.to_host(self._state.out_t), parallel.to_host(self._state.out_lp)
    done = []
    self.stats.step_calls += 1
    for row in finished_rows:
      req, j = self.row_req[row]
      self.row_req[row] = None
      k = int(n_out[row])
      req.tokens[j] = out_t[row, :k].tolist()
      req.logprobs[j] = out_lp[row, :k].tolist()
      req.stopped[j] = bool(stopped[row])
      req.finished += 1
      self.stats.tokens += k
      if req.done:
        done.append(req)
        if req.on_done is not None:
          req.on_done(req)
    self._account(running, starts.new, step)
    return done

  def _account(self, running, new, step) -> None:
    """Decode iterations of the last call, from the rows' step counters (a row's step grows by one per iteration
    while it is live)."""
    prev = getattr(self, "_prev_step", np.zeros(self.layout.rows, np.int64))
    grown = np.where(new, np.asarray(step) - 1, np.asarray(step) - prev)
    grown = np.maximum(grown, 0)
    iters = int(grown.max()) if len(running) else 0
    self.stats.steps += iters
    self.stats.row_steps += iters * self.layout.rows
    self.stats.busy_row_steps += int(grown.sum())
    self._prev_step = np.asarray(step, np.int64)

  def run(self) -> None:
    """Advance until every submitted request is done."""
    while self.busy:
      self.advance()


def choose_layout(counts: Sequence[int], longest_prompt: int, max_new_tokens: int, num_stop: int, max_rows: int,
                  shards: int = 1) -> Layout:
  """A layout for a known batch of requests: rows per prefix = the most common sample count (a group then holds one
  request's samples with no idle row), at most `max_rows` row slots and no more than the samples asked for."""
  common = collections.Counter(int(c) for c in counts).most_common()
  per = min(max(c for c, k in common if k == common[0][1]), max_rows)
  per = 1 << (per - 1).bit_length() if per > 1 else 1  # powers of two: few distinct layouts to compile
  per = min(per, 1 << (max_rows.bit_length() - 1))
  groups_wanted = sum(-(-int(c) // per) for c in counts)
  groups = min(batch_bucket(groups_wanted, shards), max(max_rows // per, 1))
  groups = math.lcm(groups, shards) if groups % shards else groups
  return Layout(rows=groups * per, per_prefix=per, prefix_len=length_bucket(longest_prompt),
                new_tokens=max_new_tokens, num_stop=max(1, num_stop))
