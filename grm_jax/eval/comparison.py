"""Several judges of the same held-out items in one table: the paper's baselines beside the SPCT GRM.

Each system's numbers come from its own evaluation results (`eval/results.json` of a GRM, `btrm/results.json` of the
Bradley-Terry RM, or one of a results file's `baselines`: the GRM before training, or after RFT alone). Per data set
the table gives the official metric in every column a system has: k=1 (one sample, or a scalar RM's score),
Voting@k (sum of k sampled scores; a pairwise judge's majority vote, paper Eq. 13), MetaRM@k and TokenProb@k (votes
weighted by the probability of the chosen index), each with its 95% bootstrap interval over items of the
tie-expected metric when the results carry it ("<metric>_ci95", `eval.metrics.official_with_interval`). A system
whose data selection differs (data set, item limit, subsample rule, seed) is flagged, since its items are then not
the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = (("k1", "k=1"), ("voting", "Voting@{k}"), ("meta", "MetaRM@{k}"), ("token_prob", "TokenProb@{k}"))
SELECTION_KEYS = ("limit", "subsample")
"""The eval settings (with the seed and the data set) that decide which items a system is scored on."""


def parse_systems(spec: str, key: str = "compare.systems") -> list[tuple[str, str, str]]:
  """`"label=dir;label=dir@baseline;label=dir@rft;..."` -> [(label, results folder relative to the workdir, part)]:
  part "" is the results' own columns, "baseline" their first baseline, any other name the baseline judged with
  those params (`eval.baseline`: "base", "rft")."""
  out = []
  for part in filter(None, (p.strip() for p in spec.split(";"))):
    label, sep, where = part.partition("=")
    label, where = label.strip(), where.strip()
    if not sep or not label or not where:
      raise ValueError(f"config {key}: part {part!r} is not 'label=results folder' (e.g. 'SPCT GRM=eval')")
    folder, at, which = where.partition("@")
    if at and not which.strip():
      raise ValueError(f"config {key}: part {part!r}: name a baseline after '@' ('baseline' for the first, or the "
                       "params it judged with: 'base', 'rft')")
    out.append((label, folder.strip("/"), which.strip()))
  if not out:
    raise ValueError(f"config {key}: no system to compare")
  labels = [s[0] for s in out]
  if len(set(labels)) != len(labels):
    raise ValueError(f"config {key}: a label is used twice in {labels}")
  return out


def _selection(results: Mapping[str, Any]) -> tuple:
  cfg = results.get("config") or {}
  ev = cfg.get("eval") or {}
  return (cfg.get("seed"), *(ev.get(k) for k in SELECTION_KEYS))


def _columns(metrics: Mapping[str, Any], metric: str) -> dict[str, Any]:
  """Each column's official value, and its interval as "<column>_ci95" when the results carry one."""
  out: dict[str, Any] = {}
  for c, _ in COLUMNS:
    m = metrics.get(c)
    if m:
      out[c] = m.get(metric)
      if m.get(f"{metric}_ci95") is not None:
        out[f"{c}_ci95"] = m[f"{metric}_ci95"]
  return out


def baseline_part(results: Mapping[str, Any], which: str) -> Mapping[str, Any] | None:
  """The baseline `which` of an evaluation's results ("baseline": the first; else the one judged with those
  params), or None when it has none such."""
  listed = [b for b in (results.get("baselines") or [results.get("baseline")]) if b]
  if which == "baseline":
    return listed[0] if listed else None
  return next((b for b in listed if b.get("policy") == which), None)


def system_rows(label: str, results: Mapping[str, Any], baseline: str = "") -> dict[str, dict[str, Any]]:
  """Data set -> {"system", "official_metric", "k", "num_items", one value per column it has (and "<column>_ci95"
  per interval)} for one system: the results' own columns, or with `baseline` those of that baseline part."""
  datasets = results.get("datasets") or {}
  rows = {}
  if baseline:
    base = baseline_part(results, baseline) or {}
    for name, b in (base.get("datasets") or {}).items():
      metric = b.get("official_metric")
      metrics = b.get("metrics") or {"k1": {metric: b.get("k1")}, "voting": {metric: b.get("voting")}}
      d = datasets.get(name) or {}
      rows[name] = {"system": label, "policy": base.get("policy"), "official_metric": metric, "k": d.get("k"),
                    "num_items": d.get("num_items"),
                    **_columns(metrics, metric)}
    return rows
  for name, d in datasets.items():
    metric = d.get("official_metric")
    metrics = d.get("metrics") or {}
    rows[name] = {"system": label, "policy": results.get("policy"), "official_metric": metric, "k": d.get("k"),
                  "num_items": d.get("num_items"),
                  **_columns(metrics, metric)}
  return rows


def compare(systems: Sequence[tuple[str, Mapping[str, Any], str]]) -> dict[str, Any]:
  """{"datasets": {name: [row per system that scored it]}, "mismatched": [labels whose item selection differs from the
  first system's], "systems": [labels]} from (label, results, baseline part or "") triples."""
  if not systems:
    raise ValueError("no system to compare")
  reference = _selection(systems[0][1])
  datasets: dict[str, list[dict[str, Any]]] = {}
  mismatched = []
  for label, results, baseline in systems:
    if _selection(results) != reference:
      mismatched.append(label)
    for name, row in system_rows(label, results, baseline).items():
      datasets.setdefault(name, []).append(row)
  for rows in datasets.values():
    counts = {r["num_items"] for r in rows if r.get("num_items") is not None}
    if len(counts) > 1:
      mismatched += [r["system"] for r in rows if r.get("num_items") != rows[0].get("num_items")]
  return {"systems": [s[0] for s in systems], "datasets": datasets, "mismatched": sorted(set(mismatched))}


def _pct(x: Any, ci: Any = None) -> str:
  """x in percent, with " (lo–hi)" when an interval is given."""
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "–"
  text = f"{100 * float(x):.1f}"
  if ci and len(ci) == 2 and all(v is not None and math.isfinite(v) for v in ci):
    text += f" ({100 * ci[0]:.1f}–{100 * ci[1]:.1f})"
  return text


def render(comparison: Mapping[str, Any], seconds: Mapping[str, float] | None = None) -> list[str]:
  """Markdown lines: one table per data set, systems as rows, the columns any of them has."""
  lines = ["# Baselines beside the SPCT GRM", ""]
  if comparison.get("mismatched"):
    lines += [f"**Not the same items**: {', '.join(comparison['mismatched'])} scored a different selection "
              "(data set, limit, subsample rule or seed) than the first system; their rows do not compare.", ""]
  for name, rows in comparison["datasets"].items():
    cols = [(c, title) for c, title in COLUMNS if any(c in r for r in rows)]
    k = next((r["k"] for r in rows if r.get("k")), None)
    metric = rows[0].get("official_metric")
    lines += [f"## {name} (official metric `{metric}`, %; k = {k})", "",
              "| system | params | items | " + " | ".join(t.format(k=k) for _, t in cols) + " |",
              "|---|---|---:|" + "---:|" * len(cols)]
    for r in rows:
      lines.append(f"| {r['system']} | {r.get('policy') or '–'} | {r.get('num_items') or '–'} | "
                   + " | ".join(_pct(r.get(c), r.get(f"{c}_ci95")) for c, _ in cols) + " |")
    lines.append("")
    if any(f"{c}_ci95" in r for r in rows for c, _ in cols):
      lines += ["(lo–hi): 95% percentile bootstrap interval over items of the tie-expected metric (argmax ties "
                "scored 1/m, their exact expectation); the value beside it breaks ties by one random draw.", ""]
  if seconds:
    lines += ["Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()), ""]
  return lines
