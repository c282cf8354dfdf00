"""Score extraction: the documented rule in grm_jax/grm/parse.py, case by case."""

import numpy as np
import pytest

from grm_jax import grm


@pytest.mark.parametrize(
  "text, n, expected",
  [
    ("Analysis: ...\nScores: \\boxed{7, 4}", 2, [7, 4]),
    ("Scores: \\\\boxed{7,4}", 2, [7, 4]),  # JSON-escaped backslash
    ("Final Scores: [[2, 4]]", 2, [2, 4]),  # paper Fig. 2 form
    ("The scores are [[8, 1]] out of 10", 2, [8, 1]),
    ("\\boxed{ 7 ,   4 }", 2, [7, 4]),
    ("\\boxed{7, 4.}", 2, [7, 4]),  # trailing period inside the box
    ("\\boxed{7, 4}.", 2, [7, 4]),
    ("\\boxed{7.0, 4}", 2, [7, 4]),  # integral decimal
    ("\\boxed{7，4}", 2, [7, 4]),  # full-width comma
    ("\\boxed{9}", 1, [9]),
    ("\\boxed{3, 9, 5}", 3, [3, 9, 5]),
    # The prompt's own single-bracket markers are not score blocks.
    ("Scores: \\boxed{7, 4}\n[The End of Response 2]", 2, [7, 4]),
  ],
)
def test_parses(text, n, expected):
  assert grm.parse_scores(text, n) == expected


def test_last_match_wins():
  assert grm.parse_scores("draft \\boxed{1, 2} then final [[3, 4]]", 2) == [3, 4]
  assert grm.parse_scores("[[3, 4]] ... Scores: \\boxed{5, 6}", 2) == [5, 6]
  assert grm.parse_scores("\\boxed{5, 6} ... \\boxed{2, 9}", 2) == [2, 9]
  # The last block is garbage: no fallback to the earlier good one.
  assert grm.parse_scores("Scores: \\boxed{7, 4} e.g. \\boxed{x, x}", 2) is None


@pytest.mark.parametrize(
  "text, n",
  [
    ("\\boxed{7, 4}", 3),  # too few
    ("\\boxed{7, 4, 5}", 2),  # too many
    ("no scores at all", 2),
    ("", 1),
    ("\\boxed{}", 1),
    ("\\boxed{x, x}", 2),
    ("\\boxed{Response 1: 7, Response 2: 4}", 2),  # labels are refused (see parse.py)
    ("\\boxed{7.5, 4}", 2),  # non-integer
    ("\\boxed{7/10, 4/10}", 2),
    ("\\boxed{7, 4, }", 2),  # empty part
    ("\\boxed{7 4}", 2),
    ("[The End of Response 2]", 1),
    ("\\boxed{\\text{7, 4}}", 2),  # nested braces are not a score block
  ],
)
def test_unparseable(text, n):
  assert grm.parse_scores(text, n) is None


def test_clipping():
  assert grm.parse_scores("\\boxed{11, 0}", 2) == [10, 1]
  assert grm.parse_scores("\\boxed{-3, 12}", 2) == [1, 10]
  assert grm.parse_scores("\\boxed{2}", 1, lo=0, hi=1) == [1]
  assert grm.parse_scores("\\boxed{0}", 1, lo=0, hi=1) == [0]


def test_no_clipping_keeps_the_written_score():
  assert grm.parse_scores("\\boxed{7}", 1, lo=0, hi=1, clip=False) == [7]
  assert grm.parse_scores("\\boxed{-3, 12}", 2, clip=False) == [-3, 12]
  assert grm.parse_scores("\\boxed{+1.00}", 1, lo=0, hi=1, clip=False) == [1]
  # Too long for a float (int(float(..)) would raise): a huge score, kept; past Python's digit limit, unparseable.
  assert grm.parse_scores("\\boxed{" + "9" * 400 + "}", 1, clip=False) == [int("9" * 400)]
  assert grm.parse_scores("\\boxed{" + "9" * 400 + "}", 1) == [10]
  assert grm.parse_scores("\\boxed{" + "9" * 5000 + "}", 1, clip=False) is None


def test_bad_arguments():
  with pytest.raises(ValueError):
    grm.parse_scores("\\boxed{1}", 0)
  with pytest.raises(ValueError):
    grm.parse_scores("\\boxed{1}", 1, lo=5, hi=1)
  assert grm.parse_scores(None, 1) is None  # type: ignore[arg-type]


def test_unpermute():
  # Shown order (B, A): scores (9, 5) belong to original (A=5, B=9).
  assert grm.unpermute([9, 5], (1, 0)) == [5, 9]
  assert grm.unpermute([3, 1, 2], (2, 0, 1)) == [1, 2, 3]
  assert grm.unpermute(None, (1, 0)) is None
  with pytest.raises(ValueError):
    grm.unpermute([1, 2], (0, 1, 2))


def test_stack_scores():
  scores, valid = grm.stack_scores([[7, 4], None, [1, 2, 3]], n_max=3)
  np.testing.assert_array_equal(scores, [[7, 4, 0], [0, 0, 0], [1, 2, 3]])
  np.testing.assert_array_equal(valid, [True, False, True])
  assert scores.dtype == np.int32
  with pytest.raises(ValueError):
    grm.stack_scores([[1, 2, 3]], n_max=2)


def test_split_judgement():
  text = (
    "Specific Criteria: Accuracy (60%), Clarity (40%).\n"
    "Analysis: Response 1 is right; Response 2 is wrong.\nMore analysis.\n"
    "Scores: \\boxed{9, 2}"
  )
  j = grm.split_judgement(text)
  assert j.criteria == "Accuracy (60%), Clarity (40%)."
  assert j.analysis == "Response 1 is right; Response 2 is wrong.\nMore analysis."
  assert j.scores == "\\boxed{9, 2}"
  assert grm.split_judgement("just text") == grm.Judgement(None, None, None)
