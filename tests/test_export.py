"""grm_jax.export: a policy stage loads in transformers as a causal LM with our logits; the meta RM as a
one-label sequence classifier with our scores (minus the head's bias, which config.json carries)."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import export, models
from grm_jax.models.scalar_head import init_meta_params, meta_scores, truncate
from grm_jax.train.checkpoint import save_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _perturbed(params, seed):
  keys = iter(jax.random.split(jax.random.PRNGKey(seed), len(jax.tree.leaves(params))))
  return jax.tree.map(lambda x: x + 0.02 * jax.random.normal(next(keys), x.shape, x.dtype), params)


def _run_dir(tmp_path):
  work = tmp_path / "run"
  work.mkdir()
  (work / "config.json").write_text(json.dumps({"model": {"name": "tiny:llama", "dtype": "float32"},
                                                "variants": {"judge": "model.dtype=float32"}}))
  return work


def _tokens(cfg, lengths, seed=0):
  rng = np.random.default_rng(seed)
  t = max(lengths)
  tokens = np.zeros((len(lengths), t), np.int64)
  mask = np.zeros((len(lengths), t), bool)
  for i, n in enumerate(lengths):  # right padding, as transformers' sequence classifier expects
    tokens[i, :n] = rng.integers(3, cfg.vocab_size, n)
    mask[i, :n] = True
  return tokens, mask


@pytest.mark.parametrize("stage", ["grpo", "judge/grpo"])
def test_policy_stage_loads_as_a_causal_lm_with_our_logits(tmp_path, stage):
  work = _run_dir(tmp_path)
  base = models.load("tiny:llama")
  trained = dataclasses.replace(base, params=_perturbed(base.params, 1))
  save_params(str(work / stage / "final"), trained.params)
  out = tmp_path / "hf"
  export.export(str(work), stage, str(out))
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
  tokens, _ = _tokens(base.config, [9, 9])
  ours = np.asarray(models.logits(trained, jnp.asarray(tokens, jnp.int32)))
  with torch.no_grad():
    theirs = hf(torch.tensor(tokens)).logits.numpy()
  assert np.abs(ours - theirs).max() < 1e-4
  assert transformers.AutoTokenizer.from_pretrained(str(out)) is not None


@pytest.mark.parametrize("layers", [0, 1])
def test_meta_rm_loads_as_a_sequence_classifier_with_our_scores(tmp_path, layers):
  """Both meta RM kinds: the whole decoder (fine-tuned) and one cut to its first layers (the probe's)."""
  work = _run_dir(tmp_path)
  base = truncate(models.load("tiny:llama"), layers)
  params = init_meta_params(_perturbed(base.params, 2), base.config.hidden_size)
  rng = np.random.default_rng(0)
  params["head"] = {"kernel": jnp.asarray(rng.normal(size=base.config.hidden_size), jnp.float32),
                    "bias": jnp.asarray(0.7, jnp.float32)}
  save_params(str(work / "metarm" / "final"), params)
  (work / "metarm" / "model.json").write_text(json.dumps({"name": "tiny:llama", "dtype": "float32", "max_len": 64,
                                                         "layers": layers}))
  out = tmp_path / "meta-hf"
  export.export(str(work), "metarm", str(out))
  config = json.loads((out / "config.json").read_text())
  assert config["architectures"] == ["LlamaForSequenceClassification"] and config["num_labels"] == 1
  assert config["num_hidden_layers"] == base.config.num_layers == (layers or models.tiny("llama").num_layers)
  hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(out), dtype=torch.float32).eval()
  tokens, mask = _tokens(base.config, [10, 6, 8])
  ours = np.asarray(meta_scores(base.config, params, jnp.asarray(tokens, jnp.int32), jnp.asarray(mask)))
  ids = np.where(mask, tokens, base.pad_id)
  with torch.no_grad():
    theirs = hf(torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64))).logits[:, 0].numpy()
  assert np.abs(theirs + config["grm_jax_score_bias"] - ours).max() < 1e-4
  assert config["grm_jax_score_bias"] == pytest.approx(0.7)


def test_cli_errors_are_one_line(tmp_path):
  work = _run_dir(tmp_path)
  for stage, message in (("grpo", "has not finished"), ("evaluate", "export a policy stage")):
    done = subprocess.run([sys.executable, "-m", "grm_jax.export", f"--workdir={work}", f"--stage={stage}",
                           f"--out={tmp_path / 'x'}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr[-1500:]
