"""A smoke GRM (a tiny model taught to write `Scores: \\boxed{...}`, so judgements parse, and parse differently under
sampling) and a server on localhost running in this process."""

import contextlib
import dataclasses
import socket
import threading
import time

import httpx
import jax
import numpy as np
import optax
import pytest

from grm_jax import models
from grm_jax.reward import Recipe, chat_frame, plan
from grm_jax.serve.app import Server, create_app
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
def smoke_grm():
  """tiny:llama fine-tuned for 40 Adam steps on 4 of the recipe's own prompts to answer with a score block."""
  model = models.load("tiny:llama")
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
    logp, _ = token_logprobs(cfg, params, batch["tokens"], batch["mask"])
    return -(logp * batch["loss_mask"]).sum() / batch["loss_mask"].sum()

  @jax.jit
  def step(params, state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, value

  params, state = model.params, opt.init(model.params)
  for _ in range(40):
    params, state, value = step(params, state)
  assert float(value) < 0.5, f"the smoke GRM did not learn its output format (NLL {float(value):.2f})"
  return dataclasses.replace(model, params=params)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def serving(server: Server):
  """Run `server` with uvicorn in a thread on a free localhost port; yields its base URL."""
  import uvicorn

  port = _free_port()
  app = create_app(server)
  uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
  thread = threading.Thread(target=uv.run, daemon=True)
  thread.start()
  url = f"http://127.0.0.1:{port}"
  deadline = time.monotonic() + 60
  while True:
    try:
      if httpx.get(f"{url}/health", timeout=1).status_code == 200:
        break
    except httpx.HTTPError:
      pass
    if time.monotonic() > deadline:
      raise RuntimeError("the test server did not start")
    time.sleep(0.1)
  try:
    yield url
  finally:
    uv.should_exit = True
    thread.join(60)
