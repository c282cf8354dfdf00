"""`sampling.generate` against transformers and against its own invariants.

Tiny random Llama / Qwen2 / Gemma-2 (built in transformers, saved, loaded through our HF loader)
cover the families cheaply; the embedded SmolLM2-135M-Instruct covers a real checkpoint with
chat prompts. Each tiny family compiles a handful of small programs; shapes are shared between
tests where possible so the directory stays within a couple of minutes on 2 cores.
"""

import copy
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import models, parallel, sampling
from grm_jax.models import builtin
from grm_jax.models.decoder import default_positions
from tests.hf_reference import random_hf_model
from tests.sampling.reference import chi_square, reference_sampling_probs

TOL = 1e-4
NEW = 16  # new tokens in the tiny-model tests
PROMPT_LENGTHS = (12, 5, 9)

FAMILIES = {
  "llama": models.tiny("llama"),
  "qwen2": models.tiny("qwen2"),
  # Layers 0 and 2 slide over 8 tokens: fewer than prompt + generation (12 + 16), so the
  # window has to be applied across the prompt/cache boundary and inside decoding.
  "gemma2": models.tiny("gemma2"),
}

# Random tiny models have logits of std ~0.2 whose top two are sometimes only ~1e-3 apart, close
# enough for a float reordering to flip an argmax and fail a greedy comparison for no real
# reason. Multiplying the final norm's gain by 10 (in the transformers model, before saving, so
# both implementations see the same weights) scales every logit by 10: std ~2, gaps well above
# float noise, and first-token softmaxes spread over a few dozen tokens rather than all 256.
LOGIT_SCALE = 10.0


def _separate_logits(hf, cfg):
  import torch

  with torch.no_grad():
    w = hf.model.norm.weight
    if cfg.norm_plus_one:  # Gemma's RMSNorm scales by (1 + w)
      w.copy_((1.0 + w) * LOGIT_SCALE - 1.0)
    else:
      w.mul_(LOGIT_SCALE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """family -> (transformers model, our model loaded from its saved checkpoint), built once."""
  built = {}

  def get(family):
    if family not in built:
      cfg = FAMILIES[family]
      hf = random_hf_model(cfg, seed=1)
      _separate_logits(hf, cfg)
      d = tmp_path_factory.mktemp(f"tiny_{family}")
      hf.save_pretrained(d)  # keeps eos_token_id=2: our model's default stop id
      # The reference runs with EOS off: transformers otherwise falls back to config.eos_token_id
      # and, under min_new_tokens, suppresses it (which greedy decoding of ours does not).
      hf.config.eos_token_id = None
      hf.generation_config.eos_token_id = None
      built[family] = (hf, models.load(str(d), tokenizer=False))
    return built[family]

  return get


def _prompts(lengths, seed=0) -> list[list[int]]:
  rng = np.random.RandomState(seed)
  return [rng.randint(3, 256, n).tolist() for n in lengths]


def _greedy(model, prompts, new=NEW, **kw):
  return sampling.generate(model, prompts, n=1, max_new_tokens=new, temperature=0.0, stop_token_ids=[], **kw)


def _hf_greedy(hf, prompt, new):
  """transformers greedy decoding of exactly `new` tokens with EOS disabled."""
  import torch

  gc = copy.deepcopy(hf.generation_config)
  assert gc.eos_token_id is None and hf.config.eos_token_id is None
  gc.update(do_sample=False, max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
  with torch.no_grad():
    out = hf.generate(
      torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long), generation_config=gc
    )
  return out[0, len(prompt) :].tolist()


def _full_logits(model, prompt, continuations) -> np.ndarray:
  """Cache-free logits [n, len(continuation), V] predicting each continuation token."""
  seqs = np.array([list(prompt) + list(c) for c in continuations])
  return np.asarray(models.logits(model, seqs))[:, len(prompt) - 1 : -1]


# --------------------------------------------------------------------------- 1. greedy parity


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_greedy_matches_transformers_tiny(tiny, family):
  hf, model = tiny(family)
  prompts = _prompts(PROMPT_LENGTHS)
  out = _greedy(model, prompts)  # one call, three prompt lengths, left-padded together
  if family == "gemma2":
    assert model.config.sliding_window < min(PROMPT_LENGTHS) + NEW
  for i, p in enumerate(prompts):
    want = _hf_greedy(hf, p, NEW)
    assert len(want) == NEW
    assert out.tokens[i][0] == want, f"{family} prompt {i}"
    assert out.stopped[i] == [False]
    assert len(out.logprobs[i][0]) == NEW
  assert len({t for row in out.tokens for t in row[0]}) > 5  # not a degenerate repetition


SMOL_CHATS = [
  "Hi!",
  "What is 2+2?",
  "Name three primary colors.",
  "Write a haiku about the sea.",
  "Explain in one sentence why the sky is blue.",
  "Translate 'good morning' into French.",
  "List the first five prime numbers, separated by commas, and then explain what makes a number prime "
  "in a short paragraph.",
  "You are reviewing two answers to the question 'What is the capital of Australia?'. Answer 1 says "
  "Sydney. Answer 2 says Canberra. Which answer is correct and why? Keep it brief.",
]


# Slow tier (~1 min): tiny-model greedy parity for every architecture and the real model's logits parity stay in the
# default suite.
@pytest.mark.slow
def test_greedy_matches_transformers_smollm2(smollm2):
  """Eight chat prompts (32 to 70 tokens) in one batched call vs transformers one at a time,
  on the same Q4_1 GGUF; EOS stops both. Some answers end early, one runs to the limit."""
  import torch
  from transformers import AutoModelForCausalLM

  prompts = [smollm2.encode_chat([{"role": "user", "content": q}]) for q in SMOL_CHATS]
  assert len({len(p) for p in prompts}) == len(prompts)
  out = sampling.generate(smollm2, prompts, n=1, max_new_tokens=64, temperature=0.0)

  path = builtin.locate("smollm2-135m-instruct")
  hf = AutoModelForCausalLM.from_pretrained(
    os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
  ).eval()
  eos = list(smollm2.eos_ids)
  lengths = []
  for i, p in enumerate(prompts):
    with torch.no_grad():
      ref = hf.generate(
        torch.tensor([p]),
        attention_mask=torch.ones(1, len(p), dtype=torch.long),
        do_sample=False,
        max_new_tokens=64,
        eos_token_id=eos,
        pad_token_id=smollm2.pad_id,
      )[0, len(p) :].tolist()
    cut = next((j for j, t in enumerate(ref) if t in eos), len(ref))
    assert out.tokens[i][0] == ref[:cut], f"prompt {i}: {smollm2.tokenizer.decode(out.tokens[i][0])!r}"
    assert out.stopped[i] == [cut < len(ref)]
    lengths.append(cut)
  print(f"SmolLM2 greedy lengths {lengths}: identical to transformers")
  assert 64 in lengths and min(lengths) < 20


# --------------------------------------------------------------------------- 2. cached == full


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cached_decode_logits_equal_full_forward(tiny, family):
  """Prefill left-padded prompts into a cache, feed 16 tokens one at a time through the returned
  cache, and compare every step's logits with a full forward over the unpadded prefix."""
  _, model = tiny(family)
  prompts = _prompts(PROMPT_LENGTHS)
  steps, width = 16, 16  # every row is left-padded, the longest by 4
  cont = np.random.RandomState(1).randint(3, 256, (len(prompts), steps))
  tokens = np.full((len(prompts), width), model.pad_id, np.int32)
  mask = np.zeros((len(prompts), width), bool)
  for i, p in enumerate(prompts):
    tokens[i, width - len(p) :] = p
    mask[i, width - len(p) :] = True
  lengths = mask.sum(-1)
  module = model.module()

  @jax.jit
  def prefill(params, tokens, mask):
    return module.apply(
      {"params": params}, tokens, default_positions(mask), mask, cache_slots=width + steps, last_only=True
    )

  @jax.jit
  def step(params, tok, pos, cache):
    return module.apply({"params": params}, tok, pos, jnp.ones(tok.shape, bool), cache)

  logits, cache = prefill(model.params, tokens, mask)
  got = [np.asarray(logits[:, 0])]
  for j in range(steps):
    logits, cache = step(model.params, cont[:, j : j + 1], (lengths + j)[:, None], cache)
    got.append(np.asarray(logits[:, 0]))
  got = np.stack(got, axis=1)  # [rows, steps + 1, V]: predictions after the prompt and each token
  assert int(cache.index) == width + steps
  np.testing.assert_array_equal(np.asarray(cache.valid), np.concatenate([mask, np.ones_like(cont, bool)], -1))

  # One cache-free forward: each row is prompt + continuation, right-filled with tokens that
  # causality keeps from influencing the positions compared.
  total = max(PROMPT_LENGTHS) + steps
  seqs = np.full((len(prompts), total), 7, np.int32)
  for i, p in enumerate(prompts):
    seqs[i, : len(p) + steps] = p + cont[i].tolist()
  full = np.asarray(models.logits(model, seqs))
  err = max(np.abs(got[i] - full[i, len(p) - 1 : len(p) + steps]).max() for i, p in enumerate(prompts))
  print(f"{family}: cached vs full forward max|Δlogit| = {err:.2e} (|logit| up to {np.abs(full).max():.1f})")
  assert err <= TOL


# --------------------------------------------------------------------------- 3. padding


# Padding and log-prob bookkeeping do not depend on the family's details beyond what Llama
# (plain) and Gemma-2 (sliding window, soft-caps) cover; Qwen2 is left out to save compiles.
@pytest.mark.parametrize("family", ["gemma2", "llama"])
def test_left_padding_does_not_change_greedy_tokens(tiny, family):
  _, model = tiny(family)
  short = _prompts((16,), seed=7)[0]  # 16 is a length bucket: alone, it runs with no padding
  long_a, long_b = _prompts((60, 41), seed=8)
  alone = _greedy(model, [short])
  batch = _greedy(model, [long_a, short, long_b])  # bucket 64: `short` gets 48 slots of left padding
  assert batch.tokens[1] == alone.tokens[0]
  np.testing.assert_allclose(batch.logprobs[1][0], alone.logprobs[0][0], atol=TOL)


# --------------------------------------------------------------------------- 4. stop tokens


def _first_stop(row, stops):
  return next(((j, t) for j, t in enumerate(row) if t in stops), (len(row), None))


def _choose_stops(rows):
  """Two stop ids that end two rows at different steps on different tokens while a third row
  contains neither, plus one id no row generates (several ids at once)."""
  for free in range(len(rows)):
    a_row, b_row = (r for r in range(len(rows)) if r != free)
    banned = set(rows[free])
    for a in dict.fromkeys(rows[a_row]):
      for b in dict.fromkeys(rows[b_row]):
        if a in banned or b in banned or a == b:
          continue
        (ca, ta), (cb, tb) = _first_stop(rows[a_row], {a, b}), _first_stop(rows[b_row], {a, b})
        if ta == a and tb == b and ca != cb and min(ca, cb) >= 1:
          unused = next(t for t in range(3, 256) if all(t not in r for r in rows))
          return [a, b, unused]
  raise AssertionError(f"no stop tokens fit these greedy rows: {rows}")


def test_each_row_stops_on_its_own_stop_token(tiny):
  _, model = tiny("llama")
  prompts = _prompts(PROMPT_LENGTHS)
  base = _greedy(model, prompts)
  rows = [t[0] for t in base.tokens]
  stops = _choose_stops(rows)
  out = sampling.generate(model, prompts, n=1, max_new_tokens=NEW, temperature=0.0, stop_token_ids=stops)
  cuts = []
  for i, row in enumerate(rows):
    cut, hit = _first_stop(row, set(stops))
    cuts.append(cut)
    assert out.tokens[i][0] == row[:cut], f"row {i} should end before step {cut} ({hit})"
    np.testing.assert_allclose(out.logprobs[i][0], base.logprobs[i][0][:cut], atol=1e-5)
    assert out.stopped[i] == [hit is not None]
  print(f"stop ids {stops}: rows cut at {cuts} of {NEW}")
  assert sorted(out.stopped) == [[False], [True], [True]]
  assert len(set(cuts)) == 3


# --------------------------------------------------------------------------- 5. log-probs


@pytest.mark.parametrize("family", ["gemma2", "llama"])
def test_sampled_logprobs_equal_tempered_full_forward(tiny, family):
  _, model = tiny(family)
  prompts = _prompts(PROMPT_LENGTHS[:2])
  temp = 0.7
  out = sampling.generate(
    model, prompts, n=4, max_new_tokens=NEW, temperature=temp, top_p=1.0, top_k=0, seed=3, stop_token_ids=[]
  )
  err = 0.0
  for i, p in enumerate(prompts):
    assert len({tuple(t) for t in out.tokens[i]}) > 1  # n real samples, not copies
    full = _full_logits(model, p, out.tokens[i])
    want = np.asarray(jax.nn.log_softmax(jnp.asarray(full) / temp, axis=-1))
    want = np.take_along_axis(want, np.array(out.tokens[i])[..., None], -1)[..., 0]
    err = max(err, np.abs(np.array(out.logprobs[i]) - want).max())
  print(f"{family}: sampled log-probs vs log_softmax(full/T) max err = {err:.2e}")
  assert err <= TOL


# --------------------------------------------------------------------------- 6. seeds


def test_same_seed_same_samples_different_seed_different_samples(tiny):
  _, model = tiny("llama")
  prompts = _prompts(PROMPT_LENGTHS[:2])

  def run(seed):
    return sampling.generate(model, prompts, n=4, max_new_tokens=NEW, temperature=1.0, seed=seed, stop_token_ids=[])

  a, b, c = run(11), run(11), run(12)
  assert a.tokens == b.tokens and a.logprobs == b.logprobs
  pairs = [(x, y) for i in range(2) for x, y in zip(a.tokens[i], c.tokens[i], strict=True)]
  assert all(x != y for x, y in pairs)


def test_a_prompts_samples_do_not_depend_on_what_shares_its_call(tiny):
  """Per-prompt seeds: prompt a's samples are the same alone, among other prompts (another batch bucket, another
  position), and on an engine of one row slot; a different seed changes them."""
  _, model = tiny("llama")
  a, b, c = _prompts(PROMPT_LENGTHS[:3])

  def run(prompts, seeds, **kw):
    return sampling.generate(model, prompts, n=3, max_new_tokens=NEW, temperature=1.0, seed=seeds, stop_token_ids=[],
                             **kw)

  alone = run([a], [42])
  among = run([b, c, a], [1, 2, 42])
  split = run([c, b, a], [2, 1, 42], max_rows=1)
  assert among.tokens[2] == alone.tokens[0] == split.tokens[2]
  np.testing.assert_allclose(among.logprobs[2], alone.logprobs[0], atol=TOL)
  assert among.tokens[0] == split.tokens[1] and among.tokens[1] == split.tokens[0]
  assert all(x != y for x, y in zip(run([a], [43]).tokens[0], alone.tokens[0], strict=True))
  with pytest.raises(ValueError, match="seed has 1 values for 2 prompts"):
    run([a, b], [1])


def test_duplicate_prompts_get_independent_samples(tiny):
  """Voting samples k prompts whose shuffled responses can coincide: a duplicate prompt must
  still get its own samples (it used to get a copy of the first one's). Greedy duplicates are
  equal, but not the same list objects."""
  _, model = tiny("llama")
  a = _prompts(PROMPT_LENGTHS[:1])[0]
  out = sampling.generate(model, [a, a], n=4, max_new_tokens=NEW, temperature=1.0, seed=11, stop_token_ids=[])
  assert all(x != y for x, y in zip(out.tokens[0], out.tokens[1], strict=True))
  prompts = _prompts(PROMPT_LENGTHS)
  out = _greedy(model, prompts + [prompts[0]])
  assert out.tokens[3] == out.tokens[0] and out.logprobs[3] == out.logprobs[0]
  out.tokens[3][0].append(-1)
  assert out.tokens[0][0][-1] != -1


# --------------------------------------------------------------------------- 7. distribution


def test_first_token_frequencies_match_softmax(tiny):
  """n=2000 samples of one token at T=1: Pearson's chi-square, sum over tokens of
  (observed - expected)^2 / expected with expected = 2000 * softmax(full-forward logits) and
  tokens expected fewer than 5 times pooled, below the p = 0.001 critical value.
  Observed here: chi2 = 31.6 on 31 degrees of freedom (critical 61.1)."""
  _, model = tiny("llama")
  prompt = _prompts((7,), seed=5)[0]
  draws = 2000
  out = sampling.generate(model, [prompt], n=draws, max_new_tokens=1, temperature=1.0, seed=0, stop_token_ids=[])
  first = np.array([t[0] for t in out.tokens[0]])
  logits = np.asarray(models.logits(model, np.array([prompt])))[0, -1].astype(np.float64)
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  assert probs.max() < 0.5 and (probs > 0.01).sum() >= 10  # a spread distribution: the test has power
  np.testing.assert_allclose([lp[0] for lp in out.logprobs[0]], np.log(probs[first]), atol=TOL)
  stat, dof, crit = chi_square(np.bincount(first, minlength=probs.size), probs)
  print(f"first-token chi2 = {stat:.2f} on {dof} dof (p=0.001 critical value {crit:.2f})")
  assert stat < crit


# --------------------------------------------------------------------------- 8. top-k / top-p


def test_top_k_one_and_tiny_top_p_are_greedy(tiny):
  _, model = tiny("llama")
  prompts = _prompts(PROMPT_LENGTHS)
  greedy = _greedy(model, prompts).tokens
  for kw in (dict(top_k=1), dict(top_p=1e-6)):
    out = sampling.generate(model, prompts, n=1, max_new_tokens=NEW, temperature=1.0, seed=5, stop_token_ids=[], **kw)
    assert out.tokens == greedy, kw


# top-k and top-p together are covered by tests/sampling/test_filters.py (one compile less here).
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 3, 1.0), (0.8, 0, 0.6)])
def test_filtered_samples_and_logprobs_follow_the_masked_distribution(tiny, temperature, top_k, top_p):
  """Sampled tokens lie inside the top-k / nucleus of the full-forward logits, and their
  log-probs are log_softmax of the masked tempered logits (reference in float64 NumPy)."""
  _, model = tiny("llama")
  prompts = _prompts(PROMPT_LENGTHS[:2])
  out = sampling.generate(
    model,
    prompts,
    n=4,
    max_new_tokens=NEW,
    temperature=temperature,
    top_k=top_k,
    top_p=top_p,
    seed=9,
    stop_token_ids=[],
  )
  err, off_argmax = 0.0, 0
  for i, p in enumerate(prompts):
    full = _full_logits(model, p, out.tokens[i])
    for j, toks in enumerate(out.tokens[i]):
      for s, tok in enumerate(toks):
        probs = reference_sampling_probs(full[j, s], temperature, top_k, top_p)
        if top_k:
          assert full[j, s, tok] >= np.sort(full[j, s])[-top_k], "token outside the top k"
        assert probs[tok] > 0, "token outside the mask"
        err = max(err, abs(out.logprobs[i][j][s] - np.log(probs[tok])))
        off_argmax += tok != full[j, s].argmax()
  print(f"T={temperature} top_k={top_k} top_p={top_p}: max log-prob err {err:.2e}, {off_argmax} non-argmax tokens")
  assert err <= TOL
  assert off_argmax > 0  # it really sampled


# --------------------------------------------------------------------------- 9. bad input


def test_bad_input_raises_value_error_naming_the_argument(tiny):
  _, model = tiny("llama")
  ok = dict(prompts=[[5, 6, 7]], n=1, max_new_tokens=4, temperature=0.5, top_p=1.0, top_k=0)
  cases = [
    (dict(prompts=[[5, 6], []]), r"prompts\[1\]"),
    (dict(prompts=[[5, 256]]), r"prompts\[0\].*256"),  # vocab is 256
    (dict(prompts=[[-1, 5]]), r"prompts\[0\].*-1"),
    (dict(n=0), r"\bn=0"),
    (dict(top_p=0.0), r"top_p"),
    (dict(top_p=1.5), r"top_p"),
    (dict(temperature=-0.1), r"temperature"),
    (dict(top_k=-1), r"top_k"),
    (dict(max_new_tokens=0), r"max_new_tokens"),
    (dict(prompts=[[5] * 500], max_new_tokens=13), r"max_new_tokens.*max_position_embeddings=512"),
  ]
  for change, pattern in cases:
    with pytest.raises(ValueError, match=pattern):
      sampling.generate(model, **{**ok, **change})
  with pytest.raises(TypeError, match="prompts"):
    sampling.generate(model, "a string is not token ids")


# --------------------------------------------------------------------------- 10. sharded


def _rescaled(model):
  """from_config's init (embeddings of std 1 against weights of std 0.02) makes a model that
  mostly echoes its last token. Shrinking the embeddings 20x lets attention move the logits
  (by ~5 between contexts), and growing the untied head 20x gives logits of std ~3: far from
  argmax ties, yet spread enough for samples to vary. Elementwise, so shardings are kept."""
  params = dict(model.params, embed=model.params["embed"] * 0.05, lm_head=model.params["lm_head"] * 20.0)
  return dataclasses.replace(model, params=params)


def test_sharded_generate_matches_unsharded():
  """data=2 x fsdp=2 x tensor=2 over the 8 fake CPU devices vs one device, same init seed:
  same greedy tokens, and the same samples for the same seed."""
  cfg = models.tiny("llama")
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  ref = _rescaled(models.from_config(cfg, seed=0))
  with parallel.use_mesh(mesh):
    sharded = _rescaled(models.from_config(cfg, seed=0))
  assert sharded.mesh is mesh  # generate runs it there, called from outside any scope
  assert any(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(sharded.params))
  for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(sharded.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  prompts = _prompts(PROMPT_LENGTHS)
  want, got = _greedy(ref, prompts), _greedy(sharded, prompts)
  assert got.tokens == want.tokens
  err = max(np.abs(np.subtract(g[0], w[0])).max() for g, w in zip(got.logprobs, want.logprobs, strict=True))
  assert err <= TOL
  assert len({t for row in want.tokens for t in row[0]}) > 10

  def sample(model):
    return sampling.generate(model, prompts, n=2, max_new_tokens=NEW, temperature=1.0, seed=2, stop_token_ids=[])

  want, got = sample(ref), sample(sharded)
  assert got.tokens == want.tokens
  assert len({t for row in want.tokens for s in row for t in s}) > 30  # varied samples


def test_per_prompt_sample_counts_share_one_program():
  """n as a list: each prompt gets exactly its own number of samples; greedy rows agree."""
  from grm_jax import models as _models
  from grm_jax import sampling as _sampling

  m = _models.from_config(_models.tiny("llama"), seed=0)
  prompts = [[1, 2, 3, 4], [5, 6, 7], [9, 9]]
  out = _sampling.generate(m, prompts, n=[2, 1, 3], max_new_tokens=5, temperature=1.0, stop_token_ids=[])
  assert [len(t) for t in out.tokens] == [2, 1, 3]
  assert all(len(s) == 5 for row in out.tokens for s in row)
  greedy = _sampling.generate(m, prompts, n=1, max_new_tokens=5, temperature=0, stop_token_ids=[])
  many = _sampling.generate(m, prompts, n=[3, 1, 2], max_new_tokens=5, temperature=0, stop_token_ids=[])
  for i, row in enumerate(many.tokens):
    assert all(t == greedy.tokens[i][0] for t in row)
  with pytest.raises(ValueError, match="n has 2 counts for 3 prompts"):
    _sampling.generate(m, prompts, n=[1, 2], max_new_tokens=2)
