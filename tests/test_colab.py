"""launch/colab.ipynb runs top to bottom outside Colab (install skipped) on the smoke preset."""

import ast
import json
import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "launch", "colab.ipynb")


def test_notebook_is_tidy():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code), "no outputs stored"
  assert nb.metadata.kernelspec.name == "python3"


def _notebook_names(*names):
  """The top-level functions and constants `names` of the notebook's code cells, defined without running the cells
  (they probe the accelerator in a subprocess and install packages)."""
  nb = nbformat.read(NOTEBOOK, as_version=4)
  scope = {"os": os}
  for cell in (c for c in nb.cells if c.cell_type == "code"):
    tree = ast.parse(cell.source)
    for node in tree.body:
      defined = [node.name] if isinstance(node, ast.FunctionDef) else [
        t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
      if set(defined) & set(names):
        exec(compile(ast.Module([node], type_ignores=[]), NOTEBOOK, "exec"), scope)  # noqa: S102
  return [scope[n] for n in names]


def test_checkpoints_on_drive_are_one_per_stage_and_final_only_is_one_save():
  """`final` relies on the training loop saving its last step whatever the cadence (train.loop.run_loop); a cadence
  of `every` steps is never reached."""
  from experiments import spct  # noqa: PLC0415
  from grm_jax import configs  # noqa: PLC0415

  flags, stages, every = _notebook_names("checkpoint_flags", "TRAINING_STAGES", "FINAL_ONLY_EVERY")
  drive = "/content/drive/MyDrive/grm_jax/spct"
  assert flags("auto", "/content/spct") == flags("preset", drive) == []  # off Drive: the preset's keep=2
  assert flags("auto", drive) == flags("last", "/tmp/x") == [f"--config.{s}.checkpoint.keep=1" for s in stages]
  final = flags("final", drive)
  with pytest.raises(ValueError, match="CHECKPOINTS_KEPT='all'"):
    flags("all", drive)
  # The overrides name keys every stage of the notebook's presets has, and a config with them validates.
  for preset in ("smoke", "default", "qwen2_5_1_5b"):
    c = spct.get_config(preset)
    for flag in final:
      key, value = flag.removeprefix("--config.").split("=")
      stage, _, name = key.split(".")
      assert name in c[stage].checkpoint, key
      c[stage].checkpoint[name] = int(value)
    assert all(c[s].checkpoint.keep == 1 and c[s].checkpoint.save_every == every for s in stages)
    if preset == "smoke":
      configs.validate(c, num_devices=1)  # the smoke run's one CPU device


# Slow tier: the same smoke pipeline also runs in the preset test; test_notebook_is_tidy checks the cells here.
@pytest.mark.slow
def test_notebook_runs_smoke_pipeline(tmp_path):
  workdir = tmp_path / "spct"
  env = dict(os.environ)
  # One CPU device for the pipeline: conftest's 8 fake devices would not divide the smoke batches (2-4 rows).
  env.update(XLA_FLAGS="", JAX_PLATFORMS="cpu", GRM_JAX_NOTEBOOK_SMOKE="1", GRM_JAX_NOTEBOOK_WORKDIR=str(workdir))
  env.pop("COLAB_RELEASE_TAG", None)
  # The "python3" kernel spec says `python -m ipykernel_launcher`; jupyter_client runs that with sys.executable,
  # so the kernel (and the pipeline it starts with its own sys.executable) uses this venv.
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
    nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}, allow_errors=False
  )
  try:
    client.execute(env=env)
  except nbclient.exceptions.CellExecutionError as e:  # show the failing cell's traceback (and pipeline log tail)
    pytest.fail(f"notebook cell failed:\n{str(e)[-6000:]}")
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
  assert not errors
  for rel in ("eval/report.md", "rft/stats.json", "grpo/metrics.jsonl"):
    assert (workdir / rel).exists(), rel
  assert "total" in json.loads((workdir / "rft" / "stats.json").read_text())
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
  assert "preset=smoke" in text and "RFT totals" in text and "GRPO:" in text
