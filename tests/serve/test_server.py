"""`grm_jax.serve` on localhost with the smoke GRM: concurrent reward requests equal to the in-process judge on the
same samples and seeds, per-request reproducibility, bad requests, a full queue, the official `openai` client."""

import asyncio
import dataclasses

import httpx
import numpy as np
import pytest

from grm_jax import grm, sampling
from grm_jax.reward import RewardClient, combine, plan, sample_texts
from grm_jax.serve.app import Server
from tests.serve.conftest import QUESTIONS, RESPONSES, serving, smoke_recipe


def _requests(count: int, seed: int = 0) -> list[dict]:
  rng = np.random.default_rng(seed)
  out = []
  for i in range(count):
    n = int(rng.integers(1, 5))
    out.append({"prompt": QUESTIONS[i % len(QUESTIONS)], "responses": [str(r) for r in rng.choice(RESPONSES, n)],
                "k": int(rng.integers(1, 9)), "mode": ["group", "pointwise"][i % 2], "seed": int(rng.integers(1000)),
                "return_judgements": True})
  return out


async def _post_all(url: str, path: str, bodies: list[dict]) -> list[httpx.Response]:
  async with httpx.AsyncClient(timeout=600) as client:
    return await asyncio.gather(*(client.post(f"{url}{path}", json=b) for b in bodies))


def _in_process(model, recipe, body) -> list[float]:
  """The same request judged without the server: the same plan (prompts, orders, seeds), each completion sampled by
  `sampling.generate` alone, then parse and vote."""
  chunks = plan(recipe, body["prompt"], body["responses"], k=body["k"], mode=body["mode"], seed=body["seed"])
  texts = []
  for ch in chunks:
    outs = []
    for c in ch.completions:
      ids = model.encode_chat([{"role": "user", "content": c.content}])
      gen = sampling.generate(model, [ids], n=c.n, max_new_tokens=recipe.max_new_tokens,
                              temperature=recipe.temperature, top_p=recipe.top_p, seed=[c.seed])
      outs.append([model.tokenizer.decode(t, skip_special_tokens=True) for t in gen.tokens[0]])
    texts.append(sample_texts(ch, outs))
  return combine(recipe, len(body["responses"]), chunks, texts).rewards


def _voted_from_judgements(result: dict, num: int, neutral: float) -> list[float]:
  """Rewards recomputed from the server's returned samples with grm's own parse and vote."""
  rewards = [neutral] * num
  for chunk in result["judgements"]:
    n = len(chunk["responses"])
    texts = [s["text"] for s in chunk["samples"]]
    orders = [s["order"] for s in chunk["samples"]]
    scores, valid, _, _ = grm.judge_texts_to_arrays([texts], [orders], n_max=n, templates=[chunk["template"]])
    votes = np.asarray(grm.vote(scores, valid))[0]
    for p, i in enumerate(chunk["responses"]):
      if valid.sum():
        rewards[i] = votes[p] / valid.sum()
  return rewards


def test_concurrent_rewards_equal_the_in_process_judge(smoke_grm):
  recipe = smoke_recipe(smoke_grm.tokenizer)
  bodies = _requests(64)
  server = Server(smoke_grm, recipe, max_queue=64, engine={"slots": 16})
  with serving(server) as url:
    answers = asyncio.run(_post_all(url, "/v1/rewards", bodies))
    assert [a.status_code for a in answers] == [200] * 64
    results = [a.json() for a in answers]
    # The same request again, alone: the same samples (one key stream per request, whatever it was batched with).
    alone = [httpx.post(f"{url}/v1/rewards", json=bodies[i], timeout=600).json() for i in (0, 7, 21)]
    metrics = httpx.get(f"{url}/metrics").text
  parsed = sum(sum(r["parsed"]) for r in results)
  assert parsed > 0, "no judgement parsed: the test would not check the parse path"
  assert any(p < body["k"] for r, body in zip(results, bodies, strict=True) for p in r["parsed"]), \
    "every judgement parsed: the unparseable path went unchecked"
  for body, result in zip(bodies, results, strict=True):
    assert len(result["rewards"]) == len(body["responses"])
    np.testing.assert_allclose(result["rewards"], _voted_from_judgements(result, len(body["responses"]),
                                                                       recipe.neutral_reward), rtol=1e-6)
  for i, again in zip((0, 7, 21), alone, strict=True):
    assert again == results[i]
  for i in (0, 1, 2, 3, 5, 8):  # a few requests of each mode, sampled again in this process without the server
    np.testing.assert_allclose(results[i]["rewards"], _in_process(smoke_grm, recipe, bodies[i]), rtol=1e-6)
  # Requests shared the engine's decode steps: on average several rows were live per step.
  value = {line.split()[0]: float(line.split()[-1]) for line in metrics.splitlines()
           if line.startswith("grm_batch_rows_")}
  assert value["grm_batch_rows_sum"] / value["grm_batch_rows_count"] > 4


BAD = [
  ("not json", b"{bad"),
  ("missing responses", {"prompt": "q"}),
  ("empty responses", {"prompt": "q", "responses": []}),
  ("responses not a list", {"prompt": "q", "responses": "a"}),
  ("a response not a string", {"prompt": "q", "responses": ["a", 3]}),
  ("too many responses", {"prompt": "q", "responses": ["a"] * 5}),
  ("k = 0", {"prompt": "q", "responses": ["a"], "k": 0}),
  ("k as text", {"prompt": "q", "responses": ["a"], "k": "8"}),
  ("unknown mode", {"prompt": "q", "responses": ["a"], "mode": "best"}),
  ("prompt too long", {"prompt": "word " * 9000, "responses": ["a"]}),
  ("chat prompt ending with the assistant", {"prompt": [{"role": "assistant", "content": "x"}], "responses": ["a"]}),
  ("meta without a meta RM", {"prompt": "q", "responses": ["a"], "meta": True}),
]
BAD_COMPLETIONS = [
  ("negative temperature", {"prompt": "hi", "temperature": -1}),
  ("top_p 0", {"prompt": "hi", "top_p": 0}),
  ("n = 0", {"prompt": "hi", "n": 0}),
  ("token id out of range", {"prompt": [10**9]}),
  ("empty prompt", {"prompt": ""}),
  ("stream", {"prompt": "hi", "stream": True}),
  ("prompt + max_tokens past the context", {"prompt": "hi", "max_tokens": 10**6}),
]


def test_bad_requests_get_a_one_line_4xx_and_the_server_keeps_serving(smoke_grm):
  recipe = smoke_recipe(smoke_grm.tokenizer, k=1)
  with serving(Server(smoke_grm, recipe)) as url:
    for path, cases in (("/v1/rewards", BAD), ("/v1/completions", BAD_COMPLETIONS)):
      for name, body in cases:
        r = httpx.post(f"{url}{path}", content=body, timeout=60) if isinstance(body, bytes) else httpx.post(
          f"{url}{path}", json=body, timeout=60)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        message = r.json()["error"]["message"]
        assert message and "\n" not in message, (name, message)
    assert "Content-Type" in httpx.post(f"{url}/v1/rewards", content=b'{"prompt": "q"}',
                                        headers={"content-type": "text/plain"}).json()["error"]["message"]
    ok = httpx.post(f"{url}/v1/rewards", json={"prompt": "q", "responses": ["a", "b"]}, timeout=600)
    assert ok.status_code == 200 and len(ok.json()["rewards"]) == 2
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_a_full_queue_answers_503_with_retry_after_and_the_rest_are_served(smoke_grm):
  recipe = smoke_recipe(smoke_grm.tokenizer, k=2)
  bodies = [{"prompt": QUESTIONS[i % 3], "responses": RESPONSES[: 1 + i % 3], "seed": i} for i in range(32)]
  with serving(Server(smoke_grm, recipe, max_queue=4)) as url:
    answers = asyncio.run(_post_all(url, "/v1/rewards", bodies))
    codes = [a.status_code for a in answers]
    assert set(codes) == {200, 503}, codes
    assert 4 <= codes.count(200) < 32
    assert all(a.headers.get("retry-after") for a in answers if a.status_code == 503)
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    # A client that retries (RewardClient honours Retry-After) gets every answer.
    client = RewardClient(f"{url}/v1", recipe, k=2, backoff=0.05, retries=50, max_concurrency=32)
    rewards = client.score_many([(b["prompt"], b["responses"]) for b in bodies])
    assert [len(r) for r in rewards] == [len(b["responses"]) for b in bodies]
    client.close()


def test_openai_client_gets_the_samplers_greedy_completions(smoke_grm):
  openai = pytest.importorskip("openai")
  recipe = smoke_recipe(smoke_grm.tokenizer)
  ids = smoke_grm.encode_chat([{"role": "user", "content": "What is 2+2?"}])
  want = sampling.generate(smoke_grm, [ids], n=4, max_new_tokens=12, temperature=0.0)
  with serving(Server(smoke_grm, recipe)) as url:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    out = client.completions.create(model="grm", prompt=ids, n=4, max_tokens=12, temperature=0.0, logprobs=1)
    text = client.completions.create(model="grm", prompt=smoke_grm.tokenizer.decode(ids), n=1, max_tokens=12,
                                     temperature=0.0, extra_body={"add_special_tokens": False})
    chat = client.chat.completions.create(model="grm", messages=[{"role": "user", "content": "What is 2+2?"}],
                                          n=2, max_tokens=12, temperature=0.0)
  assert len(out.choices) == 4
  for choice, tokens, logprobs in zip(sorted(out.choices, key=lambda c: c.index), want.tokens[0], want.logprobs[0],
                                      strict=True):
    assert choice.text == smoke_grm.tokenizer.decode(tokens, skip_special_tokens=True)
    np.testing.assert_allclose(choice.logprobs.token_logprobs, logprobs, atol=1e-5)
  assert text.choices[0].text == out.choices[0].text
  assert [c.message.content for c in chat.choices] == [out.choices[0].text] * 2


def test_reward_client_over_http_equals_the_servers_own_rewards(smoke_grm):
  """The jax-free client (prompts rendered by the recipe's chat frame, sent to /v1/completions) and the server's
  /v1/rewards (prompts through the model's chat template) give the same rewards for the same request and seed."""
  recipe = smoke_recipe(smoke_grm.tokenizer)
  with serving(Server(smoke_grm, recipe)) as url:
    client = RewardClient(f"{url}/v1", recipe=None)  # the recipe from GET /recipe
    chat_client = RewardClient(f"{url}/v1", recipe=None, api="chat")
    for body in _requests(6, seed=3):
      served = httpx.post(f"{url}/v1/rewards", json=body, timeout=600).json()
      kw = dict(k=body["k"], mode=body["mode"], seed=body["seed"])
      assert client.score(body["prompt"], body["responses"], **kw) == served["rewards"]
      assert chat_client.score(body["prompt"], body["responses"], **kw) == served["rewards"]
    assert client.recipe == dataclasses.replace(recipe, model="grm") or client.recipe.chat == recipe.chat
    client.close()
    chat_client.close()


def test_metarm_at_k_over_http_equals_the_servers_own(smoke_grm):
  """MetaRM@k: the client scores each judgement at the meta RM endpoint (/classify, the recipe's meta chat frame) and
  keeps the top k_meta; the server's /v1/rewards scores the same inputs in process. Same rewards, and fewer voted
  samples than parsed where more than k_meta parsed."""
  import jax.numpy as jnp

  from grm_jax import models
  from grm_jax.models.scalar_head import init_head_params
  from grm_jax.reward import MetaRecipe, chat_frame
  from grm_jax.serve.app import MetaRM

  meta_model = models.load("tiny:llama")
  params = init_head_params(meta_model.params, meta_model.config.hidden_size)
  rng = np.random.default_rng(0)
  params["head"] = {"kernel": jnp.asarray(rng.normal(size=meta_model.config.hidden_size), jnp.float32),
                    "bias": jnp.float32(0.3)}
  meta = MetaRM(meta_model, params, 512)
  recipe = smoke_recipe(smoke_grm.tokenizer, k=4, meta=MetaRecipe(chat=tuple(chat_frame(meta_model.tokenizer, True)),
                                                                  max_len=512, score_bias=0.3))
  with serving(Server(smoke_grm, recipe, meta=meta)) as url:
    client = RewardClient(f"{url}/v1", recipe=None, meta_url=f"{url}/classify")
    for body in _requests(4, seed=5):
      body = {**body, "k": 4, "meta": True, "return_judgements": True}
      served = httpx.post(f"{url}/v1/rewards", json=body, timeout=600).json()
      got = client.judge(body["prompt"], body["responses"], k=4, mode=body["mode"], seed=body["seed"],
                         return_judgements=True)
      np.testing.assert_allclose(got.rewards, served["rewards"], rtol=1e-6)
      assert got.voted == served["voted"]
      assert all(v <= 2 for v in served["voted"])  # k_meta = ceil(4 / 2)
      metas = [s["meta"] for c in served["judgements"] for s in c["samples"] if s["scores"] is not None]
      np.testing.assert_allclose([s.get("meta") for c in got.judgements for s in c["samples"]
                                  if s["scores"] is not None], metas, rtol=1e-4, atol=1e-4)
    client.close()
