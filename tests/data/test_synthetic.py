"""The synthetic verifiable set: deterministic, disjoint splits, exactly one correct response, truly correct."""

import collections
import re

import pytest

from grm_jax.data import SYNTHETIC_TASKS, synthetic
from grm_jax.data.synthetic import split_of


@pytest.fixture(scope="module")
def train():
  return synthetic("train", size=2000, seed=0)


@pytest.fixture(scope="module")
def test_set():
  return synthetic("test", size=400, seed=0)


def test_deterministic_and_prefix_stable(train):
  assert synthetic("train", size=2000, seed=0) == train
  assert synthetic("train", size=300, seed=0) == train[:300]
  assert synthetic("train", size=300, seed=1) != train[:300]


def test_train_and_test_never_share_a_problem(train, test_set):
  other_seed = synthetic("test", size=400, seed=7)
  train_keys = {e.metadata["key"] for e in train}
  for split in (test_set, other_seed):
    assert train_keys.isdisjoint(e.metadata["key"] for e in split)
    assert {e.query for e in train}.isdisjoint(e.query for e in split)
  assert all(split_of(e.metadata["key"]) == "train" for e in train)
  assert all(split_of(e.metadata["key"]) == "test" for e in test_set)
  assert len(train_keys) == len(train)  # no problem repeats within a split


def test_exactly_one_correct(train, test_set):
  for ex in [*train, *test_set]:
    answers = ex.metadata["answers"]
    correct = [a == ex.metadata["answer"] for a in answers]
    assert list(ex.rewards) == [float(c) for c in correct]
    if ex.n >= 2:
      assert sum(correct) == 1 and ex.best == correct.index(True)
      assert len(set(answers)) == ex.n  # wrong answers are distinct, too
    else:
      assert ex.best is None
  singles = collections.Counter(ex.rewards[0] for ex in train if ex.n == 1)
  assert set(singles) == {0.0, 1.0} and min(singles.values()) > 0.4 * sum(singles.values())


def test_mix_of_n_tasks_and_positions(train):
  assert set(collections.Counter(e.n for e in train)) == {1, 2, 4}
  assert set(e.metadata["task"] for e in train) == set(SYNTHETIC_TASKS)
  positions = collections.Counter(e.best for e in train if e.n == 4)
  assert set(positions) == {0, 1, 2, 3} and min(positions.values()) > 0.15 * sum(positions.values())
  assert all(e.metadata["task"] not in ("compare", "parity") for e in train if e.n == 4)


def test_short_and_varied(train):
  assert max(len(e.query) for e in train) < 100
  assert max(len(r) for e in train for r in e.responses) < 40
  shapes = {re.sub(r"\d+", "#", e.query) for e in train if e.metadata["task"] == "add"}
  assert len(shapes) >= 5  # several question wordings
  forms = {re.sub(r"\d+", "#", r) for e in train if e.metadata["task"] == "add" for r in e.responses}
  assert len(forms) >= 5  # several answer wordings


def _solve(query: str) -> str | None:
  """An independent solver for some tasks, from the question text alone."""
  if m := re.search(r"(\d+) (?:\+|plus) (\d+)|add (\d+) and (\d+)|sum of (\d+) and (\d+)", query, re.I):
    a, b = (int(x) for x in m.groups() if x)
    return str(a + b)
  if m := re.search(r"(\d+) (?:-|minus) (\d+)", query):
    return str(int(m[1]) - int(m[2]))
  if m := re.search(r"Subtract (\d+) from (\d+)|take (\d+) away from (\d+)", query):
    b, a = (int(x) for x in m.groups() if x)
    return str(a - b)
  if m := re.search(
    r"letter '(\w)' appear in '(\w+)'|letter '(\w)' in the word '(\w+)'|'(\w)'s are in the word '(\w+)'", query
  ):
    c, w = (x for x in m.groups() if x)
    return str(w.count(c))
  if m := re.search(
    r"Reverse the word '(\w+)'|Write '(\w+)' backwards|'(\w+)' in reverse|'(\w+)' spelled backwards", query
  ):
    return next(x for x in m.groups() if x)[::-1]
  if m := re.search(r"(\d+) even or odd|number (\d+) odd or even|(\d+) an even or an odd", query):
    return "even" if int(next(x for x in m.groups() if x)) % 2 == 0 else "odd"
  return None


def test_answers_are_really_correct(train):
  checked = 0
  for ex in train:
    truth = _solve(ex.query)
    if truth is None:
      continue
    checked += 1
    assert ex.metadata["answer"] == truth, ex.query
    right = ex.responses[ex.best] if ex.n > 1 else ex.responses[0]
    if ex.n > 1 or ex.rewards[0] == 1.0:
      assert truth in right
  assert checked > 400


def _check_worked(task: str, sentence: str) -> bool:
  """Whether a worked solution, its blank filled with `answer`, is a true statement (independent of the generator)."""
  body = sentence.rstrip(".")
  if task in ("add", "sub", "mul", "neighbor"):
    lhs, rhs = body.split(" = ")
    a, op, b = lhs.split()
    return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(rhs)
  word = re.search(r"'([a-z]+)'", body)
  if task == "letter":
    first, w, got = re.fullmatch(r"The (first|last) letter of '(\w+)' is (\w)", body).groups()
    return (w[0] if first == "first" else w[-1]) == got
  if task == "upper":
    return body == f"'{word.group(1)}' in capitals is {word.group(1).upper()}"
  if task == "reverse":
    return body == f"'{word.group(1)}' backwards is {word.group(1)[::-1]}"
  if task == "length":
    w = word.group(1)
    return body == f"'{w}' is spelled {'-'.join(w)}: {len(w)} letters"
  if task == "count":
    w, c, k = re.fullmatch(r"'(\w+)' is spelled [a-z-]+, so '(\w)' appears (\d+) times", body).groups()
    return w.count(c) == int(k) and "-".join(w) in body
  if task == "parity":
    n, last, p = re.fullmatch(r"(\d+) ends in (\d), so it is (even|odd)", body).groups()
    return int(n) % 10 == int(last) and ("even" if int(n) % 2 == 0 else "odd") == p
  if task in ("compare", "extreme", "sort"):
    nums = [int(x) for x in re.findall(r"\d+", body.split(" is ")[0])]
    got = [int(x) for x in re.findall(r"\d+", body.split(" is ")[-1])]
    if task == "sort":
      return got == sorted(nums, reverse="largest to smallest" in body)
    return got == [max(nums) if re.search("larger|largest", body) else min(nums)]
  raise AssertionError(f"no check for task {task}")


def test_worked_solutions_are_true_with_the_answer_and_false_with_a_wrong_one():
  items = synthetic("train", size=300, n=2)
  tasks = collections.Counter()
  for ex in items:
    task, worked = ex.metadata["task"], ex.metadata["worked"]
    assert worked.count("{}") == 1, worked
    wrong = next(a for a in ex.metadata["answers"] if a != ex.metadata["answer"])
    assert _check_worked(task, worked.replace("{}", ex.metadata["answer"])), worked
    assert not _check_worked(task, worked.replace("{}", wrong)), (worked, wrong)
    tasks[task] += 1
  assert set(tasks) == set(SYNTHETIC_TASKS)


@pytest.mark.parametrize(
  ("kw", "pattern"),
  [
    (dict(split="dev"), "split must be one of"),
    (dict(n=5), "n must be ints in 1..4"),
    (dict(tasks=["nope"]), "unknown synthetic task"),
    (dict(n=4, tasks=["parity"]), "no task in"),
  ],
)
def test_bad_arguments(kw, pattern):
  with pytest.raises(ValueError, match=pattern):
    synthetic(**{"size": 5, **kw})


def test_exhaustion_is_reported():
  with pytest.raises(ValueError, match="exhausted"):
    synthetic("test", size=200, tasks=["mul"])
