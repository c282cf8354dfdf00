"""Every experiment file x preset builds, validates, and (shrunk to a tiny model) runs its stages.

Presets must not rot: each is built, checked by `configs.validate` against the device count it targets, and then
run end to end with `configs.smoke` (tiny:<family> of the preset's model family, a few items, 1-2 steps) through
`main.run`, the same path as the CLI.
"""

import importlib.util
import json
import os

import pytest

from grm_jax import configs, main, parallel
from grm_jax.stages import common
from grm_jax.stages import eval as eval_stage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ("spct", "rft", "grpo", "metarm", "btrm", "eval", "baselines", "science")


def load(name):
  spec = importlib.util.spec_from_file_location(f"experiment_{name}", os.path.join(ROOT, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


CASES = [(f, p) for f in FILES for p in load(f).PRESETS]
FAMILY = {"gemma2": "gemma2", "qwen2": "qwen2"}


@pytest.mark.parametrize(("name", "preset"), CASES)
def test_preset_builds_and_names_its_stages(name, preset):
  config = load(name).get_config(preset)
  assert {configs.split_stage(s)[1] for s in config.stages} <= set(main.STAGES)
  for variant, stage in map(configs.split_stage, config.stages):
    if variant is not None:
      assert variant in config.variants, f"experiments/{name}.py:{preset} runs {variant}/{stage} without the variant"
    group = stage
    assert group in config, f"experiments/{name}.py:{preset} runs {stage} without a config.{group} group"


# ~1-2 min each on 2 cores, so these run with `-m slow`; the default suite runs spct.py:smoke end to end through
# the CLI in tests/test_colab.py (the notebook) and tests/test_resume.py, and every stage's own test.
@pytest.mark.slow
@pytest.mark.parametrize(("name", "preset"), CASES)
def test_every_preset_runs_its_stages_shrunk(name, preset, tmp_path, monkeypatch):
  config = load(name).get_config(preset)
  family = next((f for f in FAMILY if f in preset), "llama")
  configs.smoke(config)
  config.model.name = f"tiny:{family}"
  config.model.dtype = "float32"
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1
  if "data" in config:
    config.data.train = config.data.test = "synthetic"
  if "eval" in config:
    config.eval.datasets, config.eval.limit = "synthetic", 2
  if "rft" in config and config.rft.general_data:  # a pod's path: a few chats of the same format stand in
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                      {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                             for i in range(8)))
    config.rft.general_data = str(chats)
  # One device (the smoke batches are 2-4 rows; the 8 fake devices are for the sharding tests).
  monkeypatch.setattr(common, "mesh_scope", lambda c: parallel.use_mesh(None))
  monkeypatch.setattr(configs, "_batch_shards", lambda c, num_devices: 1)
  monkeypatch.setattr(eval_stage, "load_model", lambda c: common.load_base(c))
  results = main.run(config, str(tmp_path))
  assert list(results) == list(config.stages)
  for variant, stage in map(configs.split_stage, config.stages):
    folder = tmp_path / variant if variant else tmp_path
    if stage == "eval":
      assert os.path.exists(folder / "eval" / "report.md")
    else:
      assert os.path.exists(folder / stage / "done.json"), (variant, stage)


def test_bad_batch_for_the_group_or_mesh_names_the_key():
  config = load("spct").get_config("smoke")
  with pytest.raises(ValueError, match=r"rft.batch_size=2 .* data x fsdp = 8 devices"):  # 8 fake devices here
    configs.validate(config)
  # One device (num_devices=1): only the group checks remain.
  config = load("spct").get_config("smoke")
  config.grpo.micro_batches = 3
  with pytest.raises(ValueError, match="grpo.micro_batches=3"):
    configs.validate(config, num_devices=1)
  config = load("spct").get_config("smoke")
  config.rft.batch_size = 3
  config.rft.micro_batches = 2
  with pytest.raises(ValueError, match="rft.batch_size=3"):
    configs.validate(config, num_devices=1)
  config = load("spct").get_config("smoke")
  config.grpo.group_size = 1
  with pytest.raises(ValueError, match="grpo.group_size=1"):
    configs.validate(config, num_devices=1)
  config = load("spct").get_config("smoke")
  for template in ("judge", "compact_judge", "no_principles", "compact_no_principles"):  # the baselines' names pass
    config.grm.template = template
    configs.validate(config, num_devices=1)
  config.grm.template = "single"  # the n = 1 training template is not a GRM template for n >= 2 items
  with pytest.raises(ValueError, match="grm.template='single'"):
    configs.validate(config, num_devices=1)


def test_readme_shows_the_paper_recipe_table_of_the_preset():
  """README's table of `gemma2_27b` beside the paper is the preset's own (`recipe_table` reads its config)."""
  table = load("spct").recipe_table()
  assert table in open(os.path.join(ROOT, "README.md")).read()
  assert "| RFT optimisation | lr 5e-6, batch 1,024, 900 steps | lr 5e-06, batch 1024, 900 steps |" in table
