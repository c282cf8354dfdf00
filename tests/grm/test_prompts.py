"""Prompt rendering: golden default template, permutation bookkeeping, hints, 0/1 and meta-RM templates."""

import pathlib

import numpy as np
import pytest

from grm_jax import grm

GOLDEN = pathlib.Path(__file__).parent / "golden" / "default_two_responses.txt"
RESPONSES = ["alpha: the first answer", "bravo: the second answer", "charlie: the third", "delta: the fourth"]


def _shown_order(content: str, responses: list[str]) -> list[int]:
  """Original indices in the order the prompt shows them, checking each block's number and text."""
  order = []
  for p in range(len(responses)):
    start = content.index(f"[The Begin of Response {p + 1}]\n") + len(f"[The Begin of Response {p + 1}]\n")
    end = content.index(f"\n[The End of Response {p + 1}]\n")
    order.append(responses.index(content[start:end]))
  return order


def test_golden_default_two_responses():
  p = grm.grm_prompt("Which is larger, 9.11 or 9.9?", ["9.9 is larger.", "9.11 is larger, because 11 > 9."])
  assert p.messages == [{"role": "user", "content": GOLDEN.read_text(encoding="utf-8")}]
  content = p.messages[0]["content"]
  assert content.startswith(
    "You are a skilled little expert at scoring responses. You should evaluate given responses based on the given "
    "judging criteria.\nGiven the context of the conversation (the last round is the User’s query) and multiple "
  )
  assert (
    "as strict as possible.\n\n#### Evaluation Criteria ####\n1. Instruction Adherence:\n"
    " - Fully Adhered (9-10 points): The response fully complies with all instructions and requirements of the "
    "question.\n" in content
  )
  assert content.endswith(
    "“Partially Relevant.”\n\n"
    "#### Conversation Context ####\nWhich is larger, 9.11 or 9.9?\n"
    "#### Responses to be Scored ####\n"
    "[The Begin of Response 1]\n9.9 is larger.\n[The End of Response 1]\n"
    "[The Begin of Response 2]\n9.11 is larger, because 11 > 9.\n[The End of Response 2]\n"
    "#### Output Format Requirements ####\nOutput with three lines\n"
    "Specific Criteria: <Other potential criteria specific to the query and the context, and the weights of each "
    "criteria>.\nAnalysis: <Compare different responses based on given Criteria>.\n"
    "Scores: <the overall comprehensive score of all responses in order, separate by comma in the boxed, e.g., "
    "\\boxed{x, x} if there exists 2 responeses>."
  )
  assert (p.perm, p.n, p.lo, p.hi, p.template, p.hint) == ((0, 1), 2, 1, 10, "default", None)


def test_every_response_once_in_permuted_order():
  rng = np.random.default_rng(0)
  perms = []
  for _ in range(6):
    p = grm.grm_prompt("Pick one.", RESPONSES, rng=rng)
    content = p.messages[0]["content"]
    for r in RESPONSES:
      assert content.count(r) == 1
    assert "[The Begin of Response 5]" not in content
    assert _shown_order(content, RESPONSES) == list(p.perm)
    perms.append(p.perm)
  assert len(set(perms)) > 1  # one Generator, independent shuffles per sample
  # A seed reproduces the shuffle.
  assert grm.grm_prompt("q", RESPONSES, rng=7).perm == grm.grm_prompt("q", RESPONSES, rng=7).perm
  assert grm.grm_prompt("q", RESPONSES, perm=(3, 1, 0, 2)).perm == (3, 1, 0, 2)


def test_scores_map_back_through_perm():
  p = grm.grm_prompt("q", RESPONSES, perm=(2, 0, 3, 1))
  true_scores = [4, 9, 7, 1]  # per original response
  shown = [true_scores[i] for i in _shown_order(p.messages[0]["content"], RESPONSES)]
  text = "Scores: \\boxed{" + ", ".join(map(str, shown)) + "}"
  assert p.clip and grm.unpermute(grm.parse_scores(text, p.n, p.lo, p.hi, clip=p.clip), p.perm) == true_scores


def test_hint_names_shown_index():
  p = grm.grm_prompt("q", RESPONSES, perm=(2, 0, 3, 1), hint_best=3)
  content = p.messages[0]["content"]
  assert p.hint == 3  # original response 3 is shown third
  assert content.endswith("\\boxed{x, x} if there exists 2 responeses>.\nThe best response is: Response 3")
  assert "[The Begin of Response 3]\ndelta: the fourth\n" in content
  p = grm.grm_prompt("q", RESPONSES, perm=(2, 0, 3, 1), hint_best=2, hint_extra=" (strongly better)")
  assert p.hint == 1
  assert p.messages[0]["content"].endswith("The best response is: Response 1 (strongly better)")
  assert grm.hint_suffix(2) == "The best response is: Response 2"
  with pytest.raises(ValueError):
    grm.grm_prompt("q", RESPONSES, hint_best=4)


def test_hint_with_preference_strength_names_both_shown_positions():
  pair = ["first", "second"]
  p = grm.grm_prompt("q", pair, perm=(1, 0), hint_best=0, hint_strength=3)
  assert p.hint == 2  # original 0 is shown second
  assert p.messages[0]["content"].endswith(
    "responeses>.\nThe best response is: Response 2 (much better than Response 1)"
  )
  p = grm.grm_prompt("q", pair, perm=(1, 0), hint_best=1, hint_strength=1)
  assert p.messages[0]["content"].endswith("\nThe best response is: Response 1 (slightly better than Response 2)")
  assert grm.hint_suffix(2, strength=2.0) == "The best response is: Response 2 (better than Response 1)"
  # Without a strength the hint is the paper's sentence alone.
  p = grm.grm_prompt("q", pair, perm=(1, 0), hint_best=0)
  assert p.messages[0]["content"].endswith("responeses>.\nThe best response is: Response 2")
  for bad in (0, 4, 2.5, True, "3"):
    with pytest.raises(ValueError, match="hint strength must be one of"):
      grm.grm_prompt("q", pair, hint_best=0, hint_strength=bad)
  with pytest.raises(ValueError, match="for pairs"):
    grm.grm_prompt("q", RESPONSES, hint_best=0, hint_strength=2)
  with pytest.raises(ValueError, match="needs hint_best"):
    grm.grm_prompt("q", pair, hint_strength=2)


def test_single_response_template():
  p = grm.grm_prompt("What is 3 * 4?", ["12"], template="single")
  content = p.messages[0]["content"]
  assert (p.lo, p.hi, p.n, p.template) == (0, 1, 1, "single")
  assert "provide an overall comprehensive score upon them. The score is 0 or 1, with 1 indicating" in content
  assert "Each score is an integer between 1 and 10" not in content
  assert "2. Clarity:\n - Very Clear: The response is fluent, well-structured, and logically clear.\n" in content
  assert "(9-10 points)" not in content
  assert content.endswith(
    "#### Conversation Context ####\nWhat is 3 * 4?\n#### Responses to be Scored ####\n"
    "[The Begin of Response]\n12\n[The End of Response]\n#### Output Format Requirements ####\n"
    "Specific Criteria: <Other potential criteria specific to the query and the context, and the weights of each "
    "criteria>.\nAnalysis: <Compare different responses based on given Criteria>.\n"
    "Scores: <the overall comprehensive score of the response, e.g., \\boxed{x}>."
  )
  assert grm.judgement_correct(grm.parse_scores("\\boxed{1}", p.n, p.lo, p.hi, clip=p.clip), [1])
  # Read unclipped (Eq. 11, n = 1): a 7 on a right response is wrong, not a clipped 1.
  assert not p.clip and grm.parse_scores("\\boxed{7}", p.n, p.lo, p.hi, clip=p.clip) == [7]
  assert not grm.judgement_correct(grm.parse_scores("\\boxed{7}", p.n, p.lo, p.hi, clip=p.clip), [1])
  with pytest.raises(ValueError):
    grm.grm_prompt("q", ["a", "b"], template="single")
  # At evaluation a single response uses the default 1-10 template with a numbered block.
  d = grm.grm_prompt("What is 3 * 4?", ["12"])
  assert "[The Begin of Response 1]\n12\n[The End of Response 1]\n" in d.messages[0]["content"]


def test_multi_turn_context():
  conv = [
    {"role": "user", "content": "Name a prime."},
    {"role": "assistant", "content": "7."},
    {"role": "user", "content": "Another one?"},
  ]
  content = grm.grm_prompt(conv, ["11", "9"]).messages[0]["content"]
  assert (
    "#### Conversation Context ####\nUser: Name a prime.\n\nAssistant: 7.\n\nUser: Another one?\n"
    "#### Responses to be Scored ####\n" in content
  )
  assert grm.render_context([{"role": "user", "content": "Just this."}]) == "Just this."
  with pytest.raises(ValueError, match="must end with a user turn"):
    grm.render_context(conv[:2])
  with pytest.raises(ValueError, match="role"):
    grm.render_context([{"role": "tool", "content": "x"}])


def test_meta_prompt_uses_the_grm_order():
  p = grm.grm_prompt("q?", ["first", "second"], perm=(1, 0))
  msgs = grm.meta_prompt("q?", ["first", "second"], "Analysis: ...\nScores: \\boxed{9, 5}", p.perm)
  assert msgs == [
    {
      "role": "user",
      "content": "Please score the responses.\n\n#### Conversation Context ####\nq?\n"
      "#### Responses to be Scored ####\n"
      "[The Begin of Response 1]\nsecond\n[The End of Response 1]\n"
      "[The Begin of Response 2]\nfirst\n[The End of Response 2]\n",
    },
    {"role": "assistant", "content": "Analysis: ...\nScores: \\boxed{9, 5}"},
  ]


def test_bad_inputs():
  with pytest.raises(ValueError):
    grm.grm_prompt("q", [])
  with pytest.raises(ValueError):
    grm.grm_prompt("q", ["a", "b"], perm=(0, 0))
  with pytest.raises(ValueError):
    grm.grm_prompt("q", ["a"], template="judge")


def test_braces_and_dollars_in_text_are_literal():
  content = grm.grm_prompt("Cost in $USD of {x}?", ["$5 {y}", "${z}"], perm=(0, 1)).messages[0]["content"]
  assert "Cost in $USD of {x}?\n" in content
  assert "[The Begin of Response 1]\n$5 {y}\n" in content
  assert "[The Begin of Response 2]\n${z}\n" in content
