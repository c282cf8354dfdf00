"""The LLM-as-a-Judge and no-principle templates: their text, parsing a choice, majority and TokenProb voting, the
synthetic critic writing each format, and the index token located on a real tokenizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import grm, models
from grm_jax.data.synthetic import synthetic
from grm_jax.grm import prompts, rules, voting
from grm_jax.grm.parse import choice_span, parse_choice, parse_judgement, split_judgement
from grm_jax.judges import choice, token_prob
from grm_jax.judges.model_judge import Judgements, judge_texts_to_arrays
from grm_jax.judges.settings import Sampling
from grm_jax.judges.synthetic_critic import critic_judge
from grm_jax.judges.trajectories import correctness


def _text(template, n=2):
  return grm.grm_prompt("Q?", [f"r{i}" for i in range(n)], template=template).messages[0]["content"]


def test_template_names_are_one_list():
  assert set(prompts.TEMPLATES) == set(prompts.SCORE_RANGES) == set(prompts.CLIP_RANGES)
  assert "single" not in prompts.GRM_TEMPLATES and set(prompts.JUDGE_TEMPLATES) <= set(prompts.GRM_TEMPLATES)
  assert set(prompts.NO_PRINCIPLE_TEMPLATES) <= set(prompts.GRM_TEMPLATES)


def test_judge_template_asks_for_the_index_with_the_rubric_without_point_bands():
  text = _text("judge")
  assert "select the best response among all candidates" in text
  assert "Scores: <the index of the best response based on the judgement, in the format of \\boxed{x}>." in text
  assert "points)" not in text and "separate by comma" not in text
  assert " - Fully Adhered: The response fully complies" in text  # the default rubric's tiers, bands removed
  assert prompts.JUDGE_RUBRIC == prompts.DEFAULT_RUBRIC.replace(" (9-10 points)", "").replace(
    " (6-8 points)", "").replace(" (3-5 points)", "").replace(" (1-2 points)", "")
  assert "[The Begin of Response 2]\nr1\n[The End of Response 2]" in text  # numbered: the index points somewhere
  assert "Specific Criteria:" in text  # the paper's judge still writes principles
  compact = _text("compact_judge")
  assert "\\boxed{x}" in compact and "index of the best response" in compact and len(compact) < 500
  with pytest.raises(ValueError, match="best of several"):
    grm.grm_prompt("Q?", ["only"], template="judge")


@pytest.mark.parametrize("template", prompts.NO_PRINCIPLE_TEMPLATES)
def test_no_principle_templates_drop_the_principle_part(template):
  text = _text(template)
  assert "Specific Criteria" not in text and "specific criteria" not in text and "weights" not in text
  assert "two lines" in text and "Analysis:" in text and "\\boxed{x, x}" in text
  if template == "no_principles":  # the default template otherwise: same rubric (with bands), range and layout
    default = _text("default")
    assert "Fully Adhered (9-10 points)" in text and "integer between 1 and 10" in text
    assert default.split("#### Evaluation Criteria ####")[1].split("#### Output")[0] in text
  assert prompts.SCORE_RANGES[template] == (1, 10) and prompts.CLIP_RANGES[template] == (1, 10)


def test_parse_judge_outputs():
  assert parse_choice("Analysis: ...\nScores: \\boxed{2}", 3) == 2
  assert parse_judgement("Scores: \\boxed{2}", 3, "judge") == [0, 1, 0]
  assert parse_judgement("\\boxed{1, 2} then \\boxed{3.}", 3, "compact_judge") == [0, 0, 1]  # the last block wins
  for bad in ("\\boxed{0}", "\\boxed{4}", "\\boxed{1, 2}", "\\boxed{x}", "\\boxed{Response 2}", "\\boxed{-1}",
              "\\boxed{2.5}", "no block", "\\boxed{2} and \\boxed{}"):
    assert parse_choice(bad, 3) is None and parse_judgement(bad, 3, "judge") is None, bad
  # The digits' span, for TokenProb.
  text = "Scores: \\boxed{ 12 }"
  assert text[slice(*choice_span(text, 12))] == "12" and choice_span(text, 11) is None
  # Other templates read scores as before.
  assert parse_judgement("\\boxed{11, 3}", 2, "no_principles") == [10, 3]
  assert parse_judgement("\\boxed{2}", 1, "single") == [2]


def test_judge_choices_are_one_hot_in_original_order_and_eq10_reads_them():
  # Sample 0 shows (1, 0) and picks shown 2 = original 0; sample 1 shows (0, 1) and picks shown 2 = original 1.
  texts = [["Scores: \\boxed{2}", "Scores: \\boxed{2}", "Scores: \\boxed{3}"]]
  perms = [[(1, 0), (0, 1), (0, 1)]]
  scores, valid, mask, _ = judge_texts_to_arrays(texts, perms, templates=["judge"])
  assert scores.tolist() == [[[1, 0], [0, 1], [0, 0]]] and valid.tolist() == [[True, True, False]]
  right = rules.is_correct(scores, valid, np.array([[[1.0, 0.0]]]), mask[:, None])
  assert right.tolist() == [[True, False, False]]  # the chosen one is the unique max iff it is the true best
  with pytest.raises(ValueError, match="not both"):
    judge_texts_to_arrays(texts, perms, [(1, 10)], templates=["judge"])


def test_majority_vote_counts_and_random_tie_break():
  # 5 samples over 3 responses (original order): picks 0, 2, 2, invalid, 0 -> counts (2, 0, 2): a tie.
  choices = np.zeros((1, 5, 3), np.int32)
  for s, c in enumerate((0, 2, 2, 1, 0)):
    choices[0, s, c] = 1
  valid = np.array([[True, True, True, False, True]])
  votes = np.asarray(voting.vote(choices, valid))
  assert votes.tolist() == [[2, 0, 2]]  # Eq. 13: majority counts; the invalid sample's pick is not counted
  mask = np.ones((1, 3), bool)
  picks = {int(choice.choose_best(votes, mask, jax.random.PRNGKey(i))[0]) for i in range(40)}
  assert picks == {0, 2}  # both tied responses win for some key, the zero-vote one never


def test_token_prob_votes_on_hand_computed_logits():
  # Two samples of one item, each choosing one of 3 responses; the index token's logits are written by hand.
  logits = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -0.5]])  # vocabulary of 4: tokens "1", "2", "3", "x"
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))  # log_softmax by hand
  chosen_tokens = [0, 2]  # sample 0 wrote "1" (response 0), sample 1 wrote "3" (response 2)
  probs = np.array([[np.exp(logp[s, t]) for s, t in enumerate(chosen_tokens)]])
  choices = np.zeros((1, 2, 3))
  choices[0, 0, 0] = choices[0, 1, 2] = 1
  got = np.asarray(voting.token_prob_votes(choices, probs, np.array([[True, True]])))
  np.testing.assert_allclose(got, [[probs[0, 0], 0.0, probs[0, 1]]], rtol=1e-6)
  assert probs[0, 1] > probs[0, 0]  # 0.87 > 0.73: the more confident vote wins where a majority ties 1:1
  assert int(np.argmax(got)) == 2
  got = np.asarray(voting.token_prob_votes(choices, probs, np.array([[True, False]])))  # invalid: no vote
  np.testing.assert_allclose(got, [[probs[0, 0], 0.0, 0.0]], rtol=1e-6)
  jitted = jax.jit(voting.token_prob_votes)(jnp.asarray(choices), jnp.asarray(probs), jnp.ones((1, 2), bool))
  np.testing.assert_allclose(np.asarray(jitted), [[probs[0, 0], 0.0, probs[0, 1]]], rtol=1e-6)


@pytest.mark.parametrize("template", [t for t in prompts.GRM_TEMPLATES])
def test_synthetic_critic_writes_each_templates_format(template):
  items = synthetic("train", size=24, n=(1, 2, 3))
  j = critic_judge(items, Sampling(k=2, seed=3, template=template), noise=0.0)
  assert j.valid.all() and correctness(j, items).all()  # noise-free: always right, in any format
  for ex, row in zip(items, j.texts, strict=True):
    for text in row:
      parts = split_judgement(text)
      assert parts.analysis and parts.scores
      assert (parts.criteria is None) == (template in prompts.NO_PRINCIPLE_TEMPLATES and ex.n > 1)
      if template in prompts.JUDGE_TEMPLATES and ex.n > 1:
        assert parse_choice(text, ex.n) is not None and ", " not in parts.scores
  noisy = critic_judge(items, Sampling(k=4, seed=1, template=template), noise=0.5)
  assert noisy.valid.all() and not correctness(noisy, items).all()  # mistakes still parse, and are wrong


@pytest.fixture(scope="module")
def tiny():
  """A random tiny Llama with the embedded model's real tokenizer."""
  return models.load("tiny:llama")


def test_index_tokens_located_on_a_real_tokenizer(tiny):
  tok = tiny.tokenizer
  for text, n, digits in (("Specific Criteria: c.\nAnalysis: Response 1 is wrong.\nScores: \\boxed{2}", 2, "2"),
                          ("Scores: \\boxed{ 11 }.", 12, "11"), ("é ü Scores: [[3]]", 3, "3")):
    ids = tok.encode(text, add_special_tokens=False)
    first, end = token_prob.index_token_span(tok, ids, n)
    assert tok.decode(ids[first:end]).strip() == digits, (text, ids, first, end)
  assert token_prob.index_token_span(tok, tok.encode("\\boxed{5}", add_special_tokens=False), 3) is None


def test_choice_probs_match_a_hand_log_softmax_of_the_model_logits(tiny):
  """The probability of the index token(s) at temperature 1, from one forward of prompt + generation."""
  tok = tiny.tokenizer
  prompt = tiny.encode_chat(grm.grm_prompt("Q?", ["a", "b"], template="compact_judge").messages)
  texts = [["Analysis: a.\nScores: \\boxed{2}", "Scores: \\boxed{1}", "no choice"]]
  gens = [[tok.encode(t, add_special_tokens=False) for t in texts[0]]]
  scores, valid, mask, perms = judge_texts_to_arrays(texts, [[(0, 1)] * 3], templates=["compact_judge"])
  j = Judgements(scores=scores, valid=valid, response_mask=mask, perms=perms, texts=texts, tokens=gens,
                 logprobs=[[[] for _ in range(3)]], prompt_ids=[[list(prompt)] * 3],
                 prompt_tokens=np.full((1, 3), len(prompt), np.int32), generated_tokens=np.ones((1, 3), np.int32),
                 stopped=np.ones((1, 3), bool), templates=["compact_judge"])
  probs, located = token_prob.choice_probs(tiny, j, batch_size=2)
  assert located.tolist() == [[True, True, False]] and probs[0, 2] == 0.0
  for s in range(2):
    seq = list(prompt) + gens[0][s]
    logits = np.asarray(models.logits(tiny, np.array([seq])), np.float64)[0]
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(
      -1, keepdims=True)
    first, end = token_prob.index_token_span(tok, gens[0][s], 2)
    want = np.exp(sum(logp[len(prompt) + t - 1, seq[len(prompt) + t]] for t in range(first, end)))
    np.testing.assert_allclose(probs[0, s], want, rtol=1e-4)
  votes = np.asarray(voting.token_prob_votes(scores, probs, valid))
  np.testing.assert_allclose(votes, [[probs[0, 1], probs[0, 0]]], rtol=1e-6)
