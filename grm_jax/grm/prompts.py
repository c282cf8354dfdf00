"""Prompt builders for the GRM, its LLM-as-a-Judge and no-principle variants, the single-response 0/1 template and
the meta RM (paper App. G).

The builders return chat *messages* plus the metadata needed to undo the response shuffle; turning
messages into token ids is the model's job (`Model.encode_chat`), so this module stays plain text.

Template text is the paper's (arXiv 2504.02495v3, App. G, pp. 41-43), including its typos ("responeses") and
curly quotes. The PDF marks newlines with literal `\\n`; where it only shows a paragraph or section break we
insert one newline, plus a blank line before a `#### ... ####` header that does not already follow a `\\n` mark
(our reading of the layout of the paper's App. G templates). Sub-items keep the single leading space the PDF prints
(`\\n - Fully`). The templates are `string.Template`s with `$context` / `$responses` so the paper's literal braces
(`\\boxed{x, x}`) stay as printed.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

# --------------------------------------------------------------------------- template text

_PREAMBLE_HEAD = (
  "You are a skilled little expert at scoring responses. You should evaluate given responses based on the given "
  "judging criteria.\n"
  "Given the context of the conversation (the last round is the User’s query) and multiple responses from the "
  "Assistant, you need to refer to the [General Evaluation Criteria] to score the responses. Based on the general "
  "evaluation criteria, state potential other specific criteria to the query, the weights of different criteria, "
  "and then provide an overall comprehensive score upon them."
)
_PREAMBLE_TAIL = "Before scoring, please analyze step by step. Your scoring needs to be as strict as possible."

DEFAULT_RUBRIC = (
  "1. Instruction Adherence:\n"
  " - Fully Adhered (9-10 points): The response fully complies with all instructions and requirements of the "
  "question.\n"
  " - Partially Adhered (6-8 points): The response meets most of the instructions but has some omissions or "
  "misunderstandings.\n"
  " - Basically Adhered (3-5 points): The response meets some instructions, but the main requirements are not "
  "fulfilled.\n"
  " - Not Adhered (1-2 points): The response does not meet any instructions.\n"
  " Example: If the question requires three examples and the response provides only one, it falls under "
  "“Partially Adhered.”\n"
  "2. Usefulness:\n"
  " - Highly Useful (9-10 points): The response provides comprehensive and accurate information, fully addressing "
  "the issue.\n"
  " - Useful but Incomplete (6-8 points): The response provides some useful information, but lacks details or "
  "accuracy.\n"
  " - Limited Usefulness (3-5 points): The response offers little useful information, with most content being "
  "irrelevant or incorrect.\n"
  " - Useless or Incorrect (1-2 points): The response is completely irrelevant or incorrect.\n"
  " Example: If there are factual errors in the response but the overall direction is correct, it falls under "
  "“Useful but Incomplete.”\n"
  "3. Level of Detail:\n"
  " - Very Detailed (9-10 points): The response includes ample details covering all aspects of the issue.\n"
  " - Detailed but Slightly Lacking (6-8 points): The response is fairly detailed but misses some important "
  "details.\n"
  " - Basically Detailed (3-5 points): The response provides some details but is not thorough enough overall.\n"
  " - Not Detailed (1-2 points): The response is very brief and lacks necessary details.\n"
  " Example: If the response provides only a simple conclusion without an explanation, it falls under "
  "“Not Detailed.”\n"
  "4. Relevance:\n"
  " - Highly Relevant (9-10 points): The response is highly relevant to the question, with information closely "
  "aligned with the topic.\n"
  " - Generally Relevant (6-8 points): The response is generally relevant but includes some unnecessary "
  "information.\n"
  " - Partially Relevant (3-5 points): The response has a lot of content that deviates from the topic.\n"
  " - Not Relevant (1-2 points): The response is completely irrelevant.\n"
  " Example: If the response strays from the topic but still provides some relevant information, it falls under "
  "“Partially Relevant.”"
)

SINGLE_RUBRIC = (
  "1. Instruction Adherence:\n"
  " - Fully Adhered: The response fully complies with all instructions and requirements of the question.\n"
  " - Partially Adhered: The response meets most of the instructions but has some omissions or "
  "misunderstandings.\n"
  " - Basically Adhered: The response meets some instructions, but the main requirements are not fulfilled.\n"
  " - Not Adhered: The response does not meet any instructions.\n"
  " Example: If the question requires three examples and the response provides only one, it falls under "
  "“Partially Adhered.”\n"
  "2. Clarity:\n"
  " - Very Clear: The response is fluent, well-structured, and logically clear.\n"
  " - Clear but Minor Issues: The response is mostly clear but has some minor language or structural issues.\n"
  " - Basically Clear: The response has noticeable language or logic issues but is still understandable.\n"
  " - Not Clear: The response is disjointed, illogical, and hard to understand.\n"
  " Example: If the response has complex sentence structures and lacks punctuation, it falls under "
  "“Basically Clear” or “Not Clear.”\n"
  "3. Accuracy:\n"
  " - Completely Accurate: All information and data are completely accurate.\n"
  " - Mostly Accurate: Most information is accurate, with minor errors.\n"
  " - Some Errors: There are some noticeable errors affecting comprehension.\n"
  " - Mostly Incorrect: There are numerous errors seriously affecting the credibility of the information.\n"
  " Example: If a specific data point is incorrectly cited but doesn’t affect the overall conclusion, it falls "
  "under “Mostly Accurate.”"
)

# The part every GRM template shares: the conversation, then the numbered responses.
_CONTEXT_AND_RESPONSES = "#### Conversation Context ####\n$context\n#### Responses to be Scored ####\n$responses"

# The default template's output section (n responses, one `\boxed{}` with n scores), typo included.
_OUTPUT_FORMAT = (
  "#### Output Format Requirements ####\n"
  "Output with three lines\n"
  "Specific Criteria: <Other potential criteria specific to the query and the context, and the weights of each "
  "criteria>.\n"
  "Analysis: <Compare different responses based on given Criteria>.\n"
  "Scores: <the overall comprehensive score of all responses in order, separate by comma in the boxed, e.g., "
  "\\boxed{x, x} if there exists 2 responeses>."
)

# "DeepSeek-GRM (Default)": n >= 1 responses, integer scores 1..10, one `\boxed{}` with n scores.
DEFAULT_TEMPLATE = string.Template(
  _PREAMBLE_HEAD + "\n"
  "Each score is an integer between 1 and 10, with a higher score indicating that the response meets the relevant "
  "criteria more closely. For example, a score of 1 means the response does not meet the criteria at all, a score "
  "of 6 means the response meets only some parts, and a score of 10 means the response perfectly meets the "
  "evaluation criteria.\n" + _PREAMBLE_TAIL + "\n"
  "\n"
  "#### Evaluation Criteria ####\n" + DEFAULT_RUBRIC + "\n"
  "\n" + _CONTEXT_AND_RESPONSES + _OUTPUT_FORMAT
)

# "DeepSeek-GRM (Training on Rating Single Response)": n = 1, verifiable data, score 0/1. Training only; at
# evaluation single responses use DEFAULT_TEMPLATE (paper App. D.1). The paper's page shows no
# "Output with three lines" line in this template, so none is rendered.
SINGLE_TEMPLATE = string.Template(
  _PREAMBLE_HEAD + " The score is 0 or 1, with 1 indicating that the response is correct.\n" + _PREAMBLE_TAIL + "\n"
  "\n"
  "#### Evaluation Criteria ####\n" + SINGLE_RUBRIC + "\n"
  "\n" + _CONTEXT_AND_RESPONSES + "#### Output Format Requirements ####\n"
  "Specific Criteria: <Other potential criteria specific to the query and the context, and the weights of each "
  "criteria>.\n"
  "Analysis: <Compare different responses based on given Criteria>.\n"
  "Scores: <the overall comprehensive score of the response, e.g., \\boxed{x}>."
)

# Not from the paper: a ~60-token instruction with the default template's task, score range and three-line output
# format (`Scores: \boxed{x, x}`), for CPU runs where the default template's ~700 tokens of rubric and format text
# dominate every prompt (prefill, SFT and GRPO cost grow with prompt length). Opt in with `template="compact"`;
# results with it are not the paper's setup.
COMPACT_TEMPLATE = string.Template(
  "Score each response to the User's query with an integer from 1 (wrong or useless) to 10 (fully correct and "
  "helpful), as strictly as possible. Write three lines: Specific Criteria: <criteria for this query>, Analysis: "
  "<compare the responses>, Scores: \\boxed{x, x} (one score per response, in order).\n"
  "\n" + _CONTEXT_AND_RESPONSES
)


def _replaced(text: str, old: str, new: str) -> str:
  """`text` with its one `old` replaced by `new`; a variant built from a template fails here, at import, if the
  template's wording moves, rather than silently rendering the unchanged text."""
  if text.count(old) != 1:
    raise ValueError(f"expected one {old[:40]!r}... in the template text, found {text.count(old)}")
  return text.replace(old, new)


# "LLM-as-a-Judge" (paper App. G; the baseline of Tables 2/3/6): the default preamble, except that it ends by
# selecting "the best response among all candidates" and asks for judging rather than scoring, the default rubric
# without its point bands, and a `Scores:` line holding the 1-based index of the best response in `\boxed{x}`. The
# preamble, rubric and output lines are the paper's; the response blocks are ours: App. G prints the un-numbered
# single-response block for this template, which gives the index it asks for nothing to point at, so the judge sees
# the numbered blocks of the default template ("[The Begin of Response i]"), and the same newlines as the default.
_JUDGE_PREAMBLE = _replaced(
  _PREAMBLE_HEAD,
  "and then provide an overall comprehensive score upon them.",
  "and then select the best response among all candidates.",
)
JUDGE_RUBRIC, _bands = re.subn(r" \(\d+-\d+ points\)", "", DEFAULT_RUBRIC)
if _bands != 16:  # 4 criteria x 4 tiers
  raise ValueError(f"expected 16 point bands in the default rubric, removed {_bands}")
"""The default rubric without its point bands ("Fully Adhered (9-10 points): ..." -> "Fully Adhered: ...")."""
JUDGE_TEMPLATE = string.Template(
  _JUDGE_PREAMBLE + "\n"
  "Before judging, please analyze step by step. Your judgement needs to be as strict as possible.\n"
  "\n"
  "#### Evaluation Criteria ####\n" + JUDGE_RUBRIC + "\n"
  "\n" + _CONTEXT_AND_RESPONSES + _replaced(
    _OUTPUT_FORMAT,
    "<the overall comprehensive score of all responses in order, separate by comma in the boxed, e.g., "
    "\\boxed{x, x} if there exists 2 responeses>",
    "<the index of the best response based on the judgement, in the format of \\boxed{x}>",
  )
)

# "w/o Principle Generation" (paper Tables 4/7, the ablation): the default template without the principle part. The
# paper does not print this template; the wording below is ours: the default text with the preamble's request to
# "state potential other specific criteria to the query, the weights of different criteria" removed and a two-line
# output (no "Specific Criteria:" line). The rubric stays: it is the general criteria the judge scores by, not a
# generated principle.
_NO_PRINCIPLES_PREAMBLE = _replaced(
  _PREAMBLE_HEAD,
  " Based on the general evaluation criteria, state potential other specific criteria to the query, the weights of "
  "different criteria, and then provide an overall comprehensive score upon them.",
  " Based on the general evaluation criteria, provide an overall comprehensive score for each response.",
)
NO_PRINCIPLES_TEMPLATE = string.Template(
  _replaced(
    _replaced(DEFAULT_TEMPLATE.template, _PREAMBLE_HEAD, _NO_PRINCIPLES_PREAMBLE),
    "Output with three lines\n"
    "Specific Criteria: <Other potential criteria specific to the query and the context, and the weights of each "
    "criteria>.\n",
    "Output with two lines\n",
  )
)

# Not from the paper: compact counterparts of the two variants above (same length class as COMPACT_TEMPLATE), so CPU
# runs compare the variants with the compact SPCT default like with like.
COMPACT_JUDGE_TEMPLATE = string.Template(
  "Select the best response to the User's query among all candidates, as strictly as possible. Write three lines: "
  "Specific Criteria: <criteria for this query>, Analysis: <compare the responses>, Scores: \\boxed{x} (x: the "
  "index of the best response).\n"
  "\n" + _CONTEXT_AND_RESPONSES
)
COMPACT_NO_PRINCIPLES_TEMPLATE = string.Template(
  "Score each response to the User's query with an integer from 1 (wrong or useless) to 10 (fully correct and "
  "helpful), as strictly as possible. Write two lines: Analysis: <compare the responses>, Scores: \\boxed{x, x} (one "
  "score per response, in order).\n"
  "\n" + _CONTEXT_AND_RESPONSES
)

# Meta RM (user turn); the assistant turn is the GRM's generated principles & critique.
META_TEMPLATE = string.Template("Please score the responses.\n\n" + _CONTEXT_AND_RESPONSES)

RESPONSE_BLOCK = string.Template("[The Begin of Response $i]\n$response\n[The End of Response $i]\n")
SINGLE_RESPONSE_BLOCK = string.Template("[The Begin of Response]\n$response\n[The End of Response]\n")
HINT_TEMPLATE = string.Template("The best response is: Response $j")
# Ours: the paper (App. C.1) says that on HelpSteer2 the hint "also includes the labelled preference strength" but
# does not print the wording. We append the data set's own annotation scale (HelpSteer2-Preference: "Response X is
# slightly better / better / much better than Response Y"), naming the other response by its shown position.
HINT_STRENGTH_TEMPLATE = string.Template(" ($words than Response $other)")
PREFERENCE_STRENGTHS = {1: "slightly better", 2: "better", 3: "much better"}

# Role names used when a multi-turn context is flattened into the template (they are the template's own words:
# "the last round is the User’s query", "responses from the Assistant").
ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}

TEMPLATES = ("default", "single", "compact", "judge", "compact_judge", "no_principles", "compact_no_principles")
"""Every GRM template name: the one list `config.grm.template`, `judge` and `grm_prompt` check against."""
GRM_TEMPLATES = tuple(t for t in TEMPLATES if t != "single")
"""Templates for items with n >= 2 (`config.grm.template`); "single" is the n = 1 training template only."""
JUDGE_TEMPLATES = ("judge", "compact_judge")
"""Templates whose output is the index of the best response (`\\boxed{x}`), read by `parse.parse_choice` into one-hot
scores in shown order (1 for the chosen response, 0 for the others): Eq. 10, `unpermute` and voting (whose sum is then
the majority-vote count of paper Eq. 13) read them unchanged."""
NO_PRINCIPLE_TEMPLATES = ("no_principles", "compact_no_principles")
"""Templates whose output has no "Specific Criteria:" line (the paper's "w/o Principle Generation" ablation)."""
SCORE_RANGES = {"default": (1, 10), "single": (0, 1), "compact": (1, 10), "judge": (0, 1), "compact_judge": (0, 1),
                "no_principles": (1, 10), "compact_no_principles": (1, 10)}
"""The scores each template asks for (what the prompt says); a judge template's are its one-hot choice."""
CLIP_RANGES: dict[str, tuple[int, int] | None] = {
  "default": (1, 10), "single": None, "compact": (1, 10), "judge": None, "compact_judge": None,
  "no_principles": (1, 10), "compact_no_principles": (1, 10)}
"""What `parse_scores` clips each template's scores to; None: kept as written. The 1-10 templates clip as the
model-card example does. The 0/1 template does not: for n = 1 Eq. 10/11 ask S_1 == r_1 of the score the model
wrote, so an out-of-range score is a wrong judgement, never a clipped right one. A judge template's one-hot choice
has nothing to clip (an index outside 1..n is unparseable, `parse.parse_choice`)."""
_BODIES = {"default": DEFAULT_TEMPLATE, "single": SINGLE_TEMPLATE, "compact": COMPACT_TEMPLATE,
           "judge": JUDGE_TEMPLATE, "compact_judge": COMPACT_JUDGE_TEMPLATE, "no_principles": NO_PRINCIPLES_TEMPLATE,
           "compact_no_principles": COMPACT_NO_PRINCIPLES_TEMPLATE}
assert set(SCORE_RANGES) == set(CLIP_RANGES) == set(_BODIES) == set(TEMPLATES)


Query = str | Sequence[Mapping[str, str]]


# --------------------------------------------------------------------------- builders


@dataclasses.dataclass(frozen=True)
class GrmPrompt:
  """A rendered GRM prompt and what is needed to read its output.

  `perm[p]` is the original index of the response shown as "Response p+1", so scores parsed in shown order
  map back with `parse.unpermute(shown, perm)`. `lo`/`hi` is the template's score range; read the output with
  `parse.parse_judgement(text, n, template)` (for the score templates that is `parse_scores(text, n, lo, hi,
  clip=clip)`, the 0/1 template not clipped, `CLIP_RANGES`; a judge template's choice becomes one-hot scores in
  0..1). `hint` is the 1-based *shown* index named by the hint suffix, or None.
  """

  messages: list[dict[str, str]]
  perm: tuple[int, ...]
  n: int
  lo: int
  hi: int
  template: str
  hint: int | None = None

  @property
  def clip(self) -> bool:
    return CLIP_RANGES[self.template] is not None


def render_context(query: Query) -> str:
  """The `{conversation context & query}` slot.

  A string is used as is. A list of chat messages (`{"role", "content"}`) must end with a user turn, since the
  template says the last round is the User's query; a single user turn renders as its bare content and longer
  conversations as role-labelled turns ("User: ...", "Assistant: ...") separated by blank lines. The paper does
  not print a multi-turn example, so the labelling is our choice (the paper leaves it unstated).
  """
  if isinstance(query, str):
    return query
  turns = list(query)
  if not turns:
    raise ValueError("conversation context is empty")
  for t, turn in enumerate(turns):
    role = turn.get("role")
    if role not in ROLE_NAMES:
      raise ValueError(f"conversation turn {t}: role {role!r} is not one of {sorted(ROLE_NAMES)}")
    if not isinstance(turn.get("content"), str):
      raise ValueError(f"conversation turn {t}: 'content' must be a string")
  if turns[-1]["role"] != "user":
    raise ValueError(f"conversation context must end with a user turn, got {turns[-1]['role']!r}")
  if len(turns) == 1:
    return turns[0]["content"]
  return "\n\n".join(f"{ROLE_NAMES[t['role']]}: {t['content']}" for t in turns)


def render_responses(responses: Sequence[str], numbered: bool = True) -> str:
  """Response blocks in the given (already shown) order; `numbered=False` is the single-response 0/1 form."""
  if numbered:
    return "".join(RESPONSE_BLOCK.substitute(i=i + 1, response=r) for i, r in enumerate(responses))
  if len(responses) != 1:
    raise ValueError(f"the un-numbered response block holds exactly one response, got {len(responses)}")
  return SINGLE_RESPONSE_BLOCK.substitute(response=responses[0])


def _strength_words(strength: object) -> str:
  number = isinstance(strength, int | float) and not isinstance(strength, bool)
  if not number or strength not in PREFERENCE_STRENGTHS:
    raise ValueError(f"hint strength must be one of {sorted(PREFERENCE_STRENGTHS)}, got {strength!r}")
  return PREFERENCE_STRENGTHS[int(strength)]


def hint_suffix(shown_index: int, extra: str = "", strength: int | None = None) -> str:
  """The hint line for the 1-based *shown* index j, then the labelled preference strength of a pair, then `extra`.

  `strength` (1 slightly, 2 better, 3 much better, HelpSteer2-Preference's scale) only exists for pairs, so the
  other response is the other shown position: "The best response is: Response 2 (much better than Response 1)".
  """
  if shown_index < 1:
    raise ValueError(f"hint index is 1-based, got {shown_index}")
  text = HINT_TEMPLATE.substitute(j=shown_index)
  if strength is not None:
    if shown_index not in (1, 2):
      raise ValueError(f"a preference strength hint is for pairs; the best response is shown at {shown_index}")
    text += HINT_STRENGTH_TEMPLATE.substitute(words=_strength_words(strength), other=3 - shown_index)
  return text + extra


def sample_permutation(n: int, rng: np.random.Generator | int | None) -> tuple[int, ...]:
  """Shown order for one sample: a fresh permutation from `rng` (Generator or seed), identity when None."""
  if n < 1:
    raise ValueError(f"need at least one response, got {n}")
  if rng is None:
    return tuple(range(n))
  gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
  return tuple(int(i) for i in gen.permutation(n))


def _check_perm(perm: Sequence[int], n: int) -> tuple[int, ...]:
  perm = tuple(int(i) for i in perm)
  if sorted(perm) != list(range(n)):
    raise ValueError(f"perm {perm} is not a permutation of range({n})")
  return perm


def template_text(template: str) -> str:
  """The text of a named template (`$context` and `$responses` slots): what an export's recipe records."""
  if template not in _BODIES:
    raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")
  return _BODIES[template].template


def render_prompt(body: string.Template | str, query: Query, shown: Sequence[str], numbered: bool = True) -> str:
  """A template's user turn with the conversation and the responses in their shown order (no hint). `grm_prompt`
  renders through it, and so does `grm_jax.reward` from a recipe's template text."""
  body = body if isinstance(body, string.Template) else string.Template(body)
  return body.substitute(context=render_context(query), responses=render_responses(shown, numbered=numbered))


def grm_prompt(
  query: Query,
  responses: Sequence[str],
  *,
  rng: np.random.Generator | int | None = None,
  perm: Sequence[int] | None = None,
  hint_best: int | None = None,
  hint_strength: int | None = None,
  hint_extra: str = "",
  template: str = "default",
) -> GrmPrompt:
  """One GRM prompt as a single user turn, with the responses shown in a permuted order.

  The order is `perm` if given, else drawn from `rng` (a Generator to advance, or a seed), else the original
  order. Voting needs an independent shuffle per sample (paper §4): call this once per sample with the same
  Generator. `hint_best` is the *original* 0-based index of the true best response; the hint names its shown
  position ("The best response is: Response j") on a new line after the template (ours: the paper only says the hint
  is "appended to the input"). `hint_strength` adds a pair's labelled preference strength to the hint (see
  `hint_suffix`; the paper does this on HelpSteer2). `template="single"` is the 0/1 training template and requires
  one response; the judge templates (`JUDGE_TEMPLATES`) need at least two (the paper defines no best-of-one question).
  """
  if template not in TEMPLATES:
    raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")
  n = len(responses)
  if n < 1:
    raise ValueError("need at least one response")
  if any(not isinstance(r, str) for r in responses):
    raise ValueError("responses must be strings")
  if template == "single" and n != 1:
    raise ValueError(f"the single-response template takes exactly one response, got {n}")
  if template in JUDGE_TEMPLATES and n < 2:
    raise ValueError(f"the {template!r} template selects the best of several responses, got {n}")
  order = _check_perm(perm, n) if perm is not None else sample_permutation(n, rng)
  content = render_prompt(_BODIES[template], query, [responses[i] for i in order], numbered=template != "single")
  hint = None
  if hint_strength is not None and hint_best is None:
    raise ValueError("hint_strength needs hint_best")
  if hint_strength is not None and n != 2:
    raise ValueError(f"a preference strength hint is for pairs, got {n} responses")
  if hint_best is not None:
    if not 0 <= hint_best < n:
      raise ValueError(f"hint_best={hint_best} is out of range for {n} responses")
    hint = order.index(hint_best) + 1
    content += "\n" + hint_suffix(hint, hint_extra, hint_strength)
  lo, hi = SCORE_RANGES[template]
  return GrmPrompt([{"role": "user", "content": content}], order, n, lo, hi, template, hint)


def meta_prompt(query: Query, responses: Sequence[str], judgement: str, perm: Sequence[int]) -> list[dict[str, str]]:
  """Meta-RM input: the plain template as the user turn, the GRM's generated text as the assistant turn.

  `perm` must be the order the GRM saw (`GrmPrompt.perm`): the judgement talks about "Response 1" etc. in that
  order. The whole generated text (principles, analysis and the Scores line) is kept: the meta RM is trained to
  predict whether those scores are correct, and paper Table 17 shows it flagging a tied (8, 8) sample.
  """
  order = _check_perm(perm, len(responses))
  shown = [responses[i] for i in order]
  user = META_TEMPLATE.substitute(context=render_context(query), responses=render_responses(shown))
  return [{"role": "user", "content": user}, {"role": "assistant", "content": judgement}]
