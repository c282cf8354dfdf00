"""GGUF files (llama.cpp): config from metadata, tensors dequantised to float32 on read.

GGUF tensor names are translated to transformers names, so the one `weights.param_map`
table serves both formats. Two llama.cpp conventions are undone here:
  * for the `llama` architecture, Q and K rows are stored permuted for llama.cpp's
    interleaved rotary layout; we un-permute them back to transformers' rotate-half layout;
  * for `gemma2`, norm weights are stored with the +1 already added; we subtract it because
    our RMSNorm adds it (as transformers does).
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

import numpy as np

from grm_jax.errors import UserError
from grm_jax.models.config import UnsupportedModelError
from grm_jax.models.weights import TensorSource

_GGUF_ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gemma2": "Gemma2ForCausalLM"}

_LAYER_NAMES = {
  "attn_norm": "input_layernorm",
  "attn_q": "self_attn.q_proj",
  "attn_k": "self_attn.k_proj",
  "attn_v": "self_attn.v_proj",
  "attn_output": "self_attn.o_proj",
  "ffn_gate": "mlp.gate_proj",
  "ffn_up": "mlp.up_proj",
  "ffn_down": "mlp.down_proj",
}
_LAYER_NAMES_LLAMA = {"ffn_norm": "post_attention_layernorm"}
_LAYER_NAMES_GEMMA2 = {
  "post_attention_norm": "post_attention_layernorm",
  "ffn_norm": "pre_feedforward_layernorm",
  "post_ffw_norm": "post_feedforward_layernorm",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


class GGUFError(ValueError, UserError):
  """The GGUF file cannot be read as a supported model; the message names the file."""


def _hf_name(gguf_name: str, arch: str) -> str | None:
  m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
  if m:
    i, part, kind = m.groups()
    table = {**_LAYER_NAMES, **(_LAYER_NAMES_GEMMA2 if arch == "gemma2" else _LAYER_NAMES_LLAMA)}
    return f"model.layers.{i}.{table[part]}.{kind}" if part in table else None
  m = re.fullmatch(r"(\w+)\.(weight|bias)", gguf_name)
  if m and m.group(1) in _GLOBAL_NAMES:
    return f"{_GLOBAL_NAMES[m.group(1)]}.{m.group(2)}"
  return None


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  """Inverse of llama.cpp's convert `permute` (interleaved -> rotate-half rows)."""
  rows = w.shape[0]
  return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _open(path: str):
  """The file's reader, parsed once per version of the file: parsing SmolLM2's 49,152-token vocabulary metadata takes
  seconds, and a run opens the same GGUF in every stage (and a tiny model reads its tokenizer's special ids here)."""
  try:
    st = os.stat(path)
  except OSError:
    return _read.__wrapped__(path, 0, 0)  # not cached: the reader reports what is wrong
  return _read(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int):
  del mtime_ns, size  # the cache key: a rewritten file is parsed again
  import gguf

  try:
    return gguf.GGUFReader(path, "r")
  except ValueError as e:
    # An unknown GGML type id fails inside the reader's enum lookup.
    if "GGMLQuantizationType" in str(e):
      raise GGUFError(
        f"{path}: uses a quantisation type unknown to this gguf library ({e}); re-quantise to "
        "F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_x/Q6_K/Q4_K/... or upgrade the `gguf` package"
      ) from e
    raise GGUFError(f"{path}: not a readable GGUF file ({e}); it is truncated or corrupt: re-download it") from e
  except Exception as e:  # truncated files surface as numpy/struct errors
    raise GGUFError(
      f"{path}: not a readable GGUF file ({type(e).__name__}: {e}); it is truncated or corrupt: re-download it"
    ) from e


def _field(reader, key: str, default: Any = None) -> Any:
  f = reader.fields.get(key)
  if f is None:
    return default
  return f.contents()


def _required(reader, key: str, path: str) -> Any:
  """A metadata value the model cannot be built without; a clear error when it is absent."""
  v = _field(reader, key)
  if v is None:
    raise GGUFError(
      f"{path}: metadata key {key!r} is missing; the file was not written by llama.cpp's converter "
      "(convert_hf_to_gguf.py) or is damaged. Re-convert it, or load the HF checkpoint directory instead"
    )
  return v


class GGUFSource(TensorSource):
  def __init__(self, path: str):
    import gguf
    import gguf.quants

    self.path = path
    self.reader = _open(path)
    self.arch = _field(self.reader, "general.architecture")
    if self.arch not in _GGUF_ARCHS:
      raise UnsupportedModelError(
        f"{path}: general.architecture={self.arch!r} is not supported; grm_jax reads GGUF "
        f"architectures {sorted(_GGUF_ARCHS)}. Use a GGUF of one of those, or add the architecture "
        "to grm_jax/models/gguf_io.py"
      )
    self.n_head = int(_required(self.reader, f"{self.arch}.attention.head_count", path))
    self.n_kv_head = int(_field(self.reader, f"{self.arch}.attention.head_count_kv", self.n_head))
    self._tensors: dict[str, Any] = {}
    for t in self.reader.tensors:
      qtype = t.tensor_type
      plain = qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16)
      if not plain and qtype not in getattr(gguf.quants, "_type_traits", {}):
        raise GGUFError(
          f"{path}: tensor {t.name!r} uses quantisation {qtype.name}, which grm_jax cannot "
          "dequantise; convert the file to F32/F16/Q8_0/Q4_K (llama-quantize) or use the HF checkpoint"
        )
      name = _hf_name(t.name, self.arch)
      if name is not None:
        self._tensors[name] = t

  def names(self) -> set[str]:
    return set(self._tensors)

  def describe(self, name: str) -> str:
    t = self._tensors.get(name)
    return f"{self.path} [{t.name if t is not None else name}]"

  def get(self, name: str) -> np.ndarray:
    import gguf.quants

    t = self._tensors[name]
    try:
      w = gguf.quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError as e:
      raise GGUFError(f"{self.describe(name)}: cannot dequantise {t.tensor_type.name} ({e})") from e
    w = np.asarray(w, np.float32).reshape(tuple(int(x) for x in reversed(t.shape)))
    if self.arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
      heads = self.n_head if name.endswith("q_proj.weight") else self.n_kv_head
      if w.shape[0] % (2 * heads):
        raise GGUFError(
          f"{self.describe(name)}: {w.shape[0]} rows cannot be {heads} heads of even size; the tensor does "
          "not match the file's attention.head_count metadata (re-convert the model)"
        )
      w = _unpermute(w, heads)
    if self.arch == "gemma2" and name.endswith("norm.weight"):
      w = w - 1.0
    return w

  # ------------------------------------------------------------------ config and tokens

  def hf_config(self) -> dict[str, Any]:
    """A transformers-style config dict built from the GGUF metadata."""
    a, r = self.arch, self.reader
    hidden = int(_required(r, f"{a}.embedding_length", self.path))
    tokens = r.fields.get("tokenizer.ggml.tokens")
    vocab = _field(r, f"{a}.vocab_size") or (len(tokens.data) if tokens is not None else None)
    if vocab is None:
      vocab = _required(r, f"{a}.vocab_size", self.path)  # neither it nor tokenizer.ggml.tokens
    head_dim = int(_field(r, f"{a}.attention.key_length", hidden // self.n_head))
    hf: dict[str, Any] = {
      "architectures": [_GGUF_ARCHS[a]],
      "model_type": a,
      "vocab_size": int(vocab),
      "hidden_size": hidden,
      "intermediate_size": int(_required(r, f"{a}.feed_forward_length", self.path)),
      "num_hidden_layers": int(_required(r, f"{a}.block_count", self.path)),
      "num_attention_heads": self.n_head,
      "num_key_value_heads": self.n_kv_head,
      "head_dim": head_dim,
      "rms_norm_eps": float(_field(r, f"{a}.attention.layer_norm_rms_epsilon", 1e-5)),
      "rope_theta": float(_field(r, f"{a}.rope.freq_base", 10000.0)),
      "max_position_embeddings": int(_field(r, f"{a}.context_length", 8192)),
      "tie_word_embeddings": "lm_head.weight" not in self._tensors,
    }
    if a == "gemma2":
      hf["hidden_activation"] = "gelu_pytorch_tanh"
      # llama.cpp's rule: the 27B model (46 layers) scales by hidden/heads, others by head_dim.
      hf["query_pre_attn_scalar"] = hidden // self.n_head if hf["num_hidden_layers"] == 46 else head_dim
      hf["attn_logit_softcapping"] = _field(r, f"{a}.attn_logit_softcapping", 50.0)
      hf["final_logit_softcapping"] = _field(r, f"{a}.final_logit_softcapping", 30.0)
      hf["sliding_window"] = int(_field(r, f"{a}.attention.sliding_window", 4096))
    for key in ("bos", "eos", "padding"):
      v = _field(r, f"tokenizer.ggml.{key}_token_id")
      if v is not None:
        hf[("pad" if key == "padding" else key) + "_token_id"] = int(v)
    return hf

  def chat_template(self) -> str | None:
    return _field(self.reader, "tokenizer.chat_template")
