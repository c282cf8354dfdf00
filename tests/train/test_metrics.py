"""MetricsWriter: JSONL round trip, resume truncation, scalar conversion."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.files import read_jsonl
from grm_jax.train.metrics import MetricsWriter


class _Bar:
  def __init__(self):
    self.postfix = None

  def set_postfix(self, d, refresh=True):
    self.postfix = d


def test_write_read_and_conversion(tmp_path):
  path = tmp_path / "sub" / "metrics.jsonl"
  bar = _Bar()
  with MetricsWriter(str(path), tensorboard_dir=str(tmp_path / "tb"), pbar=bar) as w:
    rec = w.write(1, {"loss": jnp.float32(0.5), "acc": np.float64(0.25), "n": np.int32(3), "lr": 1e-3})
    w.write(2, {"loss": jnp.array([1.5]), "nan": float("nan")})
    assert rec == {"step": 1, "loss": 0.5, "acc": 0.25, "n": 3.0, "lr": 1e-3}
    assert all(type(v) is float for k, v in rec.items() if k != "step")
    assert bar.postfix == {"loss": "1.5", "nan": "nan"}
    # Flushed per record: readable while the writer is still open.
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    with pytest.raises(ValueError, match="scalar"):
      w.write(3, {"v": jnp.ones(2)})
  rows = read_jsonl(path)
  assert rows[0] == rec
  # Strict JSON on disk: NaN is null (a strict parser rejects the bare NaN that json.dumps writes by default).
  assert rows[1]["nan"] is None and rows[1]["loss"] == 1.5
  def strict(constant):
    raise AssertionError(f"non-strict JSON constant {constant}")

  for line in path.read_text().splitlines():
    json.loads(line, parse_constant=strict)


def test_resume_drops_later_steps_and_torn_line(tmp_path):
  path = tmp_path / "m.jsonl"
  with MetricsWriter(str(path)) as w:
    for s in range(1, 9):
      w.write(s, {"loss": float(s)})
  with open(path, "a") as f:
    f.write('{"step": 9, "lo')  # killed mid-write
  with MetricsWriter(str(path), resume_from_step=6) as w:
    w.write(7, {"loss": 70.0})
  rows = read_jsonl(path)
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
  assert rows[-1]["loss"] == 70.0
  assert all(json.loads(line) for line in path.read_text().splitlines())


def test_without_resume_appends(tmp_path):
  path = tmp_path / "m.jsonl"
  with MetricsWriter(str(path)) as w:
    w.write(1, {"a": 1.0})
  with MetricsWriter(str(path)) as w:
    w.write(2, {"a": 2.0})
  assert [r["step"] for r in read_jsonl(path)] == [1, 2]


def event_scalars(data: bytes) -> list[tuple[str, int, float]]:
  """(tag, step, value) of every scalar in one TensorBoard event file (TFRecord framing: length, its CRC, the Event
  proto, its CRC)."""
  from tensorboardX.proto import event_pb2  # noqa: PLC0415

  out, pos = [], 0
  while pos < len(data):
    n = int.from_bytes(data[pos : pos + 8], "little")
    event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
    pos += 12 + n + 4
    out += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
  return out


def _events(folder):
  """Every scalar of the TensorBoard event files under `folder`."""
  return [e for path in sorted(folder.rglob("events.out.tfevents.*")) for e in event_scalars(path.read_bytes())]


def test_tensorboard_events_are_written(tmp_path):
  """tensorboardX is a dependency: every finite scalar also goes to TensorBoard, under its step."""
  with MetricsWriter(str(tmp_path / "metrics.jsonl"), tensorboard_dir=str(tmp_path / "tb")) as w:
    w.write(1, {"loss": 0.5, "nan": float("nan")})
    w.write(2, {"loss": 0.25})
  assert _events(tmp_path / "tb") == [("loss", 1, 0.5), ("loss", 2, 0.25)]
