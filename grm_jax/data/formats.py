"""Readers for training/evaluation sets distributed on the Hugging Face Hub, plus the plain JSONL form.

None of these data sets ships with the benchmark folder (`benchmark_root`), so each reader
follows the public HF schema and is tested on tiny files written from that schema. Every reader
takes a file or a directory (parquet / jsonl[.gz] / json[.gz]; HF-style `{split}-*.parquet` names are
picked by `split`).

- `read_ppe`: lmarena-ai/PPE-Human-Preference-V1 (n=2, winner 1 / loser 0, ties filtered) and
  PPE-{MMLU-Pro,MATH,GPQA,IFEval,MBPP-Plus}-Best-of-K (conflict pairs, or all K responses).
- `read_helpsteer2`: nvidia/HelpSteer2 ratings (2 responses per prompt, reward = one attribute, 0-4).
- `read_helpsteer2_preference`: nvidia/HelpSteer2 `preference/` (n=2, preferred 1, with strength).
- `read_ultrafeedback`: openbmb/UltraFeedback raw (n=4, fine-grained score) and binarized pairs.
- `read_skywork`: Skywork/Skywork-Reward-Preference-80K (chosen/rejected message lists).
- `read_offsetbias`: NCSOFT/offsetbias (`instruction`, `output_1`, `output_2`, `label` 1 or 2; n=2, preferred 1).
- `read_examples`: ours, one `PreferenceExample.to_dict()` per line (any n, rewards and/or best).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from typing import Any

from etils.epath import Path

from grm_jax.data.benchmarks import to_turns
from grm_jax.data.example import DataError, Examples, PreferenceExample
from grm_jax.data.io import OnError, PathLike, Sink, as_str, iter_rows, list_files, require

RowFn = Callable[..., Any]


def _read(path: PathLike, fn: RowFn, *args: Any, split: str | None, on_error: OnError, limit: int | None) -> Examples:
  """The common loop: every row of every file through `fn(row, file, location, *args)`."""
  sink = Sink(on_error, limit)
  files = list_files(path, split=split if Path(path).is_dir() else None)
  for f in files:
    sink.add_file(f)
    for loc, row in iter_rows(f):
      sink.convert(f, loc, fn, row, f, loc, *args)
      if sink.full:
        return sink.out
  return sink.out


def _row_id(row: dict[str, Any], file: Path, location: str, *keys: str) -> str:
  """The row's own id if it has one, else a stable "<file>:<row>" id."""
  for k in keys:
    if row.get(k) is not None:
      return str(row[k])
  return f"{file.name}:{location.split()[-1]}"


def chosen_rejected(row: dict[str, Any]) -> tuple[list[dict[str, str]], tuple[str, str]]:
  """Context and (chosen, rejected) from the two common pair layouts.

  - message lists (Skywork, UltraFeedback-binarized, TRL): `chosen`/`rejected` are whole conversations
    that share every turn but the last assistant turn; a separate `prompt` is used only if they do not
    carry the user turn themselves.
  - strings: `prompt` (string or turns) plus `chosen`/`rejected` answer strings.
  """
  chosen, rejected = row["chosen"], row["rejected"]
  if isinstance(chosen, list) and isinstance(rejected, list):
    c, r = to_turns(chosen, "chosen"), to_turns(rejected, "rejected")
    require(c[-1]["role"] == "assistant", "field 'chosen' must end with an assistant turn")
    require(r[-1]["role"] == "assistant", "field 'rejected' must end with an assistant turn")
    require(c[:-1] == r[:-1], "'chosen' and 'rejected' conversations differ before their final assistant turn")
    context = c[:-1] or to_turns(row["prompt"], "prompt")
    return context, (c[-1]["content"], r[-1]["content"])
  return to_turns(row["prompt"], "prompt"), (as_str(chosen, "chosen"), as_str(rejected, "rejected"))


# --------------------------------------------------------------------------------------------------
# PPE (Preference Proxy Evaluations): the human-preference set and the five correctness sets.

PPE_PREFERENCE_FLAGS = ("is_code", "is_refusal", "hard_prompt", "easy_prompt", "if_prompt", "math_prompt", "turn")
_PPE_SUBSET = re.compile(r"PPE-(.+?)-Best-of-K", re.IGNORECASE)


def _ppe_subset(path: Path) -> str:
  """Correctness subset (MMLU-Pro, MATH, GPQA, IFEval, MBPP-Plus) from an HF-style folder name."""
  for part in reversed(path.parts):
    m = _PPE_SUBSET.search(part)
    if m:
      return m.group(1)
  return path.parent.name if path.parent.name not in ("data", "") else path.stem


def _ppe_row(
  row: dict[str, Any], file: Path, loc: str, subset: str | None, include_ties: bool, mode: str
) -> PreferenceExample | list[PreferenceExample] | None:
  context = to_turns(row["prompt"], "prompt")
  require(context[-1]["role"] == "user", "field 'prompt' must end with a user turn")
  if "winner" in row:  # human preference
    winner = row["winner"]
    if winner not in ("model_a", "model_b"):
      require(isinstance(winner, str) and winner.startswith("tie"), f"unknown 'winner' {winner!r}")
      if not include_ties:
        return None  # PPE accuracy is over non-tie pairs
    rewards = {"model_a": (1.0, 0.0), "model_b": (0.0, 1.0)}.get(winner, (0.5, 0.5))
    meta = {k: row.get(k) for k in ("question_id", "model_a", "model_b", "winner", "language")}
    meta.update({k: row[k] for k in PPE_PREFERENCE_FLAGS if k in row})
    return PreferenceExample(
      context=context,
      responses=(as_str(row["response_1"], "response_1"), as_str(row["response_2"], "response_2")),
      rewards=rewards,
      source="ppe/human-preference",
      category="PPE Preference",
      id=_row_id(row, file, loc, "question_id"),
      metadata=meta,
    )
  # correctness: response_1..response_K, scores[K] (bool/int), sampled_conflict_pairs [[i, j], ...]
  keys = sorted((k for k in row if re.fullmatch(r"response_\d+", k)), key=lambda k: int(k.split("_")[1]))
  responses = [as_str(row[k], k) for k in keys]
  scores = row["scores"]
  require(isinstance(scores, list) and len(scores) == len(responses), "field 'scores' must have one entry per response")
  scores = [float(s) for s in scores]
  name = subset or _ppe_subset(file)
  qid = _row_id(row, file, loc, "question_id")
  model = row.get("model_name")
  base_meta = {"subset": name, "question_id": row.get("question_id"), "model_name": model}
  if mode == "best_of_k":
    return PreferenceExample(
      context=context,
      responses=tuple(responses),
      rewards=tuple(scores),
      source=f"ppe/{name}",
      category="PPE Correctness",
      id=f"{qid}:{model}" if model else qid,
      metadata=base_meta,
    )
  pairs = row["sampled_conflict_pairs"]
  require(isinstance(pairs, list), "field 'sampled_conflict_pairs' must be a list of [i, j] pairs")
  out = []
  for i, j in pairs:
    require(0 <= i < len(responses) and 0 <= j < len(responses), f"conflict pair {[i, j]} is out of range")
    require(scores[i] != scores[j], f"conflict pair {[i, j]} has equal scores")
    c, r = (i, j) if scores[i] > scores[j] else (j, i)
    out.append(
      PreferenceExample(
        context=context,
        responses=(responses[c], responses[r]),
        rewards=(1.0, 0.0),
        source=f"ppe/{name}",
        category="PPE Correctness",
        id=f"{qid}:{model}:{i}-{j}" if model else f"{qid}:{i}-{j}",
        metadata={**base_meta, "pair": [i, j]},
      )
    )
  return out


def read_ppe(
  path: PathLike,
  *,
  subset: str | None = None,
  include_ties: bool = False,
  correctness_mode: str = "pairs",
  split: str | None = None,
  on_error: OnError = "raise",
  limit: int | None = None,
) -> Examples:
  """PPE from its HF parquet files; the layout is detected per row.

  Human preference (`winner`, `response_1/2`): ties are left out and counted in `filtered`
  (PPE reports accuracy over decided pairs) unless `include_ties` (then rewards 0.5/0.5, `best` None).
  Correctness (`response_1..K`, `scores`, `sampled_conflict_pairs`): `correctness_mode="pairs"` gives
  one pairwise example per conflict pair (correct 1, incorrect 0; the paper uses 2 responses per
  query); "best_of_k" gives one example with all K responses and their scores. `subset` names the
  correctness set; by default it comes from a `PPE-<name>-Best-of-K` folder in the path.
  """
  if correctness_mode not in ("pairs", "best_of_k"):
    raise ValueError(f"correctness_mode must be 'pairs' or 'best_of_k', got {correctness_mode!r}")
  return _read(path, _ppe_row, subset, include_ties, correctness_mode, split=split, on_error=on_error, limit=limit)


# --------------------------------------------------------------------------------------------------
# HelpSteer2: per-response attribute ratings (two responses per prompt, on consecutive rows) and the
# HelpSteer2-Preference pairs.

HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
_EXTRA_ID = re.compile(r"\n?<extra_id_1>(User|Assistant)\n?")


def helpsteer2_turns(prompt: str) -> list[dict[str, str]]:
  """HelpSteer2 multi-turn prompts join turns with `<extra_id_1>User` / `<extra_id_1>Assistant` tags."""
  parts = _EXTRA_ID.split(prompt)
  turns = [{"role": "user", "content": parts[0]}]
  for tag, text in zip(parts[1::2], parts[2::2], strict=True):
    turns.append({"role": "user" if tag == "User" else "assistant", "content": text})
  return turns


def _not_a_rating_row(row: Any) -> None:
  require(isinstance(row, dict), f"expected a JSON object, got {type(row).__name__}")
  require(False, "missing key 'prompt'")


def _helpsteer2_group(rows: list[dict[str, Any]], file: Path, loc: str, attribute: str) -> PreferenceExample | None:
  if len(rows) < 2:
    return None  # a lone response has no comparison and no verifiable 0/1 label
  attrs = []
  for r in rows:
    as_str(r["response"], "response")
    attrs.append({a: float(r[a]) for a in HELPSTEER2_ATTRIBUTES if a in r and r[a] is not None})
    require(attribute in attrs[-1], f"missing attribute {attribute!r}")
  return PreferenceExample(
    context=helpsteer2_turns(as_str(rows[0]["prompt"], "prompt")),
    responses=tuple(r["response"] for r in rows),
    rewards=tuple(a[attribute] for a in attrs),
    source="helpsteer2",
    category="HelpSteer2",
    id=f"{file.name}:{loc.split()[1]}",
    metadata={"attributes": attrs, "reward_attribute": attribute},
  )


def read_helpsteer2(
  path: PathLike,
  *,
  attribute: str = "helpfulness",
  split: str | None = None,
  on_error: OnError = "raise",
  limit: int | None = None,
) -> Examples:
  """HelpSteer2 ratings (`prompt, response, helpfulness, correctness, coherence, complexity, verbosity`).

  Consecutive rows with the same prompt form one example; rewards are the chosen `attribute` (0-4) and
  all five ratings go to `metadata["attributes"]`. Equal ratings leave `best` None (no single best);
  prompts with one response are counted in `filtered`. `split` picks `train.*` / `validation.*` files;
  a folder is read without its subfolders (the HF repo's `preference/` has another layout).
  """
  if attribute not in HELPSTEER2_ATTRIBUTES:
    raise ValueError(f"attribute must be one of {HELPSTEER2_ATTRIBUTES}, got {attribute!r}")
  sink = Sink(on_error, limit)
  # Not recursive: the HF repo keeps preference/ and disagreements/ (other layouts) below the ratings.
  for f in list_files(path, split=split if Path(path).is_dir() else None, recursive=False):
    sink.add_file(f)
    for where, rows in _rating_groups(iter_rows(f)):
      if isinstance(rows, list):
        sink.convert(f, where, _helpsteer2_group, rows, f, where, attribute)
      else:
        sink.convert(f, where, _not_a_rating_row, rows)
      if sink.full:
        return sink.out
  return sink.out


def _rating_groups(rows: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
  """(location, [rows]) per run of consecutive rows sharing a prompt; a row without one comes alone."""
  group: list[dict[str, Any]] = []
  first = last = ""
  for loc, row in rows:
    prompt = row.get("prompt") if isinstance(row, dict) else None
    if group and prompt != group[0]["prompt"]:
      yield (first if first == last else f"{first} to {last.split()[-1]}"), group
      group = []
    if prompt is None:
      yield loc, row
      continue
    first = first if group else loc
    group.append(row)
    last = loc
  if group:
    yield (first if first == last else f"{first} to {last.split()[-1]}"), group


def _helpsteer2_preference_row(
  row: dict[str, Any], file: Path, loc: str, split: str | None
) -> PreferenceExample | None:
  if split is not None and row.get("split") != split:
    return None
  strength = row["preference_strength"]
  number = isinstance(strength, int | float) and not isinstance(strength, bool)
  require(number, f"field 'preference_strength' must be a number, got {strength!r}")
  if strength == 0:
    return None  # no preference: nothing to single out
  return PreferenceExample(
    context=helpsteer2_turns(as_str(row["prompt"], "prompt")),
    responses=(as_str(row["response_1"], "response_1"), as_str(row["response_2"], "response_2")),
    best=0 if strength < 0 else 1,  # negative: response_1 is better
    source="helpsteer2-preference",
    category="HelpSteer2-Preference",
    id=_row_id(row, file, loc, "id"),
    metadata={
      "preference_strength": strength,
      "strength": abs(strength),  # 1 slightly, 2 better, 3 much better; the paper's hint includes it
      "preference_statement": row.get("preference_statement"),
      "split": row.get("split"),
    },
  )


def read_helpsteer2_preference(
  path: PathLike, *, split: str | None = None, on_error: OnError = "raise", limit: int | None = None
) -> Examples:
  """HelpSteer2-Preference (`split, prompt, response_1, response_2, preference_strength, ...`).

  `preference_strength` in -3..3: negative prefers response_1, positive response_2, 0 (no preference)
  is counted in `filtered`. `split` filters on the `split` column ("train" / "validation"), since the
  preference set ships as one file; rows of other splits count as filtered too.
  """
  return _read(path, _helpsteer2_preference_row, split, split=None, on_error=on_error, limit=limit)


# --------------------------------------------------------------------------------------------------
# UltraFeedback: raw multi-completion layout and binarized pairs.

ULTRAFEEDBACK_SCORES = ("fine-grained_score", "overall_score")


def _ultrafeedback_row(row: dict[str, Any], file: Path, loc: str, score_key: str) -> PreferenceExample:
  if "completions" in row:  # raw openbmb/UltraFeedback: instruction + 4 rated completions
    comps = row["completions"]
    require(isinstance(comps, list) and len(comps) >= 1, "field 'completions' must be a non-empty list")
    responses, rewards = [], []
    for i, c in enumerate(comps):
      responses.append(as_str(c["response"], f"completions[{i}].response"))
      score = c.get(score_key)
      require(
        isinstance(score, int | float) and not isinstance(score, bool),
        f"completions[{i}].{score_key} is {score!r}, not a number",
      )
      rewards.append(float(score))
    return PreferenceExample(
      context=as_str(row["instruction"], "instruction"),
      responses=tuple(responses),
      rewards=tuple(rewards),
      source=f"ultrafeedback/{row.get('source') or 'raw'}",
      category="UltraFeedback",
      id=_row_id(row, file, loc, "id", "prompt_id"),
      metadata={"models": [c.get("model") for c in comps], "score_key": score_key},
    )
  context, responses = chosen_rejected(row)
  return PreferenceExample(
    context=context,
    responses=responses,
    rewards=(1.0, 0.0),
    source="ultrafeedback/binarized",
    category="UltraFeedback",
    id=_row_id(row, file, loc, "prompt_id", "id"),
    metadata={"score_chosen": row.get("score_chosen"), "score_rejected": row.get("score_rejected")},
  )


def read_ultrafeedback(
  path: PathLike,
  *,
  score_key: str = "fine-grained_score",
  split: str | None = None,
  on_error: OnError = "raise",
  limit: int | None = None,
) -> Examples:
  """UltraFeedback, raw or binarized (detected per row).

  Raw (`instruction`, `completions[{response, overall_score, fine-grained_score, ...}]`): one n=4
  example whose rewards are each completion's `score_key` (the binarized sets rank by the mean
  fine-grained rating); ties leave `best` None. Binarized (`chosen`/`rejected` message lists or
  strings with `prompt`, e.g. HuggingFaceH4/ultrafeedback_binarized `train_prefs`): chosen 1, rejected 0,
  with `score_chosen/score_rejected` kept in metadata.
  """
  if score_key not in ULTRAFEEDBACK_SCORES:
    raise ValueError(f"score_key must be one of {ULTRAFEEDBACK_SCORES}, got {score_key!r}")
  return _read(path, _ultrafeedback_row, score_key, split=split, on_error=on_error, limit=limit)


# --------------------------------------------------------------------------------------------------
# Skywork-Reward-Preference and other chosen/rejected sets.


def _skywork_row(row: dict[str, Any], file: Path, loc: str) -> PreferenceExample:
  context, responses = chosen_rejected(row)
  return PreferenceExample(
    context=context,
    responses=responses,
    rewards=(1.0, 0.0),
    source=f"skywork/{row['source']}" if isinstance(row.get("source"), str) else "skywork",
    category="Skywork-Reward-Preference",
    id=_row_id(row, file, loc, "id"),
    metadata={},
  )


def read_skywork(
  path: PathLike, *, split: str | None = None, on_error: OnError = "raise", limit: int | None = None
) -> Examples:
  """Skywork-Reward-Preference-80K (`chosen`, `rejected` message lists sharing the user turns, `source`).

  Works for any chosen/rejected set in the same layout (TRL-style preference data).
  """
  return _read(path, _skywork_row, split=split, on_error=on_error, limit=limit)


# --------------------------------------------------------------------------------------------------
# OffsetBias: pairs built as counter-examples to judge biases (NCSOFT/offsetbias, arXiv 2407.06551).


def _offsetbias_row(row: dict[str, Any], file: Path, loc: str) -> PreferenceExample:
  label = row["label"]
  require(label in (1, 2) and not isinstance(label, bool), f"field 'label' must be 1 or 2, got {label!r}")
  return PreferenceExample(
    context=as_str(row["instruction"], "instruction"),
    responses=(as_str(row["output_1"], "output_1"), as_str(row["output_2"], "output_2")),
    rewards=(1.0, 0.0) if label == 1 else (0.0, 1.0),
    source="offsetbias",
    category="OffsetBias",
    id=_row_id(row, file, loc, "id"),
    metadata={},
  )


def read_offsetbias(
  path: PathLike, *, split: str | None = None, on_error: OnError = "raise", limit: int | None = None
) -> Examples:
  """OffsetBias (dataset card NCSOFT/offsetbias: `instruction`, `output_1`, `output_2`, `label` = the better
  output's number, 1 or 2; one `train.jsonl`). The responses keep their order; the preferred one gets reward 1.
  """
  return _read(path, _offsetbias_row, split=split, on_error=on_error, limit=limit)


# --------------------------------------------------------------------------------------------------
# Plain JSONL: {"conversation"|"prompt", "responses", "rewards"|"best", [source, category, id, metadata]}.


TRL_KEYS = ("prompt", "chosen", "rejected", "source", "category", "id")


def _trl_row(row: dict[str, Any]) -> PreferenceExample:
  """A TRL-style preference row (`chosen` / `rejected` strings with `prompt`, or whole conversations): n = 2, the
  chosen response first and best; keys beyond `TRL_KEYS` go to metadata (e.g. `score_chosen`)."""
  context, responses = chosen_rejected(row)
  extra = {k: v for k, v in row.items() if k not in TRL_KEYS}
  return PreferenceExample(context, responses, (1.0, 0.0), best=0, source=str(row.get("source", "")),
                           category=str(row.get("category", "")), id=str(row.get("id", "")), metadata=extra)


def _jsonl_row(row: Any, file: Path, loc: str) -> PreferenceExample:
  trl = isinstance(row, dict) and ("chosen" in row or "rejected" in row) and "responses" not in row
  if trl and not ("chosen" in row and "rejected" in row):  # a TRL pair with one side missing, not an unknown key
    missing = "rejected" if "chosen" in row else "chosen"
    raise DataError(f"a TRL-style row (prompt / chosen / rejected) needs both 'chosen' and 'rejected': missing "
                    f"{missing!r}")
  ex = _trl_row(row) if trl else PreferenceExample.from_dict(row)
  if "source" not in row or "id" not in row:  # hand-written files: still give metrics a unit and a key
    ex = dataclasses.replace(
      ex,
      source=row.get("source", file.name.split(".")[0]),
      id=str(row["id"]) if "id" in row else f"{file.name}:{loc.split()[-1]}",
    )
  return ex


def read_examples(
  path: PathLike, *, split: str | None = None, on_error: OnError = "raise", limit: int | None = None
) -> Examples:
  """Plain preference JSONL (or a JSON array), the form `PreferenceExample.to_dict` / `write_examples` write.

  Per row: `conversation` (turns) or `prompt` (string or turns); `responses`; `rewards` and/or `best`;
  optional `source` (default: file name), `category`, `id` (default: "<file>:<line>"), `metadata`.
  Unknown keys are errors. A TRL-style row (`prompt` + `chosen` / `rejected` strings, or `chosen` / `rejected`
  conversations that share their turns before the last) is a pair with the chosen response best; its other keys
  are kept as metadata.
  """
  return _read(path, _jsonl_row, split=split, on_error=on_error, limit=limit)
