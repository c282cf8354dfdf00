"""The GRM as the reward of real RL frameworks, against the running server: OpenRLHF's own remote-reward request
code, TRL's GRPOTrainer (slow tier) with our callable as its only reward, and verl's custom reward function called
the way verl's reward manager calls it."""

import asyncio
import inspect

import httpx
import numpy as np
import pytest

from grm_jax.reward import RewardClient, compute_score, compute_score_batch, trl_reward
from grm_jax.serve.app import Server
from tests.serve.conftest import QUESTIONS, RESPONSES, serving, smoke_recipe


def test_openrlhf_remote_reward_code_gets_rewards_from_get_reward(smoke_grm):
  """OpenRLHF 0.11's SingleTurnAgentExecutor posts {"query", "prompts", "labels"} (query = prompt + response decoded
  with special tokens) to --remote_rm_url and reads "rewards"; ours equal /v1/rewards of (prompt, [response])."""
  agent = pytest.importorskip("openrlhf.utils.agent")
  recipe = smoke_recipe(smoke_grm.tokenizer)
  prompts_ = [QUESTIONS[i % 3] for i in range(4)]
  answers = RESPONSES[:4]
  with serving(Server(smoke_grm, recipe)) as url:
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=f"{url}/get_reward")
    queries = [p + a + "<|im_end|>" for p, a in zip(prompts_, answers, strict=True)]
    (out,) = asyncio.run(executor._fetch_rewards_via_http(queries, prompts_, [""] * 4))
    # Queries that share a prompt in one request are judged together (group mode): 0 and 3 here.
    groups = [[0, 3], [1], [2]]
    direct = {}
    for g in groups:
      body = {"prompt": prompts_[g[0]], "responses": [answers[i] for i in g], "seed": 0}
      for i, r in zip(g, httpx.post(f"{url}/v1/rewards", json=body, timeout=600).json()["rewards"], strict=True):
        direct[i] = r
    # One query per request, as OpenRLHF sends it during rollouts.
    (single,) = asyncio.run(executor._fetch_rewards_via_http(queries[1:2], prompts_[1:2], [""]))
  assert out["rewards"] == [direct[i] for i in range(4)]
  assert out["scores"] == out["rewards"] and "grm_reward" in out["extra_logs"]
  assert single["rewards"] == out["rewards"][1:2]


def test_verl_compute_score_per_response_and_batched(smoke_grm):
  recipe = smoke_recipe(smoke_grm.tokenizer)
  with serving(Server(smoke_grm, recipe)) as url:
    client = RewardClient(f"{url}/v1", recipe=None)
    kw = {"url": f"{url}/v1"}  # verl passes custom_reward_function.reward_kwargs as keywords
    one = compute_score(data_source="grm", solution_str="4", ground_truth=None, extra_info={"question": QUESTIONS[0]},
                        **kw)
    assert one == client.score(QUESTIONS[0], ["4"], mode="pointwise")[0]
    batch = compute_score_batch(["grm"] * 4, ["4", "5", "hi", "hello"], [None] * 4,
                                [{"question": QUESTIONS[0]}] * 2 + [{"question": QUESTIONS[2]}] * 2, **kw)
    assert batch == client.score(QUESTIONS[0], ["4", "5"]) + client.score(QUESTIONS[2], ["hi", "hello"])
    with pytest.raises(ValueError, match="extra_info has no 'question'"):
      compute_score("grm", "4", None, {}, **kw)
    client.close()


def test_trl_callables_group_the_completions_of_each_prompt(smoke_grm):
  """TRL passes G completions per prompt, contiguous, as strings or as chat messages; group mode judges each prompt's
  completions together, and the async form (what TRL detects with inspect.iscoroutinefunction) gives the same."""
  recipe = smoke_recipe(smoke_grm.tokenizer)
  prompts_ = [QUESTIONS[0]] * 2 + [QUESTIONS[1]] * 2
  completions = ["4", "5", "7", "9"]
  with serving(Server(smoke_grm, recipe)) as url:
    sync_f = trl_reward(f"{url}/v1", recipe=recipe)
    async_f = trl_reward(f"{url}/v1", recipe=recipe, async_=True)
    assert inspect.iscoroutinefunction(async_f) and not inspect.iscoroutinefunction(sync_f)
    got = sync_f(prompts=prompts_, completions=completions, completion_ids=[[1]] * 4, trainer_state=None)
    chat = sync_f(prompts=[[{"role": "user", "content": p}] for p in prompts_],
                  completions=[[{"role": "assistant", "content": c}] for c in completions])
    got_async = asyncio.run(async_f(prompts=prompts_, completions=completions))
    want = sync_f.client.score(QUESTIONS[0], completions[:2]) + sync_f.client.score(QUESTIONS[1], completions[2:])
    pointwise = trl_reward(sync_f.client, group=False)(prompts=prompts_, completions=completions)
    alone = [sync_f.client.score(p, [c], mode="pointwise")[0] for p, c in zip(prompts_, completions, strict=True)]
  assert got == want == got_async and len(chat) == 4
  assert pointwise == alone


@pytest.mark.slow
def test_trl_grpo_trainer_trains_smollm2_with_the_grm_as_its_only_reward(smoke_grm, smollm2, tmp_path):
  trl = pytest.importorskip("trl")
  datasets = pytest.importorskip("datasets")
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from grm_jax import models

  models.save_pretrained(smollm2, str(tmp_path / "policy"))
  policy = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy"), dtype=torch.float32)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "policy"))
  before = {k: v.clone() for k, v in policy.state_dict().items()}
  data = datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in QUESTIONS + QUESTIONS[:1]]})
  recipe = smoke_recipe(smoke_grm.tokenizer, k=2)
  seen = []
  with serving(Server(smoke_grm, recipe)) as url:
    reward = trl_reward(f"{url}/v1", recipe=recipe)

    def logged(prompts, completions, **kw):
      out = reward(prompts, completions, **kw)
      seen.append(out)
      return out

    logged.__name__ = "grm"
    args = trl.GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                          num_generations=4, max_completion_length=16, max_steps=2, logging_steps=1,
                          report_to="none", save_strategy="no", learning_rate=1e-4, beta=0.0)
    trainer = trl.GRPOTrainer(model=policy, processing_class=tokenizer, reward_funcs=[logged], args=args,
                              train_dataset=data)
    result = trainer.train()
  assert result.global_step == 2
  assert len(seen) >= 2 and all(len(r) == 4 for r in seen)
  assert all(np.isfinite(r).all() for r in seen)
  changed = [k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])]
  assert changed or all(len(set(r)) == 1 for r in seen)  # no update only if every group had zero advantage
  assert any("grm" in str(k) for log in trainer.state.log_history for k in log)
