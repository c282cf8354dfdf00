"""A smoke GRM (a tiny model taught to write `Scores: \\boxed{...}`, so judgements parse, and parse differently under
sampling); `serving` runs a server on localhost in this process."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from filelock import FileLock

from grm_jax import models
from grm_jax.reward import Recipe, chat_frame, plan
from grm_jax.serve.inprocess import free_port, serving  # noqa: F401 - the tests import them from here
from grm_jax.train.batching import pack
from grm_jax.train.logprobs import token_logprobs

RESPONSES = ["4", "5", "It is four.", "22", "Four, since 2+2=4.", "I do not know."]
QUESTIONS = ["What is 2+2?", "Name a prime number.", "Say hello."]


def smoke_recipe(tokenizer, **kw) -> Recipe:
  base = dict(template="compact", single_template="compact", max_new_tokens=16, k=4, chat=tuple(chat_frame(tokenizer)))
  return Recipe(**{**base, **kw})


def _targets(n: int, rng) -> str:
  return "Scores: \\boxed{" + ", ".join(str(int(s)) for s in rng.integers(1, 11, n)) + "}"


@pytest.fixture(scope="session")
def smoke_grm(tmp_path_factory, worker_id):
  """tiny:llama fine-tuned for 40 Adam steps on 4 of the recipe's own prompts to answer with a score block.

  Trained once per test run: under pytest-xdist the first worker to need it trains it and saves the params in the
  run's shared temporary folder; the other worker waits on the lock and loads them (pytest-xdist's documented
  pattern for session data), instead of spending ~45 s training the same params again."""
  model = models.load("tiny:llama")
  if worker_id == "master":
    return dataclasses.replace(model, params=_train(model))
  saved = tmp_path_factory.getbasetemp().parent / "smoke_grm.npz"  # the run's folder, shared by its workers
  treedef = jax.tree.structure(model.params)
  with FileLock(f"{saved}.lock"):
    if saved.exists():
      with np.load(saved) as arrays:
        params = jax.tree.unflatten(treedef, [jnp.asarray(arrays[str(i)]) for i in range(treedef.num_leaves)])
    else:
      params = _train(model)
      with open(saved, "wb") as f:  # a file object: np.savez would append ".npz" to a name without it
        np.savez(f, **{str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))})
  return dataclasses.replace(model, params=params)


def _train(model):
  recipe = smoke_recipe(model.tokenizer)
  rng = np.random.default_rng(0)
  prompts_, targets = [], []
  for q in QUESTIONS[:1]:
    for n in (1, 2, 3, 4):
      for chunk in plan(recipe, q, RESPONSES[:n], k=1, seed=int(rng.integers(1 << 30))):
        for c in chunk.completions:
          prompts_.append(model.encode_chat([{"role": "user", "content": c.content}]))
          targets.append(model.tokenizer.encode(_targets(n, rng), add_special_tokens=False) + [model.eos_id])
  batch, _ = pack(prompts_, targets, pad_id=model.pad_id, max_len=512)
  cfg = model.config
  opt = optax.adam(2e-2)

  def loss(params):
    logp, _ = token_logprobs(cfg, params, batch["tokens"], batch["mask"], needed=batch["loss_mask"])
    return -(logp * batch["loss_mask"]).sum() / batch["loss_mask"].sum()

  @jax.jit
  def step(params, state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, value

  params, state = model.params, opt.init(model.params)
  for _ in range(40):
    params, state, value = step(params, state)
  assert float(value) < 1.0, f"the smoke GRM did not learn its output format (NLL {float(value):.2f})"
  return params
