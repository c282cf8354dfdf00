"""A GRM as a reward over HTTP: any OpenAI-compatible server (ours, `python -m grm_jax.serve`; vLLM or SGLang serving
an exported GRM) samples the judgements, this module does the rest on the caller's side (`judging`).

  from grm_jax.reward import RewardClient
  client = RewardClient("http://localhost:8000/v1", recipe="/path/to/exported-grm")   # or recipe=None: ask the server
  client.score("What is 2+2?", ["4", "5"])                # -> [9.5, 2.0]: mean voted score per response
  await client.ascore(prompt, responses)                  # the same from async code (TRL's async reward functions)

Every request of a judgement is independent, so they run concurrently (at most `max_concurrency` in flight). A
transport error, a timeout, 429 or a 5xx (the server's 503 when its queue is full, honouring its Retry-After) is
retried `retries` times with exponential backoff; any other 4xx is the caller's mistake and raises `RewardError`
with the server's one-line message at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Sequence
from typing import Any

import httpx

from grm_jax.grm import prompts
from grm_jax.reward import judging
from grm_jax.reward.recipe import Recipe, frame_text

APIS = ("completions", "chat")


class RewardError(RuntimeError):
  """A reward request that failed for good (a 4xx, or retries used up)."""


def request_seed(base: int, prompt: Any, responses: Sequence[str]) -> int:
  """A request's seed from its content: the same (prompt, responses) gets the same samples, whatever order or
  concurrency requests are sent in."""
  blob = json.dumps([base, prompt, list(responses)], ensure_ascii=False, sort_keys=True).encode()
  return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little")


def _retry_after(response: httpx.Response | None, attempt: int, backoff: float) -> float:
  wait = backoff * 2**attempt
  if response is not None:
    try:
      wait = max(wait, float(response.headers.get("retry-after", 0)))
    except ValueError:
      pass
  return wait


def _error_message(response: httpx.Response) -> str:
  try:
    body = response.json()
  except ValueError:
    return response.text.strip().splitlines()[0] if response.text.strip() else response.reason_phrase
  err = body.get("error", body) if isinstance(body, dict) else body
  if isinstance(err, dict):
    return str(err.get("message") or err.get("detail") or err)
  return str(err)


class RewardClient:
  """Rewards for (prompt, responses) from a GRM behind an OpenAI-compatible endpoint (module docstring).

  Args:
    base_url: the server's OpenAI base, e.g. "http://localhost:8000/v1".
    recipe: a `Recipe`, an exported GRM folder or its grm_recipe.json, or None to fetch `GET <root>/recipe` from a
      grm_jax server.
    mode: "group" (the responses of one prompt judged together, in chunks of at most recipe.max_responses: SPCT's
      multi-response judging) or "pointwise" (each response alone).
    k: samples per prompt (default the recipe's); Voting@k over them.
    api: "completions" (`POST /completions` with the prompt rendered by the recipe's chat frame, exactly the tokens
      the GRM was trained on) or "chat" (`POST /chat/completions`: the server applies its chat template).
    meta_url: the meta RM's classify endpoint (ours: "<root>/classify"): MetaRM@k, keeping the top k_meta samples.
    model: the model name sent to the server (default the recipe's).
    timeout: seconds per HTTP request; retries, backoff: see the module docstring.
    seed: mixed into every request's content-derived seed (`request_seed`).
  """

  def __init__(self, base_url: str, recipe: Recipe | str | None = None, *, mode: str = "group", k: int | None = None,
               api: str = "completions", meta_url: str | None = None, k_meta: int | None = None,
               model: str | None = None, timeout: float = 300.0, retries: int = 3, backoff: float = 0.5,
               seed: int = 0, shuffle: bool = True, api_key: str | None = None, max_concurrency: int = 32):
    if mode not in judging.MODES:
      raise ValueError(f"mode={mode!r}: choose one of {judging.MODES}")
    if api not in APIS:
      raise ValueError(f"api={api!r}: choose one of {APIS}")
    if retries < 0 or timeout <= 0 or max_concurrency < 1:
      raise ValueError("retries must be >= 0, timeout > 0 and max_concurrency >= 1")
    self.base_url = base_url.rstrip("/")
    self._recipe = Recipe.load(recipe) if isinstance(recipe, str) else recipe
    self.mode, self.api, self.meta_url, self.k_meta = mode, api, meta_url, k_meta
    self._k, self._model = k, model
    self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
    self.seed, self.shuffle, self.max_concurrency = int(seed), bool(shuffle), int(max_concurrency)
    self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    self._clients: dict[int, tuple[httpx.AsyncClient, asyncio.Semaphore]] = {}
    self._loop: asyncio.AbstractEventLoop | None = None
    self._lock = threading.Lock()

  # ------------------------------------------------------------------ settings

  @property
  def recipe(self) -> Recipe:
    if self._recipe is None:
      root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
      response = httpx.get(f"{root}/recipe", timeout=self.timeout, headers=self._headers)
      if response.status_code != 200:
        raise RewardError(f"GET {root}/recipe: {response.status_code} {_error_message(response)} (pass recipe=)")
      self._recipe = Recipe.from_dict(response.json(), where=f"{root}/recipe")
    return self._recipe

  @property
  def k(self) -> int:
    return int(self._k or self.recipe.k)

  @property
  def model(self) -> str:
    return self._model or self.recipe.model or "grm"

  # ------------------------------------------------------------------ HTTP

  def _http(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
    loop = asyncio.get_running_loop()
    entry = self._clients.get(id(loop))
    if entry is None:
      limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
      entry = (httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self._headers),
               asyncio.Semaphore(self.max_concurrency))
      self._clients[id(loop)] = entry
    return entry

  async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
    client, gate = self._http()
    last = ""
    for attempt in range(self.retries + 1):
      response = None
      try:
        async with gate:
          response = await client.post(url, json=body)
      except httpx.HTTPError as e:  # connection refused or reset, timeouts
        last = f"{type(e).__name__}: {e}"
      else:
        if response.status_code == 200:
          return response.json()
        last = f"{response.status_code} {_error_message(response)}"
        if response.status_code < 500 and response.status_code != 429:
          raise RewardError(f"POST {url}: {last}")
      if attempt < self.retries:
        await asyncio.sleep(_retry_after(response, attempt, self.backoff))
    raise RewardError(f"POST {url}: failed after {self.retries + 1} tries: {last}")

  async def _complete(self, c: judging.Completion) -> list[str]:
    r = self.recipe
    body: dict[str, Any] = {"model": self.model, "n": c.n, "max_tokens": r.max_new_tokens,
                            "temperature": r.temperature, "top_p": r.top_p, "seed": c.seed}
    if self.api == "chat":
      body["messages"] = [{"role": "user", "content": c.content}]
      out = await self._post(f"{self.base_url}/chat/completions", body)
      choices = sorted(out["choices"], key=lambda x: x["index"])
      return [ch["message"]["content"] or "" for ch in choices]
    if not r.chat:
      raise RewardError("the recipe has no chat frame for api='completions' (export the GRM, or use api='chat')")
    body["prompt"] = frame_text(r.chat, c.content)
    body["add_special_tokens"] = False  # the frame already holds the template's special tokens (vLLM honours it)
    out = await self._post(f"{self.base_url}/completions", body)
    return [ch["text"] for ch in sorted(out["choices"], key=lambda x: x["index"])]

  async def _meta(self, conversations: list[list[dict[str, str]]]) -> list[float]:
    meta = self.recipe.meta
    if meta is None or not meta.chat:
      raise RewardError("meta_url was given but the recipe has no meta RM (export the run's metarm stage too)")
    texts = [frame_text(meta.chat, conv[0]["content"], conv[1]["content"]) for conv in conversations]
    # use_activation=false: vLLM's /classify then returns the raw logit in "probs" (its default is the sigmoid).
    out = await self._post(self.meta_url, {"model": meta.model or "meta-rm", "input": texts,
                                           "add_special_tokens": False, "use_activation": False})
    data = sorted(out["data"], key=lambda x: x["index"])
    return [float(d["logit"]) if "logit" in d else float(d["probs"][-1]) for d in data]

  # ------------------------------------------------------------------ judging

  async def ajudge(self, prompt: prompts.Query, responses: Sequence[str], *, k: int | None = None,
                   mode: str | None = None, seed: int | None = None,
                   return_judgements: bool = False) -> judging.RewardResult:
    """One request's rewards and how they came about (`judging.RewardResult`)."""
    k = int(k or self.k)
    seed = request_seed(self.seed, prompt, responses) if seed is None else int(seed)
    return await judging.judge_request(self.recipe, self._complete, prompt, responses, k=k, mode=mode or self.mode,
                                       seed=seed, shuffle=self.shuffle, meta=self._meta if self.meta_url else None,
                                       k_meta=self.k_meta, with_judgements=return_judgements)

  async def ascore(self, prompt: prompts.Query, responses: Sequence[str], **kw: Any) -> list[float]:
    """The rewards of `responses` to `prompt`, one float each."""
    return (await self.ajudge(prompt, responses, **kw)).rewards

  async def ascore_many(self, items: Sequence[tuple[prompts.Query, Sequence[str]]], **kw: Any) -> list[list[float]]:
    """Several requests at once (concurrently)."""
    return list(await asyncio.gather(*(self.ascore(p, r, **kw) for p, r in items)))

  # ------------------------------------------------------------------ sync

  def _run(self, coro):
    """Run a coroutine on this client's own event loop thread: works from plain code and from inside a running loop
    (a notebook, a trainer that runs its own loop)."""
    with self._lock:
      if self._loop is None:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="grm-reward", daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

  def judge(self, prompt: prompts.Query, responses: Sequence[str], **kw: Any) -> judging.RewardResult:
    return self._run(self.ajudge(prompt, responses, **kw))

  def score(self, prompt: prompts.Query, responses: Sequence[str], **kw: Any) -> list[float]:
    return self._run(self.ascore(prompt, responses, **kw))

  def score_many(self, items: Sequence[tuple[prompts.Query, Sequence[str]]], **kw: Any) -> list[list[float]]:
    return self._run(self.ascore_many(items, **kw))

  def close(self) -> None:
    """Close the connections of this client's own loop (those of a caller's loop close with that loop)."""
    if self._loop is not None:
      loop = self._loop
      entry = self._clients.pop(id(loop), None)
      if entry is not None:
        asyncio.run_coroutine_threadsafe(entry[0].aclose(), loop).result()
      loop.call_soon_threadsafe(loop.stop)
      self._loop = None

