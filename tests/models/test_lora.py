"""LoRA adapters: a fresh adapter changes no logit, the adapted forward equals the merged weights', only adapters
train (the frozen base is untouched bit for bit), adapters off is the base model (GRPO's KL reference), the sampler
reads base + adapters, and an exported PEFT adapter gives our logits under `peft` on tiny Llama / Qwen2 / Gemma-2."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from grm_jax import configs, models, sampling
from grm_jax.models import decoder, lora
from grm_jax.train import checkpoint, losses
from grm_jax.train.grpo import GrpoConfig, GrpoUpdater, reference_params
from grm_jax.train.logprobs import token_logprobs
from grm_jax.train.step import init_state, make_train_step
from tests.hf_reference import hf_logits, random_hf_model

FAMILIES = {
  "llama": models.tiny("llama", tie_word_embeddings=False),
  "qwen2": models.tiny("qwen2"),
  "gemma2": models.tiny("gemma2", attn_logit_softcap=0.1, final_logit_softcap=0.5),
}
SPEC = lora.Lora(rank=4, alpha=8.0)


def _tokens(cfg, b=2, t=12, seed=0):
  return np.random.default_rng(seed).integers(0, cfg.vocab_size, (b, t))


def _with_random_b(model, scale=0.02, seed=1):
  """The adapters as training would leave them: B no longer zero, so each adapter changes the forward."""
  def put(path, x):
    if path[-1].key.endswith("_lora_b"):
      return jax.random.normal(jax.random.fold_in(jax.random.key(seed), hash(path[-1].key) % 1000), x.shape) * scale
    return x
  return dataclasses.replace(model, params=jax.tree_util.tree_map_with_path(put, model.params))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fresh_adapters_change_no_logit_and_merging_gives_the_adapted_forward(family):
  cfg = FAMILIES[family]
  base = models.from_config(cfg, seed=0)
  tokens = _tokens(cfg)
  want = np.asarray(models.logits(base, tokens))
  adapted = lora.attach(base, SPEC, seed=3)
  names = {p[-1].key for p, _ in jax.tree_util.tree_flatten_with_path(adapted.params)[0]}
  assert {f"{t}_lora_{ab}" for t in SPEC.targets for ab in "ab"} <= names
  np.testing.assert_array_equal(np.asarray(models.logits(adapted, tokens)), want)  # B = 0: exactly the base
  trained = _with_random_b(adapted)
  got = np.asarray(models.logits(trained, tokens))
  assert np.abs(got - want).max() > 1e-3  # the adapters are live on every family's forward
  merged = lora.merged(trained)
  assert merged.config.lora.rank == 0 and not any(lora.is_adapter(tuple(k.key for k in p))
                                                  for p, _ in jax.tree_util.tree_flatten_with_path(merged.params)[0])
  np.testing.assert_allclose(np.asarray(models.logits(merged, tokens)), got, atol=1e-5, rtol=0)


def test_only_some_targets_get_adapters():
  cfg = FAMILIES["llama"]
  adapted = lora.attach(models.from_config(cfg), lora.Lora(rank=2, targets=("q", "v")))
  names = {p[-1].key for p, _ in jax.tree_util.tree_flatten_with_path(adapted.params)[0] if "_lora_" in p[-1].key}
  assert names == {"q_lora_a", "q_lora_b", "v_lora_a", "v_lora_b"}
  layers = adapted.params["layers"]["attn"]
  assert layers["q_lora_a"].shape == (cfg.num_layers, cfg.hidden_size, 2)
  assert layers["q_lora_b"].shape == (cfg.num_layers, 2, cfg.num_heads, cfg.head_dim)
  assert layers["q_lora_a"].dtype == jnp.float32
  bound = 1 / np.sqrt(cfg.hidden_size)  # PEFT's A: uniform in +-1/sqrt(fan_in)
  a = np.asarray(layers["q_lora_a"])
  assert 0.5 * bound < np.abs(a).max() <= bound and not np.asarray(layers["q_lora_b"]).any()


def _sft_loss(cfg):
  def loss_fn(params, mb):
    logp, _ = token_logprobs(cfg, params, mb["tokens"], mb["mask"], 1.0)
    return losses.nll_loss(logp, mb["mask"].astype(jnp.float32), mode="token_mean"), {}
  return loss_fn


def test_a_step_trains_the_adapters_and_leaves_the_frozen_base_bit_for_bit():
  cfg = FAMILIES["qwen2"]
  model = lora.attach(models.from_config(cfg, seed=0), SPEC)
  trained, frozen = lora.split(model.params, model.config.lora)
  assert all(lora.is_adapter(tuple(k.key for k in p)) for p, _ in jax.tree_util.tree_flatten_with_path(trained)[0])
  assert not any(lora.is_adapter(tuple(k.key for k in p)) for p, _ in jax.tree_util.tree_flatten_with_path(frozen)[0])
  base_before = jax.tree.map(np.array, frozen)
  adapters_before = jax.tree.map(np.array, trained)
  step = make_train_step(_sft_loss(model.config), optax.adam(1e-2), donate=False)
  state = init_state(trained, optax.adam(1e-2))
  # The optimizer state holds moments of the adapters only (the base has none).
  assert jax.tree.structure(state.opt_state[0].mu) == jax.tree.structure(trained)
  tokens = _tokens(cfg, 4, 10)
  batch = {"tokens": jnp.asarray(tokens[None]), "mask": jnp.ones((1, 4, 10), bool)}
  for _ in range(2):
    state, metrics = step(state, batch, frozen)
  assert float(metrics["skipped"]) == 0.0 and float(metrics["grad_norm"]) > 0
  for before, after in zip(jax.tree.leaves(base_before), jax.tree.leaves(frozen), strict=True):
    np.testing.assert_array_equal(np.asarray(after), before)
  moved = [float(np.abs(np.asarray(a) - b).max())
           for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(adapters_before), strict=True)]
  assert min(moved) > 0  # every adapter (A and B of every target) got a gradient and moved
  # ... and the loss went down on the batch it trained on.
  loss = lambda p: float(_sft_loss(model.config)(lora.join(p, frozen), jax.tree.map(lambda x: x[0], batch))[0].value)  # noqa: E731
  assert loss(state.params) < loss(trained)


def test_the_kl_reference_under_lora_is_the_base_model_without_a_copy():
  cfg = FAMILIES["gemma2"]
  base = models.from_config(cfg, seed=0)
  model = _with_random_b(lora.attach(base, SPEC))
  g = GrpoConfig.from_config(configs.grpo())
  ref = reference_params(model.config, model.params, g)
  updater = GrpoUpdater(model.config, g, optax.adam(1e-3), None)
  tokens = _tokens(cfg, 2, 10)
  batch = {"tokens": jnp.asarray(tokens[None]), "mask": jnp.ones((1, 2, 10), bool),
           "loss_mask": jnp.ones((1, 2, 10), jnp.float32)}
  want = np.asarray(GrpoUpdater(cfg, g, optax.adam(1e-3), None).logp(base.params, batch))
  np.testing.assert_array_equal(np.asarray(updater.logp(ref, batch)), want)
  assert np.abs(np.asarray(updater.logp(model.params, batch)) - want).max() > 1e-4  # the policy itself differs
  # The reference shares the base weights (the same arrays) and holds new adapters (the step donates the trained).
  _, frozen = lora.split(model.params, model.config.lora)
  _, ref_frozen = lora.split(ref, model.config.lora)
  assert all(a is b for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(ref_frozen), strict=True))


def test_the_sampler_reads_base_plus_adapters_as_the_merged_weights():
  cfg = FAMILIES["llama"]
  model = _with_random_b(lora.attach(models.from_config(cfg, seed=0), SPEC), scale=0.2)
  prompts = [list(map(int, _tokens(cfg, 1, 9, seed=s)[0])) for s in range(3)]
  adapted = sampling.generate(model, prompts, n=2, max_new_tokens=8, temperature=0.0, seed=0)
  merged = sampling.generate(lora.merged(model), prompts, n=2, max_new_tokens=8, temperature=0.0, seed=0)
  plain = sampling.generate(models.from_config(cfg, seed=0), prompts, n=2, max_new_tokens=8, temperature=0.0, seed=0)
  assert adapted.tokens == merged.tokens
  assert adapted.tokens != plain.tokens  # the adapters steer what is sampled


def test_restoring_a_stage_checks_its_adapters(tmp_path):
  cfg = FAMILIES["llama"]
  model = _with_random_b(lora.attach(models.from_config(cfg, seed=0), SPEC))
  trained, _ = lora.split(model.params, SPEC)
  checkpoint.save_params(str(tmp_path / "final"), trained, model)
  assert json.loads((tmp_path / "final" / "trained.json").read_text())["lora"] == SPEC.as_json()
  fresh = lora.attach(models.from_config(cfg, seed=0), SPEC, seed=9)
  restored = checkpoint.restore_trained(str(tmp_path / "final"), fresh.params, SPEC)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(model.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match=r"final: saved with LoRA adapters .* --config.model.lora.rank=4"):
    checkpoint.restore_trained(str(tmp_path / "final"), models.from_config(cfg).params, lora.Lora())
  with pytest.raises(ValueError, match=r"rank=4"):
    checkpoint.restore_trained(str(tmp_path / "final"), fresh.params, lora.Lora(rank=8))


def test_bad_lora_settings_are_one_line_config_errors():
  assert configs.model().lora.rank == 0  # off by default: full fine-tuning
  for key, value, match in (("targets", "q,x", r"config model.lora: .*targets"),
                            ("rank", -1, r"config model.lora: .*rank"),
                            ("dropout", 1.0, r"config model.lora: .*dropout")):
    group = configs.model()
    group.lora[key] = value
    with pytest.raises(ValueError, match=match):
      configs.validate(ml_collections.ConfigDict({"model": group, "stages": ()}), num_devices=1)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_peft_adapter_folder_loads_onto_the_transformers_base_with_our_logits(family, tmp_path):
  peft = pytest.importorskip("peft")
  import torch  # noqa: F401

  cfg = FAMILIES[family]
  hf = random_hf_model(cfg, seed=1)
  base_dir = tmp_path / "base"
  hf.save_pretrained(base_dir)
  ours = _with_random_b(lora.attach(models.load(str(base_dir), tokenizer=False), SPEC, seed=5), scale=0.05)
  lora.save_peft_adapter(ours, str(tmp_path / "adapter"), base=str(base_dir))
  assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == SPEC.rank
  tokens = _tokens(cfg, 2, 16)
  want = np.asarray(models.logits(ours, tokens))
  assert np.abs(want - hf_logits(hf, tokens)).max() > 1e-3  # the adapters change the base's logits
  peft_model = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
  np.testing.assert_allclose(hf_logits(peft_model, tokens), want, atol=1e-4, rtol=0)


class _OneAdapter(nn.Module):
  """The decoder's LoRA update of one projection, alone: d inputs, rank d, d outputs."""

  cfg: models.ModelConfig

  @nn.compact
  def __call__(self, x):
    return decoder._lora_delta(self, "q", x, ("embed",), ("mlp",), (x.shape[-1],))


def test_lora_dropout_zeroes_the_adapters_input_at_its_rate_and_rescales_the_rest():
  d, p = 64, 0.25
  cfg = dataclasses.replace(FAMILIES["llama"], lora=lora.Lora(rank=d, alpha=float(d), targets=("q",), dropout=p))
  probe = _OneAdapter(cfg)
  x = jnp.asarray(np.random.default_rng(0).uniform(1.0, 2.0, (64, d)), jnp.float32)
  eye = jnp.eye(d, dtype=jnp.float32)
  params = {"q_lora_a": eye, "q_lora_b": eye}  # scale alpha / rank = 1: the update is the adapter's input itself
  np.testing.assert_array_equal(np.asarray(probe.apply({"params": params}, x)), np.asarray(x))  # no key: no dropout
  out = np.asarray(probe.apply({"params": params}, x, rngs={"dropout": jax.random.key(0)}))
  ratio = out / np.asarray(x)
  kept = ratio != 0
  np.testing.assert_allclose(ratio[kept], 1 / (1 - p), rtol=1e-6)  # inverted dropout: the kept are scaled by 1/(1-p)
  assert abs((~kept).mean() - p) < 0.03  # 4,096 draws: 4.4 standard deviations
  again = np.asarray(probe.apply({"params": params}, x, rngs={"dropout": jax.random.key(0)}))
  other = np.asarray(probe.apply({"params": params}, x, rngs={"dropout": jax.random.key(1)}))
  np.testing.assert_array_equal(again, out)
  assert (other != out).any()


def test_lora_dropout_acts_on_training_forwards_only_and_on_the_adapters_only():
  cfg = FAMILIES["llama"]
  spec = dataclasses.replace(SPEC, dropout=0.5)
  fresh = lora.attach(models.from_config(cfg, seed=0), spec, seed=3)
  model = _with_random_b(fresh, scale=0.2)
  plain = _with_random_b(lora.attach(models.from_config(cfg, seed=0), SPEC, seed=3), scale=0.2)
  tokens, mask = jnp.asarray(_tokens(cfg, 2, 10)), jnp.ones((2, 10), bool)
  forward = jax.jit(lambda c, p, r: decoder.hidden_states(c, p, tokens, mask, r), static_argnums=0)

  def hidden(m, rng=None):
    return np.asarray(forward(m.config, m.params, rng))

  # Evaluation, sampling and any forward without a key: exactly the model without dropout.
  np.testing.assert_array_equal(np.asarray(models.logits(model, tokens)), np.asarray(models.logits(plain, tokens)))
  np.testing.assert_array_equal(hidden(model), hidden(plain))
  prompts = [list(map(int, _tokens(cfg, 1, 6)[0]))]
  assert (sampling.generate(model, prompts, n=2, max_new_tokens=6, temperature=0.0).tokens
          == sampling.generate(plain, prompts, n=2, max_new_tokens=6, temperature=0.0).tokens)
  # A training forward: the masks follow the key; with B at zero the base path, which dropout never touches, is all.
  key = jax.random.key(7)
  assert np.abs(hidden(model, key) - hidden(plain)).max() > 1e-3
  np.testing.assert_array_equal(hidden(model, key), hidden(model, key))
  assert np.abs(hidden(model, key) - hidden(model, jax.random.key(8))).max() > 1e-3
  np.testing.assert_array_equal(hidden(fresh, key), hidden(fresh))


def test_the_train_steps_dropout_keys_follow_the_step_count_so_a_resumed_run_redraws_them():
  spec = dataclasses.replace(SPEC, dropout=0.3)
  model = _with_random_b(lora.attach(models.from_config(FAMILIES["qwen2"], seed=0), spec), scale=0.2)
  cfg = model.config
  trained, frozen = lora.split(model.params, spec)
  tokens = _tokens(cfg, 4, 10)
  batch = {"tokens": jnp.asarray(tokens.reshape(2, 2, 10)), "mask": jnp.ones((2, 2, 10), bool)}
  start = init_state(trained, optax.sgd(0.0))  # a zero learning rate: only the masks can change the loss

  def losses_at(seed, steps):
    run = make_train_step(_sft_loss_with_rng(cfg), optax.sgd(0.0), donate=False, rng_seed=seed)
    return [float(run(start.replace(step=jnp.asarray(s, jnp.int32)), batch, frozen)[1]["loss"]) for s in steps]

  # The same seed and step count: the same masks, whatever ran before (a resumed run redraws them); another step
  # count, another seed: other masks; no seed: no dropout at all.
  seeded = losses_at(3, (0, 1, 0, 5))
  assert seeded[0] == seeded[2] and len({seeded[0], seeded[1], seeded[3]}) == 3
  assert losses_at(4, (0,))[0] != seeded[0]
  no_key = losses_at(None, (0, 1))
  assert no_key[0] == no_key[1] != seeded[0]


def _sft_loss_with_rng(cfg):
  def loss_fn(params, mb):
    logp, _ = token_logprobs(cfg, params, mb["tokens"], mb["mask"], 1.0, rng=mb.get("rng"))
    return losses.nll_loss(logp, mb["mask"].astype(jnp.float32), mode="token_mean"), {}
  return loss_fn


def test_lora_dropout_reaches_the_peft_config_and_not_the_saved_adapters_identity():
  spec = dataclasses.replace(SPEC, dropout=0.1)
  cfg = dataclasses.replace(FAMILIES["llama"], lora=spec)
  assert lora.peft_config(cfg, "base")["lora_dropout"] == 0.1
  assert spec.as_json() == SPEC.as_json()  # a folder trained with dropout loads like any other
  group = configs.model()
  group.lora.rank, group.lora.dropout = 4, 0.1
  assert lora.from_config(group).dropout == 0.1
