"""grm_jax.export: a policy stage loads in transformers as a causal LM with our logits; the meta RM as a
one-label sequence classifier with our scores (minus the head's bias, which config.json carries). A policy export
carries the recipe a reward client needs (the run's template and Voting@k settings, a chat frame that gives the chat
template's exact tokens, the meta RM's frame and bias) and a model card; --dtype writes smaller weights that still
give our logits."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import export, models
from grm_jax.grm import prompts
from grm_jax.models.scalar_head import head_scores, init_head_params, truncate
from grm_jax.reward.recipe import Recipe, frame_text
from grm_jax.train.checkpoint import save_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BF16_TOLERANCE = 0.02  # max |logit difference| of a bfloat16 export, as a fraction of max |logit| (see its test)


def _perturbed(params, seed):
  keys = iter(jax.random.split(jax.random.PRNGKey(seed), len(jax.tree.leaves(params))))
  return jax.tree.map(lambda x: x + 0.02 * jax.random.normal(next(keys), x.shape, x.dtype), params)


def _run_dir(tmp_path, **groups):
  work = tmp_path / "run"
  work.mkdir()
  (work / "config.json").write_text(json.dumps({"model": {"name": "tiny:llama", "dtype": "float32"},
                                                "variants": {"judge": "model.dtype=float32"}, **groups}))
  return work


def _trained_policy(work, stage="grpo", seed=1):
  base = models.load("tiny:llama")
  trained = dataclasses.replace(base, params=_perturbed(base.params, seed))
  save_params(str(work / stage / "final"), trained.params)
  return trained


def _trained_meta_rm(work, layers=0, bias=0.7):
  """A metarm stage folder as the stage leaves it: model.json and final/ params, the head with a known bias."""
  base = truncate(models.load("tiny:llama"), layers)
  params = init_head_params(_perturbed(base.params, 2), base.config.hidden_size)
  rng = np.random.default_rng(0)
  params["head"] = {"kernel": jnp.asarray(rng.normal(size=base.config.hidden_size), jnp.float32),
                    "bias": jnp.asarray(bias, jnp.float32)}
  save_params(str(work / "metarm" / "final"), params)
  (work / "metarm" / "model.json").write_text(json.dumps({"name": "tiny:llama", "dtype": "float32", "max_len": 64,
                                                         "layers": layers}))
  return base, params


def _ids(encoded):
  """apply_chat_template's ids, whether transformers returns a list or (v5) a BatchEncoding."""
  return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


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
  trained = _trained_policy(work, stage)
  out = tmp_path / "hf"
  export.export(str(work), stage, str(out))
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
  tokens, _ = _tokens(trained.config, [9, 9])
  ours = np.asarray(models.logits(trained, jnp.asarray(tokens, jnp.int32)))
  with torch.no_grad():
    theirs = hf(torch.tensor(tokens)).logits.numpy()
  assert np.abs(ours - theirs).max() < 1e-4
  assert transformers.AutoTokenizer.from_pretrained(str(out)) is not None


@pytest.mark.parametrize(("layers", "dtype"), [(0, None), (1, "bfloat16")])
def test_meta_rm_loads_as_a_sequence_classifier_with_our_scores(tmp_path, layers, dtype):
  """Both meta RM kinds: the whole decoder (fine-tuned) and one cut to its first layers (the probe's); the latter
  written in bfloat16, which transformers loads as such."""
  work = _run_dir(tmp_path)
  base, params = _trained_meta_rm(work, layers)
  out = tmp_path / "meta-hf"
  export.export(str(work), "metarm", str(out), dtype=dtype)
  config = json.loads((out / "config.json").read_text())
  assert config["architectures"] == ["LlamaForSequenceClassification"] and config["num_labels"] == 1
  assert config["torch_dtype"] == config["dtype"] == (dtype or "float32")
  assert config["num_hidden_layers"] == base.config.num_layers == (layers or models.tiny("llama").num_layers)
  hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
  assert hf.dtype == (torch.bfloat16 if dtype else torch.float32)
  tokens, mask = _tokens(base.config, [10, 6, 8])
  ours = np.asarray(head_scores(base.config, params, jnp.asarray(tokens, jnp.int32), jnp.asarray(mask)))
  ids = np.where(mask, tokens, base.pad_id)
  with torch.no_grad():
    theirs = hf(torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64))).logits[:, 0].float().numpy()
  bound = BF16_TOLERANCE * np.abs(ours).max() if dtype else 1e-4
  assert np.abs(theirs + config["grm_jax_score_bias"] - ours).max() < bound
  assert config["grm_jax_score_bias"] == pytest.approx(0.7)
  meta = json.loads((out / "meta_recipe.json").read_text())  # its input frame and bias, as a GRM recipe's meta
  assert len(meta["chat"]) == 3 and meta["max_len"] == 64 and meta["score_bias"] == pytest.approx(0.7)
  assert meta["template_text"] == prompts.META_TEMPLATE.template


# A run's config as the pipeline writes it, with non-default judging settings the recipe must carry over.
_RUN = {"stages": ["rft", "grpo", "metarm", "eval"], "grm": {"template": "compact"},
        "eval": {"sampling": {"k": 3, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64}},
        "data": {"train": "synthetic", "train_limit": 32, "test": "synthetic", "test_limit": 8},
        "rft": {"steps": 5, "sampling": {"k": 3}, "optim": {"learning_rate": 5e-6}},
        "grpo": {"steps": 7, "group_size": 4, "beta": 0.08, "optim": {"learning_rate": 4e-7}}}


def test_policy_export_carries_its_recipe_and_a_model_card(tmp_path):
  """What a reward client reads (Recipe.load) is the run's template and Voting@k settings, and its chat frame around
  a user turn gives exactly the tokens the chat template does (what /v1/completions must send)."""
  work = _run_dir(tmp_path, **_RUN)
  _trained_policy(work)
  out = tmp_path / "hf"
  export.main([f"--workdir={work}", "--stage=grpo", f"--out={out}"])
  recipe = Recipe.load(str(out))
  assert recipe.template == "compact" and recipe.template_text == prompts.template_text("compact")
  assert (recipe.k, recipe.temperature, recipe.top_p, recipe.max_new_tokens) == (3, 0.7, 0.9, 64)
  assert recipe.score_range == tuple(prompts.SCORE_RANGES["compact"]) and recipe.meta is None
  assert recipe.model == "grm" and recipe.provenance["stage"] == "grpo"
  tok = transformers.AutoTokenizer.from_pretrained(str(out))
  for content in ("What is 2 + 2?", "line one\nline two: {x} <b>é</b>"):
    want = _ids(tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                        tokenize=True))
    assert tok(frame_text(recipe.chat, content), add_special_tokens=False)["input_ids"] == want
  card = (out / "README.md").read_text()
  assert card.startswith('---\nlibrary_name: transformers\nbase_model: "tiny:llama"\n'
                         "tags: [reward-model, generative-reward-model, grm_jax]\n---\n")
  for fact in ("`rft`, `grpo`, `metarm`, `eval`", "`compact`", "steps=7", "group_size=4", "steps=5", "k=3",
               "temperature=0.7", "`synthetic` (at most 32 items)", "vllm serve ./hf --served-model-name grm",
               'RewardClient("http://localhost:8000/v1", recipe="./hf")', "python -m grm_jax.serve --model ./hf"):
    assert fact in card, fact
  assert str(tmp_path) not in card  # the card travels with the folder: no path of this machine


def test_model_card_reads_a_sparse_config(tmp_path):
  """A run's config.json from another version or experiment may lack groups: the card says what there is."""
  card = export.model_card({"model": {"name": "builtin:smollm2-135m-instruct"}}, Recipe(), "rft")
  assert 'base_model: "HuggingFaceTB/SmolLM2-135M-Instruct"' in card and "GRPO" not in card
  assert "Meta RM: none" in card and 'recipe="PATH"' in card


def test_policy_export_recipe_has_the_run_meta_rm(tmp_path):
  work = _run_dir(tmp_path, **_RUN)
  _trained_policy(work)
  _trained_meta_rm(work, bias=0.7)
  out = tmp_path / "hf"
  export.export(str(work), "grpo", str(out))
  meta = Recipe.load(str(out)).meta
  assert meta is not None and len(meta.chat) == 3 and meta.max_len == 64
  assert meta.score_bias == pytest.approx(0.7) and meta.template_text == prompts.META_TEMPLATE.template
  assert "max_len=64" in (out / "README.md").read_text()


def test_bfloat16_export_is_half_the_size_and_gives_our_logits(tmp_path):
  work = _run_dir(tmp_path)
  trained = _trained_policy(work)
  f32, bf16 = tmp_path / "f32", tmp_path / "bf16"
  export.export(str(work), "grpo", str(f32))
  export.main([f"--workdir={work}", "--stage=grpo", f"--out={bf16}", "--dtype=bfloat16"])
  ratio = (bf16 / "model.safetensors").stat().st_size / (f32 / "model.safetensors").stat().st_size
  assert 0.48 < ratio < 0.52, ratio  # every tensor at 2 bytes instead of 4; the JSON header is the rest
  config = json.loads((bf16 / "config.json").read_text())
  assert config["torch_dtype"] == config["dtype"] == "bfloat16"
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(bf16)).eval()  # the dtype config.json names
  assert hf.dtype == torch.bfloat16
  tokens, _ = _tokens(trained.config, [9, 9])
  ours = np.asarray(models.logits(trained, jnp.asarray(tokens, jnp.int32)))
  with torch.no_grad():
    theirs = hf(torch.tensor(tokens)).logits.float().numpy()
  # bf16 keeps 8 significant bits (rounding 2^-9 relative, per weight and per activation): on this model they move
  # the logits by ~0.6% of their scale; a wrong or transposed weight moves them by about the whole scale.
  scale = np.abs(ours).max()
  assert np.abs(ours - theirs).max() < BF16_TOLERANCE * scale, (np.abs(ours - theirs).max(), scale)


def test_save_pretrained_casts_and_checks_its_dtype(tmp_path):
  model = models.load("tiny:llama")
  models.save_pretrained(model, str(tmp_path / "f16"), dtype="float16")
  assert json.loads((tmp_path / "f16" / "config.json").read_text())["torch_dtype"] == "float16"
  with pytest.raises(ValueError, match="dtype='fp8'"):
    models.save_pretrained(model, str(tmp_path / "x"), dtype="fp8")


def test_cli_errors_are_one_line(tmp_path):
  work = _run_dir(tmp_path)
  _trained_meta_rm(work)
  for flags, message in ((["--stage=grpo"], "has not finished"), (["--stage=eval"], "export a policy stage"),
                         (["--stage=metarm", "--dtype=fp8"], "--dtype=fp8: choose one of float32, bfloat16")):
    done = subprocess.run([sys.executable, "-m", "grm_jax.export", f"--workdir={work}", *flags,
                           f"--out={tmp_path / 'x'}"], capture_output=True, text=True, timeout=120)
    last = done.stderr.strip().splitlines()[-1]  # lines before it, if any, are JAX's start-up logging
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-1500:]
    assert last.startswith("grm_jax.export: ") and message in last, done.stderr[-1500:]
  assert not (tmp_path / "x").exists()  # a bad --dtype fails before anything is written
