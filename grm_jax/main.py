"""Entry point: `python -m grm_jax.main --config=experiments/<file>.py[:preset] --workdir=DIR` (or `grm-jax ...`;
`--config=<file>[:preset]` names an experiment file installed with the package, e.g. `--config=spct:smoke`).

The config file's `get_config(preset)` builds an `ml_collections.ConfigDict`; command-line
overrides (`--config.eval.k=8`) are applied by `config_flags`, which rejects a key the config
does not have. The config is then locked (no stage can invent a key) and the stages it lists run
in order, each as `grm_jax.stages.<name>.run(config, workdir)`. A stage listed as "<variant>/<name>" runs with the
config of `config.variants.<variant>` (overrides on top of this config, `configs.variant_config`) in
`<workdir>/<variant>/`: the baselines experiment trains the same pipeline with other templates that way.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

from absl import app, flags, logging

from grm_jax import configs, files, parallel
from grm_jax.errors import UserError, one_line
from grm_jax.train import tracking
from grm_jax.train.errors import Preempted, StageStopped

STAGES = ("rft", "grpo", "metarm", "btrm", "eval", "compare", "claims")

_CONFIG = configs.define_experiment_flag("config", "experiment file or name: experiments/eval.py:smoke, eval:smoke")
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (config snapshot, data, checkpoints, reports)")
flags.mark_flags_as_required(["config", "workdir"])
# Multi-process runs: with none of these, JAX's own cluster detection (Cloud TPU pods, SLURM, Open MPI) decides, and
# a plain machine runs as one process.
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator "
                                   "(jax.distributed.initialize)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes in the job (jax.distributed.initialize)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index, 0 .. num_processes - 1")


def run(config, workdir: str) -> dict:
  """Run every stage the config lists; returns {stage: its result}."""
  config = config.copy_and_resolve_references()
  config.stages = configs.stage_list(config.stages)
  config.lock()
  stages = tuple(config.stages)
  unknown = [s for s in stages if configs.split_stage(s)[1] not in STAGES]
  if unknown:
    raise ValueError(f"config.stages: unknown stage {unknown[0]!r}; known stages are {STAGES}")
  configs.validate(config)
  files.ensure_writable_dir(workdir)
  files.check_shared(workdir)
  files.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
  results = {}
  for name in stages:
    variant, stage = configs.split_stage(name)
    try:
      module = importlib.import_module(f"grm_jax.stages.{stage}")
    except ModuleNotFoundError as e:
      raise NotImplementedError(
        f"config.stages: stage {stage!r} is not implemented in this version of grm_jax (grm_jax/stages/{stage}.py)"
      ) from e
    stage_config, stage_workdir = config, workdir
    if variant is not None:
      stage_config = configs.variant_config(config, variant)
      stage_config.lock()
      stage_workdir = os.path.join(os.fspath(workdir), variant)
      files.makedirs(stage_workdir)
    logging.info("stage %s: start", name)
    start = time.perf_counter()
    results[name] = module.run(stage_config, stage_workdir)
    seconds = time.perf_counter() - start
    logging.info("stage %s: done in %.0f s", name, seconds)
    # One line per stage and invocation (a skipped stage shows as a few seconds), so a resumed run's history stays.
    line = {"stage": name, "seconds": round(seconds, 1), "end": time.strftime("%Y-%m-%dT%H:%M:%S")}
    files.append_jsonl(os.path.join(workdir, "timings.jsonl"), [line])
  return results


def _load_config_file(spec: str):
  path, _, preset = spec.partition(":")
  return configs.load_experiment(path).get_config(preset or None)


def _explain(argv: list[str], error: Exception) -> str:
  """Turn a flag-parsing failure into a message that names the file, preset or key."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None:
    return f"{error}"
  try:
    config = _load_config_file(spec)
  except Exception as e:  # the experiment file's own message (unknown preset, bad path, ...)
    return f"--config={spec}: {e}"
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config.") :].split("=", 1)[0]
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
      if not hasattr(node, "keys") or part not in node.keys():
        where = ".".join(parts[:i]) or "(top level)"
        known = sorted(node.keys()) if hasattr(node, "keys") else []
        return f"{arg}: unknown config key {key!r} in {spec} ('{part}' is not under {where}; keys there: {known})"
      node = node[part]
  return f"{spec}: {error}"


def _parse_flags(argv: list[str]):
  # First, before an experiment file or anything else can start a JAX backend: no libtpu errors without a TPU.
  parallel.pin_cpu_without_tpu()
  try:
    return flags.FLAGS(argv)
  except Exception as e:
    print(f"grm_jax.main: {_explain(argv, e)}", file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; pass settings as --config.<key>=<value>")
  try:
    config = _CONFIG.value  # config_flags loads the file lazily: errors surface on first use
    config.keys()
  except Exception as e:
    print(f"grm_jax.main: {_explain(sys.argv, e)}", file=sys.stderr)
    sys.exit(2)
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if not files.is_writer():
    logging.set_verbosity(logging.WARNING)  # one process tells the story; the others speak up only for problems
  execute(config, _WORKDIR.value)


def execute(config, workdir: str) -> None:
  """The command once its flags are parsed: check the config and the workdir, run the stages, print the summary.
  A user's mistake (a config value, `errors.UserError`: a path, a file, a model, a data row, an unreachable
  workdir) ends the process with one line on stderr and exit status 2; a preemption with 143; a stopped stage
  with 1; anything else is a bug and keeps its traceback."""
  try:
    config.stages = configs.stage_list(config.stages)
    configs.validate(config)
    files.ensure_writable_dir(workdir)
  except (ValueError, UserError) as e:
    _user_error(e)
  tracking.start(config.get("logging", {}), workdir, config.to_dict())
  try:
    results = run(config, workdir)
  except UserError as e:  # a path, file, model or data row the user gave: one line, exit 2, as a config mistake
    _user_error(e)
  except Preempted as e:
    print(f"grm_jax.main: {e}", file=sys.stderr)
    sys.exit(143)
  except StageStopped as e:
    print(f"grm_jax.main: {e}", file=sys.stderr)
    sys.exit(1)
  finally:
    tracking.finish()
  if files.is_writer():
    summary = {k: v.get("summary", v) if isinstance(v, dict) else v for k, v in results.items()}
    print(files.dumps(_without_outcomes(summary), indent=2, default=str)[:4000])


def _user_error(e: BaseException) -> None:
  """A user's mistake: its message on one line, exit status 2, no traceback (tracebacks are for bugs)."""
  print(f"grm_jax.main: {one_line(e)}", file=sys.stderr)
  sys.exit(2)


def _without_outcomes(x):
  """The run's summary for the terminal: per-item outcome lists (in results.json) would fill it with numbers."""
  if isinstance(x, dict):
    return {k: _without_outcomes(v) for k, v in x.items() if k != "outcomes"}
  if isinstance(x, list):
    return [_without_outcomes(v) for v in x]
  return x


def cli():
  """The `grm-jax` console script (setup.py's entry_points): the same as `python -m grm_jax.main`."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  cli()
