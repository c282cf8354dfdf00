"""Benchmark readers: three of the paper's four (RewardBench, RMB, ReaLMistake; PPE is in `formats`) and RM-Bench.

Each reader maps one published layout onto `PreferenceExample` and records in `source` / `category` /
`metadata` what the benchmark's official metric groups by, so the evaluation code never re-opens files:

| benchmark   | source                         | category                 | n   | ground truth                   |
|-------------|--------------------------------|--------------------------|-----|--------------------------------|
| RewardBench | rewardbench/<subset>           | Chat, Chat Hard, ...     | 2   | chosen 1, rejected 0           |
| RMB         | rmb/<set>/<goal>/<scenario>    | <goal>/Pairwise, /BoN    | 2-7 | best 1, others 0               |
| RM-Bench    | rm-bench/<domain file>         | Chat, Code, Math, Safety | 6   | 3 chosen 1, 3 rejected 0       |
| ReaLMistake | realmistake/<task>/<model>     | <task>                   | 1   | 1 = no error, 0 = error        |

Chosen responses come first; position carries no information because the GRM prompt builder
shuffles responses before every sample (the paper's protocol).
"""

from __future__ import annotations

import zipfile
import zlib
from typing import Any

from etils.epath import Path

from grm_jax.data.example import DataError, Examples, PreferenceExample
from grm_jax.data.io import (
  OnError,
  PathLike,
  Sink,
  as_str,
  binary_source,
  iter_jsonl_text,
  iter_rows,
  list_files,
  require,
)

# --------------------------------------------------------------------------------------------------
# Conversation helpers shared with the HF-format readers.

_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


def to_turns(value: Any, name: str) -> list[dict[str, str]]:
  """A prompt as turns: a string is one user turn; a list of strings alternates user/assistant.

  Message dicts may use {"role","content"} or ShareGPT's {"from","value"}; extra keys are dropped.
  The result is not checked for ending on a user turn (chosen/rejected message lists end on the answer).
  """
  if isinstance(value, str):
    return [{"role": "user", "content": value}]
  require(isinstance(value, list) and len(value) > 0, f"field {name!r} must be a string or a non-empty list of turns")
  turns = []
  for i, t in enumerate(value):
    if isinstance(t, str):
      turns.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
      continue
    require(isinstance(t, dict), f"field {name!r} turn {i} must be a string or an object")
    role = t.get("role", t.get("from"))
    content = t.get("content", t.get("value"))
    role = _ROLE_ALIASES.get(role, role)
    require(isinstance(role, str) and isinstance(content, str), f"field {name!r} turn {i} needs string role/content")
    turns.append({"role": role, "content": content})
  return turns


# --------------------------------------------------------------------------------------------------
# RewardBench (v1). Accepts the HF original columns (prompt/chosen/rejected/subset/id) and the renamed
# copy some mirrors ship (question/response_A/response_B/label/domain).

REWARDBENCH_SECTIONS: dict[str, str] = {
  **dict.fromkeys(["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"], "Chat"),
  **dict.fromkeys(
    [
      "mt-bench-hard",
      "llmbar-natural",
      "llmbar-adver-neighbor",
      "llmbar-adver-GPTInst",
      "llmbar-adver-GPTOut",
      "llmbar-adver-manual",
    ],
    "Chat Hard",
  ),
  **dict.fromkeys(
    ["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond", "donotanswer"],
    "Safety",
  ),
  **dict.fromkeys(["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"], "Reasoning"),
  # allenai/preference-test-sets: the official "Prior Sets" section is these four (RewardBench's
  # analysis/get_benchmark_results.py, `pref_columns`); the paper's RB score leaves the section out.
  **dict.fromkeys(["anthropic_helpful", "anthropic_hhh", "shp", "summarize"], "Prior Sets"),
}
"""Official subset -> section map (RewardBench `SUBSET_MAPPING` plus its four prior sets); the overall score
averages sections."""

REWARDBENCH_UNSECTIONED: dict[str, str] = dict.fromkeys(
  ["anthropic_harmless", "mtbench_gpt4", "mtbench_human", "pku_better", "pku_safer", "summarize_prompted"],
  "Prior Sets (other)",
)
"""preference-test-sets subsets outside the official four (the official Prior Sets score does not average them):
read and scored per subset, in no section. The value is only the examples' `category`."""


def _rewardbench_row(row: dict[str, Any]) -> PreferenceExample:
  if "response_A" in row:  # renamed copy: A/B plus a label saying which one is preferred
    prompt, a, b = row["question"], row["response_A"], row["response_B"]
    label = row.get("label", 1)
    require(label in (1, 2), f"field 'label' must be 1 (A preferred) or 2 (B preferred), got {label!r}")
    chosen, rejected = (a, b) if label == 1 else (b, a)
    chosen_model, rejected_model = row.get("chosen_model"), row.get("rejected_model")
  else:
    prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    chosen_model, rejected_model = row.get("chosen_model"), row.get("rejected_model")
  subset = as_str(row["subset"], "subset")
  section = REWARDBENCH_SECTIONS.get(subset) or REWARDBENCH_UNSECTIONED.get(subset) or row.get("domain")
  require(isinstance(section, str), f"unknown subset {subset!r} and no 'domain' column to name its section")
  ident = row["id"]
  return PreferenceExample(
    context=as_str(prompt, "prompt"),
    responses=(as_str(chosen, "chosen"), as_str(rejected, "rejected")),
    rewards=(1.0, 0.0),
    source=f"rewardbench/{subset}",
    category=section,
    id=str(ident),
    metadata={"subset": subset, "chosen_model": chosen_model, "rejected_model": rejected_model},
  )


def read_rewardbench(path: PathLike, *, on_error: OnError = "raise", limit: int | None = None) -> Examples:
  """RewardBench from a parquet/jsonl/json file or a directory of them (HF or renamed columns).

  Note: the filtered split has one duplicated id (3692, in two subsets); (source, id) is unique.
  """
  sink = Sink(on_error, limit)
  for f in list_files(path):
    sink.add_file(f)
    for loc, row in iter_rows(f):
      sink.convert(f, loc, _rewardbench_row, row)
      if sink.full:
        return sink.out
  return sink.out


# --------------------------------------------------------------------------------------------------
# RMB: Pairwise_set (chosen/reject) and BoN_set (bon_best + loser_list) JSON arrays.

RMB_SETS = ("pairwise", "bon")


def _rmb_turns(conv: Any) -> tuple[list[dict[str, str]], str | None]:
  turns = to_turns(conv, "conversation_input")
  language = conv[-1].get("language") if isinstance(conv, list) and isinstance(conv[-1], dict) else None
  return turns, language


def _rmb_answer(item: Any, name: str) -> tuple[str, str | None]:
  require(isinstance(item, dict), f"field {name!r} must be an object with 'answer'")
  return as_str(item["answer"], f"{name}.answer"), item.get("llm_name")


def _rmb_row(row: dict[str, Any], sets: tuple[str, ...]) -> PreferenceExample | None:
  is_bon = "bon_best" in row
  kind = "bon" if is_bon else "pairwise"
  if kind not in sets:
    return None
  turns, language = _rmb_turns(row["conversation_input"])
  if is_bon:
    losers = row["loser_list"]
    require(isinstance(losers, list) and len(losers) >= 1, "field 'loser_list' must be a non-empty list")
    answers = [_rmb_answer(row["bon_best"], "bon_best")]
    answers += [_rmb_answer(x, f"loser_list[{i}]") for i, x in enumerate(losers)]
    ident = row["bon_uid"]
  else:
    answers = [_rmb_answer(row["chosen"], "chosen"), _rmb_answer(row["reject"], "reject")]
    ident = row["pair_uid"]
  path = as_str(row["category_path"], "category_path")
  parts = path.split("/")
  require(len(parts) >= 3, f"field 'category_path' {path!r} is not '<set>/<goal>/<scenario>'")
  goal, scenario = parts[1], "/".join(parts[2:])
  return PreferenceExample(
    context=turns,
    responses=tuple(a for a, _ in answers),
    rewards=tuple(1.0 if i == 0 else 0.0 for i in range(len(answers))),
    source=f"rmb/{kind}/{goal}/{scenario}",
    category=f"{goal}/{'BoN' if is_bon else 'Pairwise'}",
    id=str(ident),
    metadata={
      "set": kind,
      "goal": goal,
      "scenario": scenario,
      "category_path": path,
      "models": [m for _, m in answers],
      "language": language,
    },
  )


def read_rmb(
  path: PathLike,
  *,
  sets: tuple[str, ...] | list[str] = RMB_SETS,
  on_error: OnError = "raise",
  limit: int | None = None,
) -> Examples:
  """RMB from its `RMB_dataset` tree (or any folder/file of its JSON arrays).

  `sets` picks "pairwise" and/or "bon"; files under `Pairwise_set/` or `BoN_set/` of an unwanted set are
  not even opened. Metric units: accuracy per `source` (scenario file), averaged per `category`
  (goal x set); a BoN item is right only if `best` wins over every loser.
  """
  sets = tuple(sets)
  bad = [s for s in sets if s not in RMB_SETS]
  if bad:
    raise ValueError(f"sets must be drawn from {RMB_SETS}, got {bad}")
  sink = Sink(on_error, limit)
  for f in list_files(path, (".json",)):
    if ("Pairwise_set" in f.parts and "pairwise" not in sets) or ("BoN_set" in f.parts and "bon" not in sets):
      continue
    sink.add_file(f)
    for loc, row in iter_rows(f):
      sink.convert(f, loc, _rmb_row, row, sets)
      if sink.full:
        return sink.out
  return sink.out


# --------------------------------------------------------------------------------------------------
# RM-Bench: 3 chosen x 3 rejected responses per prompt, in style order.

RM_BENCH_STYLES = ("concise", "detailed_plain", "detailed_markdown")
RM_BENCH_SECTIONS = {
  "chat": "Chat",
  "code": "Code",
  "math": "Math",
  "safety-refuse": "Safety",
  "safety-response": "Safety",
}
_RM_BENCH_EXTRA = ("error_key", "error", "language", "task_id")


def _rm_bench_row(row: dict[str, Any], file_domain: str) -> PreferenceExample:
  chosen, rejected = row["chosen"], row["rejected"]
  require(
    isinstance(chosen, list) and isinstance(rejected, list) and len(chosen) == len(rejected) >= 1,
    "fields 'chosen' and 'rejected' must be lists of the same length (3 styles each)",
  )
  domain = row.get("domain") or file_domain
  require(isinstance(domain, str), "field 'domain' must be a string")
  section = "Safety" if domain.startswith("safety") else RM_BENCH_SECTIONS.get(domain, domain.title())
  k = len(chosen)
  meta = {
    "domain": domain,
    "subset": row.get("subset"),
    "num_chosen": k,
    "styles": list(RM_BENCH_STYLES) if k == len(RM_BENCH_STYLES) else [f"style_{i}" for i in range(k)],
  }
  meta.update({key: row[key] for key in _RM_BENCH_EXTRA if key in row})
  return PreferenceExample(
    context=as_str(row["prompt"], "prompt"),
    responses=tuple(chosen) + tuple(rejected),
    rewards=(1.0,) * k + (0.0,) * k,
    source=f"rm-bench/{domain}",
    category=section,
    id=str(row["id"]),
    metadata=meta,
  )


def read_rm_bench(path: PathLike, *, on_error: OnError = "raise", limit: int | None = None) -> Examples:
  """RM-Bench from its `data/` folder (`<domain>_filtered.json`) or one file.

  Responses are the 3 chosen then the 3 rejected (style order concise, detailed plain, detailed
  markdown), so `best` is None; `rm_bench_pairs` forms the 9 comparisons the metric needs. The domain
  comes from the file name (the per-domain files have no `domain` key). If a folder has both the
  per-domain files and `total_dataset.json`, only the per-domain files are read (no double counting).
  """
  files = list_files(path, (".json",))
  if len(files) > 1:
    per_domain = [f for f in files if f.name.endswith("_filtered.json")]
    files = per_domain or files
  sink = Sink(on_error, limit)
  for f in files:
    sink.add_file(f)
    domain = f.name.removesuffix(".json").removesuffix("_filtered")
    for loc, row in iter_rows(f):
      sink.convert(f, loc, _rm_bench_row, row, domain)
      if sink.full:
        return sink.out
  return sink.out


def rm_bench_level(chosen_style: int, rejected_style: int) -> str:
  """RM-Bench difficulty of chosen[i] vs rejected[j]: a plainer chosen than rejected is "hard"."""
  if chosen_style < rejected_style:
    return "hard"
  return "normal" if chosen_style == rejected_style else "easy"


def rm_bench_pairs(example: PreferenceExample) -> list[PreferenceExample]:
  """The k x k chosen-vs-rejected comparisons of one RM-Bench example, as pairwise examples.

  Each carries `metadata["level"]` (easy / normal / hard, see `rm_bench_level`) and the two style
  indices; the domain score is the mean of the three level accuracies (= mean of the 9 cells).
  """
  k = example.metadata.get("num_chosen")
  if not isinstance(k, int) or example.n != 2 * k:
    raise ValueError(f"{example.source}/{example.id}: not an RM-Bench example (needs metadata.num_chosen = n/2)")
  pairs = []
  for i in range(k):
    for j in range(k):
      level = rm_bench_level(i, j)
      pairs.append(
        PreferenceExample(
          context=example.context,
          responses=(example.responses[i], example.responses[k + j]),
          rewards=(1.0, 0.0),
          source=example.source,
          category=example.category,
          id=f"{example.id}/c{i}r{j}",
          metadata={
            **example.metadata,
            "level": level,
            "chosen_style": i,
            "rejected_style": j,
            "parent_id": example.id,
          },
        )
      )
  return pairs


# --------------------------------------------------------------------------------------------------
# ReaLMistake: encrypted zip of jsonl, read in memory only.

REALMISTAKE_PASSWORD = b"open-realmistake"
"""Published by the authors in the upstream README; the zip is kept encrypted at their request."""

_ZIP_ERRORS = (RuntimeError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError)


def _realmistake_row(row: dict[str, Any], member: str) -> PreferenceExample:
  label = row["error_label"]
  require(label in ("error", "no_error"), f"field 'error_label' must be 'error' or 'no_error', got {label!r}")
  meta_in = row.get("metadata") or {}
  require(isinstance(meta_in, dict), "field 'metadata' must be an object")
  parts = member.removesuffix(".jsonl").split("/")
  task, model = (parts[-2], parts[-1]) if len(parts) >= 2 else ("unknown", parts[-1])
  return PreferenceExample(
    context=as_str(row["input"], "input"),
    responses=(as_str(row["llm_response"], "llm_response"),),
    rewards=(0.0 if label == "error" else 1.0,),
    source=f"realmistake/{task}/{model}",
    category=task,
    id=str(meta_in.get("id", "")),
    metadata={
      "error_label": label,
      "label": 1 if label == "error" else 0,  # ROC-AUC positive class "error" (ours; the paper does not say)
      "error_categories": row.get("error_categories") or [],
      "human_explanation": row.get("human_explanation"),
      **{k: meta_in.get(k) for k in ("task_name", "task_source", "llm_response_model", "dataset", "difficulty")},
    },
  )


def read_realmistake(
  path: PathLike,
  *,
  password: bytes | None = REALMISTAKE_PASSWORD,
  include_examples: bool = False,
  on_error: OnError = "raise",
  limit: int | None = None,
) -> Examples:
  """ReaLMistake from `data.zip` (or the folder holding it), decrypted in memory, never on disk.

  The 900 benchmark instances; `include_examples` adds the release's 3 examples in `data/example.jsonl`.
  Reward 1.0 = no error, 0.0 = error; `metadata["label"]` is 1 for "error" (ROC-AUC positive class).
  """
  p = Path(path)
  if p.is_dir():
    p = p / "data.zip"
  try:
    archive = zipfile.ZipFile(binary_source(p))
  except (zipfile.BadZipFile, OSError) as e:
    raise DataError(f"cannot open zip: {e}", file=str(p)) from None
  sink = Sink(on_error, limit)
  with archive:
    members = sorted(n for n in archive.namelist() if n.endswith(".jsonl"))
    if not include_examples:
      members = [m for m in members if Path(m).name != "example.jsonl"]
    if not members:
      raise DataError("no .jsonl members in the zip", file=str(p))
    for member in members:
      try:
        text = archive.read(member, pwd=password).decode("utf-8")
      except _ZIP_ERRORS + (UnicodeDecodeError,) as e:
        hint = " (wrong password?)" if "password" in str(e).lower() else " (corrupt member?)"
        raise DataError(f"cannot read member {member!r}: {e}{hint}", file=str(p)) from None
      where = f"{p}[{member}]"
      sink.add_file(where)
      for loc, row in iter_jsonl_text(text, where):
        sink.convert(where, loc, _realmistake_row, row, member)
        if sink.full:
          return sink.out
  return sink.out
