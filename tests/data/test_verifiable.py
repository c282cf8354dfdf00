"""MATH-style verifiable data: final-answer extraction, our normalisation, pairs and single 0/1 items."""

import json

import pytest

from grm_jax import data
from grm_jax.data import DataError


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def test_last_boxed_balances_braces():
  assert data.last_boxed(r"first \boxed{1}, then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
  assert data.last_boxed(r"\boxed {x^{2}+1} is it") == "x^{2}+1"
  assert data.last_boxed(r"\fbox{7}") == "7"
  assert data.last_boxed(r"so \boxed{3} and finally \boxed{4") is None  # the final answer was cut off
  assert data.last_boxed("the answer is 3") is None


@pytest.mark.parametrize(
  ("predicted", "truth"),
  [
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    (r"\tfrac12", "0.5"),
    (r"\left( 1, 2 \right)", "(1,2)"),
    ("$5$.", "5"),
    (r"1\!000", "1000"),
    ("10.0", "10"),
    ("-3/4", r"-\frac{3}{4}"),
    ("x + 1", "x+1"),
  ],
)
def test_answers_that_match(predicted, truth):
  assert data.answers_match(predicted, truth)


@pytest.mark.parametrize(
  ("predicted", "truth"), [("2", "3"), ("x+1", "x-1"), (r"\frac{1}{3}", "0.33"), (None, "1"), (r"\leftarrow", "arrow")]
)
def test_answers_that_do_not_match(predicted, truth):
  assert not data.answers_match(predicted, truth)


def _rows():
  return [
    {"problem": "1+1?", "answer": "2", "solutions": [r"so \boxed{3}", r"\boxed{2}", r"\boxed{2.0}", "no idea"],
     "id": "p1", "level": "Level 1", "type": "Algebra"},
    {"problem": "Half of 1?", "solution": r"It is \boxed{\dfrac{1}{2}}.", "solutions": [r"\boxed{0.5}"]},  # all right
    {"problem": "3*3?", "answer": 9, "solutions": [r"\boxed{6}", r"\boxed{ 9 }"]},
  ]


def test_math_pairs_one_right_one_wrong(tmp_path):
  path = _jsonl(tmp_path / "math.jsonl", _rows())
  out = data.load_dataset(f"math:{path}")
  assert len(out) == 2 and out.filtered == 1  # the all-right problem gives no pair
  a, b = out
  assert a.responses == (r"\boxed{2}", r"so \boxed{3}") and a.rewards == (1.0, 0.0) and a.best == 0
  assert a.id == "p1:1-0" and a.source == "math" and a.query == "1+1?"
  assert a.metadata["answer"] == "2" and a.metadata["type"] == "Algebra"
  assert b.responses == (r"\boxed{ 9 }", r"\boxed{6}") and b.metadata["answer"] == "9" and b.id == "math.jsonl:3:1-0"
  more = data.read_math(path, pairs_per_problem=5)
  assert [e.id for e in more] == ["p1:1-0", "p1:2-3", "math.jsonl:3:1-0"]  # no solution is used twice


def test_math_single_items_have_0_1_rewards(tmp_path):
  path = _jsonl(tmp_path / "math.jsonl", _rows())
  out = data.load_dataset(f"math-single:{path}")
  assert [e.n for e in out] == [1] * 7
  assert [e.rewards[0] for e in out] == [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
  assert out[4].metadata["answer"] == r"\dfrac{1}{2}"  # the reference solution's last box is the ground truth
  assert data.load_dataset(f"math:{path}", mode="single") == out
  assert len(data.load_dataset(f"math_single:{path}", limit=3)) == 3


def test_math_bad_rows(tmp_path):
  no_truth = _jsonl(tmp_path / "a.jsonl", [{"problem": "p", "solution": "no box", "solutions": ["x"]}])
  with pytest.raises(DataError, match=r"a.jsonl, line 1: field 'solution' has no \\boxed\{\} answer"):
    data.read_math(no_truth)
  bad = _jsonl(tmp_path / "b.jsonl", [{"problem": "p", "answer": "1", "solutions": "x"}, {"problem": "p"}])
  out = data.read_math(bad, on_error="skip")
  assert out.skipped == 2 and "must be a list" in out.errors[0] and "missing key 'solution'" in out.errors[1]
  with pytest.raises(ValueError, match="mode must be one of"):
    data.read_math(bad, mode="triples")
  with pytest.raises(ValueError, match="'math' needs a path"):
    data.load_dataset("math")
