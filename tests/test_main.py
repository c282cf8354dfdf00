"""grm_jax.main: config errors name the key, file or preset; stages dispatch by name."""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from grm_jax import configs, main
from tests.xla_flags import FAST_COMPILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL = os.path.join(ROOT, "experiments", "eval.py")


def test_unknown_override_key_names_the_key_and_siblings():
  argv = ["prog", f"--config={EVAL}:smoke", "--workdir=/tmp/x", "--config.eval.sampling.kk=3"]
  msg = main._explain(argv, AttributeError("'kk'"))
  assert "unknown config key 'eval.sampling.kk'" in msg and "'k'" in msg and "max_new_tokens" in msg


def test_unknown_top_level_key():
  msg = main._explain(["p", f"--config={EVAL}", "--config.evl.k=3"], AttributeError("evl"))
  assert "'evl' is not under (top level)" in msg and "'eval'" in msg


def test_unknown_preset_and_missing_file():
  assert "unknown preset 'nope'" in main._explain(["p", f"--config={EVAL}:nope"], ValueError())
  assert "no such file" in main._explain(["p", "--config=experiments/none.py"], OSError())


def test_unknown_stage_fails_before_any_work(tmp_path):
  config = main._load_config_file(f"{EVAL}:smoke")
  config.stages = ("eval", "train_everything")
  with pytest.raises(ValueError, match="config.stages: unknown stage 'train_everything'"):
    main.run(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_config_is_locked_for_stages(tmp_path, monkeypatch):
  seen = {}

  class Stage:
    @staticmethod
    def run(config, workdir):
      with pytest.raises(AttributeError):
        config.eval.invented_key = 1
      seen["k"] = config.eval.sampling.k
      return {"ok": True}

  monkeypatch.setattr(main.importlib, "import_module", lambda name: Stage)
  config = main._load_config_file(f"{EVAL}:smoke")
  assert main.run(config, str(tmp_path)) == {"eval": {"ok": True}}
  assert seen["k"] == 2
  assert os.path.exists(tmp_path / "config.json")


def test_cli_exit_code_and_message(tmp_path):
  proc = subprocess.run(
    [sys.executable, "-m", "grm_jax.main", f"--config={EVAL}:smoke", f"--workdir={tmp_path}", "--config.eval.kk=3"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=120,
  )
  assert proc.returncode == 2
  assert "unknown config key 'eval.kk'" in proc.stderr


def _strict_json(text: str):
  def reject(constant):
    raise AssertionError(f"non-strict JSON constant {constant}")

  return json.loads(text, parse_constant=reject)


def test_a_diverging_stage_stops_with_an_error_and_writes_no_params(tmp_path):
  """RFT at learning rate 1e12: the first update blows the weights up, every later loss is NaN. The run must stop
  non-zero naming the stage, step and last checkpoint; no stage output is written; every checkpoint stays finite."""
  spct = os.path.join(ROOT, "experiments", "spct.py")
  proc = subprocess.run(
    [sys.executable, "-m", "grm_jax.main", f"--config={spct}:smoke", f"--workdir={tmp_path}",
     "--config.rft.optim.learning_rate=1e12", "--config.rft.epochs=10"],
    capture_output=True, text=True, cwd=ROOT, timeout=600,
    env={**os.environ, "XLA_FLAGS": FAST_COMPILE},  # one device, as a user's CPU run
  )
  assert proc.returncode == 1, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("grm_jax.main: rft/sft: step ") and "not finite in 3 steps in a row" in last, last
  assert "Last good checkpoint: step " in last and "Traceback" not in proc.stderr
  rft = tmp_path / "rft"
  assert not (rft / "final").exists() and not (rft / "done.json").exists()
  assert not (tmp_path / "grpo").exists()
  rows = [_strict_json(line) for line in (rft / "metrics.jsonl").read_text().splitlines()]
  assert rows[0]["skipped"] == 0.0 and [r["skipped"] for r in rows[-3:]] == [1.0, 1.0, 1.0]
  assert rows[-1]["loss"] is None  # NaN, written as strict JSON
  steps = sorted(int(p.name) for p in (rft / "checkpoints").iterdir() if p.name.isdigit())
  assert steps
  with ocp.StandardCheckpointer() as ckpt:
    for step in steps:
      state = ckpt.restore(rft / "checkpoints" / str(step) / "state")
      leaves = jax.tree.leaves(state["params"]) + jax.tree.leaves(state["opt_state"])
      assert leaves and all(np.isfinite(np.asarray(x)).all() for x in leaves), step


@pytest.mark.parametrize(("override", "message"), [
  ("--config.eval.sampling.k=0", "config eval.sampling.k=0: samples per item must be >= 1"),
  ("--config.eval.sampling.temperature=-0.5", "config eval.sampling.temperature=-0.5: must be >= 0"),
  ("--config.eval.sampling.top_p=0", "config eval.sampling.top_p=0.0: must be in (0, 1]"),
])
def test_a_bad_value_is_one_line_and_exit_2_before_any_model_loads(tmp_path, override, message):
  """User errors: one line naming the key, exit code 2, no traceback, nothing written (the model never loads)."""
  done = subprocess.run([sys.executable, "-m", "grm_jax.main", f"--config={EVAL}:smoke", f"--workdir={tmp_path}/w",
                         override], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2, done.stderr[-2000:]
  assert "Traceback" not in done.stderr
  assert f"grm_jax.main: {message}" in done.stderr
  assert not (tmp_path / "w" / "config.json").exists()


def test_comma_separated_stages_on_the_command_line(tmp_path, monkeypatch):
  seen = []

  class Stage:
    @staticmethod
    def run(config, workdir):
      seen.append(tuple(config.stages))
      return {}

  monkeypatch.setattr(main.importlib, "import_module", lambda name: Stage)
  config = main._load_config_file(f"{EVAL}:smoke")
  config.stages = ("eval,eval",)
  assert list(main.run(config, str(tmp_path))) == ["eval"]  # one result per name, run twice
  assert seen == [("eval", "eval")] * 2


def test_comma_separated_variant_stages_pass_the_checks_before_the_run():
  """`--config.stages=seed1/rft,seed1_np/grpo` is one string until split: main splits it before its config checks,
  which look each variant up by name."""
  config = main._load_config_file(os.path.join(ROOT, "experiments", "science.py") + ":smoke")
  config.stages = ("seed1/rft, seed1_np/grpo", "claims")
  with pytest.raises(ValueError, match="no variant"):
    configs.validate(config, num_devices=1)
  config.stages = configs.stage_list(config.stages)
  assert config.stages == ("seed1/rft", "seed1_np/grpo", "claims")
  configs.validate(config, num_devices=1)


# --------------------------------------------------------------------------------------------------
# A user's mistake in a file, a model, a data row or the workdir: one line naming it, exit 2, no traceback.


def _eval_config(tmp_path, model: str = "tiny:llama", data: str | None = None):
  """The eval smoke preset on one hand-written item (or `data`), so each case fails at the input it names."""
  if data is None:
    data = str(tmp_path / "good.jsonl")
    with open(data, "w") as f:
      f.write('{"prompt": "q", "responses": ["a", "b"], "best": 0}\n')
  config = main._load_config_file(f"{EVAL}:smoke")
  config.model.name = model
  config.eval.datasets = f"jsonl:{data}"
  config.eval.limit, config.eval.sampling.max_new_tokens = 1, 4
  return config


def _one_line_exit_2(capsys, config, workdir) -> str:
  with pytest.raises(SystemExit) as exit_:
    main.execute(config, str(workdir))
  err = capsys.readouterr().err
  assert exit_.value.code == 2, err
  assert "Traceback" not in err
  [line] = [x for x in err.splitlines() if x.startswith("grm_jax.main: ")]
  return line


def _write(path, text: str | bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(text.encode() if isinstance(text, str) else text)
  return str(path)


def _truncated_parquet(path) -> str:
  import pyarrow as pa  # noqa: PLC0415
  import pyarrow.parquet as pq  # noqa: PLC0415

  pq.write_table(pa.table({"prompt": ["q"] * 20, "chosen": ["a"] * 20, "rejected": ["b"] * 20}), path)
  data = open(path, "rb").read()
  return _write(path, data[: len(data) // 2])


@pytest.mark.parametrize(("case", "expected"), [
  ("missing_model", "{tmp}/nowhere: no such file or directory; pass an HF checkpoint directory"),
  ("unsupported_architecture", "{tmp}/arch/config.json: architecture ['FooForCausalLM'] is not supported"),
  ("broken_config_json", "{tmp}/broken/config.json: invalid JSON at line 1, column 24"),
  ("truncated_parquet", "{tmp}/t.parquet: cannot open parquet (truncated or not parquet?)"),
  ("bad_jsonl_row", "{tmp}/bad.jsonl, line 2: invalid JSON"),
  ("trl_row_without_rejected", "{tmp}/trl.jsonl, line 1: a TRL-style row (prompt / chosen / rejected) needs both "
                               "'chosen' and 'rejected': missing 'rejected'"),
])
def test_a_mistake_in_a_file_is_one_line_and_exit_2(tmp_path, capsys, case, expected):
  tmp = str(tmp_path)
  good = '{"prompt": "q", "responses": ["a", "b"], "best": 0}\n'
  config = {
    "missing_model": lambda: _eval_config(tmp_path, model=f"{tmp}/nowhere"),
    "unsupported_architecture": lambda: _eval_config(tmp_path, model=os.path.dirname(_write(
      f"{tmp}/arch/config.json", '{"architectures": ["FooForCausalLM"], "model_type": "foo"}'))),
    "broken_config_json": lambda: _eval_config(tmp_path, model=os.path.dirname(_write(
      f"{tmp}/broken/config.json", '{"model_type": "llama",'))),
    "truncated_parquet": lambda: _eval_config(tmp_path, data=_truncated_parquet(f"{tmp}/t.parquet")),
    "bad_jsonl_row": lambda: _eval_config(tmp_path, data=_write(f"{tmp}/bad.jsonl", good + '{"prompt": "q", "re\n')),
    "trl_row_without_rejected": lambda: _eval_config(
      tmp_path, data=_write(f"{tmp}/trl.jsonl", '{"prompt": "q", "chosen": "a"}\n')),
  }[case]()
  line = _one_line_exit_2(capsys, config, tmp_path / "w")
  assert expected.format(tmp=tmp) in line, line


def test_an_uncached_hub_id_offline_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
  from huggingface_hub import constants  # noqa: PLC0415

  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
  line = _one_line_exit_2(capsys, _eval_config(tmp_path, model="nobody/no-such-model"), tmp_path / "w")
  assert "nobody/no-such-model: not in the Hugging Face cache" in line and "download" in line, line


class _DownBucket(MemoryFileSystem):
  """A gs:// that cannot be reached: the first request fails as a client without a network does (gcsfs's `exists`
  raises what aiohttp raised, unlike fsspec's default, which would answer False)."""
  protocol = ("gs", "gcs")

  def exists(self, path, **kwargs):
    raise ConnectionError(f"Cannot connect to host storage.googleapis.com:443 ssl:default [{path}]\n(more)")


class _HungBucket(MemoryFileSystem):
  """A gs:// whose client keeps retrying: the first request does not return."""
  protocol = ("gs", "gcs")

  def exists(self, path, **kwargs):
    time.sleep(30)


@pytest.fixture
def gs_as(monkeypatch):
  import importlib  # noqa: PLC0415

  from etils.epath import backend  # noqa: PLC0415

  registry = importlib.import_module("fsspec.registry")

  def use(cls):
    for proto in ("gs", "gcs"):
      monkeypatch.setitem(registry._registry, proto, cls)
    backend.fsspec_backend._get_filesystem.cache_clear()

  yield use
  backend.fsspec_backend._get_filesystem.cache_clear()


def test_an_unreachable_gs_workdir_fails_fast_in_one_line(tmp_path, capsys, gs_as):
  gs_as(_DownBucket)
  start = time.perf_counter()
  line = _one_line_exit_2(capsys, _eval_config(tmp_path), "gs://no-such-bucket/run")
  assert time.perf_counter() - start < 5
  assert line.startswith("grm_jax.main: --workdir=gs://no-such-bucket/run: cannot reach it (ConnectionError: Cannot "
                         "connect to host storage.googleapis.com:443"), line
  assert "gcloud auth application-default login" in line


def test_a_gs_workdir_that_does_not_answer_stops_after_the_deadline(gs_as):
  from grm_jax import errors, files  # noqa: PLC0415

  gs_as(_HungBucket)
  start = time.perf_counter()
  with pytest.raises(errors.Unreachable, match=r"--workdir=gs://slow/run: no answer from the object store in 0 s"):
    files.check_reachable("gs://slow/run", seconds=0.3)
  assert time.perf_counter() - start < 3


@pytest.mark.slow
def test_the_command_line_reports_a_broken_config_json_in_one_line(tmp_path):
  """The same through `python -m grm_jax.main` (absl's app.run): exit 2, one line, no traceback."""
  model = os.path.dirname(_write(f"{tmp_path}/broken/config.json", '{"model_type": "llama",'))
  data = _write(f"{tmp_path}/good.jsonl", '{"prompt": "q", "responses": ["a", "b"], "best": 0}\n')
  done = subprocess.run([sys.executable, "-m", "grm_jax.main", f"--config={EVAL}:smoke", f"--workdir={tmp_path}/w",
                         f"--config.model.name={model}", f"--config.eval.datasets=jsonl:{data}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  assert "Traceback" not in done.stderr
  assert done.stderr.strip().splitlines()[-1] == (
    f"grm_jax.main: {model}/config.json: invalid JSON at line 1, column 24: Expecting property name enclosed in "
    "double quotes; fix the file or re-download the checkpoint's config.json")
