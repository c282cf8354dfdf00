"""Weight layout: how each of our params maps to transformers tensor names, both ways.

Our layout (see decoder.py): attention kernels are [embed, heads, head_dim] (so `tensor`
sharding splits whole heads), MLP kernels are [in, out], and layers are stacked on a leading
axis. transformers stores `nn.Linear` weights as [out, in] per layer. `PARAM_MAP` is the one
table of that correspondence; loading (HF and GGUF) and `save_pretrained` both read it.

Loading places every tensor straight into its target sharding: for each device shard we read
the needed layers from a memory-mapped file and cut the slice, so no host ever holds a full
copy of a large model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from grm_jax import parallel
from grm_jax.models.config import ModelConfig
from grm_jax.models.decoder import Decoder


@dataclasses.dataclass(frozen=True)
class ParamMap:
  path: tuple[str, ...]  # our param path (under "params")
  hf: str  # transformers name; "{i}" is the layer index for stacked params
  to_ours: Callable[[np.ndarray, ModelConfig], np.ndarray]
  to_hf: Callable[[np.ndarray, ModelConfig], np.ndarray]

  @property
  def stacked(self) -> bool:
    return "{i}" in self.hf


def _same(w, cfg):
  return w


def _linear_in(heads_attr):
  """[heads*hd, D] (torch Linear) <-> [D, heads, hd]."""

  def to_ours(w, cfg):
    return w.T.reshape(cfg.hidden_size, getattr(cfg, heads_attr), cfg.head_dim)

  def to_hf(w, cfg):
    return w.reshape(cfg.hidden_size, -1).T

  return to_ours, to_hf


def _bias(heads_attr):
  return (
    lambda b, cfg: b.reshape(getattr(cfg, heads_attr), cfg.head_dim),
    lambda b, cfg: b.reshape(-1),
  )


def _o_to_ours(w, cfg):
  return w.T.reshape(cfg.num_heads, cfg.head_dim, cfg.hidden_size)


def _o_to_hf(w, cfg):
  return w.reshape(-1, cfg.hidden_size).T


def _t(w, cfg):
  return w.T


def param_map(cfg: ModelConfig) -> list[ParamMap]:
  L = "model.layers.{i}."
  q, k, v = _linear_in("num_heads"), _linear_in("num_kv_heads"), _linear_in("num_kv_heads")
  rows = [
    ParamMap(("embed",), "model.embed_tokens.weight", _same, _same),
    ParamMap(("final_norm", "scale"), "model.norm.weight", _same, _same),
    ParamMap(("layers", "attn_norm", "scale"), L + "input_layernorm.weight", _same, _same),
    ParamMap(("layers", "attn", "q"), L + "self_attn.q_proj.weight", *q),
    ParamMap(("layers", "attn", "k"), L + "self_attn.k_proj.weight", *k),
    ParamMap(("layers", "attn", "v"), L + "self_attn.v_proj.weight", *v),
    ParamMap(("layers", "attn", "o"), L + "self_attn.o_proj.weight", _o_to_ours, _o_to_hf),
    ParamMap(("layers", "mlp", "gate"), L + "mlp.gate_proj.weight", _t, _t),
    ParamMap(("layers", "mlp", "up"), L + "mlp.up_proj.weight", _t, _t),
    ParamMap(("layers", "mlp", "down"), L + "mlp.down_proj.weight", _t, _t),
  ]
  if cfg.qkv_bias:
    rows += [
      ParamMap(("layers", "attn", "q_bias"), L + "self_attn.q_proj.bias", *_bias("num_heads")),
      ParamMap(("layers", "attn", "k_bias"), L + "self_attn.k_proj.bias", *_bias("num_kv_heads")),
      ParamMap(("layers", "attn", "v_bias"), L + "self_attn.v_proj.bias", *_bias("num_kv_heads")),
    ]
  if cfg.sandwich_norms:  # Gemma-2 names its four norms differently from Llama's two
    rows += [
      ParamMap(("layers", "post_attn_norm", "scale"), L + "post_attention_layernorm.weight", _same, _same),
      ParamMap(("layers", "mlp_norm", "scale"), L + "pre_feedforward_layernorm.weight", _same, _same),
      ParamMap(("layers", "post_mlp_norm", "scale"), L + "post_feedforward_layernorm.weight", _same, _same),
    ]
  else:
    rows.append(ParamMap(("layers", "mlp_norm", "scale"), L + "post_attention_layernorm.weight", _same, _same))
  if not cfg.tie_word_embeddings:
    rows.append(ParamMap(("lm_head",), "lm_head.weight", _t, _t))
  return rows


# --------------------------------------------------------------------------- shapes and names


def abstract_params(cfg: ModelConfig):
  """(shapes, logical names) of the param tree, without allocating anything."""
  model = Decoder(cfg)
  tokens = jnp.zeros((1, 1), jnp.int32)
  with parallel.use_mesh(None):  # the shapes of an unconstrained init
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens, tokens.astype(bool)))
  names = nn.get_partition_spec(boxed)["params"]
  shapes = nn.meta.unbox(boxed)["params"]
  return shapes, names


def param_shardings(cfg: ModelConfig):
  """Where each param lives on the current mesh, by the scope's rules."""
  shapes, names = abstract_params(cfg)
  return parallel.tree_shardings(names, shapes)


def for_compute(cfg: ModelConfig, params):
  """The params as the decoder reads them: every weight in `cfg.dtype` (the decoder casts each one before use, so
  this changes no number), norm scales as stored (it reads them in float32). What a frozen copy (GRPO's reference)
  or the sampler needs: bf16 weights from f32 masters are half the bytes to hold and to read."""
  return compute_copy(params, cfg.dtype)


def compute_copy(params, dtype):
  """`params` with every weight matrix (floating, two or more axes, not a norm `scale`) cast to `dtype`; norm
  scales and vectors (a scalar head's kernel and bias) as stored. Leaves already in `dtype` are the same arrays."""
  dtype = jnp.dtype(dtype)

  def cast(path, a):
    if getattr(path[-1], "key", None) == "scale" or not jnp.issubdtype(a.dtype, jnp.floating) or a.ndim < 2:
      return a
    return a.astype(dtype)

  return jax.tree_util.tree_map_with_path(cast, params)


def init_fn(cfg: ModelConfig, seed: int = 0):
  """The decoder's random init as a function of nothing (to jit), its params unboxed."""
  model = Decoder(cfg)
  tokens = jnp.zeros((1, 1), jnp.int32)

  def init():
    return nn.meta.unbox(model.init(jax.random.key(seed), tokens, tokens, tokens.astype(bool)))["params"]

  return init


def init_params(cfg: ModelConfig, seed: int = 0):
  """Random params, created directly in their shardings on the current mesh (tests, smoke runs, new heads)."""
  return _init_program(cfg)(jax.random.key(seed))


@parallel.per_mesh(maxsize=16)
def _init_program(cfg: ModelConfig):
  """jit(key) -> the decoder's random params, in their shardings on the scope's mesh. One compiled program per
  config and mesh: a run loads the same tiny model or head once per stage, and each compile costs seconds."""
  model = Decoder(cfg)
  tokens = jnp.zeros((1, 1), jnp.int32)

  def init(key):
    with parallel.use_mesh(None):  # the init's forward, whose output is dropped, unconstrained (as it always was)
      return nn.meta.unbox(model.init(key, tokens, tokens, tokens.astype(bool)))["params"]

  if parallel.current_mesh() is None:
    return jax.jit(init)
  return jax.jit(init, out_shardings=param_shardings(cfg))


# --------------------------------------------------------------------------- loading


class TensorSource:
  """Named tensors from a checkpoint; `get` returns a host array (may be memory-mapped)."""

  def names(self) -> set[str]:
    raise NotImplementedError

  def get(self, name: str) -> np.ndarray:
    raise NotImplementedError

  def describe(self, name: str) -> str:
    return name


def _get_path(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set_path(tree, path, value):
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def check_complete(cfg: ModelConfig, source: TensorSource, where: str) -> None:
  """Fail early, naming the missing tensor, before anything is allocated."""
  have = source.names()
  for row in param_map(cfg):
    needed = [row.hf.format(i=i) for i in range(cfg.num_layers)] if row.stacked else [row.hf]
    for name in needed:
      if name not in have:
        raise ValueError(
          f"{where}: tensor {name!r} is missing (needed for {'/'.join(row.path)}); the checkpoint is "
          "incomplete or not a "
          f"{cfg.family} model. Re-download it or check config.json."
        )


def _hf_shape(row: ParamMap, ours: tuple[int, ...], cfg: ModelConfig) -> tuple[int, ...]:
  """The checkpoint-layout shape of one (per-layer) tensor, computed without allocating it."""
  return tuple(jax.eval_shape(lambda w: row.to_hf(w, cfg), jax.ShapeDtypeStruct(ours, jnp.float32)).shape)


def _shape_facts(cfg: ModelConfig) -> str:
  return (
    f"vocab_size={cfg.vocab_size}, hidden_size={cfg.hidden_size}, intermediate_size={cfg.intermediate_size}, "
    f"num_heads={cfg.num_heads}, num_kv_heads={cfg.num_kv_heads}, head_dim={cfg.head_dim}"
  )


def load_params(cfg: ModelConfig, source: TensorSource):
  """Build the param tree from `source`, each leaf placed in its sharding on the current mesh (this process's first
  device without one) as it is read."""
  shapes, _ = abstract_params(cfg)
  if parallel.current_mesh() is None:
    with parallel.use_mesh(parallel.single_device_mesh()):
      shardings = param_shardings(cfg)
  else:
    shardings = param_shardings(cfg)
  dtype = jnp.dtype(cfg.param_dtype)
  params: dict = {}
  for row in param_map(cfg):
    shape = _get_path(shapes, row.path).shape
    sharding = _get_path(shardings, row.path)
    index_map = sharding.addressable_devices_indices_map(shape)
    layers = range(shape[0]) if row.stacked else [None]
    # Outer loop over layers, inner over local devices: each checkpoint tensor is read and
    # re-laid-out once, and only this host's shards are ever materialised.
    host = {d: None for d in index_map}
    want = shape[1:] if row.stacked else shape
    want_hf = _hf_shape(row, want, cfg)
    for i in layers:
      name = row.hf.format(i=i) if row.stacked else row.hf
      raw = source.get(name)
      # Check in the checkpoint's own layout, before any reshape could fail with a bare
      # numpy message that names neither the file nor the tensor.
      if tuple(raw.shape) != want_hf:
        raise ValueError(
          f"{source.describe(name)}: shape {list(raw.shape)} in the checkpoint, but the config "
          f"({_shape_facts(cfg)}) implies {list(want_hf)}. The weights and the config describe "
          "different models: use the config that came with these weights."
        )
      w = np.asarray(row.to_ours(np.asarray(raw), cfg), np.float32).astype(dtype)
      for d, idx in index_map.items():
        if not row.stacked:
          host[d] = w[idx]
          continue
        lsl = range(shape[0])[idx[0]]
        if i not in lsl:
          continue
        if host[d] is None:
          host[d] = np.empty((len(lsl),) + w[idx[1:]].shape, dtype)
        host[d][lsl.index(i)] = w[idx[1:]]
    arrays = [jax.device_put(host[d], d) for d in index_map]
    _set_path(params, row.path, jax.make_array_from_single_device_arrays(shape, sharding, arrays))
  return params


def export_tensors(cfg: ModelConfig, params) -> dict[str, np.ndarray]:
  """Our params -> transformers-named host arrays (gathers to this host).

  Multi-host: a param sharded across processes is all-gathered, a collective, so every
  process must call this (in the same order), not just the one that writes.
  """
  out = {}
  for row in param_map(cfg):
    w = parallel.to_host(_get_path(params, row.path))
    if row.stacked:
      for i in range(cfg.num_layers):
        out[row.hf.format(i=i)] = np.ascontiguousarray(row.to_hf(w[i], cfg))
    else:
      out[row.hf] = np.ascontiguousarray(row.to_hf(w, cfg))
  return out


__all__ = [
  "PartitionSpec",
  "TensorSource",
  "abstract_params",
  "check_complete",
  "export_tensors",
  "init_params",
  "load_params",
  "param_map",
  "param_shardings",
]
