"""Hub ids: loaded from a local Hugging Face cache laid out as huggingface_hub lays it out, with no network; an id
neither cached nor reachable is a one-line error saying what to download."""

import dataclasses

import huggingface_hub.constants
import jax
import numpy as np
import pytest

from grm_jax import models
from grm_jax.models import hub
from grm_jax.models.model import load_config


def _cache_with(tmp_path, repo_id, model):
  """<cache>/models--org--name/{refs/main, snapshots/<commit>/...}: what `hf download` leaves."""
  cache = tmp_path / "hub"
  repo = cache / f"models--{repo_id.replace('/', '--')}"
  commit = "0123456789abcdef0123456789abcdef01234567"
  (repo / "refs").mkdir(parents=True)
  (repo / "refs" / "main").write_text(commit)
  models.save_pretrained(model, str(repo / "snapshots" / commit))
  return cache


def test_hub_id_loads_from_the_local_cache_offline(tmp_path, monkeypatch):
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # any network use would fail
  tiny = models.load("tiny:llama")
  tiny = dataclasses.replace(tiny, params=jax.tree.map(lambda x: x * 1.5, tiny.params))
  cache = _cache_with(tmp_path, "someorg/tiny-llama", tiny)
  monkeypatch.setattr(hub, "snapshot", lambda repo_id, cache_dir=None, _f=hub.snapshot: _f(repo_id, str(cache)))
  loaded = models.load("someorg/tiny-llama")
  tokens = [[5, 6, 7, 8]]
  assert np.abs(np.asarray(models.logits(loaded, tokens)) - np.asarray(models.logits(tiny, tokens))).max() < 1e-5
  assert loaded.source == "someorg/tiny-llama" and loaded.tokenizer is not None
  assert load_config("someorg/tiny-llama").hidden_size == tiny.config.hidden_size


def test_an_id_not_cached_offline_says_what_to_download(tmp_path, monkeypatch):
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  with pytest.raises(FileNotFoundError, match=r"someorg/missing: not in the Hugging Face cache .*hf "
                                              r"download someorg/missing"):
    hub.snapshot("someorg/missing", str(tmp_path / "empty"))
  assert hub.is_hub_id("google/gemma-2-2b-it") and not hub.is_hub_id("builtin:x") and not hub.is_hub_id("/abs/dir")
  (tmp_path / "org").mkdir()
  (tmp_path / "org" / "name").mkdir()
  monkeypatch.chdir(tmp_path)
  assert not hub.is_hub_id("org/name")  # a local folder of that name wins


def test_a_cached_checkpoint_without_its_weights_offline_names_them(tmp_path, monkeypatch):
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  commit = "0123456789abcdef0123456789abcdef01234567"
  repo = tmp_path / "hub" / "models--someorg--partial"
  (repo / "refs").mkdir(parents=True)
  (repo / "refs" / "main").write_text(commit)
  (repo / "snapshots" / commit).mkdir(parents=True)
  (repo / "snapshots" / commit / "config.json").write_text("{}")  # an interrupted download: no weights
  with pytest.raises(FileNotFoundError) as e:
    hub.snapshot("someorg/partial", str(tmp_path / "hub"))
  assert "\n" not in str(e.value)
  assert str(e.value).startswith("someorg/partial: no file matching *.safetensors in the Hugging Face cache")
  # The command fetches every checkpoint file (the tokenizer too), not only the missing weights.
  assert "`hf download someorg/partial --include 'config.json' --include 'generation_config.json' --include " \
         "'*.safetensors'" in str(e.value) and "--include 'tokenizer*'" in str(e.value)
