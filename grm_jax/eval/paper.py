"""The paper's headline comparison: its Overall score and its reported Table 2 rows, beside ours.

The paper (arXiv 2504.02495v3, §5.1 and Table 2) reports four columns, RewardBench (RB), PPE-Preference (PPE-P),
PPE-Correctness (PPE-C) and RMB, and an Overall that is their plain mean (ReaLMistake is reported apart, Table 13,
and is not in it): DeepSeek-GRM-27B greedy has (86.0 + 64.7 + 59.8 + 69.0) / 4 = 69.875, printed 69.9.
`overall` is that formula, the one place it is written.

Our numbers come from one evaluation run: RB is the `rewardbench` data set's "overall", PPE-P and PPE-C the
`ppe` data set's "preference" and "correctness" (one data set holds both parts), RMB the `rmb` data set's
"overall" (`eval.metrics`). Each is the metric's **tie-expected** value ("<metric>_expected": an argmax tie among
m responses that holds the true best counts 1/m, the exact mean over the paper's random tie-breaks), not one draw
of the tie-break, so the Overall carries no tie-break noise; results that predate the tie-expected values fall back
to the drawn ones and the row says so ("ties": "random"). A part whose benchmark was not evaluated, or was
evaluated only in part (fewer than the four RewardBench sections, the five PPE-Correctness subsets or the four RMB
parts the score averages: `COMPLETE`), is missing, and then there is no Overall: the row says which parts are
missing instead of averaging the rest. Our values are fractions, as everywhere in results.json; the paper's are
the percentages it prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

PARTS: dict[str, tuple[str, str]] = {
  "RB": ("rewardbench", "overall"),
  "PPE-P": ("ppe", "preference"),
  "PPE-C": ("ppe", "correctness"),
  "RMB": ("rmb", "overall"),
}
"""Paper column -> (our benchmark, its metric)."""

COLUMNS = (*PARTS, "Overall")

COMPLETE = {"RB": ("n_sections", 4), "PPE-C": ("n_correctness_subsets", 5), "RMB": ("n_parts", 4)}
"""Column -> the count its benchmark's metrics carry that says whether the score averages everything the paper's
does (RewardBench's 4 sections, PPE's 5 correctness subsets of Table 9, RMB's 4 parts)."""

SOURCE = "arXiv 2504.02495v3, Table 2"

TABLE2: tuple[dict[str, Any], ...] = (
  # Reproduced baselines, all on Gemma-2-27B, greedy.
  {"model": "LLM-as-a-Judge", "setting": "greedy", "RB": 83.4, "PPE-P": 64.2, "PPE-C": 58.8, "RMB": 64.8,
   "Overall": 67.8},
  {"model": "DeepSeek-BTRM-27B", "setting": "greedy", "RB": 81.7, "PPE-P": 68.3, "PPE-C": 66.7, "RMB": 57.9,
   "Overall": 68.6},
  {"model": "CLoud-Gemma-2-27B", "setting": "greedy", "RB": 82.0, "PPE-P": 67.1, "PPE-C": 62.4, "RMB": 63.4,
   "Overall": 68.7},
  {"model": "DeepSeek-PairRM-27B", "setting": "greedy", "RB": 87.1, "PPE-P": 65.8, "PPE-C": 64.8, "RMB": 58.2,
   "Overall": 69.0},
  # The paper's GRMs.
  {"model": "DeepSeek-GRM-27B-RFT", "setting": "greedy", "RB": 84.5, "PPE-P": 64.1, "PPE-C": 59.6, "RMB": 67.0,
   "Overall": 68.8},
  {"model": "DeepSeek-GRM-27B", "setting": "greedy", "RB": 86.0, "PPE-P": 64.7, "PPE-C": 59.8, "RMB": 69.0,
   "Overall": 69.9},
  {"model": "DeepSeek-GRM-27B", "setting": "Voting@32", "RB": 88.5, "PPE-P": 65.3, "PPE-C": 60.4, "RMB": 69.7,
   "Overall": 71.0},
  {"model": "DeepSeek-GRM-27B", "setting": "MetaRM@32 (k_meta=16)", "RB": 90.4, "PPE-P": 67.2, "PPE-C": 63.2,
   "RMB": 70.3, "Overall": 72.8},
)
"""The paper's rows for our columns, in percent as printed (Voting and MetaRM at temperature 0.5, §5.1)."""


def overall(values: Mapping[str, float | None]) -> float | None:
  """The paper's Overall: mean of RB, PPE-P, PPE-C and RMB; None unless all four are there and finite."""
  parts = [values.get(p) for p in PARTS]
  if any(x is None or not math.isfinite(x) for x in parts):
    return None
  return float(sum(parts) / len(parts))


def parts_of(metrics: Mapping[str, Mapping[str, float] | None]) -> tuple[dict[str, float | None], list[str], str]:
  """(column -> value or None, why each missing one is missing, "expected" or "random": which values were used)
  from benchmark -> its metrics of one column. Each value is the tie-expected one ("<metric>_expected") where the
  metrics carry it, else the drawn one (results from before the tie-expected values)."""
  values: dict[str, float | None] = {}
  missing: list[str] = []
  drawn = False
  for column, (bench, name) in PARTS.items():
    m = metrics.get(bench)
    value = None
    if m is not None:
      value = m.get(f"{name}_expected")
      if value is None and m.get(name) is not None:
        value, drawn = m.get(name), True
    if m is None:
      why = f"{column} ({bench} not evaluated)"
    elif value is None or not math.isfinite(value):
      why = f"{column} (no {name} in {bench})"
    elif column in COMPLETE and m.get(COMPLETE[column][0], 0) < COMPLETE[column][1]:
      key, need = COMPLETE[column]
      why = f"{column} ({bench} has {m.get(key, 0):.0f} of {need} {key.removeprefix('n_').replace('_', ' ')})"
    else:
      why = None
    values[column] = None if why else float(value)
    if why:
      missing.append(why)
  return values, missing, "random" if drawn else "expected"


def _row(label: str, policy: str | None, metrics: Mapping[str, Mapping[str, float] | None]) -> dict[str, Any]:
  values, missing, ties = parts_of(metrics)
  return {"row": label, "policy": policy, **values, "Overall": overall(values), "missing": missing, "ties": ties}


def comparison(datasets: Mapping[str, Mapping[str, Any]], baseline: Mapping[str, Any] | None = None,
               policy: str | None = None) -> dict[str, Any] | None:
  """Our rows (k=1, Voting@k, MetaRM@k when present; the baseline's k=1 and Voting@k) in the paper's columns, with
  the paper's Table 2 rows; None when no data set of the run is one of the paper's four column benchmarks.

  `datasets` is results.json's "datasets" (each with "benchmark", "k", "metrics" {"k1", "voting", "meta"} and
  "meta_rm"); `baseline` its "baseline" (a "policy" and, per data set, "metrics" {"k1", "voting"}). When two data
  sets score the same benchmark, the first one is used.
  """
  wanted = {bench for bench, _ in PARTS.values()}
  used: dict[str, str] = {}
  for name, d in datasets.items():
    if d.get("benchmark") in wanted:
      used.setdefault(d["benchmark"], name)
  if not used:
    return None
  first = datasets[next(iter(used.values()))]
  k = first.get("k")
  k_meta = (first.get("meta_rm") or {}).get("k_meta")
  columns = [("k1", "k=1"), ("voting", f"Voting@{k}"), ("meta", f"MetaRM@{k} (k_meta={k_meta})")]

  def of(entries: Mapping[str, Any], column: str) -> dict[str, Mapping[str, float] | None]:
    return {bench: ((entries.get(name) or {}).get("metrics") or {}).get(column) for bench, name in used.items()}

  rows = []
  for column, label in columns:
    metrics = of(datasets, column)
    if any(m is not None for m in metrics.values()):
      rows.append(_row(f"ours {label}", policy, metrics))
  if baseline:
    for column, label in columns[:2]:
      metrics = of(baseline.get("datasets", {}), column)
      if any(m is not None for m in metrics.values()):
        rows.append(_row(f"baseline {label}", baseline.get("policy"), metrics))
  not_run = [f"{column} ({bench} not evaluated)" for column, (bench, _) in PARTS.items() if bench not in used]
  return {"columns": list(COLUMNS), "datasets": used, "missing": not_run, "rows": rows, "source": SOURCE,
          "units": "rows: fractions; paper: percent as printed", "paper": [dict(r) for r in TABLE2]}


def _pct(x: float | None, scale: float) -> str:
  return "–" if x is None or not math.isfinite(x) else f"{scale * x:.1f}"


def render(block: Mapping[str, Any] | None) -> list[str]:
  """Markdown lines: our rows beside the paper's for RB, PPE-P, PPE-C, RMB and Overall (empty if no block)."""
  if not block:
    return []
  header = "| row | " + " | ".join(COLUMNS) + " |"
  lines = [
    f"## Against the paper ({block.get('source', SOURCE)})",
    "",
    "Overall = mean of RB, PPE-P, PPE-C and RMB (paper §5.1; ReaLMistake is not in it), only when all four were "
    "evaluated in this run, in full. Our cells are tie-expected values (an argmax tie among m responses that holds "
    "the true best counts 1/m: the mean over the paper's random tie-breaks). The paper's rows are Gemma-2-27B "
    "models on the full benchmarks; its greedy rows decode at temperature 0, while our k=1 is one sample at the "
    "evaluation temperature. Percent.",
    "",
    header,
    "|---|" + "---:|" * len(COLUMNS),
  ]
  for r in block.get("rows", []):
    who = f" (`{r['policy']}`)" if r.get("policy") else ""
    lines.append(f"| **{r['row']}**{who} | " + " | ".join(_pct(r.get(c), 100) for c in COLUMNS) + " |")
  for r in block.get("paper", []):
    lines.append(f"| paper: {r['model']}, {r['setting']} | " + " | ".join(_pct(r.get(c), 1) for c in COLUMNS) + " |")
  lines.append("")
  notes = _missing_notes(block.get("rows", []), block.get("missing", []))
  if notes:
    lines += notes + [""]
  return lines


def _missing_notes(rows: Sequence[Mapping[str, Any]], not_run: Sequence[str]) -> list[str]:
  out = []
  if not_run:
    out.append("No Overall: not evaluated in this run: " + ", ".join(not_run) + ".")
  for r in rows:
    extra = [m for m in r.get("missing", []) if m not in not_run]
    if extra:
      out.append(f"No Overall for {r['row']}: missing " + ", ".join(extra) + ".")
    if r.get("ties") == "random":
      out.append(f"{r['row']}: these results carry no tie-expected values; its cells use one random tie-break.")
  return out
