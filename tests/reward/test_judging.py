"""grm_jax.reward without a model: the plan of a request, rewards from hand-written judgements (golden numbers), the
recipe's JSON, and that the package imports where jax cannot."""

import json
import subprocess
import sys

import pytest

from grm_jax.grm import prompts
from grm_jax.reward import Recipe, chat_frame, combine, frame_text, meta_messages, plan, request_seed, sample_texts
from grm_jax.reward.judging import check_request, chunks_of


def test_plan_is_a_function_of_the_request_and_groups_equal_orders():
  recipe = Recipe()
  a = plan(recipe, "q", ["x", "y", "z"], k=6, seed=5)
  assert a == plan(recipe, "q", ["x", "y", "z"], k=6, seed=5)
  assert a != plan(recipe, "q", ["x", "y", "z"], k=6, seed=6)
  (chunk,) = a
  assert len(chunk.perms) == 6 and sorted(chunk.perms[0]) == [0, 1, 2]
  assert sum(c.n for c in chunk.completions) == 6
  assert len(chunk.completions) == len(set(chunk.perms))  # one completion per distinct order, n = its multiplicity
  for j, perm in enumerate(chunk.perms):
    shown = [["x", "y", "z"][i] for i in perm]
    assert chunk.completions[chunk.owner[j]].content == prompts.grm_prompt("q", shown).messages[0]["content"]
  # No shuffle: every sample sees the original order, so one completion of n = k.
  (flat,) = plan(recipe, "q", ["x", "y"], k=4, seed=0, shuffle=False)
  assert flat.perms == ((0, 1),) * 4 and [c.n for c in flat.completions] == [4]


def test_chunks_are_balanced_and_pointwise_judges_each_response_alone():
  assert chunks_of(5, "group", 4) == [[0, 1, 2], [3, 4]]
  assert chunks_of(8, "group", 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
  assert chunks_of(3, "pointwise", 4) == [[0], [1], [2]]
  chunks = plan(Recipe(), "q", ["a", "b"], k=2, mode="pointwise", seed=0)
  assert [c.indices for c in chunks] == [(0,), (1,)]
  assert all(c.template == "default" for c in chunks)


def test_rewards_from_known_judgements_golden():
  """Three samples of a pair: orders (0,1), (1,0), (0,1); the second one is shown swapped, so its scores map back
  swapped; the third does not parse. Votes 8+2=10 for response 0 and 3+9=12 for response 1, over 2 parsed samples."""
  recipe = Recipe()
  (chunk,) = plan(recipe, "q", ["a", "b"], k=3, seed=0)
  chunk = chunk.__class__(chunk.indices, chunk.template, ((0, 1), (1, 0), (0, 1)), chunk.completions, chunk.owner,
                          chunk.rank)
  texts = ["Scores: \\boxed{8, 3}", "Analysis: ... Scores: \\boxed{9, 2}", "Scores: 8 and 3"]
  out = combine(recipe, 2, [chunk], [texts], with_judgements=True)
  assert out.votes == [10.0, 12.0] and out.parsed == [2, 2] and out.voted == [2, 2]
  assert out.rewards == [5.0, 6.0]
  assert [s["scores"] for s in out.judgements[0]["samples"]] == [[8, 3], [2, 9], None]
  # With meta scores, the top k_meta = 1 valid sample alone votes (the unparseable one is never kept).
  meta = combine(recipe, 2, [chunk], [texts], meta=[[0.1, 2.0, 9.0]], k_meta=1)
  assert meta.rewards == [2.0, 9.0] and meta.voted == [1, 1]
  # Nothing parses: the recipe's neutral reward, the middle of 1..10 unless set.
  none = combine(recipe, 2, [chunk], [["?", "?", "?"]])
  assert none.rewards == [5.5, 5.5] and none.parsed == [0, 0]
  assert combine(recipe.replace(invalid_reward=-1.0), 2, [chunk], [["?"] * 3]).rewards == [-1.0, -1.0]


def test_sample_texts_follow_the_completions_and_meta_inputs_follow_each_samples_order():
  recipe = Recipe()
  responses = ["alpha", "beta", "gamma"]
  (chunk,) = plan(recipe, "q", responses, k=5, seed=3)
  outputs = [[f"c{d}s{r}" for r in range(c.n)] for d, c in enumerate(chunk.completions)]
  texts = sample_texts(chunk, outputs)
  assert texts == [f"c{chunk.owner[j]}s{chunk.rank[j]}" for j in range(5)]
  msgs = meta_messages(recipe, "q", responses, chunk, texts)
  for j, (user, assistant) in enumerate(msgs):
    shown = [responses[i] for i in chunk.perms[j]]
    assert user["content"] == prompts.meta_prompt("q", responses, "x", chunk.perms[j])[0]["content"]
    assert user["content"].index(f"\n{shown[0]}\n") < user["content"].index(f"\n{shown[2]}\n")
    assert assistant == {"role": "assistant", "content": texts[j]}
  with pytest.raises(ValueError, match="completion 0"):
    sample_texts(chunk, [[]] + outputs[1:])


@pytest.mark.parametrize("responses,k,mode,match", [
  ([], 1, "group", "non-empty"), (["a", 1], 1, "group", "string"), (["a"], 0, "group", "k=0"),
  (["a"], 1, "best", "mode"), (["a"] * 5, 1, "group", "more than the 4")])
def test_bad_requests_are_one_line_errors(responses, k, mode, match):
  with pytest.raises(ValueError, match=match):
    check_request(Recipe(), responses, k, mode, chunked=False)


def test_recipe_json_round_trip_and_errors(tmp_path):
  recipe = Recipe(template="compact", k=6, chat=("<u>", "</u><a>"), provenance={"stage": "grpo"})
  recipe.save(str(tmp_path))
  assert Recipe.load(str(tmp_path)) == recipe
  assert recipe.template_text == prompts.template_text("compact")
  data = json.loads((tmp_path / "grm_recipe.json").read_text())
  (tmp_path / "bad.json").write_text(json.dumps({**data, "k_samples": 3}))
  with pytest.raises(ValueError, match="unknown key 'k_samples'"):
    Recipe.load(str(tmp_path / "bad.json"))
  (tmp_path / "bad.json").write_text(json.dumps({**data, "temperature": -1}))
  with pytest.raises(ValueError, match="bad.json: recipe temperature"):
    Recipe.load(str(tmp_path / "bad.json"))
  (tmp_path / "bad.json").write_text("{")
  with pytest.raises(ValueError, match="line 1: not valid JSON"):
    Recipe.load(str(tmp_path / "bad.json"))
  with pytest.raises(FileNotFoundError, match="grm_jax.export"):
    Recipe.load(str(tmp_path / "nowhere"))


def test_chat_frame_renders_the_templates_tokens(smollm2):
  tok = smollm2.tokenizer
  content = "Score these {braces} and $dollars."
  want = smollm2.encode_chat([{"role": "user", "content": content}])
  assert tok(frame_text(chat_frame(tok), content), add_special_tokens=False)["input_ids"] == want
  both = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
  want = smollm2.encode_chat(both, add_generation_prompt=False)
  assert tok(frame_text(chat_frame(tok, True), "u", "a"), add_special_tokens=False)["input_ids"] == want


def test_request_seed_depends_on_content_only():
  assert request_seed(0, "q", ["a", "b"]) == request_seed(0, "q", ["a", "b"])
  assert request_seed(0, "q", ["a", "b"]) != request_seed(0, "q", ["b", "a"])
  assert request_seed(1, "q", ["a"]) != request_seed(0, "q", ["a"])


def test_reward_imports_and_scores_where_jax_cannot_be_imported():
  """A PyTorch-only RL job: jax is absent (importing it fails), grm_jax.reward still imports and judges."""
  code = """
import sys
sys.modules["jax"] = None  # `import jax` now raises ImportError
import grm_jax.reward as r
(chunk,) = r.plan(r.Recipe(), "q", ["a", "b"], k=2, seed=1)
texts = r.sample_texts(chunk, [["Scores: \\\\boxed{7, 3}"] * c.n for c in chunk.completions])
print(r.combine(r.Recipe(), 2, [chunk], [texts]).parsed)
try:
  import jax
except ImportError:
  print("no jax")
print(sorted(m for m in sys.modules if m.split(".")[0] in ("flax", "optax", "torch", "transformers")))
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.splitlines() == ["[2, 2]", "no jax", "[]"]


def test_judge_stays_the_function_once_the_judges_modules_are_imported():
  """A submodule named like a function the package exports would replace it on the package when imported."""
  import grm_jax.judges.meta_rm  # noqa: F401 - imports the judge's module
  from grm_jax import judges

  assert callable(judges.judge) and judges.judge.__module__ == "grm_jax.judges.model_judge"
