"""grm_jax.files: strict JSON, whole-file writes, and a pipeline whose workdir and data live on gs:// (a fake bucket:
fsspec's in-memory file system registered for the gs protocol, which is how etils.epath reaches Cloud Storage)."""

import collections
import json
import os
import types

import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from experiments import eval as eval_experiment
from grm_jax import files, main
from grm_jax.data import PreferenceExample, write_examples
from grm_jax.stages.grpo import RolloutLog
from grm_jax.train.metrics import MetricsWriter
from tests.train.test_metrics import event_scalars


class FakeGCS(MemoryFileSystem):
  protocol = ("gs", "gcs")
  root_marker = ""
  writes: collections.Counter = collections.Counter()  # uploads per object: an object store has no append

  def _open(self, path, mode="rb", **kwargs):
    if "w" in mode or "a" in mode:
      FakeGCS.writes[self._strip_protocol(path)] += 1
    return super()._open(path, mode, **kwargs)


@pytest.fixture
def bucket(monkeypatch):
  import importlib  # noqa: PLC0415

  from etils.epath import backend  # noqa: PLC0415

  # The module (the package's `fsspec.registry` attribute is its read-only view); restored after the test, so gcsfs,
  # when installed, serves gs:// again.
  registry = importlib.import_module("fsspec.registry")
  for proto in ("gs", "gcs"):
    monkeypatch.setitem(registry._registry, proto, FakeGCS)
  backend.fsspec_backend._get_filesystem.cache_clear()
  name = f"gs://test-bucket-{os.getpid()}-{id(monkeypatch)}"
  yield name
  for key in [k for k in FakeGCS.store if k.startswith(name)]:
    del FakeGCS.store[key]
  for key in [k for k in FakeGCS.writes if k.startswith(name)]:
    del FakeGCS.writes[key]
  backend.fsspec_backend._get_filesystem.cache_clear()


def _strict(text: str):
  def reject(constant):
    raise AssertionError(f"non-strict JSON constant {constant}")

  return json.loads(text, parse_constant=reject)


def test_json_is_strict_and_numpy_aware(tmp_path):
  import numpy as np  # noqa: PLC0415

  path = tmp_path / "sub" / "x.json"
  files.write_json(path, {"nan": float("nan"), "inf": np.float32("inf"), "a": np.arange(3), "b": np.bool_(True)})
  assert _strict(path.read_text()) == {"nan": None, "inf": None, "a": [0, 1, 2], "b": True}
  assert not [p for p in os.listdir(tmp_path / "sub") if p != "x.json"]  # no temporary file left behind


def test_jsonl_append_and_torn_line(tmp_path, bucket):
  for root in (str(tmp_path), bucket):
    path = f"{root}/m.jsonl"
    files.append_jsonl(path, [{"step": 1}])
    files.append_jsonl(path, [{"step": 2, "loss": float("nan")}])
    assert files.read_jsonl(path) == [{"step": 1}, {"step": 2, "loss": None}]
  with open(tmp_path / "m.jsonl", "a") as f:
    f.write('{"step": 3, "lo')  # a process killed mid-append
  assert [r["step"] for r in files.read_jsonl(tmp_path / "m.jsonl")] == [1, 2]


def test_a_workdir_that_is_a_file_is_refused_with_its_name(tmp_path):
  target = tmp_path / "taken"
  target.write_text("")
  with pytest.raises(ValueError, match=f"--workdir={target} is a file"):
    files.ensure_writable_dir(target)


def test_evaluation_with_workdir_and_data_on_gs(bucket, tmp_path):
  """The eval stage reads its items from gs:// and writes config, timings, report, plots, judgements and results
  there; a rerun finds the results and reuses them."""
  local = tmp_path / "items.jsonl"
  items = [PreferenceExample(context=({"role": "user", "content": f"Say {w}."},), responses=(w, w.upper()),
                             rewards=(1.0, 0.0), id=f"i{i}", source="gs-test") for i, w in enumerate(("a", "b", "c"))]
  write_examples(items, local)
  files.write_bytes(f"{bucket}/data/items.jsonl", local.read_bytes())

  config = eval_experiment.get_config("smoke")
  config.model.name = "tiny:llama"
  config.eval.datasets = f"jsonl:{bucket}/data/items.jsonl"
  config.eval.limit, config.eval.sampling.max_new_tokens = 3, 8
  workdir = f"{bucket}/runs/eval"
  result = main.run(config, workdir)["eval"]
  name = config.eval.datasets
  assert result["datasets"][name]["num_items"] == 3

  written = {k[len(workdir) + 1 :] for k in FakeGCS.store if k.startswith(workdir + "/")}
  assert {"config.json", "timings.jsonl", "eval/results.json", "eval/report.md", "eval/scaling.png",
          "eval/position_bias.png", "eval/judgements.jsonl"} <= written, written
  stored = _strict(files.read_text(f"{workdir}/eval/results.json"))
  assert stored["datasets"][name]["num_items"] == 3
  assert files.path(f"{workdir}/eval/scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert len(files.read_jsonl(f"{workdir}/eval/judgements.jsonl")) == 3

  again = main.run(config, workdir)["eval"]
  assert again["seconds"] == stored["seconds"]  # reused, not evaluated again
  assert [r["stage"] for r in files.read_jsonl(f"{workdir}/timings.jsonl")] == ["eval", "eval"]


def _objects(prefix: str) -> dict[str, int]:
  """Uploads per object under `prefix` (path relative to it)."""
  return {k[len(prefix) + 1 :]: n for k, n in FakeGCS.writes.items() if k.startswith(prefix + "/")}


def _rollouts(step: int, items: int = 2, k: int = 3):
  """One GRPO step's batch and judgements as `RolloutLog.write` reads them (items x k rollouts of 2 responses)."""
  batch = [types.SimpleNamespace(source="hand", id=f"s{step}-{b}", n=2) for b in range(items)]
  j = types.SimpleNamespace(k=k, perms=np.zeros((items, k, 2), int), texts=[[f"t{step}.{b}.{s}" for s in range(k)]
                            for b in range(items)], valid=np.ones((items, k), bool), scores=np.ones((items, k, 2)))
  return batch, j, np.ones((items, k))


def test_grpo_rollouts_and_metrics_on_a_bucket_are_one_object_per_step_never_rewritten(bucket):
  """An object store has no append: each step's rollouts and metrics are one new object (`rollouts/step_*.jsonl`),
  uploaded once, and the log reads back whole and in order. A resumed run drops the objects of the steps it redoes."""
  out = f"{bucket}/w/grpo"
  log = RolloutLog(f"{out}/rollouts.jsonl")
  with MetricsWriter(f"{out}/metrics.jsonl") as metrics:
    for step in range(3):
      log.write(step, *_rollouts(step))
      metrics.write(step + 1, {"reward_mean": step / 2})
  prefix = out
  shards = [f"step_{s:09d}.jsonl" for s in (1, 2, 3)]
  assert _objects(prefix) == {**{f"rollouts/{n}": 1 for n in shards}, **{f"metrics/{n}": 1 for n in shards}}
  rows = files.read_jsonl(f"{out}/rollouts.jsonl")
  assert [(r["step"], r["item"], r["sample"]) for r in rows] == [
    (s + 1, f"hand/s{s}-{b}", i) for s in range(3) for b in range(2) for i in range(3)]
  assert files.read_jsonl(f"{out}/metrics.jsonl") == [{"step": s + 1, "reward_mean": s / 2} for s in range(3)]

  # Killed after step 3's logs but restored from the checkpoint of step 1: steps 2 and 3 are redone.
  resumed = RolloutLog(f"{out}/rollouts.jsonl")
  MetricsWriter(f"{out}/metrics.jsonl", resume_from_step=1).close()
  assert [r["step"] for r in files.read_jsonl(f"{out}/metrics.jsonl")] == [1]
  resumed.write(1, *_rollouts(1))
  assert sorted({r["step"] for r in files.read_jsonl(f"{out}/rollouts.jsonl")}) == [1, 2]
  assert len(files.read_jsonl(f"{out}/rollouts.jsonl")) == 12


def test_tensorboard_events_on_a_bucket_read_back(bucket):
  """TensorBoard events of a gs:// workdir go to the bucket (through epath, like every other file) and parse back."""
  with MetricsWriter(f"{bucket}/w/rft/metrics.jsonl", tensorboard_dir=f"{bucket}/w/rft/tb") as w:
    w.write(1, {"loss": 0.5, "nan": float("nan")})
    w.write(2, {"loss": 0.25})
  [event_file] = [k for k in FakeGCS.store if k.startswith(f"{bucket}/w/rft/tb/events.out.tfevents.")]
  assert event_scalars(files.path(event_file).read_bytes()) == [("loss", 1, 0.5), ("loss", 2, 0.25)]
