"""Checkpoint IO against independent references: HF export round trips, the real embedded
model through transformers, and GGUF files written here the way llama.cpp's converter does.

Every reference is produced by code that is not ours (transformers, PyTorch, the `gguf`
package's writer and llama.cpp's tensor-name map), so a bug shared by our loader and our
exporter cannot cancel out.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from grm_jax import models
from tests.hf_reference import hf_logits, random_hf_model

FAMILIES = ("llama", "qwen2", "gemma2")
# README: "tiny models' logits after the round trip agree to <= 5.1e-7"; held to twice that.
ROUND_TRIP = 2 * 5.1e-7


def _tokens(vocab: int, shape=(2, 16), seed: int = 0) -> np.ndarray:
  # 16 tokens is twice the tiny Gemma-2 sliding window, so windowed layers really mask.
  return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int32)


def _max_abs(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _load_hf(directory):
  import torch
  from transformers import AutoModelForCausalLM

  # Eager attention: the SDPA path does not implement Gemma-2's logit soft-capping.
  return AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, attn_implementation="eager").eval()


def _hf_checkpoint(tmp_path, family: str, seed: int = 0, **overrides):
  """A random transformers model of the tiny `family` config, saved as an HF directory."""
  cfg = models.tiny(family, **overrides)
  hf = random_hf_model(cfg, seed=seed)
  src = tmp_path / f"hf-{family}"
  hf.save_pretrained(str(src))
  return cfg, hf, src


# --------------------------------------------------------------------------- HF export


@pytest.mark.parametrize("family", FAMILIES)
def test_export_round_trip_matches_transformers(tmp_path, family):
  """HF dir -> our loader -> save_pretrained -> transformers loads it -> same logits."""
  cfg, hf, src = _hf_checkpoint(tmp_path, family)
  ours = models.load(str(src), tokenizer=False)
  assert ours.config.tie_word_embeddings == cfg.tie_word_embeddings
  tokens = _tokens(cfg.vocab_size)
  got = np.asarray(models.logits(ours, tokens))
  loaded = _max_abs(got, hf_logits(hf, tokens))
  print(f"{family}: loaded vs transformers max|dlogits| = {loaded:.3g}")
  assert loaded <= 2 * 6.3e-7  # loading is right (pinned in tests/models/test_parity.py; README: <= 6.3e-7)

  out = tmp_path / "export"
  models.save_pretrained(ours, str(out))
  assert os.path.exists(out / "model.safetensors") and not os.path.exists(out / "model.safetensors.index.json")
  back = _load_hf(out)
  assert type(back).__name__ == type(hf).__name__
  assert bool(back.config.tie_word_embeddings) == cfg.tie_word_embeddings
  # The weights survive bit for bit (the layout changes are transposes and reshapes) ...
  want, have = hf.state_dict(), back.state_dict()
  assert set(have) == set(want)
  for name, t in want.items():
    assert have[name].dtype == t.dtype and np.array_equal(have[name].numpy(), t.numpy()), name
  # ... and transformers computes what we compute.
  diff = _max_abs(hf_logits(back, tokens), got)
  print(f"{family}: export round trip max|dlogits| = {diff:.3g}")
  assert diff <= ROUND_TRIP, (family, diff)


def test_sharded_export_writes_index_and_reads_back(tmp_path):
  cfg, hf, src = _hf_checkpoint(tmp_path, "llama", seed=1)
  ours = models.load(str(src), tokenizer=False)
  out = tmp_path / "sharded"
  limit = 100_000  # bytes; the tiny model is ~420 kB, its largest tensor 64 kB
  models.save_pretrained(ours, str(out), max_shard_bytes=limit)

  with open(out / "model.safetensors.index.json") as f:
    index = json.load(f)
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) >= 3, shards
  assert not os.path.exists(out / "model.safetensors")
  assert sorted(p for p in os.listdir(out) if p.endswith(".safetensors")) == shards
  for i, name in enumerate(shards):
    assert name == f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    assert os.path.getsize(out / name) <= limit + 4096  # data plus a small JSON header
  assert not cfg.tie_word_embeddings
  assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in hf.state_dict().values())
  assert set(index["weight_map"]) == set(hf.state_dict())

  tokens = _tokens(cfg.vocab_size, seed=1)
  want = np.asarray(models.logits(ours, tokens))
  again = models.load(str(out), tokenizer=False)
  assert _max_abs(models.logits(again, tokens), want) == 0.0
  assert _max_abs(hf_logits(_load_hf(out), tokens), want) <= ROUND_TRIP


# --------------------------------------------------------------------------- the embedded model


CHAT = [
  {"role": "system", "content": "You are a careful judge of answers."},
  {"role": "user", "content": "Which is larger, 9.11 or 9.9? Answer briefly."},
]


def test_smollm2_export_loads_in_transformers(smollm2, tmp_path):
  """The real embedded model: our export is a complete HF checkpoint, weights and tokenizer."""
  import torch
  from transformers import AutoTokenizer

  out = tmp_path / "smollm2"
  models.save_pretrained(smollm2, str(out))
  tok = AutoTokenizer.from_pretrained(str(out))
  ids = smollm2.encode_chat(CHAT)
  hf_ids = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)
  if hasattr(hf_ids, "keys"):
    hf_ids = hf_ids["input_ids"]
  assert list(hf_ids) == ids
  assert tok.decode(ids).startswith("<|im_start|>system\nYou are a careful judge")
  assert tok.eos_token_id in smollm2.eos_ids

  hf = _load_hf(out)
  assert hf.config.num_hidden_layers == 30 and hf.config.tie_word_embeddings
  tokens = np.asarray([ids], np.int32)
  with torch.no_grad():
    ref = hf(torch.tensor(tokens, dtype=torch.long)).logits.float().numpy()
  got = np.asarray(models.logits(smollm2, tokens))
  diff = _max_abs(got, ref)
  print(f"smollm2: {len(ids)} tokens, max|dlogits| = {diff:.3g} (logit scale {np.abs(ref).max():.3g})")
  # The export itself is exact: transformers holds our float32 weights bit for bit.
  sd = hf.state_dict()
  np.testing.assert_array_equal(sd["model.embed_tokens.weight"].numpy(), np.asarray(smollm2.params["embed"]))
  q = np.asarray(smollm2.params["layers"]["attn"]["q"][7])  # [D, heads, hd]
  np.testing.assert_array_equal(sd["model.layers.7.self_attn.q_proj.weight"].numpy(), q.reshape(q.shape[0], -1).T)
  # Logits: 30 float32 layers with logits up to ~37 put the noise floor above 1e-5 absolute.
  # Measured on this prompt: ours vs HF 1.5e-4; HF eager vs HF sdpa 7e-5; vs a float64 HF
  # forward, ours 1.4e-4 and HF eager 7.7e-5. So the bound is 1e-5 relative to the logit scale.
  assert diff <= 1e-5 * max(1.0, float(np.abs(ref).max()))
  assert np.array_equal(got[0, -1].argmax(), ref[0, -1].argmax())
  del hf, sd
  shutil.rmtree(out)  # ~0.5 GB of float32 weights; pytest keeps old tmp dirs around


# --------------------------------------------------------------------------- GGUF, written here


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute`: rotate-half rows -> interleaved."""
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, cfg: models.ModelConfig, hf_model, arch: str | None = None, tensor_filter=None) -> None:
  """Write `hf_model` as an F32 GGUF the way llama.cpp's converter lays it out.

  Names come from the `gguf` package's own HF -> GGUF tensor map; llama Q/K rows are
  permuted for llama.cpp's rotary layout and Gemma norms stored with the +1 folded in, as the
  converter does. `arch` overrides general.architecture (to test rejection).
  """
  import gguf

  family = cfg.family
  arch = arch or family
  name_map = gguf.get_tensor_name_map(
    {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "gemma2": gguf.MODEL_ARCH.GEMMA2}[family],
    cfg.num_layers,
  )
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(cfg.num_layers)
  w.add_context_length(cfg.max_position_embeddings)
  w.add_embedding_length(cfg.hidden_size)
  w.add_feed_forward_length(cfg.intermediate_size)
  w.add_head_count(cfg.num_heads)
  w.add_head_count_kv(cfg.num_kv_heads)
  w.add_key_length(cfg.head_dim)
  w.add_value_length(cfg.head_dim)
  w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
  w.add_rope_freq_base(cfg.rope_theta)
  w.add_vocab_size(cfg.vocab_size)
  w.add_bos_token_id(1)
  w.add_eos_token_id(2)
  w.add_pad_token_id(0)
  if family == "gemma2":
    w.add_attn_logit_softcapping(cfg.attn_logit_softcap)
    w.add_final_logit_softcapping(cfg.final_logit_softcap)
    w.add_sliding_window(cfg.sliding_window)
  for hf_name, t in hf_model.state_dict().items():
    if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
      continue  # tied: llama.cpp writes no output.weight
    if tensor_filter is not None and not tensor_filter(hf_name):
      continue
    name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    assert name is not None, hf_name
    a = t.detach().float().numpy().copy()
    if family == "llama" and hf_name.endswith("q_proj.weight"):
      a = llama_cpp_permute(a, cfg.num_heads)
    elif family == "llama" and hf_name.endswith("k_proj.weight"):
      a = llama_cpp_permute(a, cfg.num_kv_heads)
    if family == "gemma2" and hf_name.endswith("norm.weight"):
      a = a + 1.0
    w.add_tensor(name, np.ascontiguousarray(a, np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def _gguf_overrides(family: str) -> dict:
  # llama.cpp derives Gemma-2's attention scale from head_dim (except the 27B model), so
  # the reference model must use query_pre_attn_scalar == head_dim to be expressible in GGUF.
  return {"query_pre_attn_scalar": 16.0} if family == "gemma2" else {}


@pytest.mark.parametrize("family", FAMILIES)
def test_gguf_written_like_llama_cpp_matches_transformers(tmp_path, family):
  """Independent proof of the Q/K un-permute (llama) and the Gemma norm -1, with F32 data."""
  cfg = models.tiny(family, **_gguf_overrides(family))
  hf = random_hf_model(cfg, seed=2)
  path = tmp_path / f"tiny-{family}.gguf"
  write_gguf(path, cfg, hf)
  ours = models.load(str(path), tokenizer=False)
  assert ours.config.replace(rms_norm_eps=cfg.rms_norm_eps) == cfg
  assert (ours.bos_id, ours.eos_ids, ours.pad_id) == (1, (2,), 0)
  tokens = _tokens(cfg.vocab_size, seed=2)
  diff = _max_abs(models.logits(ours, tokens), hf_logits(hf, tokens))
  print(f"{family}: GGUF (llama.cpp layout) vs transformers max|dlogits| = {diff:.3g}")
  assert diff <= 1e-4


def test_gguf_without_unpermute_would_be_caught(tmp_path):
  """The GGUF parity test has teeth: the permuted rows alone give visibly different logits."""
  cfg = models.tiny("llama")
  hf = random_hf_model(cfg, seed=3)
  path = tmp_path / "tiny.gguf"
  write_gguf(path, cfg, hf)
  from grm_jax.models import gguf_io

  src = gguf_io.GGUFSource(str(path))
  q = src.get("model.layers.0.self_attn.q_proj.weight")
  np.testing.assert_array_equal(q, hf.state_dict()["model.layers.0.self_attn.q_proj.weight"].numpy())
  assert not np.array_equal(llama_cpp_permute(q, cfg.num_heads), q)
