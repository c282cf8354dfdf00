"""`ModelConfig`: every architectural fact the decoder needs, as one frozen (hashable) record.

The decoder is a single config-driven module; Llama, Qwen2 and Gemma-2 differ only in the
fields below. The record is hashable so it can be a static argument of `jax.jit`.
`from_hf_config` / `to_hf_config` translate to and from a transformers `config.json`, so the
same facts are never written down twice.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from grm_jax.errors import UserError

FAMILIES = ("llama", "qwen2", "gemma2")

# transformers `architectures` / `model_type` values we can load, mapped to our family.
HF_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "gemma2": "gemma2"}
HF_ARCHITECTURES = {
  "LlamaForCausalLM": "llama",
  "Qwen2ForCausalLM": "qwen2",
  "Gemma2ForCausalLM": "gemma2",
}
_HF_ARCH_OF_FAMILY = {v: k for k, v in HF_ARCHITECTURES.items()}

# A "global" layer gets a window so large it never masks anything.
NO_WINDOW = 2**30


class UnsupportedModelError(ValueError, UserError):
  """A checkpoint describes an architecture or option this decoder does not implement."""


# The projections a LoRA adapter may wrap, by our param name (transformers' module name in `PEFT_MODULES`).
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class Lora:
  """Low-rank adapters on the chosen projections (Hu et al., 2021): W x + (alpha / rank) B A x, A [in, rank] random,
  B [rank, out] zero at the start, so a fresh adapter changes no logit. rank 0: none (full weights train).
  `dropout`: the probability of zeroing an element of x on its way into A (PEFT's `lora_dropout`), only in a training
  forward that is given a dropout key; evaluation, sampling and the frozen base never see it."""

  rank: int = 0
  alpha: float = 16.0
  targets: tuple[str, ...] = LORA_TARGETS
  dropout: float = 0.0

  def __post_init__(self):
    if self.rank < 0:
      raise ValueError(f"Lora.rank={self.rank}: use 0 (no adapters) or a positive rank")
    bad = [t for t in self.targets if t not in LORA_TARGETS]
    if bad or (self.rank and not self.targets):
      raise ValueError(f"Lora.targets={self.targets!r}: choose among {', '.join(LORA_TARGETS)}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"Lora.dropout={self.dropout}: a probability in [0, 1) (0: no dropout)")

  @property
  def scale(self) -> float:
    return float(self.alpha) / self.rank

  def wraps(self, name: str) -> bool:
    return bool(self.rank) and name in self.targets

  def as_json(self) -> dict[str, Any] | None:
    """What a saved stage records of its adapters (None: none), i.e. what loading them needs; `Lora.from_json` reads it
    back. Dropout is not part of it: it shapes training only, and a folder loads the same whatever it was."""
    return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)} if self.rank else None

  @classmethod
  def from_json(cls, facts: dict[str, Any] | None) -> Lora:
    return cls(facts["rank"], facts["alpha"], tuple(facts["targets"])) if facts else cls()


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling (transformers `rope_parameters` / `rope_scaling`)."""

  rope_type: str = "default"  # "default" | "linear" | "llama3"
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture plus dtypes. Field names follow transformers where one exists."""

  family: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling = RopeScaling()
  max_position_embeddings: int = 8192
  tie_word_embeddings: bool = False
  qkv_bias: bool = False
  # Gemma-2 specifics (neutral values give Llama behaviour).
  norm_plus_one: bool = False  # RMSNorm scales by (1 + w)
  sandwich_norms: bool = False  # extra post-attention / post-MLP norms
  scale_embeddings: bool = False  # multiply embeddings by sqrt(hidden_size)
  mlp_activation: str = "silu"  # "silu" | "gelu_tanh"
  query_pre_attn_scalar: float | None = None  # attention scale = this ** -0.5 (default head_dim)
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  sliding_window: int | None = None
  layer_types: tuple[str, ...] = ()  # per layer "full" | "sliding"; empty = all full
  # Numerics and memory.
  dtype: str = "float32"  # activations / compute
  param_dtype: str = "float32"
  cache_dtype: str | None = None  # KV cache; None = dtype (bf16 on GPU/TPU, f32 on CPU)
  remat: bool = False  # rematerialise each block in the backward pass
  prefill_chunk: int = 512  # cache-free attention over > this many tokens runs in causal query chunks (0 = off)
  # Unroll the layer scan and the LM head's chunk scan. Same numbers, longer compiles: only for counting a program's
  # FLOPs with XLA, whose cost analysis counts a loop body once however often it runs (grm_jax.aot).
  unroll_scans: bool = False
  # Low-rank adapters (rank 0: none); not a transformers fact: `from_hf_config` never sets it, `to_hf_config` skips it.
  lora: Lora = Lora()

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise UnsupportedModelError(f"ModelConfig.family={self.family!r}; expected one of {FAMILIES}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"ModelConfig: num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.layer_types and len(self.layer_types) != self.num_layers:
      raise ValueError(f"ModelConfig.layer_types has {len(self.layer_types)} entries for num_layers={self.num_layers}")
    bad = set(self.layer_types) - {"full", "sliding"}
    if bad:
      raise ValueError(f"ModelConfig.layer_types: unknown kinds {sorted(bad)}; use 'full' or 'sliding'")
    if "sliding" in self.layer_types and not self.sliding_window:
      raise ValueError("ModelConfig: sliding layers need sliding_window > 0")
    if self.mlp_activation not in ("silu", "gelu_tanh"):
      raise UnsupportedModelError(f"ModelConfig.mlp_activation={self.mlp_activation!r}")
    if self.rope_scaling.rope_type not in ("default", "linear", "llama3"):
      raise UnsupportedModelError(
        f"rope type {self.rope_scaling.rope_type!r} is not implemented; supported: default, linear, llama3"
      )

  def replace(self, **kw) -> ModelConfig:
    return dataclasses.replace(self, **kw)

  @property
  def attn_scale(self) -> float:
    return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

  def layer_windows(self) -> np.ndarray:
    """Per-layer attention window in tokens (NO_WINDOW for global layers)."""
    kinds = self.layer_types or ("full",) * self.num_layers
    return np.array([self.sliding_window if k == "sliding" else NO_WINDOW for k in kinds], np.int32)

  def rope_inv_freq(self) -> np.ndarray:
    """Inverse RoPE frequencies [head_dim // 2], including Llama-3 / linear scaling."""
    dim = self.head_dim
    inv = 1.0 / (self.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
    rs = self.rope_scaling
    if rs.rope_type == "linear":
      inv = inv / rs.factor
    elif rs.rope_type == "llama3":
      low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor
      high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor
      wavelen = 2 * math.pi / inv
      scaled = np.where(wavelen > low_wavelen, inv / rs.factor, inv)
      smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) / (
        rs.high_freq_factor - rs.low_freq_factor
      )
      smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
      medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
      inv = np.where(medium, smoothed, scaled)
    return inv.astype(np.float32)

  def num_params(self) -> int:
    d, f, h, kv, hd = self.hidden_size, self.intermediate_size, self.num_heads, self.num_kv_heads, self.head_dim
    attn = d * hd * (h + 2 * kv) + h * hd * d + (hd * (h + 2 * kv) if self.qkv_bias else 0)
    norms = d * (4 if self.sandwich_norms else 2)
    per_layer = attn + 3 * d * f + norms
    head = 0 if self.tie_word_embeddings else d * self.vocab_size
    return self.num_layers * per_layer + self.vocab_size * d + d + head


# --------------------------------------------------------------------------- transformers


def _rope_from_hf(hf: dict[str, Any]) -> tuple[float, RopeScaling]:
  # transformers >= 5 writes `rope_parameters`; older files write `rope_theta` + `rope_scaling`.
  params = dict(hf.get("rope_parameters") or {})
  scaling = dict(hf.get("rope_scaling") or {})
  theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
  merged = {**scaling, **params}
  kind = merged.get("rope_type", merged.get("type", "default"))
  if kind in (None, "default"):
    return theta, RopeScaling()
  if kind not in ("linear", "llama3"):
    raise UnsupportedModelError(
      f"config.json: rope type {kind!r} is not implemented (supported: default, linear, llama3)"
    )
  return theta, RopeScaling(
    rope_type=kind,
    factor=float(merged.get("factor", 1.0)),
    low_freq_factor=float(merged.get("low_freq_factor", 1.0)),
    high_freq_factor=float(merged.get("high_freq_factor", 4.0)),
    original_max_position_embeddings=int(
      merged.get("original_max_position_embeddings", hf.get("max_position_embeddings", 8192))
    ),
  )


def family_of_hf_config(hf: dict[str, Any], source: str = "config.json") -> str:
  archs = hf.get("architectures") or []
  for a in archs:
    if a in HF_ARCHITECTURES:
      return HF_ARCHITECTURES[a]
  mt = hf.get("model_type")
  if mt in HF_MODEL_TYPES:
    return HF_MODEL_TYPES[mt]
  raise UnsupportedModelError(
    f"{source}: architecture {archs or mt!r} is not supported; grm_jax implements "
    f"{sorted(HF_ARCHITECTURES)} (model_type {sorted(HF_MODEL_TYPES)}). Convert the checkpoint "
    "to one of these or add the family to grm_jax/models/config.py."
  )


def from_hf_config(hf: dict[str, Any], source: str = "config.json", **overrides) -> ModelConfig:
  """Build a ModelConfig from a transformers config dict (the parsed config.json)."""
  family = family_of_hf_config(hf, source)

  def need(key):
    if key not in hf:
      raise ValueError(f"{source}: required key {key!r} is missing")
    return hf[key]

  hidden, heads = int(need("hidden_size")), int(need("num_attention_heads"))
  theta, scaling = _rope_from_hf(hf)
  kw: dict[str, Any] = dict(
    family=family,
    vocab_size=int(need("vocab_size")),
    hidden_size=hidden,
    intermediate_size=int(need("intermediate_size")),
    num_layers=int(need("num_hidden_layers")),
    num_heads=heads,
    num_kv_heads=int(hf.get("num_key_value_heads") or heads),
    head_dim=int(hf.get("head_dim") or hidden // heads),
    rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6 if family == "gemma2" else 1e-5)),
    rope_theta=theta,
    rope_scaling=scaling,
    max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
    tie_word_embeddings=bool(hf.get("tie_word_embeddings", family == "gemma2")),
  )
  act = hf.get("hidden_activation") or hf.get("hidden_act") or "silu"
  if act in ("silu", "swish"):
    kw["mlp_activation"] = "silu"
  elif act in ("gelu_pytorch_tanh", "gelu_tanh"):
    kw["mlp_activation"] = "gelu_tanh"
  else:
    raise UnsupportedModelError(f"{source}: hidden_act {act!r} is not implemented (silu, gelu_pytorch_tanh)")
  if family == "llama":
    if hf.get("attention_bias") or hf.get("mlp_bias"):
      raise UnsupportedModelError(f"{source}: attention_bias / mlp_bias for llama is not implemented")
  if family == "qwen2":
    kw["qkv_bias"] = True
    if hf.get("use_sliding_window"):
      raise UnsupportedModelError(f"{source}: Qwen2 use_sliding_window=true is not implemented")
  if family == "gemma2":
    kinds = hf.get("layer_types") or [
      "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(kw["num_layers"])
    ]
    kw.update(
      norm_plus_one=True,
      sandwich_norms=True,
      scale_embeddings=True,
      query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", kw["head_dim"])),
      attn_logit_softcap=hf.get("attn_logit_softcapping"),
      final_logit_softcap=hf.get("final_logit_softcapping"),
      sliding_window=hf.get("sliding_window"),
      layer_types=tuple("sliding" if k == "sliding_attention" else "full" for k in kinds),
    )
  kw.update(overrides)
  return ModelConfig(**kw)


def _int_if_whole(x):
  # transformers' strict config validation wants ints where the value is integral.
  return int(x) if x is not None and float(x).is_integer() else x


def to_hf_config(cfg: ModelConfig, bos_token_id=None, eos_token_id=None, pad_token_id=None) -> dict[str, Any]:
  """The transformers config.json that describes `cfg` (used by `save_pretrained`)."""
  rope: dict[str, Any] = {"rope_type": cfg.rope_scaling.rope_type, "rope_theta": cfg.rope_theta}
  if cfg.rope_scaling.rope_type == "linear":
    rope["factor"] = cfg.rope_scaling.factor
  elif cfg.rope_scaling.rope_type == "llama3":
    rope.update(dataclasses.asdict(cfg.rope_scaling))
  hf: dict[str, Any] = {
    "architectures": [_HF_ARCH_OF_FAMILY[cfg.family]],
    "model_type": cfg.family,
    "vocab_size": cfg.vocab_size,
    "hidden_size": cfg.hidden_size,
    "intermediate_size": cfg.intermediate_size,
    "num_hidden_layers": cfg.num_layers,
    "num_attention_heads": cfg.num_heads,
    "num_key_value_heads": cfg.num_kv_heads,
    "head_dim": cfg.head_dim,
    "rms_norm_eps": cfg.rms_norm_eps,
    "rope_theta": cfg.rope_theta,
    "rope_parameters": rope,
    "max_position_embeddings": cfg.max_position_embeddings,
    "tie_word_embeddings": cfg.tie_word_embeddings,
    "torch_dtype": cfg.param_dtype,
    "bos_token_id": bos_token_id,
    "eos_token_id": eos_token_id,
    "pad_token_id": pad_token_id,
  }
  if cfg.rope_scaling.rope_type != "default":
    hf["rope_scaling"] = dict(rope)
  if cfg.family == "gemma2":
    hf.update(
      hidden_activation="gelu_pytorch_tanh",
      hidden_act="gelu_pytorch_tanh",
      query_pre_attn_scalar=_int_if_whole(cfg.query_pre_attn_scalar),
      attn_logit_softcapping=cfg.attn_logit_softcap,
      final_logit_softcapping=cfg.final_logit_softcap,
      sliding_window=cfg.sliding_window,
      layer_types=[("sliding_attention" if k == "sliding" else "full_attention") for k in cfg.layer_types],
    )
  else:
    hf["hidden_act"] = cfg.mlp_activation
  if cfg.family == "qwen2":
    hf["use_sliding_window"] = False
  return hf


# --------------------------------------------------------------------------- presets

# fmt: off
# What every Gemma-2 size shares.
_GEMMA2: dict[str, Any] = dict(
  family="gemma2", vocab_size=256000, rms_norm_eps=1e-6, max_position_embeddings=8192, tie_word_embeddings=True,
  norm_plus_one=True, sandwich_norms=True, scale_embeddings=True, mlp_activation="gelu_tanh",
  attn_logit_softcap=50.0, final_logit_softcap=30.0, sliding_window=4096,
)

PRESETS: dict[str, dict[str, Any]] = {
  # The embedded default (grm_jax.models.builtin); the GGUF's metadata gives the same numbers.
  "smollm2-135m": dict(
    family="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
    num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, rope_theta=100000.0, max_position_embeddings=8192,
    tie_word_embeddings=True,
  ),
  "qwen2.5-1.5b": dict(
    family="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12,
    num_kv_heads=2, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=32768,
    tie_word_embeddings=True, qkv_bias=True,
  ),
  "gemma2-2b": dict(
    **_GEMMA2, hidden_size=2304, intermediate_size=9216, num_layers=26, num_heads=8, num_kv_heads=4,
    head_dim=256, query_pre_attn_scalar=256.0, layer_types=("sliding", "full") * 13,
  ),
  "gemma2-9b": dict(
    **_GEMMA2, hidden_size=3584, intermediate_size=14336, num_layers=42, num_heads=16, num_kv_heads=8,
    head_dim=256, query_pre_attn_scalar=256.0, layer_types=("sliding", "full") * 21,
  ),
  # The paper's base model (DeepSeek-GRM-27B is Gemma-2-27B); its attention scale is hidden/heads.
  "gemma2-27b": dict(
    **_GEMMA2, hidden_size=4608, intermediate_size=36864, num_layers=46, num_heads=32, num_kv_heads=16,
    head_dim=128, query_pre_attn_scalar=144.0, layer_types=("sliding", "full") * 23,
  ),
  "llama3.2-1b": dict(
    family="llama",
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_layers=16,
    num_heads=32,
    num_kv_heads=8,
    head_dim=64,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    rope_scaling=RopeScaling("llama3", 32.0, 1.0, 4.0, 8192),
    max_position_embeddings=131072,
    tie_word_embeddings=True,
  ),
}
# fmt: on


def preset(name: str, **overrides) -> ModelConfig:
  """A named architecture (random init or a shape reference for a checkpoint)."""
  if name not in PRESETS:
    raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
  return ModelConfig(**{**PRESETS[name], **overrides})


def tiny(family: str, **overrides) -> ModelConfig:
  """A tiny random architecture of a family, for tests and smoke runs."""
  base: dict[str, Any] = dict(
    family=family,
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    rope_theta=10000.0,
    max_position_embeddings=512,
  )
  if family == "qwen2":
    base.update(qkv_bias=True, rms_norm_eps=1e-6)
  if family == "gemma2":
    base.update(
      num_layers=4,
      tie_word_embeddings=True,
      norm_plus_one=True,
      sandwich_norms=True,
      scale_embeddings=True,
      mlp_activation="gelu_tanh",
      query_pre_attn_scalar=24.0,
      attn_logit_softcap=50.0,
      final_logit_softcap=30.0,
      sliding_window=8,
      layer_types=("sliding", "full") * 2,
      rms_norm_eps=1e-6,
    )
  base.update(overrides)
  return ModelConfig(**base)
