"""The comparison stage: one table of every system the config names, on the same held-out items.

`run(config, workdir)` reads `config.compare.systems` ("label=results folder[@baseline];..."): each folder (relative to
the workdir) holds a `results.json` written by an evaluation (`eval`, or a variant's `judge/eval`) or by the
Bradley-Terry stage (`btrm`); `@baseline` takes that file's first baseline (the GRM before training), `@rft` (any
params name of `eval.baseline`) that baseline. It writes `compare/report.md` and
`compare/results.json` (`eval.comparison`). It trains and samples nothing, so it reruns whenever an upstream result
was made again (its fingerprint holds theirs).
"""

from __future__ import annotations

import os
from typing import Any

from grm_jax import files
from grm_jax.eval import comparison
from grm_jax.stages import common

STAGE_KEYS = ("compare",)


def run(config, workdir: str) -> dict[str, Any]:
  systems = comparison.parse_systems(str(config.compare.systems))
  upstream = sorted({folder for _, folder, _ in systems})  # each results folder is its stage's, with its done.json
  return common.run_stage(config, workdir, "compare", lambda out: _run(workdir, out, systems), keys=STAGE_KEYS,
                          upstream=upstream)


def _run(workdir: str, out: str, systems) -> dict[str, Any]:
  loaded = []
  for label, folder, baseline in systems:
    path = os.path.join(os.fspath(workdir), folder, "results.json")
    if not files.exists(path):
      raise FileNotFoundError(f"config compare.systems: {label!r} reads {path}, which does not exist; run the stage "
                              f"that writes it first (list it before 'compare' in config.stages)")
    results = files.read_json(path)
    if baseline and not comparison.baseline_part(results, baseline):
      raise ValueError(f"config compare.systems: {label!r} asks for the baseline {baseline!r} of {path}, which has "
                       "none such (set eval.baseline in that evaluation)")
    loaded.append((label, results, baseline))
  table = comparison.compare(loaded)
  seconds = common.stage_seconds(workdir)
  files.write_json(os.path.join(out, "results.json"), {**table, "stage_seconds": seconds})
  files.write_text(os.path.join(out, "report.md"), "\n".join(comparison.render(table, seconds)))
  return {"systems": table["systems"], "mismatched": table["mismatched"],
          "datasets": {name: {r["system"]: {c: r.get(c) for c, _ in comparison.COLUMNS if c in r} for r in rows}
                       for name, rows in table["datasets"].items()}}
