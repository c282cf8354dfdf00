"""A built-in, verifiable preference set: short questions with known answers, one correct response.

Why: the pipeline (RFT, GRPO, meta RM, eval) needs data whose ground truth is certain and whose
questions a 135M instruct model can learn to judge on a laptop, without any download. Every item is a
one-line question with a one-line answer, so the GRM's job reduces to "which response is right".

Generator (deterministic; `synthetic(split, size, seed, n, tasks)`):
  1. One `random.Random(f"grm_jax.synthetic:{seed}:{split}")` drives everything, so a (split, seed)
     gives the same stream on every machine; `size` only cuts the stream, so a smaller set is a prefix
     of a larger one.
  2. Per item: draw n from `n` (default 1, 2, 4), then a task among those with at least n-1 distinct
     wrong answers, then the task's parameters. The task's canonical `key` (task + parameters, not
     wording; "3 + 5" and "5 + 3" share one) decides the split: `blake2b(key) % 100 < 20` is test,
     the rest train, independent of the seed. So train and test never share a problem, for any seeds
     and sizes. Keys already used in this stream are redrawn, so items are distinct.
  3. n >= 2: the correct answer plus n-1 distinct wrong ones (near misses: off by one or ten, the
     other number, an almost-reversed word, ...), the correct one at a uniformly random position;
     rewards 1 for it, 0 for the rest. n = 1: correct or a wrong answer with probability 1/2 each,
     reward 1 or 0 (the paper's single-response verifiable data).
  4. Question and each response are worded from several templates ("The answer is 81.", "81",
     "23 + 58 = 81", ...), chosen independently, so wording never gives the answer away.

Tasks (`SYNTHETIC_TASKS`): add, sub, mul, compare (2 numbers), extreme (largest/smallest of 4),
parity, neighbor (number before/after), sort (3 numbers), reverse (a word), count (a letter in a word),
length (of a word), upper (a word in capitals), letter (first/last letter of a word).
`compare` and `parity` have a single wrong answer, so they appear only in items with n <= 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Iterator, Sequence

from grm_jax.data.example import Examples, PreferenceExample

TEST_PERCENT = 20
DEFAULT_SIZES = {"train": 2000, "test": 400}
_MAX_DRAWS = 500
DEFAULT_WORKED = "The correct answer is {}."  # a task without its own worked sentence

# Common, non-palindromic lowercase words of 4-8 letters (the string tasks draw from these).
WORDS = tuple(
  """
  apple table chair river music water light house bread green black white smile plant stone cloud
  train phone paper money night party heart world dream beach horse tiger zebra mouse snake eagle
  shark whale camel sheep goose lemon mango grape peach melon onion bacon pasta pizza sugar honey
  juice glass plate spoon knife fork towel brush clock watch shirt pants shoes socks dress skirt
  jacket gloves scarf window garden forest desert island valley mountain ocean planet rocket
  silver golden purple orange yellow circle square corner bottle candle pencil eraser basket
  button carpet ladder mirror pillow rabbit monkey donkey turtle parrot spider insect flower
  summer winter spring autumn friday monday sunday doctor farmer singer dancer artist pilot
  driver writer player teacher student friend mother father sister brother family people
  school office market street bridge castle palace temple church museum hotel library
  number letter answer puzzle riddle secret story poem song movie game sport soccer tennis
  hockey guitar piano violin drums coffee cookie butter cheese carrot potato tomato pepper
  salad soup bean rice corn wheat cotton wool leather metal wood brick sand snow rain wind
  storm thunder bright quiet happy angry funny clever brave gentle simple strong little
  yellow kitten puppy dragon wizard knight pirate robot laptop camera ticket wallet pocket
  """.split()
)
WORDS = tuple(dict.fromkeys(w for w in WORDS if w != w[::-1]))  # dedupe, keep order


@dataclasses.dataclass(frozen=True)
class Problem:
  """One question: `key` identifies the underlying problem (it decides the split), `wrong` are distinct."""

  task: str
  key: str
  question: str
  answer: str
  wrong: tuple[str, ...]
  expr: str | None = None  # "23 + 58": lets a response read "23 + 58 = 81"
  # The solution as one sentence with "{}" for the answer, in canonical words ("The first letter of 'onion' is {}."):
  # what a judge writing its reference answer says (`synthetic_critic`); never shown in prompts or responses.
  worked: str = DEFAULT_WORKED


def _wrong(answer: int | str, candidates: Sequence[int | str], *, minimum: int | None = None) -> tuple[str, ...]:
  out: list[str] = []
  for c in candidates:
    if minimum is not None and isinstance(c, int) and c < minimum:
      continue
    s = str(c)
    if s != str(answer) and s not in out:
      out.append(s)
  return tuple(out)


def _add(rng: random.Random) -> Problem:
  a, b = rng.randint(2, 99), rng.randint(2, 99)
  s = a + b
  q = rng.choice(
    [
      "What is {a} + {b}?",
      "Compute {a} + {b}.",
      "What is {a} plus {b}?",
      "Add {a} and {b}.",
      "What do you get if you add {a} and {b}?",
      "Calculate the sum of {a} and {b}.",
    ]
  ).format(a=a, b=b)
  wrong = _wrong(s, rng.sample([s - 1, s + 1, s - 10, s + 10, s + 2, s - 2], 6), minimum=0)
  return Problem("add", f"add:{min(a, b)}:{max(a, b)}", q, str(s), wrong, f"{a} + {b}", f"{a} + {b} = {{}}.")


def _sub(rng: random.Random) -> Problem:
  a = rng.randint(10, 99)
  b = rng.randint(1, a - 1)
  d = a - b
  q = rng.choice(
    [
      "What is {a} - {b}?",
      "What is {a} minus {b}?",
      "Subtract {b} from {a}.",
      "Compute {a} - {b}.",
      "If you take {b} away from {a}, what is left?",
    ]
  ).format(a=a, b=b)
  wrong = _wrong(d, rng.sample([d - 1, d + 1, d + 10, d - 10, a + b, d + 2], 6), minimum=0)
  return Problem("sub", f"sub:{a}:{b}", q, str(d), wrong, f"{a} - {b}", f"{a} - {b} = {{}}.")


def _mul(rng: random.Random) -> Problem:
  a, b = rng.randint(2, 12), rng.randint(2, 12)
  p = a * b
  q = rng.choice(
    [
      "What is {a} times {b}?",
      "Multiply {a} by {b}.",
      "Compute {a} * {b}.",
      "What is the product of {a} and {b}?",
      "What is {a} * {b}?",
    ]
  ).format(a=a, b=b)
  wrong = _wrong(p, rng.sample([p + a, p - a, p + b, p - b, p + 1, p - 1, a + b], 7), minimum=1)
  return Problem("mul", f"mul:{min(a, b)}:{max(a, b)}", q, str(p), wrong, f"{a} * {b}", f"{a} * {b} = {{}}.")


def _compare(rng: random.Random) -> Problem:
  a, b = rng.sample(range(1, 1000), 2)
  larger = rng.random() < 0.5
  if larger:
    forms = ["Which number is larger, {a} or {b}?", "Which is bigger: {a} or {b}?", "Of {a} and {b}, which is greater?"]
  else:
    forms = ["Which number is smaller, {a} or {b}?", "Which is less: {a} or {b}?", "Of {a} and {b}, which is smaller?"]
  ans, other = (max(a, b), min(a, b)) if larger else (min(a, b), max(a, b))
  key = f"compare:{'max' if larger else 'min'}:{min(a, b)}:{max(a, b)}"
  worked = f"Of {a} and {b}, the {'larger' if larger else 'smaller'} is {{}}."
  return Problem("compare", key, rng.choice(forms).format(a=a, b=b), str(ans), (str(other),), worked=worked)


def _extreme(rng: random.Random) -> Problem:
  nums = rng.sample(range(1, 100), 4)
  largest = rng.random() < 0.5
  which = "largest" if largest else "smallest"
  lst = ", ".join(map(str, nums))
  q = rng.choice(
    [
      "What is the {w} number in this list: {l}?",
      "Find the {w} of these numbers: {l}.",
      "Which of {l} is the {w}?",
    ]
  ).format(w=which, l=lst)
  ans = max(nums) if largest else min(nums)
  wrong = tuple(str(x) for x in nums if x != ans)
  return Problem("extreme", f"extreme:{which}:{':'.join(map(str, sorted(nums)))}", q, str(ans), wrong,
                 worked=f"The {which} of {lst} is {{}}.")


def _parity(rng: random.Random) -> Problem:
  a = rng.randint(1, 999)
  q = rng.choice(["Is {a} even or odd?", "Is the number {a} odd or even?", "Is {a} an even or an odd number?"])
  ans = "even" if a % 2 == 0 else "odd"
  return Problem("parity", f"parity:{a}", q.format(a=a), ans, ("odd" if ans == "even" else "even",),
                 worked=f"{a} ends in {a % 10}, so it is {{}}.")


def _neighbor(rng: random.Random) -> Problem:
  a = rng.randint(2, 998)
  after = rng.random() < 0.5
  if after:
    q = rng.choice(
      ["What number comes right after {a}?", "What is one more than {a}?", "What is the next number after {a}?"]
    )
    ans, cands = a + 1, [a, a + 2, a - 1, a + 10, a + 11]
  else:
    q = rng.choice(
      ["What number comes right before {a}?", "What is one less than {a}?", "Which number is just below {a}?"]
    )
    ans, cands = a - 1, [a, a - 2, a + 1, a - 10, a - 11]
  wrong = _wrong(ans, rng.sample(cands, len(cands)), minimum=0)
  return Problem("neighbor", f"neighbor:{'after' if after else 'before'}:{a}", q.format(a=a), str(ans), wrong,
                 worked=f"{a} {'+' if after else '-'} 1 = {{}}.")


def _sort(rng: random.Random) -> Problem:
  nums = rng.sample(range(1, 50), 3)
  up = rng.random() < 0.5
  target = sorted(nums, reverse=not up)
  while nums == target:
    rng.shuffle(nums)
  fmt = ", ".join
  if up:
    q = rng.choice(["Sort these numbers from smallest to largest: {l}.", "Put {l} in increasing order."])
  else:
    q = rng.choice(["Sort these numbers from largest to smallest: {l}.", "Put {l} in decreasing order."])
  t = [str(x) for x in target]
  cands = [fmt(map(str, nums)), fmt(t[::-1]), fmt([t[1], t[0], t[2]]), fmt([t[0], t[2], t[1]])]
  wrong = _wrong(fmt(t), cands)
  key = f"sort:{'up' if up else 'down'}:{':'.join(map(str, sorted(nums)))}"
  worked = f"{fmt(map(str, nums))} from {'smallest to largest' if up else 'largest to smallest'} is {{}}."
  return Problem("sort", key, q.format(l=fmt(map(str, nums))), fmt(t), wrong, worked=worked)


def _reverse(rng: random.Random) -> Problem:
  w = rng.choice(WORDS)
  r = w[::-1]
  q = rng.choice(
    [
      "Reverse the word '{w}'.",
      "Write '{w}' backwards.",
      "Spell the word '{w}' in reverse.",
      "What is '{w}' spelled backwards?",
    ]
  ).format(w=w)
  cands = [w, r[1] + r[0] + r[2:], r[:-1], r[:-2] + r[-1] + r[-2], r[1:]]
  return Problem("reverse", f"reverse:{w}", q, r, _wrong(r, cands), worked=f"'{w}' backwards is {{}}.")


def _count(rng: random.Random) -> Problem:
  w = rng.choice(WORDS)
  c = rng.choice(w) if rng.random() < 0.75 else rng.choice([x for x in "abcdefghijklmnopqrstuvwxyz" if x not in w])
  k = w.count(c)
  q = rng.choice(
    [
      "How many times does the letter '{c}' appear in '{w}'?",
      "Count the letter '{c}' in the word '{w}'.",
      "How many '{c}'s are in the word '{w}'?",
    ]
  ).format(c=c, w=w)
  wrong = _wrong(k, rng.sample([k + 1, k + 2, k - 1, k + 3, k - 2], 5), minimum=0)
  return Problem("count", f"count:{w}:{c}", q, str(k), wrong,
                 worked=f"'{w}' is spelled {'-'.join(w)}, so '{c}' appears {{}} times.")


def _length(rng: random.Random) -> Problem:
  w = rng.choice(WORDS)
  n = len(w)
  q = rng.choice(
    [
      "How many letters are in the word '{w}'?",
      "How long is the word '{w}', in letters?",
      "Count the letters in '{w}'.",
    ]
  ).format(w=w)
  wrong = _wrong(n, rng.sample([n + 1, n - 1, n + 2, n - 2, n + 3], 5), minimum=1)
  return Problem("length", f"length:{w}", q, str(n), wrong, worked=f"'{w}' is spelled {'-'.join(w)}: {{}} letters.")


def _upper(rng: random.Random) -> Problem:
  w = rng.choice(WORDS)
  u = w.upper()
  q = rng.choice(["Write '{w}' in capital letters.", "Convert '{w}' to uppercase.", "What is '{w}' in all caps?"])
  cands = [w, w.capitalize(), u[:-1] + u[-1].lower(), u[0].lower() + u[1:], u[::-1]]
  return Problem("upper", f"upper:{w}", q.format(w=w), u, _wrong(u, cands), worked=f"'{w}' in capitals is {{}}.")


def _letter(rng: random.Random) -> Problem:
  w = rng.choice(WORDS)
  first = rng.random() < 0.5
  if first:
    q = rng.choice(["What is the first letter of the word '{w}'?", "Which letter does '{w}' start with?"])
  else:
    q = rng.choice(["What is the last letter of the word '{w}'?", "Which letter does '{w}' end with?"])
  ans = w[0] if first else w[-1]
  others = [c for c in dict.fromkeys(w) if c != ans]
  rng.shuffle(others)
  fill = [c for c in "aeiourstlnmpdgbchkwy" if c != ans and c not in others]
  return Problem("letter", f"letter:{'first' if first else 'last'}:{w}", q.format(w=w), ans, _wrong(ans, others + fill),
                 worked=f"The {'first' if first else 'last'} letter of '{w}' is {{}}.")


TaskFn = Callable[[random.Random], Problem]
_TASKS: dict[str, tuple[TaskFn, int]] = {  # name -> (generator, guaranteed number of distinct wrong answers)
  "add": (_add, 3),
  "sub": (_sub, 3),
  "mul": (_mul, 3),
  "compare": (_compare, 1),
  "extreme": (_extreme, 3),
  "parity": (_parity, 1),
  "neighbor": (_neighbor, 3),
  "sort": (_sort, 3),
  "reverse": (_reverse, 3),
  "count": (_count, 3),
  "length": (_length, 3),
  "upper": (_upper, 3),
  "letter": (_letter, 3),
}
SYNTHETIC_TASKS = tuple(_TASKS)

_NUMBER_FORMS = ["{a}", "The answer is {a}.", "Answer: {a}", "It is {a}.", "{a}."]
_TEXT_FORMS = ["{a}", "The answer is {a}.", "Answer: {a}", "It's {a}."]


def split_of(key: str) -> str:
  """ "test" for ~TEST_PERCENT% of problem keys, "train" for the rest; a pure function of the key."""
  h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
  return "test" if h % 100 < TEST_PERCENT else "train"


def _render(problem: Problem, answer: str, rng: random.Random) -> str:
  forms = list(_NUMBER_FORMS if answer.lstrip("-").isdigit() else _TEXT_FORMS)
  if problem.expr:
    forms += ["{e} = {a}", "{e} equals {a}."]
  return rng.choice(forms).format(a=answer, e=problem.expr)


def _stream(split: str, seed: int, ns: tuple[int, ...], tasks: tuple[str, ...]) -> Iterator[PreferenceExample]:
  rng = random.Random(f"grm_jax.synthetic:{seed}:{split}")
  seen: set[str] = set()
  index = 0
  while True:
    n = rng.choice(ns)
    eligible = [t for t in tasks if _TASKS[t][1] >= max(n - 1, 1)]
    if not eligible:
      raise ValueError(f"no task in {tasks} has {n - 1} distinct wrong answers; use tasks with more or a smaller n")
    for _ in range(_MAX_DRAWS):
      problem = _TASKS[rng.choice(eligible)][0](rng)
      if problem.key not in seen and split_of(problem.key) == split:
        break
    else:
      raise ValueError(
        f"synthetic {split!r}: no new problem in {_MAX_DRAWS} draws after {index} items; the tasks {tasks} are "
        "exhausted for this split, ask for fewer items or more tasks"
      )
    seen.add(problem.key)
    if n == 1:
      correct = rng.random() < 0.5
      answers = [problem.answer if correct else rng.choice(problem.wrong)]
      rewards = [1.0 if correct else 0.0]
    else:
      answers = rng.sample(problem.wrong, n - 1)
      pos = rng.randrange(n)
      answers.insert(pos, problem.answer)
      rewards = [1.0 if i == pos else 0.0 for i in range(n)]
    yield PreferenceExample(
      context=problem.question,
      responses=tuple(_render(problem, a, rng) for a in answers),
      rewards=tuple(rewards),
      source=f"synthetic/{problem.task}",
      category="synthetic",
      id=f"{split}-{seed}-{index:06d}",
      metadata={"task": problem.task, "key": problem.key, "answer": problem.answer, "answers": answers,
                "worked": problem.worked},
    )
    index += 1


def synthetic(
  split: str = "train",
  *,
  size: int | None = None,
  seed: int = 0,
  n: int | Sequence[int] = (1, 2, 4),
  tasks: Sequence[str] | None = None,
) -> Examples:
  """The synthetic verifiable preference set (see the module docstring for the generator).

  Args:
    split: "train" or "test" (disjoint problem keys, whatever the seeds).
    size: number of items (default 2000 train / 400 test); a smaller size is a prefix of a larger one.
    seed: stream seed; the same (split, seed, n, tasks) always gives the same items.
    n: responses per item, or a set of them to draw from uniformly.
    tasks: subset of `SYNTHETIC_TASKS` (default all).
  """
  if split not in DEFAULT_SIZES:
    raise ValueError(f"synthetic split must be one of {tuple(DEFAULT_SIZES)}, got {split!r}")
  ns = (n,) if isinstance(n, int) else tuple(n)
  if not ns or any(not isinstance(k, int) or k < 1 or k > 4 for k in ns):
    raise ValueError(f"n must be ints in 1..4 (at most 3 distinct wrong answers per task), got {n!r}")
  tasks = SYNTHETIC_TASKS if tasks is None else tuple(tasks)
  unknown = [t for t in tasks if t not in _TASKS]
  if unknown or not tasks:
    raise ValueError(f"unknown synthetic task(s) {unknown}; choose from {SYNTHETIC_TASKS}")
  size = DEFAULT_SIZES[split] if size is None else size
  if size < 0:
    raise ValueError(f"size must be >= 0, got {size}")
  out = Examples()
  stream = _stream(split, seed, ns, tasks)
  for _ in range(size):
    out.append(next(stream))
  return out
