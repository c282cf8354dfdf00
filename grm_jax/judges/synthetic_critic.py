"""A rule-based GRM for the built-in synthetic set: an RFT trajectory source for models too small to start alone.

The paper samples its RFT trajectories from a *different*, strong pretrained GRM (DeepSeek-V2.5; paper §3.2,
App. C.1), not from the model being trained. The embedded SmolLM2-135M cannot play that role for itself: on the GRM
template it writes no parseable score at all (0 of 32 samples here, even with the hint). For the synthetic items, whose
answers are known, this critic stands in for the strong GRM: it writes a judgement in the template's three-line
format from the item's metadata: criteria; an analysis that first works out the reference answer in canonical words
("The first letter of 'onion' is o.", the problem's `worked` sentence), then gives each response's answer, a verdict
and its score; the `\\boxed{}` scores. It is deliberately fallible: with probability `noise` a sample believes one of
the wrong answers, so its scores are wrong and RFT's rejection rule (Eq. 10) has something to reject, and items it
gets right every time are dropped as too easy, exactly as with a model sampler. The trained model is always
evaluated on its own generated judgements of held-out problems; the critic never sees the test split.

It writes in the format of the template it stands in for: with a judge template (`prompts.JUDGE_TEMPLATES`, the
LLM-as-a-Judge baseline) the verdicts carry no scores and the `Scores:` line names the shown index of the response it
believes best, `\\boxed{j}`; with a no-principle template (`prompts.NO_PRINCIPLE_TEMPLATES`) there is no
"Specific Criteria:" line. So RFT on the synthetic set trains each variant on its own output format.

Used by `rft.sampler = "synthetic-critic"`; items without synthetic metadata are an error naming the item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from grm_jax.data.example import PreferenceExample
from grm_jax.data.synthetic import DEFAULT_WORKED
from grm_jax.grm.prompts import JUDGE_TEMPLATES, NO_PRINCIPLE_TEMPLATES
from grm_jax.judges.model_judge import Judgements, judge_texts_to_arrays
from grm_jax.judges.settings import Sampling

CRITERIA = "Specific Criteria: Correctness of the final answer."


def _answers(ex: PreferenceExample) -> list[str]:
  answers = ex.metadata.get("answers")
  if not answers or len(answers) != ex.n or "answer" not in ex.metadata:
    raise ValueError(f"synthetic-critic: item {ex.source}/{ex.id} has no synthetic answer metadata; the critic only "
                     "judges the built-in synthetic set (config data.train='synthetic...')")
  return [str(a) for a in answers]


def critique(ex: PreferenceExample, perm: Sequence[int], believed: str | None, rng: np.random.Generator,
             template: str) -> str:
  """One judgement of `ex` shown in order `perm`, by a judge who believes the answer is `believed` (None: a judge
  who wrongly rejects every response, the mistake left for a single right response).

  Reference first, then per response its answer, a verdict and the score it earns, then the scores copied in
  order: every decision is local (a comparison of two strings a few tokens apart, a score right after its verdict),
  which a small model can learn from a few dozen examples. Earlier layouts did not train at this budget: a
  reference stated last followed by "which Response j gives" (looking a response up by its answer: 55% right after
  SFT, 68% of decisive picks on the second-shown response), and a bare "The correct answer is X." first (the model
  copied the first response's answer as the reference)."""
  answers = _answers(ex)
  judge = template in JUDGE_TEMPLATES
  verdicts, scores, rights = [], [], []
  for shown, i in enumerate(perm, 1):
    right = answers[i] == believed
    rights.append(right)
    if judge:
      verdicts.append(f"Response {shown} answers {answers[i]}: {'right' if right else 'wrong'}.")
      continue
    if template == "single":
      scores.append(1 if right else 0)
    else:
      scores.append(int(rng.integers(8, 11)) if right else int(rng.integers(1, 4)))
    verdicts.append(f"Response {shown} answers {answers[i]}: {'right' if right else 'wrong'}, {scores[-1]}.")
  if judge:
    # The first shown response it believes right; a judge who believes none right still has to pick one: at random.
    scores = [rights.index(True) + 1 if any(rights) else int(rng.integers(len(perm))) + 1]
  worked = str(ex.metadata.get("worked", DEFAULT_WORKED))
  reference = worked.replace("{}", believed) if believed is not None else "I cannot tell the correct answer."
  analysis = "Analysis: " + reference + " " + " ".join(verdicts)
  criteria = "" if template in NO_PRINCIPLE_TEMPLATES else CRITERIA + "\n"
  return f"{criteria}{analysis}\nScores: \\boxed{{{', '.join(map(str, scores))}}}"


def critic_judge(examples: Sequence[PreferenceExample], sampling: Sampling, *, hint: bool = False,
                 noise: float = 0.3) -> Judgements:
  """`sampling.k` judgements per item with the same contract as `judges.judge` (shuffled responses per sample,
  scores in the original order; of the settings only k, seed and the templates apply); `tokens` / `prompt_ids` are
  empty: the RFT stage tokenizes for the model it trains. A hinted sample knows the best response, so it never
  errs."""
  k, template, single_template = sampling.k, sampling.template, sampling.single_template
  rng = np.random.default_rng(sampling.seed)
  texts, perms, templates = [], [], []
  for ex in examples:
    answers = _answers(ex)
    right = str(ex.metadata["answer"])
    wrong = [a for a in answers if a != right]
    t = single_template if ex.n == 1 else template
    templates.append(t)
    row_t, row_p = [], []
    for _ in range(k):
      perm = tuple(int(i) for i in rng.permutation(ex.n))
      mistaken = not hint and rng.random() < noise
      believed: str | None = right
      if mistaken and wrong:
        believed = wrong[int(rng.integers(len(wrong)))]
      elif mistaken:  # one right response: the mistaken judge rejects it
        believed = None
      row_t.append(critique(ex, perm, believed, rng, t))
      row_p.append(perm)
    texts.append(row_t)
    perms.append(row_p)
  n_max = max((ex.n for ex in examples), default=1)
  scores, valid, mask, perm_arr = judge_texts_to_arrays(texts, perms, None, n_max, k, templates)
  B = len(examples)
  return Judgements(
    scores=scores, valid=valid, response_mask=mask, perms=perm_arr, texts=texts,
    tokens=[[[] for _ in range(k)] for _ in range(B)], logprobs=[[[] for _ in range(k)] for _ in range(B)],
    prompt_ids=[[[] for _ in range(k)] for _ in range(B)], prompt_tokens=np.zeros((B, k), np.int32),
    generated_tokens=np.zeros((B, k), np.int32), stopped=np.ones((B, k), bool), templates=templates,
  )
