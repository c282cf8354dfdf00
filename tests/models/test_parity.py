"""Logits parity with transformers (PyTorch, f32): tiny random models and the real embedded one."""

import os

import numpy as np
import pytest

from grm_jax import models
from grm_jax.models import builtin
from tests.hf_reference import hf_logits, random_hf_model

# README's "Measured" table: max |Δlogit| vs transformers 3.6e-7 (tiny Llama), 4.8e-7 (Qwen2), 6.3e-7 (Gemma-2), f32 on
# CPU. Each family is held to twice its printed value (float32 summation order varies a little across XLA builds).
README_PARITY = {"llama": 3.6e-7, "qwen2": 4.8e-7, "gemma2": 6.3e-7}
TOL = {name: 2 * README_PARITY[name.split("_")[0]] for name in ("llama", "llama_tied", "qwen2", "gemma2")}

CONFIGS = {
  # Llama-3 rope scaling with a short original context, so the scaled band is exercised.
  "llama": models.tiny(
    "llama", tie_word_embeddings=False, rope_scaling=models.RopeScaling("llama3", 8.0, 1.0, 4.0, 64)
  ),
  "llama_tied": models.tiny("llama", tie_word_embeddings=True),
  "qwen2": models.tiny("qwen2"),
  # Window 8 < sequence 24, and caps small enough that tanh is far from linear.
  "gemma2": models.tiny("gemma2", attn_logit_softcap=0.1, final_logit_softcap=0.5),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
  cfg = CONFIGS[request.param]
  hf = random_hf_model(cfg, seed=1)
  d = tmp_path_factory.mktemp(request.param)
  hf.save_pretrained(d)
  return request.param, hf, models.load(str(d), tokenizer=False)


def _batch(cfg, t=24):
  rng = np.random.RandomState(0)
  tokens = rng.randint(0, cfg.vocab_size, (3, t))
  mask = np.ones((3, t), np.int32)
  mask[1, :5] = 0
  mask[2, :11] = 0
  return tokens, mask


def test_logits_match_transformers_unpadded(pair):
  name, hf, ours = pair
  tokens, _ = _batch(ours.config)
  got = np.asarray(models.logits(ours, tokens))
  ref = hf_logits(hf, tokens)
  err = np.abs(got - ref).max()
  print(f"{name}: max|Δlogit| unpadded = {err:.2e} (|logit| up to {np.abs(ref).max():.2f})")
  assert err <= TOL[name], (name, err)


def test_logits_match_transformers_left_padded(pair):
  name, hf, ours = pair
  tokens, mask = _batch(ours.config)
  positions = np.maximum(mask.cumsum(-1) - 1, 0)
  got = np.asarray(models.logits(ours, tokens, mask))
  ref = hf_logits(hf, tokens, mask, positions)
  real = mask.astype(bool)
  err = np.abs(got - ref)[real].max()
  print(f"{name}: max|Δlogit| left-padded = {err:.2e}")
  assert err <= TOL[name], (name, err)


def test_padding_does_not_change_real_tokens(pair):
  """A left-padded row gives the logits of the same tokens unpadded (invariant, no reference)."""
  _, _, ours = pair
  tokens, mask = _batch(ours.config)
  padded = np.asarray(models.logits(ours, tokens, mask))
  alone = np.asarray(models.logits(ours, tokens[2:3, 11:]))
  assert np.abs(padded[2, 11:] - alone[0]).max() <= 1e-5


def test_softcaps_and_window_are_live(pair):
  """Guard against a parity test that passes because a Gemma-2 feature is inert at these sizes."""
  name, _, m = pair
  if name != "gemma2":
    pytest.skip("Gemma-2 only")
  tokens, _ = _batch(m.config)
  base = np.asarray(models.logits(m, tokens))
  for change in (dict(sliding_window=1000), dict(attn_logit_softcap=None), dict(final_logit_softcap=None)):
    other = models.Model(m.config.replace(**change), m.params)
    diff = np.abs(np.asarray(models.logits(other, tokens)) - base).max()
    print(f"gemma2 without {change}: max|Δlogit| = {diff:.3f}")
    assert diff > 1e-2, change
  assert np.abs(base).max() <= 0.5 + 1e-6  # final soft-cap bounds the logits


def test_real_smollm2_matches_transformers_gguf(smollm2):
  """The embedded SmolLM2-135M-Instruct vs transformers reading the same Q4_1 GGUF."""
  import torch
  from transformers import AutoModelForCausalLM

  path = builtin.locate("smollm2-135m-instruct")
  hf = AutoModelForCausalLM.from_pretrained(
    os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
  ).eval()
  chat = [
    {"role": "system", "content": "You are a careful judge of answers."},
    {
      "role": "user",
      "content": "Which answer is right? Question: what is the capital of Australia? "
      "Response 1: Sydney, because it is the largest city and hosts the Opera House. "
      "Response 2: Canberra, purpose-built as a compromise between Sydney and Melbourne. "
      "Critique each response for accuracy, relevance and clarity, state the principles you judge by, "
      "weigh them, and finally give each response an integer score from 1 to 10 in the format "
      "Scores: \\boxed{x, y}.",
    },
  ]
  ids = smollm2.encode_chat(chat)
  assert len(ids) >= 100
  ours = np.asarray(models.logits(smollm2, np.array([ids])))
  with torch.no_grad():
    ref = hf(torch.tensor([ids])).logits.float().numpy()
  err = np.abs(ours - ref).max()
  same = (ours.argmax(-1) == ref.argmax(-1)).mean()
  print(f"SmolLM2-135M ({len(ids)} tokens): max|Δlogit| = {err:.2e}, argmax agreement = {same:.3f}")
  assert err <= 2e-3
  assert same == 1.0


def test_chunked_prefill_matches_transformers(pair):
  """Long-prompt attention in causal query chunks (prefill_chunk < length) keeps parity."""
  name, hf, ours = pair
  chunked = models.Model(ours.config.replace(prefill_chunk=7), ours.params)
  tokens, mask = _batch(ours.config)
  positions = np.maximum(mask.cumsum(-1) - 1, 0)
  got = np.asarray(models.logits(chunked, tokens, mask))
  ref = hf_logits(hf, tokens, mask, positions)
  err = np.abs(got - ref)[mask.astype(bool)].max()
  print(f"{name}: chunked prefill (7-token query chunks, 24 tokens) max|Δlogit| = {err:.2e}")
  assert err <= TOL[name], (name, err)
