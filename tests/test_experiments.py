"""Every experiment file x preset builds, validates, and (shrunk to a tiny model) runs its stages.

Presets must not rot: each is built, checked by `configs.validate` against the device counts it targets (`TARGETS`:
one CPU device, its GPU count, or its TPU slice's chips as `grm_jax.aot` counts them), and then run end to end with
`configs.smoke` (tiny:<family> of the preset's model family, a few items, 1-2 steps) through `main.run`, the same
path as the CLI (slow tier).
"""

import importlib.util
import json
import os

import pytest

from grm_jax import configs, main, parallel
from grm_jax.aot import hardware
from grm_jax.stages import common
from grm_jax.stages import eval as eval_stage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ("spct", "rft", "grpo", "metarm", "btrm", "eval", "baselines", "science", "ablations")


def load(name):
  spec = importlib.util.spec_from_file_location(f"experiment_{name}", os.path.join(ROOT, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


CASES = [(f, p) for f in FILES for p in load(f).PRESETS]
FAMILY = {"gemma2": "gemma2", "qwen2": "qwen2"}

# The devices each preset is written for, as its docstring and docs/scaling.md state them: a CPU run is one device
# (JAX's CPU backend), a GPU preset its GPU count, a TPU preset its slice's chips as `grm_jax.aot` counts them
# (`hardware.parse_slice`, what `python -m grm_jax.aot --topology=...` validates against), with the overrides the
# docs' command for that slice passes. A preset missing here fails: a new preset states its target.
CPU = 1
SLICE_OVERRIDES = {  # docs/scaling/gemma2_2b_v5e-8.json, gemma2_2b_v4-8.json, qwen2_5_1_5b_v5e-8.json: their commands
  "v5e-8": {"rft.micro_batches": 4, "grpo.micro_batches": 8, "metarm.micro_batches": 4},
  "v4-8": {"rft.micro_batches": 8, "grpo.micro_batches": 16, "metarm.micro_batches": 8},
}
TARGETS = {
  **{(f, p): [("cpu", CPU, {})] for f, p in CASES if p in ("default", "default_lora", "smoke", "quick")},
  # One 80 GB GPU, or a v5e-8 / v4-8 slice with micro-batches that split over its chips.
  ("spct", "gemma2_2b"): [("1 GPU", 1, {}), *((s, hardware.parse_slice(s).chips, SLICE_OVERRIDES[s])
                                              for s in ("v5e-8", "v4-8"))],
  # One 40 GB GPU (Colab's A100), a v6e-1 as docs/scaling.md compiles it, or a v5e-8 with its micro-batches.
  ("spct", "qwen2_5_1_5b"): [("1 GPU", 1, {}), ("v6e-1", hardware.parse_slice("v6e-1").chips, {}),
                             ("v5e-8", hardware.parse_slice("v5e-8").chips, SLICE_OVERRIDES["v5e-8"])],
  # LoRA on one device: Gemma-2-9B on one 80 GB GPU (planned on one v5p chip, v5p-2), Qwen on a v5e-1 (16 GB).
  ("spct", "gemma2_9b_lora"): [("1 GPU", 1, {}), ("v5p-2", hardware.parse_slice("v5p-2").chips, {})],
  ("spct", "qwen2_5_1_5b_lora"): [("1 GPU", 1, {}), ("v5e-1", hardware.parse_slice("v5e-1").chips, {})],
  # "mesh fsdp x tensor for a v5p-128 pod / 128 GPUs", unchanged.
  ("spct", "gemma2_27b"): [("v5p-128", hardware.parse_slice("v5p-128").chips, {}), ("128 GPUs", 128, {})],
  # The paper's baselines beside it, on the same pod (docs/scaling/baselines_gemma2_27b_v5p-128.json).
  ("baselines", "gemma2_27b"): [("v5p-128", hardware.parse_slice("v5p-128").chips, {}), ("128 GPUs", 128, {})],
  # The paper's protocol "on accelerators", no count stated: one device (the stage's judge batches pad to the mesh).
  ("eval", "paper"): [("1 device", 1, {})],
}


@pytest.mark.parametrize(("name", "preset"), CASES)
def test_preset_validates_on_its_target_devices(name, preset):
  """`configs.validate` with the target's real device count: a batch or micro-batch that does not split over the
  target mesh's data x fsdp devices fails here, not minutes into a run on the pod."""
  assert (name, preset) in TARGETS, f"experiments/{name}.py:{preset}: add its target devices to TARGETS"
  for target, devices, overrides in TARGETS[name, preset]:
    config = load(name).get_config(preset)
    for key, value in overrides.items():
      group, field = key.split(".")
      config[group][field] = value
    try:
      configs.validate(config, num_devices=devices)
    except ValueError as e:
      pytest.fail(f"experiments/{name}.py:{preset} on {target} ({devices} devices, overrides {overrides}): {e}")


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
  # ... and validated against that one device (its real mesh shape), not this process's 8 fake ones.
  batch_shards = configs._batch_shards
  monkeypatch.setattr(configs, "_batch_shards", lambda c, num_devices: batch_shards(c, 1))
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


def test_baselines_at_27b_are_the_spct_recipe_with_the_paper_templates():
  """baselines.py:gemma2_27b: spct.py:gemma2_27b's stages and settings, the App. G judge / no-principles templates,
  the BT RM at the preset's 8,192-token rows (not the CPU presets' 512 or configs.btrm's 1,024)."""
  config, spct = load("baselines").get_config("gemma2_27b"), load("spct").get_config("gemma2_27b")
  for group in ("model", "data", "rft", "grpo", "metarm", "eval"):
    assert config[group].to_dict() == spct[group].to_dict(), group
  assert config.btrm.max_len == spct.rft.max_len == spct.metarm.max_len == 8192
  templates = {v: dict(kv.split("=", 1) for kv in str(o).split(";"))["grm.template"]
               for v, o in config.variants.items()}
  assert templates == {"judge": "judge", "no_principles": "no_principles"}
  assert "eval@baseline" not in config.compare.systems and not config.eval.baseline  # the 27B run has no base column
  assert load("baselines").get_config("default").btrm.max_len == 512


def test_readme_shows_the_paper_recipe_table_of_the_preset():
  """README's table of `gemma2_27b` beside the paper is the preset's own (`recipe_table` reads its config)."""
  table = load("spct").recipe_table()
  assert table in open(os.path.join(ROOT, "README.md")).read()
  assert "| RFT optimisation | lr 5e-6, batch 1,024, 900 steps | lr 5e-06, batch 1024, 900 steps |" in table
