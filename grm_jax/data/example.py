"""`PreferenceExample`: the one record every data source is turned into.

Everything downstream (prompt building, the correctness rule, RFT/GRPO/meta-RM labels, evaluation)
reads this record and nothing else, so each reader's job is only to map its file layout onto it.

A record is a conversation context whose last turn is the user query, n >= 1 candidate responses, and
the ground truth: per-response `rewards` and/or the index `best` of the single best response. The paper's
correctness rule (Eq. 10) needs `argmax r` to be unique for n >= 2 (ties would make every judgement wrong)
and a 0/1 label for n = 1, so `best` is derived from `rewards` whenever the maximum is unique and left
`None` otherwise (RM-Bench's 3x3 style matrix, rating ties): consumers that need a target filter on
`ex.best is not None`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from grm_jax import files
from grm_jax.errors import UserError

ROLES = ("system", "user", "assistant")


class DataError(ValueError, UserError):
  """A malformed file or row. The message always names the file and, when there is one, the row/line.

  Subclasses `ValueError` so callers that only care about "bad input" can catch that.
  """

  def __init__(self, message: str, *, file: str | None = None, location: str | None = None):
    self.file = file
    self.location = location
    self.reason = message
    where = ", ".join(x for x in (file, location) if x)
    super().__init__(f"{where}: {message}" if where else message)


def _fail(field: str, message: str) -> DataError:
  return DataError(f"PreferenceExample.{field}: {message}")


def _normalize_context(context: Any) -> tuple[dict[str, str], ...]:
  """Copies turns into plain {"role", "content"} dicts so the record owns its data and serializes."""
  if isinstance(context, str):
    context = [{"role": "user", "content": context}]
  if not isinstance(context, Sequence) or isinstance(context, bytes):
    raise _fail("context", f"expected a list of {{'role', 'content'}} turns, got {type(context).__name__}")
  turns = []
  for i, turn in enumerate(context):
    if not isinstance(turn, Mapping):
      raise _fail("context", f"turn {i} is a {type(turn).__name__}, expected a mapping with 'role' and 'content'")
    role, content = turn.get("role"), turn.get("content")
    if role not in ROLES:
      raise _fail("context", f"turn {i} has role {role!r}; expected one of {ROLES}")
    if not isinstance(content, str):
      raise _fail("context", f"turn {i} content is a {type(content).__name__}, expected str")
    turns.append({"role": role, "content": content})
  if not turns:
    raise _fail("context", "is empty; it needs at least the user query")
  if turns[-1]["role"] != "user":
    raise _fail("context", f"last turn has role {turns[-1]['role']!r}; the last turn must be the user query")
  return tuple(turns)


def _json_roundtrip(metadata: Any) -> dict[str, Any]:
  """Metadata travels through JSONL and TFDS as JSON, so it is normalized to JSON values up front.

  That way an example equals itself after a round trip (tuples become lists here, not later).
  """
  if not isinstance(metadata, Mapping):
    raise _fail("metadata", f"expected a mapping, got {type(metadata).__name__}")
  try:
    return json.loads(json.dumps(dict(metadata), allow_nan=False))
  except (TypeError, ValueError) as e:
    raise _fail("metadata", f"must be JSON-serializable: {e}") from None


@dataclasses.dataclass(frozen=True)
class PreferenceExample:
  """One query with n >= 1 responses and their ground truth.

  Attributes:
    context: conversation turns ({"role", "content"}), oldest first; the last one is the user query.
      A plain string is accepted and becomes one user turn.
    responses: the n candidate responses to the query.
    rewards: n ground-truth rewards (pairwise data: chosen 1.0, rejected 0.0; n = 1: 1.0 correct, 0.0 not),
      or None when only `best` is known (then it is filled in as one-hot).
    best: index of the single best response; derived from `rewards` when their max is unique (n >= 2).
      Always None for n = 1, where the target is the 0/1 reward.
    source: benchmark/subset (e.g. "rewardbench/alpacaeval-easy"), the unit metrics average over first.
    category: benchmark section (e.g. "Chat Hard", "Helpfulness/BoN"), the unit metrics report.
    id: identifier, unique together with `source` within a data set.
    metadata: JSON-serializable extras a metric or prompt needs (RM-Bench styles, ReaLMistake label, ...).
  """

  context: tuple[dict[str, str], ...]
  responses: tuple[str, ...]
  rewards: tuple[float, ...] | None = None
  best: int | None = None
  source: str = ""
  category: str = ""
  id: str = ""
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self) -> None:
    set_ = lambda name, value: object.__setattr__(self, name, value)  # frozen: validate-then-freeze
    set_("context", _normalize_context(self.context))
    if isinstance(self.responses, str) or not isinstance(self.responses, Iterable):
      raise _fail("responses", f"expected a sequence of str, got {type(self.responses).__name__}")
    responses = tuple(self.responses)
    if not responses:
      raise _fail("responses", "needs n >= 1 responses, got 0")
    for i, r in enumerate(responses):
      if not isinstance(r, str):
        raise _fail("responses", f"response {i} is a {type(r).__name__}, expected str")
    set_("responses", responses)
    n = len(responses)

    rewards = self.rewards
    if rewards is not None:
      if isinstance(rewards, str | bytes) or not isinstance(rewards, Iterable):
        raise _fail("rewards", f"expected a sequence of numbers, got {type(rewards).__name__}")
      rewards = tuple(rewards)
      if len(rewards) != n:
        raise _fail("rewards", f"has {len(rewards)} values but there are {n} responses")
      try:
        rewards = tuple(float(r) for r in rewards)
      except (TypeError, ValueError):
        raise _fail("rewards", f"values must be numbers, got {list(rewards)!r}") from None
      if not all(math.isfinite(r) for r in rewards):
        raise _fail("rewards", f"values must be finite, got {list(rewards)!r}")

    best = self.best
    if best is not None:
      if isinstance(best, bool) or not isinstance(best, int):
        raise _fail("best", f"expected an int index, got {type(best).__name__}")
      if n == 1:
        raise _fail("best", "must be None for n = 1 (the target of a single response is its 0/1 reward)")
      if not 0 <= best < n:
        raise _fail("best", f"index {best} is out of range for {n} responses")

    if rewards is None and best is None:
      raise _fail("rewards", "neither rewards nor best is given; one of them is the ground truth")
    if rewards is None:
      rewards = tuple(1.0 if i == best else 0.0 for i in range(n))
    elif n >= 2:
      top = max(rewards)
      argmax = [i for i, r in enumerate(rewards) if r == top]
      if best is None:
        best = argmax[0] if len(argmax) == 1 else None
      elif argmax != [best]:
        raise _fail("best", f"index {best} is not the unique maximum of rewards {list(rewards)!r}")
    set_("rewards", rewards)
    set_("best", best)

    for name in ("source", "category", "id"):
      value = getattr(self, name)
      if not isinstance(value, str):
        raise _fail(name, f"expected str, got {type(value).__name__}")
    set_("metadata", _json_roundtrip(self.metadata))

  def __hash__(self) -> int:
    # The generated hash would fail on the dict-valued fields; equal examples share these parts.
    return hash((self.source, self.id, self.responses, self.rewards))

  @property
  def n(self) -> int:
    """Number of responses."""
    return len(self.responses)

  @property
  def query(self) -> str:
    """The user query (content of the last turn)."""
    return self.context[-1]["content"]

  @property
  def history(self) -> tuple[dict[str, str], ...]:
    """Turns before the query (empty for single-turn data)."""
    return self.context[:-1]

  def to_dict(self) -> dict[str, Any]:
    """The plain-JSONL form (`read_examples` reads it back to an equal example)."""
    return {
      "conversation": [dict(t) for t in self.context],
      "responses": list(self.responses),
      "rewards": list(self.rewards) if self.rewards is not None else None,
      "best": self.best,
      "source": self.source,
      "category": self.category,
      "id": self.id,
      "metadata": self.metadata,
    }

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), ensure_ascii=False)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> PreferenceExample:
    """Builds from the plain form: {"conversation"|"prompt", "responses", "rewards"|"best", ...}.

    `prompt` may be a string (one user turn) or a list of turns; unknown keys are an error so a typo in
    a hand-written file is caught instead of silently dropped.
    """
    if not isinstance(d, Mapping):
      raise DataError(f"expected a JSON object, got {type(d).__name__}")
    known = {"conversation", "prompt", "responses", "rewards", "best", "source", "category", "id", "metadata"}
    unknown = sorted(set(d) - known)
    if unknown:
      raise DataError(f"unknown key(s) {unknown}; expected some of {sorted(known)}")
    if ("conversation" in d) == ("prompt" in d):
      raise DataError("exactly one of 'conversation' or 'prompt' is required")
    if "responses" not in d:
      raise DataError("missing key 'responses'")
    if d.get("rewards") is None and d.get("best") is None:
      raise DataError("one of 'rewards' or 'best' is required")
    ident = d.get("id", "")
    return cls(
      context=d["conversation"] if "conversation" in d else d["prompt"],
      responses=d["responses"],
      rewards=d.get("rewards"),
      best=d.get("best"),
      source=d.get("source", "") or "",
      category=d.get("category", "") or "",
      id=str(ident) if isinstance(ident, int) else ident,
      metadata=d.get("metadata") or {},
    )

  @classmethod
  def from_json(cls, text: str | bytes) -> PreferenceExample:
    return cls.from_dict(json.loads(text))


class Examples(list):
  """A list of `PreferenceExample` that also says what was left out, so skips are never silent.

  Attributes:
    skipped: malformed rows dropped because the reader ran with on_error="skip".
    errors: messages of the first `MAX_ERRORS` skipped rows (each names file and row).
    filtered: well-formed rows left out by the reader's documented rule (e.g. PPE ties).
    files: the files read, in order.
  """

  MAX_ERRORS = 50

  def __init__(self, items: Iterable[PreferenceExample] = ()):
    super().__init__(items)
    self.skipped = 0
    self.errors: list[str] = []
    self.filtered = 0
    self.files: list[str] = []

  def add_counts(self, other: Examples) -> None:
    """Take over what `other` left out and read (one data set read in parts, or a mixture of several)."""
    self.skipped += other.skipped
    self.filtered += other.filtered
    self.files += other.files
    self.errors += other.errors[: max(self.MAX_ERRORS - len(self.errors), 0)]

  def __repr__(self) -> str:  # the full list of long texts is never what one wants to see
    return f"Examples(n={len(self)}, skipped={self.skipped}, filtered={self.filtered}, files={len(self.files)})"


def write_examples(examples: Iterable[PreferenceExample], path: str | os.PathLike) -> int:
  """Writes examples in the plain JSONL form (one `to_dict()` per line); returns the count.

  Refuses ReaLMistake examples: its authors ask that the data never be published in plain text, and a
  file on disk is one copy away from that. Read it from the encrypted zip each time instead.
  """
  rows = []
  for ex in examples:
    if ex.source.startswith("realmistake"):
      raise DataError("refusing to write ReaLMistake examples in plain text (the authors ask not to)", file=str(path))
    rows.append(ex.to_dict())
  return files.write_jsonl(path, rows)
