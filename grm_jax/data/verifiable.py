"""MATH-style verifiable data: sampled solutions judged by their final answer against the ground truth.

The paper (arXiv 2504.02495, App. C.1) converts MATH into pairwise preferences "by sampling solutions and matching
final answers to the ground truth with rules", and trains on single responses with reward 1 if correct and 0 if not
(verifiable questions only). It publishes neither the sampled solutions nor the rules, so this reader takes a JSONL
(or JSON / parquet) of rows

  {"problem": str, "answer": str | number, "solutions": [str, ...], ["id" | "unique_id", "level", "type"]}

where `solutions` are sampled solutions to be judged. A row in the Hendrycks MATH layout (`problem`, `solution`) may
give the ground truth as the reference `solution` instead of `answer`: its last `\\boxed{}` is the answer (the
reference itself is not one of the judged solutions).

The matching rules are ours (the paper does not state its own): a solution's final answer is its last `\\boxed{...}`
(or `\\fbox{...}`) with balanced braces; a solution without one is wrong. Both answers are normalised
(`normalize_answer`) and compared as strings, or as exact rationals when both are plain numbers or simple fractions.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from etils.epath import Path

from grm_jax.data.example import Examples, PreferenceExample
from grm_jax.data.io import OnError, PathLike, Sink, as_str, iter_rows, list_files, require

MATH_MODES = ("pairs", "single")
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
  """The content of the last `\\boxed{...}` / `\\fbox{...}` in `text` (nested braces kept), None if there is none
  or its braces never close."""
  starts = [m.end() for m in _BOX.finditer(text)]
  if not starts:
    return None
  depth = 1
  for i in range(starts[-1], len(text)):
    if text[i] == "{":
      depth += 1
    elif text[i] == "}":
      depth -= 1
      if depth == 0:
        return text[starts[-1] : i]
  return None  # a final box that never closes is a cut-off answer, not an earlier one


_SPACING = re.compile(r"\\[!,;:]|\\(?:left|right)(?![A-Za-z])|\s+")  # keeps \leftarrow, \rightarrow
_FRAC_WORDS = re.compile(r"\\[dt]frac")


def normalize_answer(answer: str) -> str:
  """Ours: removes whitespace, `\\left` / `\\right`, thin spaces (`\\!`, `\\,`, `\\;`, `\\:`) and `$`; `\\dfrac` /
  `\\tfrac` become `\\frac`; trailing periods go."""
  text = _FRAC_WORDS.sub(r"\\frac", answer.replace("$", ""))
  text = _SPACING.sub("", text)
  return text.rstrip(".")


_DECIMAL = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_SLASH = re.compile(r"(-?\d+)/(\d+)")
_FRAC = re.compile(r"(-?)\\frac(?:\{(-?\d+)\}|(\d))(?:\{(\d+)\}|(\d))")


def _number(text: str) -> Fraction | None:
  """A normalised answer as an exact rational if it is a plain number, `a/b` or `\\frac{a}{b}` (`\\frac12`)."""
  if _DECIMAL.fullmatch(text):
    return Fraction(text)
  m = _SLASH.fullmatch(text)
  if m and int(m.group(2)):
    return Fraction(int(m.group(1)), int(m.group(2)))
  m = _FRAC.fullmatch(text)
  if m:
    num, den = int(m.group(2) or m.group(3)), int(m.group(4) or m.group(5))
    if den:
      return Fraction(-num if m.group(1) else num, den)
  return None


def answers_match(predicted: str | None, truth: str) -> bool:
  """The rule deciding a solution's correctness: equal after `normalize_answer`, or equal as numbers."""
  if predicted is None:
    return False
  a, b = normalize_answer(predicted), normalize_answer(truth)
  if a == b:
    return True
  x, y = _number(a), _number(b)
  return x is not None and x == y


def _truth(row: dict[str, Any]) -> str:
  if "answer" in row and row["answer"] is not None:
    answer = row["answer"]
    number = isinstance(answer, int | float) and not isinstance(answer, bool)
    require(isinstance(answer, str) or number, f"field 'answer' must be a string or a number, got {answer!r}")
    return str(answer)
  boxed = last_boxed(as_str(row["solution"], "solution"))
  require(boxed is not None, "field 'solution' has no \\boxed{} answer and there is no 'answer'")
  return boxed


def _math_row(
  row: dict[str, Any], file: Path, loc: str, mode: str, pairs_per_problem: int
) -> list[PreferenceExample] | None:
  problem = as_str(row["problem"], "problem")
  truth = _truth(row)
  solutions = row.get("solutions") or []
  require(isinstance(solutions, list), "field 'solutions' must be a list of strings")
  solutions = [as_str(s, f"solutions[{i}]") for i, s in enumerate(solutions)]
  rid = next((str(row[k]) for k in ("id", "unique_id") if row.get(k) is not None), f"{file.name}:{loc.split()[-1]}")
  meta = {"answer": truth, "level": row.get("level"), "type": row.get("type")}
  verdicts = [answers_match(last_boxed(s), truth) for s in solutions]
  common = {"context": problem, "source": "math", "category": "MATH"}
  if mode == "single":
    return [
      PreferenceExample(responses=(s,), rewards=(float(ok),), id=f"{rid}:{i}", metadata={**meta, "solution": i},
                        **common)
      for i, (s, ok) in enumerate(zip(solutions, verdicts, strict=True))
    ] or None  # no solutions: nothing to judge (counted as filtered)
  right = [i for i, ok in enumerate(verdicts) if ok]
  wrong = [i for i, ok in enumerate(verdicts) if not ok]
  pairs = [
    PreferenceExample(responses=(solutions[r], solutions[w]), rewards=(1.0, 0.0), id=f"{rid}:{r}-{w}",
                      metadata={**meta, "solutions": [r, w]}, **common)
    for r, w in list(zip(right, wrong, strict=False))[:pairs_per_problem]  # the shorter list decides
  ]
  return pairs or None  # all right or all wrong: no pair (counted as filtered)


def read_math(
  path: PathLike,
  *,
  mode: str = "pairs",
  pairs_per_problem: int = 1,
  split: str | None = None,
  on_error: OnError = "raise",
  limit: int | None = None,
) -> Examples:
  """MATH-style problems with sampled solutions (see the module docstring for the row layout and the rules).

  `mode="pairs"` (default): per problem, up to `pairs_per_problem` pairs (right, wrong) with rewards (1, 0), the
  i-th right solution with the i-th wrong one (so no solution is used twice); a problem without both a right and a
  wrong solution gives none and counts in `filtered`. `mode="single"`: every solution is its own n = 1 item with
  reward 1 (right) or 0 (wrong), the paper's single-response verifiable data.
  """
  if mode not in MATH_MODES:
    raise ValueError(f"mode must be one of {MATH_MODES}, got {mode!r}")
  if pairs_per_problem < 1:
    raise ValueError(f"pairs_per_problem must be >= 1, got {pairs_per_problem}")
  sink = Sink(on_error, limit)
  for f in list_files(path, split=split if Path(path).is_dir() else None):
    sink.add_file(f)
    for loc, row in iter_rows(f):
      sink.convert(f, loc, _math_row, row, f, loc, mode, pairs_per_problem)
      if sink.full:
        return sink.out
  return sink.out
