"""The trained GRM as a reward, with no jax: a recipe, the judging rules and an HTTP client for RL frameworks.

  from grm_jax.reward import RewardClient, trl_reward
  client = RewardClient("http://localhost:8000/v1", recipe="/path/to/exported-grm")
  client.score("What is 2+2?", ["4", "5"])           # mean voted score per response, the template's 1-10 scale
  GRPOTrainer(..., reward_funcs=[trl_reward(client)])

`recipe` (what an export's grm_recipe.json holds), `judging` (a request's prompts and its rewards from sampled
texts: the paper's shuffle, parse, un-shuffle and Voting@k / MetaRM@k through `grm_jax.grm`'s rules), `client`
(any OpenAI-compatible server: `python -m grm_jax.serve`, vLLM, SGLang), `adapters` (TRL, verl). Importing this
package needs numpy and httpx only.
"""

from grm_jax.reward.adapters import compute_score, compute_score_batch, trl_reward
from grm_jax.reward.client import RewardClient, RewardError, request_seed
from grm_jax.reward.judging import MODES, Chunk, Completion, RewardResult, combine, meta_messages, plan, sample_texts
from grm_jax.reward.recipe import RECIPE_FILE, MetaRecipe, Recipe, chat_frame, frame_text, recipe_from_config

__all__ = [
  "MODES",
  "RECIPE_FILE",
  "Chunk",
  "Completion",
  "MetaRecipe",
  "Recipe",
  "RewardClient",
  "RewardError",
  "RewardResult",
  "chat_frame",
  "combine",
  "compute_score",
  "compute_score_batch",
  "frame_text",
  "meta_messages",
  "plan",
  "recipe_from_config",
  "request_seed",
  "sample_texts",
  "trl_reward",
]
