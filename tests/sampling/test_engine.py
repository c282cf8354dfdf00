"""The continuous-batching engine against the static sampler, and its own invariants.

The static sampler (`sampling.static`, one while_loop per call) is the reference: greedy requests must give its
tokens and log-probs whatever the slot count and arrival order; sampled requests must depend on their own seed only.
Tiny random models get their final-norm gain scaled (as in test_generate.py) so that greedy argmaxes are not
float-noise ties.
"""

import dataclasses

import jax
import numpy as np
import pytest

from grm_jax import models
from grm_jax.sampling import engine as eng
from grm_jax.sampling import generate
from grm_jax.sampling.static import generate_static

NEW = 12
LENGTHS = (12, 5, 9, 17, 3, 30, 8)
FAMILIES = ("llama", "qwen2", "gemma2")
LP_TOL = 1e-5


def _scaled(model, scale=10.0):
  """The model with its logits scaled (final-norm gain x scale): greedy gaps well above float noise."""
  params = jax.tree.map(lambda x: x, model.params)
  w = params["final_norm"]["scale"]
  params["final_norm"]["scale"] = (1.0 + w) * scale - 1.0 if model.config.norm_plus_one else w * scale
  return dataclasses.replace(model, params=params)


@pytest.fixture(scope="module")
def tiny():
  built = {}

  def get(family):
    if family not in built:
      built[family] = _scaled(models.from_config(models.tiny(family), seed=3, eos_ids=(2,)))
    return built[family]

  return get


def _prompts(lengths=LENGTHS, seed=0):
  rng = np.random.RandomState(seed)
  return [rng.randint(3, 200, n).tolist() for n in lengths]


def _same(a, b, tol=LP_TOL):
  """Two GenerateOutputs with equal tokens and stop flags, log-probs within tol."""
  assert a.tokens == b.tokens
  assert a.stopped == b.stopped
  for la, lb in zip(a.logprobs, b.logprobs, strict=True):
    for x, y in zip(la, lb, strict=True):
      np.testing.assert_allclose(x, y, atol=tol, rtol=0)


# Gemma-2 (sliding windows, soft-capping) runs by default; the other two tiny families and the real SmolLM2 (Llama)
# below are in the slow tier (~40 s each; tiny Llama's sampled requests run by default).
@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f != "gemma2" else f for f in FAMILIES])
def test_greedy_equals_the_static_sampler_for_any_slot_count_and_order(tiny, family):
  """Every request's greedy tokens and log-probs equal the static sampler's, with 2 and 8 row slots and with the
  requests in reverse order; per-prompt sample counts and stop ids on (rows end at different steps)."""
  model = tiny(family)
  prompts = _prompts()
  counts = [1, 2, 1, 3, 1, 1, 2]
  free = generate_static(model, prompts, n=counts, max_new_tokens=NEW, temperature=0.0, stop_token_ids=[])
  stops = [free.tokens[0][0][4], free.tokens[3][0][7]]  # tokens the model does emit: some rows end early
  kw = dict(n=counts, max_new_tokens=NEW, temperature=0.0, stop_token_ids=stops)
  ref = generate_static(model, prompts, **kw)
  assert any(s for row in ref.stopped for s in row) and not all(s for row in ref.stopped for s in row)
  for rows in (2, 8):
    _same(generate(model, prompts, max_rows=rows, **kw), ref)
  rev = generate(model, prompts[::-1], **{**kw, "n": counts[::-1]}, max_rows=8)
  back = dataclasses.replace(rev, tokens=rev.tokens[::-1], logprobs=rev.logprobs[::-1], stopped=rev.stopped[::-1])
  _same(back, ref)


@pytest.mark.slow  # ~45 s; the default tier runs the real SmolLM2 through the engine in tests/judges/test_judge.py
def test_greedy_equals_the_static_sampler_on_smollm2(smollm2):
  """The embedded SmolLM2 with chat prompts and its own EOS: engine == static, also with the requests reversed."""
  prompts = [smollm2.encode_chat([{"role": "user", "content": q}])
             for q in ("What is 2+2?", "Name a prime number and say why it is prime.", "Say hello.")]
  kw = dict(n=1, max_new_tokens=24, temperature=0.0)
  ref = generate_static(smollm2, prompts, **kw)
  _same(generate(smollm2, prompts, max_rows=2, **kw), ref, tol=1e-4)
  _same(generate(smollm2, prompts[::-1], max_rows=2, **kw),
        dataclasses.replace(ref, tokens=ref.tokens[::-1], logprobs=ref.logprobs[::-1], stopped=ref.stopped[::-1]),
        tol=1e-4)


def test_sampled_requests_equal_the_static_sampler_with_the_same_keys(tiny):
  """Both samplers give sample j of a prompt the same key stream, so sampled outputs agree too (top-p on)."""
  model = tiny("llama")
  prompts = _prompts()
  kw = dict(n=3, max_new_tokens=NEW, temperature=0.9, top_p=0.9, seed=5, stop_token_ids=[7])
  _same(generate(model, prompts, max_rows=4, **kw), generate_static(model, prompts, **kw))


def _request(ids, seed, **kw):
  base = dict(n=2, max_new_tokens=NEW, temperature=1.0, stop_ids=(7,), seed=seed)
  return eng.Request(list(ids), **{**base, **kw})


@pytest.mark.parametrize("family", ["gemma2", "qwen2"])
def test_a_requests_samples_do_not_depend_on_what_runs_beside_it(tiny, family):
  """The same request with the same seed, alone or among 20 others with other settings (greedy, top-k, top-p,
  other lengths), on engines of 2 and 8 row slots (1 and 2 rows per prefix): the same tokens and log-probs."""
  model = tiny(family)
  mine = _prompts((10,), seed=9)[0]
  others = _prompts([3 + (i * 7) % 29 for i in range(20)], seed=4)
  settings = [dict(temperature=0.0), dict(top_k=5), dict(top_p=0.7), dict(n=3, max_new_tokens=5), {}]

  def outputs(layout, crowd):
    reqs = [_request(p, 100 + i, **settings[i % len(settings)]) for i, p in enumerate(others)] if crowd else []
    target = _request(mine, 42)
    reqs.insert(len(reqs) // 2, target)
    engine = eng.Engine(model, layout)
    for r in reqs:
      engine.submit(r)
    engine.run()
    assert all(r.done for r in reqs)
    return target.tokens, target.logprobs

  alone = outputs(eng.Layout(rows=2, per_prefix=1, prefix_len=32, new_tokens=NEW), crowd=False)
  for layout in (eng.Layout(rows=2, per_prefix=1, prefix_len=32, new_tokens=NEW),
                 eng.Layout(rows=8, per_prefix=2, prefix_len=32, new_tokens=NEW)):
    tokens, logprobs = outputs(layout, crowd=True)
    assert tokens == alone[0]
    np.testing.assert_allclose(np.concatenate(logprobs), np.concatenate(alone[1]), atol=LP_TOL)
  different = eng.Engine(model, eng.Layout(rows=2, per_prefix=1, prefix_len=32, new_tokens=NEW))
  other_seed = different.submit(_request(mine, 43))
  different.run()
  assert other_seed.tokens != alone[0]


def test_finished_rows_are_refilled_so_long_tails_cost_their_own_length(tiny):
  """Requests with long-tailed lengths on 2 row slots: the engine's decode iterations are about the tokens asked
  for divided by the slots (each slot refilled when its sample ends), while a static pair waits for its longer row."""
  model = tiny("llama")
  lengths = [2, 12, 3, 3, 12, 2, 4, 2]
  prompts = _prompts([6] * len(lengths), seed=2)
  engine = eng.Engine(model, eng.Layout(rows=2, per_prefix=1, prefix_len=16, new_tokens=12))
  reqs = [engine.submit(eng.Request(p, 1, k, temperature=0.0)) for p, k in zip(prompts, lengths, strict=True)]
  engine.run()
  assert [len(r.tokens[0]) for r in reqs] == lengths
  static_steps = sum(max(lengths[i : i + 2]) - 1 for i in range(0, len(lengths), 2))
  assert engine.stats.tokens == sum(lengths)
  assert engine.stats.steps <= sum(k - 1 for k in lengths) / 2 + 12
  assert engine.stats.steps < static_steps
  assert engine.stats.occupancy > 0.7
  # The outputs are the static sampler's, request by request.
  for p, k, r in zip(prompts, lengths, reqs, strict=True):
    assert generate_static(model, [p], max_new_tokens=k, temperature=0.0, stop_token_ids=[]).tokens[0] == r.tokens


def test_a_request_larger_than_the_engine_streams_through_its_rows(tiny):
  """n = 7 samples on 2 row slots: the rows take the request's samples in turn; each sample is the one `generate`
  gives on a large engine."""
  model = tiny("qwen2")
  prompt = _prompts((9,), seed=1)[0]
  engine = eng.Engine(model, eng.Layout(rows=2, per_prefix=2, prefix_len=16, new_tokens=NEW))
  req = engine.submit(eng.Request(prompt, 7, NEW, temperature=1.0, stop_ids=(7,), seed=3))
  engine.run()
  big = generate(model, [prompt], n=7, max_new_tokens=NEW, temperature=1.0, seed=[3], stop_token_ids=[7])
  assert req.tokens == big.tokens[0]


def test_bad_requests_and_layouts_raise_one_line_errors(tiny):
  model = tiny("llama")
  engine = eng.Engine(model, eng.Layout(rows=2, per_prefix=1, prefix_len=16, new_tokens=8))
  with pytest.raises(ValueError, match="prefix_len 16"):
    engine.submit(eng.Request(list(range(3, 20)), 1, 4))
  with pytest.raises(ValueError, match="max_new_tokens=9"):
    engine.submit(eng.Request([5, 6], 1, 9))
  with pytest.raises(ValueError, match="empty"):
    engine.submit(eng.Request([], 1, 4))
  with pytest.raises(ValueError, match="num_stop"):
    engine.submit(eng.Request([5], 1, 4, stop_ids=(1, 2)))
  with pytest.raises(ValueError, match="multiple of per_prefix"):
    eng.Layout(rows=3, per_prefix=2, prefix_len=8, new_tokens=4)
  with pytest.raises(ValueError, match="max_rows"):
    generate(model, [[5]], max_rows=0)
  assert not engine.busy


def test_choose_layout_shares_prefixes_by_the_common_count():
  assert eng.choose_layout([4] * 10, 100, 64, 2, 64) == eng.Layout(64, 4, 128, 64, 2)
  assert eng.choose_layout([1, 1, 1, 8], 10, 8, 1, 64).per_prefix == 1
  small = eng.choose_layout([1, 1, 1], 10, 8, 1, 64)
  assert small.rows == 4  # no more rows than the samples asked for (bucketed)
  assert eng.choose_layout([3] * 5, 10, 8, 1, 16, shards=4).rows % 4 == 0
