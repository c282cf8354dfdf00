"""The claims stage: the paper's orderings tested over several seeds' runs (`eval.claims`).

`run(config, workdir)` reads `config.claims`: `seeds` ("0,1,2") and the results folders of one seed's run, relative to
the workdir with "{seed}" for the seed: `grm` (the SPCT GRM's evaluation, with MetaRM@k and the baselines "base" and
"rft": `eval.baseline="base,rft"`), `without_principles` (the ablation's evaluation) and `scalar_rm` (the
Bradley-Terry stage). Every claim of `eval.claims.claims` at the GRM evaluation's k is tested from the per-item
outcomes of those results (a t-interval over the per-seed means, verdicts Holm-adjusted over the table at
family-wise error `family_alpha`); it writes `claims/results.json` (each claim's difference, interval, p-values,
verdicts and per-seed values; each system's per-seed numbers), `claims/report.md` and `claims/claims.png`. It trains
and samples nothing, so it reruns whenever an upstream result was made again.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from grm_jax import files
from grm_jax.eval import claims as claims_lib
from grm_jax.eval import report
from grm_jax.stages import common

STAGE_KEYS = ("claims", "rft.sampler")  # the sampler decides the principles claims' label
FOLDERS = ("grm", "without_principles", "scalar_rm")


def seeds(config) -> list[int]:
  text = str(config.claims.seeds)
  try:
    out = [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    raise ValueError(f"config claims.seeds={text!r}: not comma-separated integers (e.g. '0,1,2')") from None
  if not out or len(set(out)) != len(out):
    raise ValueError(f"config claims.seeds={text!r}: name each seed once, at least one")
  return out


def folders(config) -> dict[str, list[str]]:
  """Each results folder pattern of `config.claims`, expanded for every seed."""
  out = {}
  for key in FOLDERS:
    pattern = str(config.claims[key])
    if "{seed}" not in pattern:
      raise ValueError(f"config claims.{key}={pattern!r}: the folder must name the seed as {{seed}} (e.g. "
                       "'seed{seed}/eval')")
    out[key] = [pattern.format(seed=s) for s in seeds(config)]
  return out


def run(config, workdir: str) -> dict[str, Any]:
  upstream = sorted({f for fs in folders(config).values() for f in fs})
  return common.run_stage(config, workdir, "claims", lambda out: _run(config, workdir, out), keys=STAGE_KEYS,
                          upstream=upstream)


def _run(config, workdir: str, out: str) -> dict[str, Any]:
  c = config.claims

  def load(seed: int, pattern: str) -> dict[str, Any]:
    path = os.path.join(os.fspath(workdir), pattern.format(seed=seed), "results.json")
    if not files.exists(path):
      raise FileNotFoundError(f"config claims: {path} does not exist; run the stage that writes it first (list it "
                              "before 'claims' in config.stages)")
    return files.read_json(path)

  first = seeds(config)[0]
  grm_results = load(first, str(c.grm))
  k_max = max(int(d["k"]) for d in grm_results["datasets"].values())
  # The synthetic critic writes the same "Specific Criteria:" line for every item: label the principles claims.
  fixed = "rft" in config and str(config.rft.sampler) == "synthetic-critic"
  claim_list = claims_lib.claims(k_max, str(c.grm), str(c.without_principles), str(c.scalar_rm), fixed)
  result = claims_lib.check_claims(seeds(config), load, claim_list, alpha=float(c.family_alpha))
  result["k"] = k_max
  result["curve"] = {str(s): _curve(load(s, str(c.grm))) for s in seeds(config)}
  seconds = common.stage_seconds(workdir)
  files.write_json(os.path.join(out, "results.json"), {**result, "stage_seconds": seconds})
  files.write_text(os.path.join(out, "report.md"),
                   "\n".join(claims_lib.render(result, sum(seconds.values()) if seconds else None)))
  report.plot_claims(result, os.path.join(out, "claims.png"))
  return {"verdicts": {r["id"]: r["verdict"] for r in result["claims"]}}


def _curve(results: dict[str, Any]) -> dict[str, list[list[float]]]:
  """{"voting": [[k, value], ...], "meta": ...} of the first data set's scaling rows (tie-expected), for the plot."""
  d = next(iter(results["datasets"].values()))
  curve: dict[str, list[list[float]]] = {}
  for row in d.get("scaling", []):
    for column in ("voting", "meta"):
      value = row.get(f"{column}_expected", row.get(column))
      if value is not None:
        curve.setdefault(column, []).append([float(row["k"]), float(value)])
  return curve


def rescore_folder(folder: str, fixed_principles: bool = False) -> dict[str, Any]:
  """Rewrite a claims folder (results.json, report.md, claims.png) with today's method from its stored per-seed
  means (`eval.claims.rescore`): no stage reruns. `fixed_principles`: that run's RFT used the synthetic critic."""
  path = os.path.join(folder, "results.json")
  if not files.exists(path):
    raise FileNotFoundError(f"{path} does not exist; name a claims folder (one with the claims stage's results.json)")
  result = claims_lib.rescore(files.read_json(path), fixed_principles=fixed_principles)
  seconds = result.get("stage_seconds")
  files.write_json(path, result)
  files.write_text(os.path.join(folder, "report.md"),
                   "\n".join(claims_lib.render(result, sum(seconds.values()) if seconds else None)))
  report.plot_claims(result, os.path.join(folder, "claims.png"))
  return result


if __name__ == "__main__":
  # python -m grm_jax.stages.claims <claims folder> [--template-only-principles]
  args = [a for a in sys.argv[1:] if not a.startswith("--")]
  if len(args) != 1:
    raise SystemExit("usage: python -m grm_jax.stages.claims <claims folder> [--template-only-principles]")
  rescore_folder(args[0], "--template-only-principles" in sys.argv)
