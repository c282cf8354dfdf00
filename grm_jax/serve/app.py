"""The HTTP surface of `python -m grm_jax.serve` (FastAPI): OpenAI-compatible completions, rewards, OpenRLHF's
`/get_reward`, the meta RM's `/classify`, health and Prometheus metrics.

  GET  /health               {"status": "ok", ...}; 503 while shutting down
  GET  /recipe               the GRM's judging recipe (grm_recipe.json), which `grm_jax.reward.RewardClient` reads
  GET  /v1/models            the served model, OpenAI style
  POST /v1/completions       prompt (text, token ids, or a list of either), n, max_tokens, temperature, top_p, top_k,
                             stop, seed, logprobs, add_special_tokens: the n samples of a prompt share its KV
  POST /v1/chat/completions  messages in the model's chat template, same settings
  POST /v1/rewards           {"prompt", "responses", "k", "mode", "meta", "seed", "shuffle", "return_judgements"}
                             -> {"rewards", "votes", "parsed", "voted"[, "judgements"]}
  POST /get_reward           OpenRLHF's remote reward model: {"query": [...], "prompts": [...]} -> {"rewards": [...]}
  POST /classify             the meta RM's score of texts (vLLM's classify format, plus the raw "logit")
  GET  /metrics              Prometheus text: requests, queue depth, batch sizes, tokens/s, latency

Every request is admitted or refused at once: more than `max_queue` requests in the server answer 503 with
Retry-After. A request that takes longer than `request_timeout` answers 504. Bad input answers 400 with an OpenAI
style error object whose message is one line naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

import fastapi
import numpy as np
import prometheus_client as prom
import pydantic
from fastapi import responses as fr

from grm_jax.grm import prompts
from grm_jax.reward import judging
from grm_jax.reward.recipe import Recipe
from grm_jax.serve.engine import CallStats, Engine, Settings


class ServeError(Exception):
  """An error with its HTTP status and one-line message."""

  def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
    super().__init__(message)
    self.status, self.message, self.headers = status, message, headers


# ----------------------------------------------------------------------------------------------- request bodies

StopType = str | list[str] | None


class _Body(pydantic.BaseModel):
  # OpenAI clients send fields we do not use (user, logit_bias, ...): accept and ignore them.
  model_config = pydantic.ConfigDict(extra="allow", strict=True)


class _Sampling(_Body):
  model: str | None = None
  n: int = pydantic.Field(1, ge=1, le=256)
  max_tokens: int | None = pydantic.Field(None, ge=1)
  temperature: float = pydantic.Field(1.0, ge=0)
  top_p: float = pydantic.Field(1.0, gt=0, le=1)
  top_k: int = pydantic.Field(0, ge=-1)  # 0 or -1 (vLLM's spelling): off
  stop: StopType = None
  seed: int | None = pydantic.Field(None, ge=0)
  stream: bool = False


class CompletionBody(_Sampling):
  prompt: str | list[int] | list[str] | list[list[int]]
  logprobs: int | None = pydantic.Field(None, ge=0)
  add_special_tokens: bool = True
  echo: bool = False


class ChatMessage(_Body):
  role: Literal["system", "user", "assistant"]
  content: str


class ChatBody(_Sampling):
  messages: list[ChatMessage] = pydantic.Field(min_length=1)
  max_completion_tokens: int | None = pydantic.Field(None, ge=1)
  logprobs: bool = False


class RewardBody(_Body):
  prompt: str | list[ChatMessage]
  responses: list[str] = pydantic.Field(min_length=1)
  k: int | None = pydantic.Field(None, ge=1, le=256)
  mode: Literal["group", "pointwise"] = "group"
  meta: bool | None = None
  k_meta: int | None = pydantic.Field(None, ge=1)
  seed: int = pydantic.Field(0, ge=0)
  shuffle: bool = True
  return_judgements: bool = False


class OpenRLHFBody(_Body):
  query: list[str] = pydantic.Field(min_length=1)
  prompts: list[str] | None = None
  labels: list[Any] | None = None


class ClassifyBody(_Body):
  model: str | None = None
  input: str | list[str]
  add_special_tokens: bool = True
  use_activation: bool = True  # vLLM's switch: false returns the raw logit in "probs"


# ----------------------------------------------------------------------------------------------- metrics


class Metrics:
  """The server's Prometheus series, in a registry of its own (several servers in one test process)."""

  def __init__(self) -> None:
    self.registry = prom.CollectorRegistry()
    r = self.registry
    self.requests = prom.Counter("grm_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                 registry=r)
    self.latency = prom.Histogram("grm_request_seconds", "request latency", ["endpoint"], registry=r,
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, math.inf))
    self.in_flight = prom.Gauge("grm_requests_in_flight", "requests admitted and not yet answered", registry=r)
    self.queue = prom.Gauge("grm_queue_depth", "sampler jobs waiting for the engine", registry=r)
    self.batch_prompts = prom.Histogram("grm_batch_prompts", "requests finished per engine call", registry=r,
                                        buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, math.inf))
    self.batch_rows = prom.Histogram("grm_batch_rows", "live rows per decode step of an engine call", registry=r,
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, math.inf))
    self.occupancy = prom.Gauge("grm_slot_occupancy", "fraction of row slots live in the last engine call",
                                registry=r)
    self.tokens = prom.Counter("grm_generated_tokens", "tokens generated", registry=r)
    self.tokens_per_s = prom.Gauge("grm_tokens_per_second", "generated tokens per second of the last call",
                                   registry=r)
    self.rejected = prom.Counter("grm_rejected", "requests refused with 503 (queue full)", registry=r)

  def call(self, stats: CallStats) -> None:
    self.batch_prompts.observe(stats.prompts)
    self.batch_rows.observe(stats.rows)
    self.tokens.inc(stats.new_tokens)
    self.occupancy.set(stats.occupancy)
    if stats.seconds > 0:
      self.tokens_per_s.set(stats.new_tokens / stats.seconds)


# ----------------------------------------------------------------------------------------------- the server


@dataclasses.dataclass
class MetaRM:
  """A trained meta RM in this process: (model, params, max_len) as `runs.load_meta` returns them."""

  model: Any
  params: Any
  max_len: int


class Server:
  """The state every handler shares: the model and its engine, the recipe, an optional meta RM, the limits."""

  def __init__(self, model: Any, recipe: Recipe, *, name: str = "grm", meta: MetaRM | None = None,
               max_queue: int = 256, request_timeout: float = 600.0, engine: dict[str, int] | None = None) -> None:
    if max_queue < 1 or request_timeout <= 0:
      raise ValueError(f"max_queue={max_queue}, request_timeout={request_timeout}: need >= 1 and > 0")
    self.model, self.recipe, self.name, self.meta = model, recipe, name, meta
    self.max_queue, self.request_timeout = int(max_queue), float(request_timeout)
    self.metrics = Metrics()
    # The engine's cache is sized by its limits: by default room for the recipe's judgements.
    sizes = {"max_new_tokens": max(1024, recipe.max_new_tokens), **(engine or {})}
    self.engine = Engine(model, on_call=self.metrics.call, **sizes)
    self.admitted = 0
    self.draining = False
    self.context = int(model.config.max_position_embeddings)
    self._meta_lock = asyncio.Lock()

  # -------------------------------------------------------------- admission

  @contextlib.asynccontextmanager
  async def admit(self):
    if self.draining:
      raise ServeError(503, "the server is shutting down", {"Retry-After": "5"})
    if self.admitted >= self.max_queue:
      self.metrics.rejected.inc()
      raise ServeError(503, f"the server has {self.admitted} requests in flight (max_queue={self.max_queue}); retry",
                       {"Retry-After": "1"})
    self.admitted += 1
    self.metrics.in_flight.set(self.admitted)
    try:
      yield
    finally:
      self.admitted -= 1
      self.metrics.in_flight.set(self.admitted)

  # -------------------------------------------------------------- sampling

  def encode_text(self, text: str, add_special_tokens: bool) -> list[int]:
    return [int(t) for t in self.model.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]]

  def check_ids(self, ids: Sequence[int], max_new: int, what: str) -> None:
    if not ids:
      raise ServeError(400, f"{what}: the prompt is empty")
    vocab = self.model.config.vocab_size
    if min(ids) < 0 or max(ids) >= vocab:
      raise ServeError(400, f"{what}: token ids must be in [0, {vocab})")
    if len(ids) + max_new > self.context:
      raise ServeError(400, f"{what}: {len(ids)} prompt tokens + max_tokens {max_new} exceed the model's context "
                            f"of {self.context} tokens")
    e = self.engine
    if len(ids) > e.max_prompt_tokens:
      raise ServeError(400, f"{what}: {len(ids)} prompt tokens > this server's --max-prompt-tokens "
                            f"{e.max_prompt_tokens}; restart it with a larger value")
    if max_new > e.max_new_tokens:
      raise ServeError(400, f"{what}: max_tokens {max_new} > this server's --max-tokens {e.max_new_tokens}; ask for "
                            "fewer or restart it with a larger value")

  async def sample(self, ids: Sequence[int], n: int, max_new: int, settings: Settings, seed: int):
    self.metrics.queue.set(self.engine.waiting + 1)
    job = self.engine.submit(ids, n, max_new, settings, seed)
    try:
      return await asyncio.wrap_future(job.future)
    finally:
      self.metrics.queue.set(self.engine.waiting)

  def decode(self, tokens: Sequence[int]) -> str:
    return self.model.tokenizer.decode(list(tokens), skip_special_tokens=True)

  async def complete(self, c: judging.Completion) -> list[str]:
    """A GRM prompt's samples with the recipe's settings: the `/v1/rewards` path to the engine."""
    r = self.recipe
    ids = self.model.encode_chat([{"role": "user", "content": c.content}])
    self.check_ids(ids, r.max_new_tokens, "prompt")
    out = await self.sample(ids, c.n, r.max_new_tokens, Settings(r.temperature, r.top_p), c.seed)
    return [self.decode(t) for t in out.tokens]

  # -------------------------------------------------------------- meta RM

  def _meta_ids(self, messages: list[dict[str, str]]) -> list[int] | None:
    from grm_jax.judges.meta_rm import meta_ids  # noqa: PLC0415

    return meta_ids(self.meta.model, messages, self.meta.max_len)

  async def meta_logits(self, seqs: list[list[int] | None]) -> list[float]:
    """The meta RM's logits (-inf for a judgement too long to score, as evaluation ranks it)."""
    from grm_jax.judges.scalar_rm import score_sequences  # noqa: PLC0415

    real = [s for s in seqs if s is not None]
    async with self._meta_lock:  # one forward at a time: they compete for the same cores / device
      logits = await asyncio.to_thread(score_sequences, self.meta.model, self.meta.params, real, 8,
                                       max_len=self.meta.max_len) if real else []
    it = iter(np.asarray(logits, np.float64).tolist())
    return [next(it) if s is not None else -math.inf for s in seqs]

  async def meta_scores(self, conversations: list[list[dict[str, str]]]) -> list[float]:
    return await self.meta_logits([self._meta_ids(c) for c in conversations])

  # -------------------------------------------------------------- rewards

  async def rewards(self, prompt: Any, responses: list[str], *, k: int | None, mode: str, meta: bool | None,
                    k_meta: int | None, seed: int, shuffle: bool, with_judgements: bool,
                    chunked: bool = False) -> judging.RewardResult:
    k = int(k or self.recipe.k)
    use_meta = self.meta is not None if meta is None else bool(meta)
    if use_meta and self.meta is None:
      raise ServeError(400, "meta: this server has no meta RM (serve a run whose metarm stage finished)")
    try:
      judging.check_request(self.recipe, responses, k, mode, chunked=chunked)
      query = prompt if isinstance(prompt, str) else [m.model_dump() for m in prompt]
      prompts.render_context(query)
    except ValueError as e:
      raise ServeError(400, str(e)) from None
    return await judging.judge_request(self.recipe, self.complete, query, responses, k=k, mode=mode, seed=seed,
                                       shuffle=shuffle, meta=self.meta_scores if use_meta else None, k_meta=k_meta,
                                       with_judgements=with_judgements)


# ----------------------------------------------------------------------------------------------- the app


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> fr.JSONResponse:
  kind = "invalid_request_error" if status < 500 else "server_error"
  return fr.JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status,
                         headers=headers)


def _validation_message(exc: fastapi.exceptions.RequestValidationError) -> str:
  err = exc.errors()[0]
  if err.get("type") == "json_invalid":
    return f"the request body is not valid JSON ({err.get('ctx', {}).get('error', err.get('msg'))})"
  loc = [str(x) for x in err.get("loc", ()) if x != "body"]
  # Union types add one location part per tried member (e.g. "str", "list[str]"): keep the field path only.
  loc = [x for x in loc if "[" not in x and x not in ("str", "int", "float", "bool", "list", "function-after")]
  field = ".".join(loc) or "body"
  return f"{field}: {err.get('msg', 'invalid value')}"


def _sigmoid(x: float) -> float:
  return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _stop_strings(stop: StopType) -> list[str]:
  return [stop] if isinstance(stop, str) else list(stop or [])


def _cut(text: str, stops: list[str]) -> tuple[str, bool]:
  cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
  return (text[:cut], True) if cut >= 0 else (text, False)


def _strip_end(text: str, specials: list[str]) -> str:
  text = text.rstrip()
  while any(text.endswith(t) for t in specials):
    text = text[: -len(next(t for t in specials if text.endswith(t)))].rstrip()
  return text


def _settings(body: _Sampling) -> Settings:
  return Settings(float(body.temperature), float(body.top_p), max(int(body.top_k), 0))


def _seed(body: _Sampling) -> int:
  return int(body.seed) % 2**32 if body.seed is not None else secrets.randbits(32)


def _lifespan(server: Server, on_shutdown: Callable[[], None] | None):
  """The app's lifespan: nothing at start; at shutdown, after uvicorn has stopped taking connections and answered
  every admitted request, stop the engine, then run `on_shutdown`."""

  @contextlib.asynccontextmanager
  async def lifespan(app):
    yield
    server.draining = True
    await asyncio.to_thread(server.engine.close)
    if on_shutdown is not None:
      await asyncio.to_thread(on_shutdown)

  return lifespan


# ----------------------------------------------------------------------------------------------- error handling


async def _serve_error(request: fastapi.Request, exc: ServeError) -> fr.JSONResponse:
  return _error(exc.status, exc.message, exc.headers)


async def _bad_request(request: fastapi.Request, exc: fastapi.exceptions.RequestValidationError) -> fr.JSONResponse:
  kind = request.headers.get("content-type", "")
  if request.method == "POST" and "json" not in kind:
    return _error(400, f"send the body as JSON with Content-Type: application/json (got {kind or 'none'!r})")
  return _error(400, _validation_message(exc))


async def _http_error(request: fastapi.Request, exc: fastapi.HTTPException) -> fr.JSONResponse:
  return _error(exc.status_code, str(exc.detail))


def _add_error_handlers(app: fastapi.FastAPI) -> None:
  """Every error answers an OpenAI style error object (`_error`)."""
  app.add_exception_handler(ServeError, _serve_error)
  app.add_exception_handler(fastapi.exceptions.RequestValidationError, _bad_request)
  app.add_exception_handler(fastapi.HTTPException, _http_error)


def _add_request_metrics(app: fastapi.FastAPI, server: Server) -> None:
  """Counts every request by path and status, and its latency (not those of /metrics itself)."""

  @app.middleware("http")
  async def count(request: fastapi.Request, call_next):
    t0 = time.perf_counter()
    response = await call_next(request)
    path = request.url.path
    if path != "/metrics":
      server.metrics.requests.labels(path, str(response.status_code)).inc()
      server.metrics.latency.labels(path).observe(time.perf_counter() - t0)
    return response


# ----------------------------------------------------------------------------------------------- admission


async def _guarded(server: Server, coro):
  """Awaits `coro` once the server admits the request (503 when full or shutting down), within `request_timeout`
  (504). `coro` is created by the caller but its work starts only here: a refused request's never starts."""
  try:
    async with server.admit():
      return await asyncio.wait_for(coro, server.request_timeout)
  except TimeoutError:
    raise ServeError(504, f"the request took longer than request_timeout={server.request_timeout:g} s") from None
  finally:
    coro.close()  # a refused request's work never starts (closing a finished coroutine does nothing)


# ----------------------------------------------------------------------------------------------- routes


def _add_info_routes(app: fastapi.FastAPI, server: Server) -> None:
  """GET /health, /recipe, /v1/models and /metrics."""

  @app.get("/health")
  async def health():
    if server.draining:
      return _error(503, "the server is shutting down", {"Retry-After": "5"})
    return {"status": "ok", "model": server.name, "in_flight": server.admitted, "queued": server.engine.waiting,
            "meta_rm": server.meta is not None}

  @app.get("/recipe")
  async def recipe():
    return server.recipe.to_dict()

  @app.get("/v1/models")
  async def list_models():
    return {"object": "list", "data": [{"id": server.name, "object": "model", "owned_by": "grm_jax",
                                        "max_model_len": server.context}]}

  @app.get("/metrics")
  async def metrics():
    server.metrics.queue.set(server.engine.waiting)
    return fr.Response(prom.generate_latest(server.metrics.registry), media_type=prom.CONTENT_TYPE_LATEST)


def _check_sampling(body: _Sampling) -> None:
  if body.stream:
    raise ServeError(400, "stream: streaming is not supported; send stream=false")


def _completion_choice(server: Server, out: Any, j: int, index: int, stops: list[str],
                       with_logprobs: bool) -> dict[str, Any]:
  """Sample j of an engine result `out` as an OpenAI completion choice: the decoded text cut at the first stop
  string, and its finish reason."""
  text, hit = _cut(server.decode(out.tokens[j]), stops)
  reason = "stop" if hit or out.stopped[j] else "length"
  choice = {"index": index, "text": text, "finish_reason": reason, "tokens": out.tokens[j], "logprobs": None}
  if with_logprobs:
    choice["logprobs"] = {"tokens": [server.decode([t]) for t in out.tokens[j]],
                          "token_logprobs": out.logprobs[j], "token_ids": out.tokens[j]}
  return choice


async def _run_completions(server: Server, prompt_ids: list[list[int]], body: _Sampling, max_new: int,
                           logprobs: bool) -> tuple[list[dict[str, Any]], dict[str, int]]:
  """body.n samples of each prompt (prompt p seeded seed + p): (choices, usage) of an OpenAI completion."""
  settings, stops = _settings(body), _stop_strings(body.stop)
  seed = _seed(body)
  outs = await asyncio.gather(*(server.sample(ids, body.n, max_new, settings, (seed + p) % 2**32)
                                for p, ids in enumerate(prompt_ids)))
  choices, completion_tokens = [], 0
  for p, out in enumerate(outs):
    for j in range(body.n):
      completion_tokens += len(out.tokens[j])
      choices.append(_completion_choice(server, out, j, p * body.n + j, stops, logprobs))
  usage = {"prompt_tokens": sum(len(i) for i in prompt_ids), "completion_tokens": completion_tokens}
  usage["total_tokens"] = usage["prompt_tokens"] + completion_tokens
  return choices, usage


def _completion_prompt_ids(server: Server, body: CompletionBody, max_new: int) -> list[list[int]]:
  """The token ids of each prompt of a /v1/completions body (text, token ids, or a list of either), checked."""
  p = body.prompt
  if isinstance(p, str):
    p = [p]
  if not p:
    raise ServeError(400, "prompt: must not be empty")
  if isinstance(p[0], int):
    p = [p]
  ids = [server.encode_text(x, body.add_special_tokens) if isinstance(x, str) else list(x) for x in p]
  for i, x in enumerate(ids):
    server.check_ids(x, max_new, f"prompt[{i}]" if len(ids) > 1 else "prompt")
  return ids


def _add_completion_routes(app: fastapi.FastAPI, server: Server) -> None:
  """POST /v1/completions and /v1/chat/completions."""

  @app.post("/v1/completions")
  async def completions(body: CompletionBody):
    max_new = int(body.max_tokens or 16)
    _check_sampling(body)
    ids = _completion_prompt_ids(server, body, max_new)
    choices, usage = await _guarded(server, _run_completions(server, ids, body, max_new, body.logprobs is not None))
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": server.name, "choices": choices, "usage": usage}

  @app.post("/v1/chat/completions")
  async def chat_completions(body: ChatBody):
    max_new = int(body.max_completion_tokens or body.max_tokens or 256)
    _check_sampling(body)
    if body.messages[-1].role == "assistant":
      raise ServeError(400, "messages: the last message must not be the assistant's (nothing to answer)")
    ids = server.model.encode_chat([m.model_dump(include={"role", "content"}) for m in body.messages])
    server.check_ids(ids, max_new, "messages")
    choices, usage = await _guarded(server, _run_completions(server, [ids], body, max_new, body.logprobs))
    out = [{"index": c["index"], "message": {"role": "assistant", "content": c["text"]},
            "finish_reason": c["finish_reason"], "logprobs": c["logprobs"]} for c in choices]
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": server.name, "choices": out, "usage": usage}


def _openrlhf_answers(server: Server, body: OpenRLHFBody) -> tuple[list[str], list[str]]:
  """(prompts, answers) of an OpenRLHF /get_reward body: each query = prompt + response, the prompt cut off."""
  prompts_ = body.prompts if body.prompts is not None else [""] * len(body.query)
  if len(prompts_) != len(body.query):
    raise ServeError(400, f"prompts: {len(prompts_)} prompts for {len(body.query)} queries")
  # OpenRLHF decodes query = prompt + response with special tokens: drop the ones that end the response.
  specials = [t for t in server.model.tokenizer.all_special_tokens if t]
  answers = [_strip_end(q[len(p):] if p and q.startswith(p) else q, specials)
             for q, p in zip(body.query, prompts_, strict=True)]
  return prompts_, answers


async def _judge_prompt_groups(server: Server, prompts_: list[str], answers: list[str],
                               groups: dict[str, list[int]]) -> list[judging.RewardResult]:
  """One group judgement per distinct prompt, of the answers given with it (indices `groups[prompt]`)."""

  async def one(idx: list[int]):
    query = prompts_[idx[0]] or "(no prompt given)"
    return await server.rewards(query, [answers[i] for i in idx], k=None, mode="group", meta=None, k_meta=None,
                                seed=0, shuffle=True, with_judgements=False, chunked=True)

  return await asyncio.gather(*(one(idx) for idx in groups.values()))


async def _openrlhf_rewards(server: Server, body: OpenRLHFBody) -> dict[str, Any]:
  """OpenRLHF's remote reward model: the answers to one prompt are judged together, every reward in query order."""
  prompts_, answers = _openrlhf_answers(server, body)
  groups: dict[str, list[int]] = {}
  for i, p in enumerate(prompts_):
    groups.setdefault(p, []).append(i)
  # A coroutine, not a gathered future: a refused request must not have started any work.
  results = await _guarded(server, _judge_prompt_groups(server, prompts_, answers, groups))
  rewards = [0.0] * len(body.query)
  for idx, res in zip(groups.values(), results, strict=True):
    for i, r in zip(idx, res.rewards, strict=True):
      rewards[i] = r
  return {"rewards": rewards, "scores": rewards, "extra_logs": {"grm_reward": rewards}}


async def _classify(server: Server, body: ClassifyBody) -> dict[str, Any]:
  """The meta RM's logit of each text, in vLLM's classify format."""
  if server.meta is None:
    raise ServeError(400, "this server has no meta RM (serve a run whose metarm stage finished)")
  texts = [body.input] if isinstance(body.input, str) else list(body.input)
  if not texts:
    raise ServeError(400, "input: must not be empty")
  tok = server.meta.model.tokenizer
  seqs = [[int(t) for t in tok(x, add_special_tokens=body.add_special_tokens)["input_ids"]][-server.meta.max_len:]
          for x in texts]
  logits = await _guarded(server, server.meta_logits(seqs))
  data = [{"index": i, "label": "LABEL_0", "num_classes": 1, "logit": x,
           "probs": [_sigmoid(x) if body.use_activation else x]} for i, x in enumerate(logits)]
  return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
          "model": body.model or "meta-rm", "data": data}


def _add_reward_routes(app: fastapi.FastAPI, server: Server) -> None:
  """POST /v1/rewards, /get_reward (OpenRLHF) and /classify (the meta RM)."""

  @app.post("/v1/rewards")
  async def rewards(body: RewardBody):
    result = await _guarded(server, server.rewards(body.prompt, body.responses, k=body.k, mode=body.mode,
                                                   meta=body.meta, k_meta=body.k_meta, seed=body.seed,
                                                   shuffle=body.shuffle, with_judgements=body.return_judgements))
    return result.to_dict()

  @app.post("/get_reward")
  async def get_reward(body: OpenRLHFBody):
    return await _openrlhf_rewards(server, body)

  @app.post("/classify")
  async def classify(body: ClassifyBody):
    return await _classify(server, body)


def create_app(server: Server, on_shutdown: Callable[[], None] | None = None) -> fastapi.FastAPI:
  """The FastAPI app of `server` (module docstring). `on_shutdown` runs after the engine has stopped (a pod's
  process 0 leaves JAX's distributed runtime there, before uvicorn re-raises the SIGTERM that ends it)."""
  app = fastapi.FastAPI(title="grm_jax", lifespan=_lifespan(server, on_shutdown))
  _add_error_handlers(app)
  _add_request_metrics(app, server)
  _add_info_routes(app, server)
  _add_completion_routes(app, server)
  _add_reward_routes(app, server)
  return app
