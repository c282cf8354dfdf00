"""grm_jax.files: strict JSON, whole-file writes, and a pipeline whose workdir and data live on gs:// (a fake bucket:
fsspec's in-memory file system registered for the gs protocol, which is how etils.epath reaches Cloud Storage)."""

import json
import os

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from experiments import eval as eval_experiment
from grm_jax import files, main
from grm_jax.data import PreferenceExample, write_examples


class FakeGCS(MemoryFileSystem):
  protocol = ("gs", "gcs")
  root_marker = ""


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
