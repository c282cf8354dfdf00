"""An HF checkpoint folder read straight from an object store (gs://, here fsspec's in-memory file system registered
for the gs protocol, as tests/test_files.py does): the same weights, logits, tokenizer and architecture as the same
folder on a local disk, the weights streamed rather than copied, and one-line errors for what a user gets wrong."""

from __future__ import annotations

import os

import numpy as np
import pytest

from grm_jax import files, models
from grm_jax.models.model import load_config
from grm_jax.models.safetensors_io import CheckpointError
from tests.hf_reference import hf_logits, random_hf_model
from tests.test_files import bucket  # noqa: F401 - the fake-bucket fixture

CHAT = [{"role": "user", "content": "Which is larger 9.11 or 9.9?"}]


def _upload(local: str, remote: str) -> None:
  for name in os.listdir(local):
    with open(os.path.join(local, name), "rb") as f:
      files.write_bytes(f"{remote}/{name}", f.read())


def _word_tokenizer():
  """A word-level tokenizer with a chat template, built in memory: the embedded model's 49K-token tokenizer takes
  seconds to read, and this test is about where the files come from, not what they hold."""
  from tokenizers import Tokenizer, pre_tokenizers  # noqa: PLC0415
  from tokenizers.models import WordLevel  # noqa: PLC0415
  from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

  words = ["<pad>", "<s>", "</s>", "<unk>", "user", "assistant", "Which", "is", "larger", "9.11", "or", "9.9?"]
  tk = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
  tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                unk_token="<unk>")
  tok.chat_template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"
                       "{% if add_generation_prompt %}assistant {% endif %}")
  return tok


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A tiny random Llama (made by transformers: no compile) with a tokenizer, saved as a sharded HF folder, so the
  index path is read too."""
  hf = random_hf_model(models.tiny("llama", vocab_size=64), seed=3)
  out = str(tmp_path_factory.mktemp("ckpt") / "tiny-llama")
  hf.save_pretrained(out, max_shard_size="100KB")
  _word_tokenizer().save_pretrained(out)
  assert len([n for n in os.listdir(out) if n.endswith(".safetensors")]) >= 2
  return hf, out


def test_a_checkpoint_on_gs_loads_like_the_local_folder(saved, bucket, tmp_path):  # noqa: F811
  hf, local = saved
  remote = f"{bucket}/models/tiny-llama"
  _upload(local, remote)
  cache = tmp_path / "cache"
  ours = models.load(remote, cache_dir=str(cache))
  here = models.load(local)
  tokens = np.random.default_rng(0).integers(0, 64, (2, 12)).astype(np.int32)
  got = np.asarray(models.logits(ours, tokens))
  assert np.array_equal(got, np.asarray(models.logits(here, tokens)))
  assert np.max(np.abs(got - hf_logits(hf, tokens))) < 1e-5  # transformers on the same weights
  assert ours.config == here.config and ours.source == remote
  assert (ours.bos_id, ours.eos_ids, ours.pad_id) == (here.bos_id, here.eos_ids, here.pad_id) == (1, (2,), 0)
  assert ours.encode_chat(CHAT) == here.encode_chat(CHAT) == [4, 6, 7, 8, 9, 10, 11, 2, 5]
  assert load_config(remote) == load_config(local)
  # Only the small files came to the local disk; the weights were read from the bucket.
  copied = {n for _, _, names in os.walk(cache) for n in names}
  assert {"tokenizer_config.json", "tokenizer.json", "config.json"} <= copied
  assert not [n for n in copied if n.endswith((".safetensors", ".tmp"))], copied


def test_remote_mistakes_name_the_path(saved, bucket):  # noqa: F811
  _, local = saved
  with pytest.raises(FileNotFoundError, match=f"{bucket}/nothing: no such folder"):
    models.load(f"{bucket}/nothing")
  with pytest.raises(CheckpointError, match="read from a local disk only; copy it first"):
    models.load(f"{bucket}/m.gguf")
  # A shard cut short in the upload: named, before any weight is placed.
  remote = f"{bucket}/models/cut"
  _upload(local, remote)
  shard = sorted(n for n in os.listdir(local) if n.endswith(".safetensors"))[-1]
  data = files.path(f"{remote}/{shard}").read_bytes()
  files.write_bytes(f"{remote}/{shard}", data[: len(data) // 2])
  with pytest.raises(CheckpointError, match=f"{remote}/{shard}: tensor .* the file is truncated"):
    models.load(remote, tokenizer=False)
