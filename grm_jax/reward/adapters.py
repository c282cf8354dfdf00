"""The GRM as the reward of an RL framework's run: TRL's `reward_funcs` and verl's custom reward function.

(OpenRLHF needs no adapter: `--remote_rm_url http://host:port/get_reward` points it at `python -m grm_jax.serve`.)

TRL (`GRPOTrainer(reward_funcs=[trl_reward(client)])`) calls a reward function with the batch's `prompts` and
`completions` (strings, or chat messages for conversational data sets) and extra columns as keywords; the G
completions of a prompt arrive in the same batch. In group mode the completions that share a prompt are judged
together (SPCT's multi-response judging; chunks of at most the recipe's `max_responses`), in pointwise mode each
alone. Every prompt's judging runs concurrently. `async_=True` returns an `async def` function, which TRL runs
concurrently with its other reward functions.

verl (`custom_reward_function.path=<this file>`, `.name=compute_score`) calls `compute_score(data_source,
solution_str, ground_truth, extra_info)` per response; the GRM needs the prompt, which verl passes in `extra_info`
when the data set puts it there (`prompt_key`, default "question"). `compute_score_batch` is the batched form for
verl's batch reward manager and judges each prompt's responses as a group. Both read the server URL and recipe
from `reward_kwargs` (`url=`, `recipe=`) or the environment variables GRM_REWARD_URL and GRM_RECIPE.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any

from grm_jax.reward.client import RewardClient


def _text(completion: Any) -> str:
  """A completion as text: a string, or the content of a conversational completion's (last) assistant message."""
  if isinstance(completion, str):
    return completion
  if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
    return str(completion[-1].get("content", ""))
  raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def _query(prompt: Any) -> Any:
  """A prompt as the GRM's conversation context: a string, or chat messages ending with the user's turn."""
  if isinstance(prompt, str):
    return prompt
  return [{"role": m["role"], "content": m["content"]} for m in prompt]


def _groups(prompts: Sequence[Any], group: bool) -> list[list[int]]:
  """Positions judged together: those sharing a prompt (group), or one each."""
  if not group:
    return [[i] for i in range(len(prompts))]
  by: dict[str, list[int]] = {}
  for i, p in enumerate(prompts):
    by.setdefault(repr(_query(p)), []).append(i)
  return list(by.values())


async def _rewards(client: RewardClient, prompts: Sequence[Any], completions: Sequence[Any], group: bool,
                   **kw: Any) -> list[float]:
  if len(prompts) != len(completions):
    raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
  groups = _groups(prompts, group)
  mode = "group" if group else "pointwise"
  results = await asyncio.gather(*(client.ascore(_query(prompts[g[0]]), [_text(completions[i]) for i in g],
                                                 mode=mode, **kw) for g in groups))
  out = [0.0] * len(prompts)
  for g, rewards in zip(groups, results, strict=True):
    for i, r in zip(g, rewards, strict=True):
      out[i] = float(r)
  return out


def trl_reward(client: RewardClient | str, *, group: bool = True, async_: bool = False, name: str = "grm",
               **client_kw: Any) -> Callable[..., Any]:
  """A TRL `reward_funcs` entry: `f(prompts, completions, **columns) -> list[float]` (module docstring). `client` is
  a `RewardClient` or the server's base URL (then `client_kw` go to `RewardClient`)."""
  client = RewardClient(client, **client_kw) if isinstance(client, str) else client

  if async_:
    async def reward(prompts, completions, **_: Any) -> list[float]:
      return await _rewards(client, prompts, completions, group)
  else:
    def reward(prompts, completions, **_: Any) -> list[float]:
      return client._run(_rewards(client, prompts, completions, group))

  reward.__name__ = reward.__qualname__ = name  # TRL logs each reward function under its __name__
  reward.client = client
  return reward


_CLIENTS: dict[tuple[str, str], RewardClient] = {}


def _client(url: str | None, recipe: str | None, **kw: Any) -> RewardClient:
  url = url or os.environ.get("GRM_REWARD_URL")
  recipe = recipe or os.environ.get("GRM_RECIPE")
  if not url:
    raise ValueError("no GRM server: pass url= in custom_reward_function.reward_kwargs or set GRM_REWARD_URL")
  key = (url, recipe or "")
  if key not in _CLIENTS:
    _CLIENTS[key] = RewardClient(url, recipe, **kw)
  return _CLIENTS[key]


def _prompt_of(extra_info: Any, prompt_key: str) -> Any:
  if not isinstance(extra_info, dict) or prompt_key not in extra_info:
    raise ValueError(f"verl extra_info has no {prompt_key!r}: put the prompt in each row's extra_info (or set "
                     "prompt_key in reward_kwargs)")
  return _query(extra_info[prompt_key])


def compute_score(data_source: str, solution_str: str, ground_truth: Any = None, extra_info: Any = None, *,
                  url: str | None = None, recipe: str | None = None, prompt_key: str = "question",
                  **kw: Any) -> float:
  """verl's custom reward function: the GRM's pointwise reward of one response (module docstring)."""
  client = _client(url, recipe)
  return float(client.score(_prompt_of(extra_info, prompt_key), [solution_str], mode="pointwise")[0])


def compute_score_batch(data_sources: Sequence[str], solution_strs: Sequence[str], ground_truths: Sequence[Any],
                        extra_infos: Sequence[Any], *, url: str | None = None, recipe: str | None = None,
                        prompt_key: str = "question", group: bool = True, **kw: Any) -> list[float]:
  """verl's batched custom reward function: responses sharing a prompt judged together (module docstring)."""
  client = _client(url, recipe)
  prompts = [_prompt_of(e, prompt_key) for e in extra_infos]
  return client._run(_rewards(client, prompts, list(solution_strs), group))
