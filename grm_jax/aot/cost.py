"""What a program should cost, counted by hand: FLOPs, HBM bytes, memory, and the roofline time they imply.

FLOPs (whole program, all chips). A matmul of [m, k] by [k, n] is 2·m·k·n. Per token, one forward through the
decoder costs 2·N_layers (N_layers = the attention and MLP weights of all layers) plus 2·V·d for the LM head
(computed only where logits are needed), plus causal attention: 4·h·hd per (query, key) pair per layer, a query at
position i reading i + 1 keys (Gemma-2's sliding window is not subtracted: the decoder computes those scores and
masks them). Training costs the forward, twice that for the backward, and with `remat` one more forward of the
layers; the LM head runs in rematerialised chunks, so its forward runs twice. `model_flops` leaves the
rematerialised forwards out: it is the 6·N·tokens (+ attention) that MFU is measured against.

XLA's own count (`compiled.cost_analysis()["flops"]`) counts the body of a loop once however many times it runs (a
27B step is under-counted ~14x), so it is only read on loop-free programs: the decode step (layers unrolled) as
is, and a training step through two loop-free copies of depth p and 2p (p = the layer pattern's period, every
scan unrolled, one micro-batch), extrapolated linearly in depth and multiplied by the micro-batches
(`extrapolate`). tests/aot checks the analytic count against XLA's on loop-free programs.

HBM bytes (per chip): a decode iteration of the sampling engine must read every weight once (in compute dtype, as
the sampler holds it: split over `tensor` only) and the KV cache its rows attend over (each prefix slot's view once,
every row's ring); its step call is `new_tokens` such iterations plus the copy of the layer weights it makes before
its loop (`split_layer_params`), its insert a prefill (the weights once, the prompts' KV written into their slots);
a training step reads the weights in compute dtype once per pass (fsdp gathers them: the chip reads the full layer,
divided only by the tensor axis), and reads and writes its state (params, optimizer moments, gradient
accumulators). Activations are not counted: the steps are compute-bound by far.
Roofline: time = max(FLOPs per chip / peak, bytes per chip / bandwidth).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from grm_jax import parallel
from grm_jax.models.config import ModelConfig


def layer_params(cfg: ModelConfig) -> int:
  """Weights in the matmuls of all layers (norms and biases are not matmuls)."""
  d, f, h, kv, hd = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  return cfg.num_layers * (d * hd * (h + 2 * kv) + h * hd * d + 3 * d * f)


def head_params(cfg: ModelConfig) -> int:
  return cfg.vocab_size * cfg.hidden_size


def attention_flops(cfg: ModelConfig, rows: int, queries: int, keys_per_query: float) -> float:
  """QK^T and PV over all layers: 2 matmuls x 2 FLOPs x head_dim per (query, key, head)."""
  return 4.0 * rows * queries * keys_per_query * cfg.num_heads * cfg.head_dim * cfg.num_layers


def forward_flops(cfg: ModelConfig, rows: int, length: int, head: bool = True) -> float:
  tokens = rows * length
  out = 2.0 * layer_params(cfg) * tokens + attention_flops(cfg, rows, length, (length + 1) / 2)
  return out + (2.0 * head_params(cfg) * tokens if head else 0.0)


def train_flops(cfg: ModelConfig, rows: int, length: int, head: bool = True) -> tuple[float, float]:
  """(FLOPs the step runs, model FLOPs): forward + backward (2x) + the rematerialised forward of the layers (with
  `remat`) and of the chunked LM head (always)."""
  tokens = rows * length
  layers = 2.0 * layer_params(cfg) * tokens + attention_flops(cfg, rows, length, (length + 1) / 2)
  lm_head = 2.0 * head_params(cfg) * tokens if head else 0.0
  model = 3 * (layers + lm_head)
  return model + (layers if cfg.remat else 0.0) + lm_head, model


def decode_flops(cfg: ModelConfig, rows: int, prefix_len: int, new_tokens: int) -> float:
  """One decode iteration of the engine's `rows` row slots: every weight and the LM head once per row, and
  attention over the prefix view (`prefix_len` slots of the row's prefix slot) and the row's whole ring of
  `new_tokens` slots (read whole and masked by key positions)."""
  per_row = 2.0 * (layer_params(cfg) + head_params(cfg))
  return per_row * rows + attention_flops(cfg, rows, 1, prefix_len + new_tokens)


def insert_flops(cfg: ModelConfig, batch: int, length: int) -> float:
  """The engine's insert: a prefill of `batch` prompts of `length` tokens, logits for the last position only."""
  return forward_flops(cfg, batch, length, head=False) + 2.0 * head_params(cfg) * batch


# ------------------------------------------------------------------------------------------------ bytes


def itemsize(dtype) -> int:
  """Bytes per element; PRNG key arrays (not numpy dtypes) hold two uint32."""
  try:
    return jnp.dtype(dtype).itemsize
  except TypeError:
    return 8


def per_chip_bytes(tree, dtype=None) -> int:
  """Bytes one chip holds of a tree of ShapeDtypeStructs / arrays with shardings (its shard of each leaf), as
  `dtype` if given (e.g. the compute dtype a weight is read in)."""
  total = 0
  for a in jax.tree.leaves(tree):
    shape = a.sharding.shard_shape(a.shape) if getattr(a, "sharding", None) is not None else a.shape
    total += math.prod(shape) * itemsize(dtype or a.dtype)
  return total


def _tensor() -> int:
  """The current mesh's `tensor` axis (1 without a mesh)."""
  mesh = parallel.current_mesh()
  return int(mesh.shape.get("tensor", 1)) if mesh is not None else 1


def compute_weight_bytes(cfg: ModelConfig) -> float:
  """The weights of one pass in compute dtype as a chip of the current mesh reads them: fsdp gathers each layer
  whole, `tensor` splits."""
  return (layer_params(cfg) + head_params(cfg)) * jnp.dtype(cfg.dtype).itemsize / _tensor()


def train_bytes(cfg: ModelConfig, params, optimizer, micro_batches: int) -> float:
  """HBM traffic of a training step on a chip: its state (the trained `params` and their optimizer moments) read and
  written, a gradient per micro-batch accumulated, and every weight read in compute dtype once per pass. Under LoRA
  `params` are the trained part only (the adapters, and a scalar head: `models.lora.split`): the frozen base, stored
  in the compute dtype, is what the passes read, and it has no moments and no gradient."""
  from grm_jax.train.step import abstract_state  # noqa: PLC0415

  state = per_chip_bytes(abstract_state(params, optimizer))
  grads = per_chip_bytes(params)
  passes = 3 + (1 if cfg.remat else 0)
  return 2 * state + 2 * micro_batches * grads + micro_batches * passes * compute_weight_bytes(cfg)


def forward_bytes(cfg: ModelConfig, params, micro_batches: int) -> float:
  return per_chip_bytes(params) + micro_batches * compute_weight_bytes(cfg)


def kv_bytes_per_slot(cfg: ModelConfig) -> int:
  """K and V of one token over all layers, in the cache dtype."""
  return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(cfg.cache_dtype or cfg.dtype).itemsize


def _cache_shards(cfg: ModelConfig, batch: int) -> int:
  """Chips of the current mesh a cache of `batch` rows is split over: data x fsdp when they divide the rows, `tensor`
  the KV heads."""
  if parallel.current_mesh() is None:
    return 1
  shards = parallel.batch_shards()
  return (shards if batch % shards == 0 else 1) * (_tensor() if cfg.num_kv_heads % _tensor() == 0 else 1)


def decode_must_bytes(cfg: ModelConfig, rows: int, prefixes: int, prefix_len: int, new_tokens: int, params) -> float:
  """What one decode iteration of the engine cannot avoid reading on a chip: its share of the weights as the
  sampler holds them (`params`, compute dtype) and of the KV cache: each prefix slot's view once (`prefixes` x
  `prefix_len`: its rows read it as one batched dot) and every row's own ring (`rows` x `new_tokens`)."""
  weights = per_chip_bytes(params, cfg.dtype)
  slot = kv_bytes_per_slot(cfg)
  return (weights + slot * prefixes * prefix_len / _cache_shards(cfg, prefixes)
          + slot * rows * new_tokens / _cache_shards(cfg, rows))


def insert_bytes(cfg: ModelConfig, params, batch: int, length: int) -> float:
  """The engine's insert on a chip: the weights once (`params`, compute dtype), the prompts' KV written by the
  prefill, then read and written again into their prefix slots."""
  return per_chip_bytes(params, cfg.dtype) + 3 * kv_bytes_per_slot(cfg) * batch * length / _cache_shards(cfg, batch)


# ------------------------------------------------------------------------------------------------ time


def extrapolate(flops_p: float, flops_2p: float, period: int, layers: int, micro_batches: int) -> float:
  """A step's FLOPs from loop-free copies of depth p and 2p: per-layer cost from their difference, times depth."""
  per_period = flops_2p - flops_p
  return micro_batches * (flops_p + (layers / period - 1) * per_period)


def roofline_seconds(flops_per_chip: float, bytes_per_chip: float, chip) -> tuple[float, str]:
  compute, memory = flops_per_chip / chip.bf16_flops, bytes_per_chip / chip.hbm_bandwidth
  return (compute, "compute") if compute >= memory else (memory, "memory")


def layer_period(cfg: ModelConfig) -> int:
  """Layers in one repeat of the architecture's pattern (Gemma-2 alternates sliding / global: 2)."""
  kinds = cfg.layer_types
  if not kinds:
    return 1
  for p in range(1, len(kinds) + 1):
    if len(kinds) % p == 0 and tuple(kinds[:p]) * (len(kinds) // p) == tuple(kinds):
      return p
  return len(kinds)


# ------------------------------------------------------------------------------------------------ memory


def activation_bytes(cfg: ModelConfig, rows: float, length: int, head: bool = True, tensor: int = 1,
                     backward: bool = True) -> float:
  """Peak live activations of one micro-batch on one device (`rows` already divided over data x fsdp; head, MLP
  and vocabulary work divided over `tensor`): the saved layer inputs (with remat; every intermediate without), one
  layer's working set (twice in a backward: its forward and its gradients), one query chunk's f32 scores and
  probabilities, and one LM-head chunk of logits with its softmax and gradient."""
  item = jnp.dtype(cfg.dtype).itemsize
  d, f = cfg.hidden_size, cfg.intermediate_size
  qkvo = (2 * cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim
  chunk = min(cfg.prefill_chunk or length, length)
  per_layer = rows * length * (2 * d + (qkvo + 3 * f) / tensor) * item
  scores = rows * cfg.num_heads / tensor * chunk * length * 4 * 2
  if not backward:
    saved = 0.0
  else:
    saved = rows * length * d * item * cfg.num_layers if cfg.remat else per_layer * cfg.num_layers
  lm_head = rows * min(256, length) * cfg.vocab_size / tensor * 4 * 3 if head else 0
  return saved + (2 if backward else 1) * per_layer + scores + lm_head


def global_bytes(tree, dtype=None) -> int:
  return sum(math.prod(a.shape) * itemsize(dtype or a.dtype) for a in jax.tree.leaves(tree))


def memory_estimate(p) -> float:
  """Per-device bytes of program `p` counted by hand: its arguments (exact: shapes and shardings), plus for a
  training step a float32 gradient accumulator, the compute-dtype copy of the weights and one micro-batch's gradient
  on it (`make_train_step(compute_dtype=)`) and activations, for a forward its activations, for the sampling engine's
  programs their arguments (its state - the prefix slots' and rows' KV cache, outputs - and the sampler's weights)
  plus an insert's prefill working set and new KV, a step's copy of the layer weights (`split_layer_params` before
  its loop) and f32 logits, a decode iteration's logits. Without a mesh in scope it is one device holding everything
  (a GPU); under the slice's mesh (`parallel.use_mesh`) it is one chip, to check against what XLA:TPU compiled.
  Under LoRA a training step's `param_args` are the trained part (adapters, a head): the accumulator and the
  compute-dtype copy are theirs, and the frozen base (already in compute dtype) is among the arguments."""
  cfg = p.cfg
  mesh = parallel.current_mesh()
  shards = parallel.batch_shards()
  tensor = _tensor()
  size = global_bytes if mesh is None else per_chip_bytes
  args = size(p.args)
  rows = p.rows / shards
  head = not p.name.startswith(("metarm", "eval/meta"))
  if p.kind == "train":
    copy = size(p.param_args, cfg.dtype)  # the weights in compute dtype, and a micro-batch's gradient on them
    return args + size(p.param_args) + 2 * copy + activation_bytes(cfg, rows, p.length, head, tensor)
  if p.kind == "forward":
    return args + activation_bytes(cfg, rows, p.length, head, tensor, backward=False)
  logits = rows * cfg.vocab_size / tensor * 4 * 2
  if p.kind == "decode":  # the cache and the sampler's weights (split per layer) are arguments
    return args + logits
  if p.kind == "step":  # the state and the weights are arguments; the layers are split (copied) before the loop
    return args + size(p.param_args["layers"]) + logits
  # insert: the prefill's activations, the prompts' fresh KV and its padded copy written into the prefix slots
  kv_heads = tensor if cfg.num_kv_heads % tensor == 0 else 1
  new_kv = kv_bytes_per_slot(cfg) * rows * p.length / kv_heads
  return args + 2 * new_kv + logits + activation_bytes(cfg, rows, p.length, False, tensor, backward=False)
