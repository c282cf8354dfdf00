"""`Model` (config + params + tokenizer), `load`, `logits`, `save_pretrained`.

`load` accepts `builtin:<name>`, an HF checkpoint directory (local or on an object store: `gs://…`) or a `.gguf`
file, and places every
weight in its sharding on the current mesh scope (`parallel.use_mesh`) as it is read (see weights.py); the model
remembers that mesh and its rules. `logits` is a full, cache-free forward on the model's own mesh, compiled once per
(config, mesh, rules).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from grm_jax import files, parallel
from grm_jax.errors import MissingFile
from grm_jax.models import builtin, hub, weights
from grm_jax.models.config import ModelConfig, UnsupportedModelError, from_hf_config, to_hf_config
from grm_jax.models.decoder import Decoder, KVCache, default_positions
from grm_jax.models.gguf_io import GGUFSource
from grm_jax.models.safetensors_io import CheckpointError, SafetensorsSource, write_sharded


@dataclasses.dataclass
class Model:
  """Everything needed to run a checkpoint: architecture, weights, tokenizer, special ids."""

  config: ModelConfig
  params: Any
  tokenizer: Any = None
  bos_id: int | None = None
  eos_ids: tuple[int, ...] = ()
  pad_id: int = 0
  source: str = ""
  mesh: Mesh | None = None  # where the params live (None: one device), and the rules that placed them
  rules: tuple = parallel.DEFAULT_RULES

  @property
  def eos_id(self) -> int | None:
    return self.eos_ids[0] if self.eos_ids else None

  def module(self) -> Decoder:
    return Decoder(self.config)

  def scope(self):
    """`parallel.use_mesh` of the model's own mesh and rules: code that runs the model outside a stage's scope (a
    server's worker thread, a notebook) enters it."""
    return parallel.use_mesh(self.mesh, self.rules)

  def apply(self, params, tokens, positions, mask, cache: KVCache | None = None):
    """The pure forward: (logits float32 [B,T,V], new cache or None), its activations constrained to the model's mesh
    (`module()` alone follows the scope it is traced in)."""
    with self.scope():
      return self.module().apply({"params": params}, tokens, positions, mask, cache)

  def encode_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a conversation in the model's chat template."""
    if self.tokenizer is None:
      raise ValueError(f"{self.source}: model was loaded without a tokenizer")
    out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    if hasattr(out, "keys") and "input_ids" in out:
      out = out["input_ids"]
    return list(out)


# --------------------------------------------------------------------------- forward


@parallel.per_mesh(maxsize=32)
def _forward(cfg: ModelConfig):
  module = Decoder(cfg)

  def fwd(params, tokens, positions, mask):
    return module.apply({"params": params}, tokens, positions, mask)[0]

  return jax.jit(fwd)


def logits(model: Model, tokens, mask=None, positions=None) -> jax.Array:
  """Full forward, no cache: int32 tokens [B,T] -> float32 logits [B,T,V].

  `mask` marks real tokens (default: all); `positions` default to counting real tokens only,
  so left-padded rows get the same logits as unpadded ones.
  """
  tokens = jnp.asarray(tokens, jnp.int32)
  if tokens.ndim != 2:
    raise ValueError(f"logits: tokens must be [batch, length], got shape {tokens.shape}")
  mask = jnp.ones(tokens.shape, bool) if mask is None else jnp.asarray(mask, bool)
  positions = default_positions(mask) if positions is None else jnp.asarray(positions, jnp.int32)
  with model.scope():
    if model.mesh is not None:
      tokens, mask, positions = (parallel.shard_batch(np.asarray(a)) for a in (tokens, mask, positions))
    return _forward(model.config)(model.params, tokens, positions, mask)


# --------------------------------------------------------------------------- loading


def _dtype_overrides(dtype: str, param_dtype: str | None) -> dict[str, str]:
  for d in (dtype, param_dtype):
    if d is not None and d not in ("float32", "bfloat16", "float16"):
      raise ValueError(f"dtype {d!r}: use float32, bfloat16 or float16")
  return {"dtype": dtype, "param_dtype": param_dtype or dtype}


def _load_tokenizer(directory: str, gguf_file: str | None = None, cache_dir: str | None = None):
  from transformers import AutoTokenizer

  if gguf_file is None:
    return AutoTokenizer.from_pretrained(directory)
  # Building a tokenizer from GGUF metadata takes seconds; keep a saved copy in the cache.
  path = os.path.join(directory, gguf_file)
  key = f"{gguf_file}-{os.path.getsize(path)}-{int(os.path.getmtime(path))}"
  saved = os.path.join(cache_dir or builtin.default_cache_dir(), "tokenizers", key)
  if os.path.exists(os.path.join(saved, "tokenizer_config.json")):
    return AutoTokenizer.from_pretrained(saved)
  tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
  try:
    tok.save_pretrained(saved)
  except OSError:
    pass  # a read-only cache only costs speed
  return tok


# Weight files: everything else in a checkpoint folder is small (config, tokenizer, chat template, generation config).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt", ".npz")


def _local_small_files(directory: str, cache_dir: str | None = None) -> str:
  """A local folder with the small files of a checkpoint folder on an object store (everything but the weights):
  transformers reads a tokenizer from a local folder only. The weights themselves stream from the store
  (`SafetensorsSource`); the copy is refreshed on every load, each file written whole under a temporary name and
  renamed, so processes that share a host and load at once never see half a file."""
  import hashlib  # noqa: PLC0415

  key = hashlib.sha256(directory.rstrip("/").encode()).hexdigest()[:16]
  out = os.path.join(cache_dir or builtin.default_cache_dir(), "remote", f"{files.path(directory).name}-{key}")
  os.makedirs(out, exist_ok=True)
  for item in files.path(directory).iterdir():
    if item.name.endswith(_WEIGHT_SUFFIXES) or item.is_dir():
      continue
    tmp = os.path.join(out, f".{item.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
      f.write(item.read_bytes())
    os.replace(tmp, os.path.join(out, item.name))
  return out


def _special_ids(hf: dict, tok) -> tuple[int | None, tuple[int, ...], int]:
  eos = hf.get("eos_token_id")
  eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
  if tok is not None and tok.eos_token_id is not None and tok.eos_token_id not in eos_ids:
    eos_ids = eos_ids + (tok.eos_token_id,)
  bos = hf.get("bos_token_id", tok.bos_token_id if tok is not None else None)
  pad = hf.get("pad_token_id")
  if pad is None and tok is not None:
    pad = tok.pad_token_id
  if pad is None:
    pad = eos_ids[0] if eos_ids else 0
  return bos, tuple(int(e) for e in eos_ids), int(pad)


def _generation_eos(directory: str) -> list[int]:
  path = os.path.join(directory, "generation_config.json")
  if not files.exists(path):
    return []
  eos = files.read_json(path).get("eos_token_id")
  return eos if isinstance(eos, list) else ([eos] if eos is not None else [])


def load(
  spec: str,
  dtype: str = "float32",
  param_dtype: str | None = None,
  tokenizer: bool = True,
  cache_dir: str | None = None,
  **config_overrides,
) -> Model:
  """Load `builtin:<name>`, an HF directory (config.json + safetensors), a Hugging Face Hub id ("org/name", from the
  local HF cache or downloaded into it: `models.hub`) or a `.gguf` file. The HF directory may be on an object store
  (`gs://bucket/gemma-2-27b`): the weights stream from it, only the small files are copied (`_local_small_files`).

  `tiny:<family>` (llama, qwen2, gemma2) is a tiny random model of that family with the embedded default's
  tokenizer and chat template: every pipeline stage runs on it in seconds (preset and stage tests, smoke runs).
  Under a mesh scope (`parallel.use_mesh`), each tensor goes straight into its sharding by the scope's rules.
  `config_overrides` set ModelConfig fields (e.g. `remat=True`).
  """
  overrides = {**_dtype_overrides(dtype, param_dtype), **config_overrides}
  if spec.startswith("tiny:"):
    return _load_tiny(spec, overrides, cache_dir)
  if spec.startswith("builtin:"):
    path = builtin.locate(spec.removeprefix("builtin:"), cache_dir=cache_dir)
    model = _load_gguf(path, overrides, tokenizer, cache_dir)
    model.source = spec
    return model
  if files.is_remote(spec):
    _check_remote(spec)
    return _load_hf_dir(spec, overrides, tokenizer, cache_dir)
  if hub.is_hub_id(spec):
    model = _load_hf_dir(hub.snapshot(spec), overrides, tokenizer)
    model.source = spec
    return model
  if not os.path.exists(spec):
    raise MissingFile(
      f"{spec}: no such file or directory; pass an HF checkpoint directory, a Hugging Face Hub id (org/name), a "
      f".gguf file or one of {', '.join('builtin:' + k for k in builtin.BUILTINS)}"
    )
  if os.path.isfile(spec):
    if not spec.endswith(".gguf"):
      raise CheckpointError(f"{spec}: a single weight file must be .gguf; for safetensors pass its directory")
    return _load_gguf(spec, overrides, tokenizer, cache_dir)
  return _load_hf_dir(spec, overrides, tokenizer)


def load_config(spec: str, dtype: str = "float32", param_dtype: str | None = None, arch: str = "",
                cache_dir: str | None = None, **config_overrides) -> ModelConfig:
  """The architecture of `spec` without reading a weight: `arch` (a `models.config.PRESETS` name) when given,
  else the checkpoint's config.json or GGUF metadata. Compiling for hardware we do not have needs no more."""
  from grm_jax.models.config import preset  # noqa: PLC0415

  overrides = {**_dtype_overrides(dtype, param_dtype), **config_overrides}
  if arch:
    try:
      return preset(arch, **overrides)
    except KeyError as e:
      raise ValueError(f"config model.arch={arch!r}: {e.args[0]}") from e
  if spec.startswith("tiny:"):
    return load(spec, dtype=dtype, param_dtype=param_dtype, cache_dir=cache_dir, **config_overrides).config
  if spec.startswith("builtin:"):
    spec = builtin.locate(spec.removeprefix("builtin:"), cache_dir=cache_dir)
  if files.is_remote(spec):
    _check_remote(spec)
  elif hub.is_hub_id(spec):
    spec = hub.snapshot(spec)
  if os.path.isfile(spec) and spec.endswith(".gguf"):
    return from_hf_config(GGUFSource(spec).hf_config(), source=spec, **overrides)
  cfg_path = os.path.join(spec, "config.json")
  if not files.exists(cfg_path):
    raise MissingFile(f"{spec}: no config.json to read the architecture from; set config model.arch to one of "
                      "grm_jax.models.config.PRESETS (e.g. gemma2-27b) to plan without the checkpoint")
  return from_hf_config(_read_hf_config(cfg_path), source=cfg_path, **overrides)


def _check_remote(spec: str) -> None:
  """An object-store checkpoint is an HF folder that exists; a GGUF file there is refused (its reader, the `gguf`
  package, memory-maps a local file)."""
  if spec.endswith(".gguf"):
    raise CheckpointError(f"{spec}: a .gguf file is read from a local disk only; copy it first (gcloud storage cp "
                          f"{spec} /data/) or load the model's HF safetensors folder from {spec.rsplit('/', 1)[0]}/")
  if not files.isdir(spec):
    raise MissingFile(f"{spec}: no such folder; pass the gs://… folder that holds the checkpoint's config.json "
                      "and safetensors")


def _placement() -> dict[str, Any]:
  """The `Model` fields that say where params loaded now live: the current scope's mesh and rules (the default rules
  without a mesh, where they place nothing)."""
  mesh, rules = parallel.scope()
  return {"mesh": mesh, "rules": rules if mesh is not None else parallel.DEFAULT_RULES}


def _load_tiny(spec, overrides, cache_dir) -> Model:
  from grm_jax.models.config import tiny  # noqa: PLC0415

  family = spec.removeprefix("tiny:")
  path = builtin.locate(next(iter(builtin.BUILTINS)), cache_dir=cache_dir)
  tok = _load_tokenizer(os.path.dirname(path), os.path.basename(path), cache_dir)
  hf = GGUFSource(path).hf_config()  # the builtin's special ids (metadata only, no weights read)
  try:
    cfg = tiny(family, vocab_size=len(tok), max_position_embeddings=8192, **overrides)
  except (UnsupportedModelError, TypeError) as e:
    raise ValueError(f"model {spec!r}: {e}; families are llama, qwen2, gemma2") from e
  bos, eos_ids, pad = _special_ids(hf, tok)
  model = from_config(cfg, seed=0, bos_id=bos, eos_ids=eos_ids, pad_id=pad)
  model.tokenizer, model.source = tok, spec
  return model


def _read_hf_config(cfg_path: str) -> dict[str, Any]:
  """A checkpoint's config.json as a dict, or a `CheckpointError` naming the file and the place it breaks."""
  try:
    hf = json.loads(files.read_text(cfg_path))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    where = f" at line {e.lineno}, column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else f" ({e})"
    raise CheckpointError(
      f"{cfg_path}: invalid JSON{where}; fix the file or re-download the checkpoint's config.json") from None
  if not isinstance(hf, dict):
    raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(hf).__name__}; re-download config.json")
  return hf


def _load_hf_dir(directory, overrides, want_tokenizer, cache_dir=None) -> Model:
  cfg_path = os.path.join(directory, "config.json")
  if not files.exists(cfg_path):
    raise CheckpointError(f"{cfg_path}: missing; an HF checkpoint directory needs config.json")
  hf = _read_hf_config(cfg_path)
  cfg = from_hf_config(hf, source=cfg_path, **overrides)
  source = SafetensorsSource(directory)
  weights.check_complete(cfg, source, directory)
  params = weights.load_params(cfg, source)
  tok = None
  if want_tokenizer:
    tok = _load_tokenizer(_local_small_files(directory, cache_dir) if files.is_remote(directory) else directory)
  hf = dict(hf)
  gen_eos = _generation_eos(directory)
  if gen_eos:
    hf["eos_token_id"] = gen_eos
  bos, eos_ids, pad = _special_ids(hf, tok)
  return Model(cfg, params, tok, bos, eos_ids, pad, directory, **_placement())


def _load_gguf(path, overrides, want_tokenizer, cache_dir) -> Model:
  source = GGUFSource(path)
  hf = source.hf_config()
  cfg = from_hf_config(hf, source=path, **overrides)
  weights.check_complete(cfg, source, path)
  params = weights.load_params(cfg, source)
  tok = _load_tokenizer(os.path.dirname(path) or ".", os.path.basename(path), cache_dir) if want_tokenizer else None
  bos, eos_ids, pad = _special_ids(hf, tok)
  return Model(cfg, params, tok, bos, eos_ids, pad, path, **_placement())


def from_config(cfg: ModelConfig, seed: int = 0, **ids) -> Model:
  """A randomly initialised model (tests, smoke runs), params created in their shardings on the current mesh."""
  params = weights.init_params(cfg, seed)
  return Model(cfg, params, None, ids.get("bos_id"), tuple(ids.get("eos_ids", ())), ids.get("pad_id", 0), "random",
               **_placement())


def save_pretrained(model: Model, out_dir: str, max_shard_bytes: int = 4 << 30, dtype: str | None = None) -> None:
  """Write an HF directory that `transformers.AutoModelForCausalLM.from_pretrained` loads.

  `dtype` ("float32", "bfloat16", "float16"; None = the params' own) is the dtype of the written weights and of
  config.json's `torch_dtype` / `dtype`: trained float32 master weights are usually served in bfloat16, which halves
  the folder and is what vLLM / SGLang would cast to anyway.

  Multi-host: call it on every process (params sharded across processes are gathered
  collectively); only process 0 writes, so processes never race on a shared filesystem.
  """
  save_dtypes = ("float32", "bfloat16", "float16")
  if dtype is not None and dtype not in save_dtypes:
    raise ValueError(f"dtype={dtype!r}: save_pretrained writes one of {', '.join(save_dtypes)}")
  cfg = model.config
  tensors = weights.export_tensors(cfg, model.params)
  if jax.process_index() != 0:
    return
  if dtype is not None:
    for name in list(tensors):  # one tensor at a time: the float32 original is freed as its copy is made
      tensors[name] = tensors[name].astype(jnp.dtype(dtype), copy=False)
  os.makedirs(out_dir, exist_ok=True)
  eos = list(model.eos_ids)
  hf = to_hf_config(cfg, model.bos_id, eos[0] if len(eos) == 1 else (eos or None), model.pad_id)
  # transformers >= 4.56 names the field `dtype` and older readers (and vLLM's) `torch_dtype`: both say the same.
  hf["torch_dtype"] = hf["dtype"] = dtype or hf["torch_dtype"]
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
    json.dump({"bos_token_id": model.bos_id, "eos_token_id": eos or None, "pad_token_id": model.pad_id}, f, indent=2)
  write_sharded(out_dir, tensors, max_shard_bytes)
  if model.tokenizer is not None:
    model.tokenizer.save_pretrained(out_dir)
