"""Every file the pipeline reads or writes outside orbax: paths that may be `gs://…`, one writer, strict JSON.

Paths go through `etils.epath` (the library orbax uses), so a workdir or a data path on Cloud Storage (`gs://…`,
with `gcsfs` installed: the `tpu` / `gpu` extras) works like a local one.

One writer. In a multi-process run (a TPU pod, a SLURM job) every process executes the same stage code, but only
process 0 touches the files: the write functions here do nothing on the others and then hold every process at a
barrier until the write is done, so a process that reads the file next (the next stage's input, a done marker) sees
it. Writes therefore must be reached by every process in the same order, which the stages do by running the same
code everywhere; `sync_global_devices` checks the barrier names agree and fails loudly if a process diverged.
Orbax checkpoints coordinate their own processes and do not come through here.

Strict JSON: NaN and infinities are written as null (`jsonable`), never as the bare `NaN` most JSON readers reject.
Local files are written to a temporary name and renamed into place, so a killed run never leaves half a file that a
rerun would trust; an object on Cloud Storage appears whole when its upload completes.
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
from etils import epath

from grm_jax.errors import Unreachable, one_line

PathLike = str | os.PathLike


def path(p: PathLike) -> epath.Path:
  return epath.Path(p)


def is_remote(p: PathLike) -> bool:
  """A path of an object store (gs://, s3://, ...), where there is no rename-into-place and no append."""
  return "://" in os.fspath(p)


def absolute(p: PathLike) -> epath.Path:
  """The absolute form of a local path (orbax wants one); a remote path as it is."""
  return epath.Path(p) if is_remote(p) else epath.Path(os.path.abspath(os.fspath(p)))


def is_writer() -> bool:
  """Process 0 writes every file (and shows progress bars and INFO logs)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (no-op in a single-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415 - only multi-process runs need it

    multihost_utils.sync_global_devices(name)


def exists(p: PathLike) -> bool:
  return epath.Path(p).exists()


def isdir(p: PathLike) -> bool:
  return epath.Path(p).is_dir()


def makedirs(p: PathLike) -> epath.Path:
  """Creates a folder (process 0; the others wait for it)."""
  out = epath.Path(p)
  if is_writer():
    out.mkdir(parents=True, exist_ok=True)
  barrier(f"makedirs {out}")
  return out


def remove(p: PathLike) -> None:
  """Deletes a file or a folder tree if it exists (process 0; the others wait)."""
  target = epath.Path(p)
  if is_writer() and target.exists():
    if target.is_dir():
      target.rmtree()
    else:
      target.unlink()
  barrier(f"remove {target}")


REACH_SECONDS = 15.0
"""How long the first look at a remote workdir may take before the run stops (gcsfs retries a failing connection
with backoff for about a minute before it raises)."""


def check_reachable(p: PathLike, seconds: float = REACH_SECONDS) -> None:
  """Fails fast, in one line (`errors.Unreachable`), when the object store of a remote workdir does not answer: no
  network, no credentials, no such bucket, or no file system for the scheme (gcsfs not installed). The first look
  runs in a helper thread so a client that retries for a minute cannot hold the run; a hung thread dies with the
  process."""
  outcome: dict[str, Any] = {}

  def look() -> None:
    try:
      outcome["exists"] = epath.Path(p).exists()
    except BaseException as e:  # noqa: BLE001 - reported below, in the main thread
      outcome["error"] = e

  thread = threading.Thread(target=look, name="check_reachable", daemon=True)
  thread.start()
  thread.join(seconds)
  todo = ("check the bucket name, the network and the credentials (gcloud auth application-default login); gs:// "
          "needs gcsfs: pip install 'grm_jax[gcs]'")
  if thread.is_alive():
    raise Unreachable(f"--workdir={p}: no answer from the object store in {seconds:.0f} s; {todo}")
  if "error" in outcome:
    e = outcome["error"]
    raise Unreachable(f"--workdir={p}: cannot reach it ({type(e).__name__}: {one_line(e)[:300]}); {todo}")


def ensure_writable_dir(p: PathLike) -> epath.Path:
  """Creates the folder and checks it is one (not a file), with a one-line error a user can act on."""
  out = epath.Path(p)
  if is_remote(p):
    check_reachable(p)
  if out.exists() and not out.is_dir():
    raise ValueError(f"--workdir={p} is a file; give a folder (it is created if missing)")
  return makedirs(out)


def check_shared(workdir: PathLike) -> None:
  """In a multi-process run, fails unless every process sees the files process 0 writes in `workdir` (a gs:// path
  or a shared file system): a per-host local folder would give each process different stage inputs."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # noqa: PLC0415

  token = np.frombuffer(uuid.uuid4().bytes, np.uint8)
  token = np.asarray(multihost_utils.broadcast_one_to_all(token))
  probe = epath.Path(workdir) / ".shared_check"
  write_text(probe, token.tobytes().hex())
  seen = probe.read_text().strip() if probe.exists() else None
  ok = np.asarray(multihost_utils.process_allgather(np.asarray([seen == token.tobytes().hex()])))
  if not ok.all():
    bad = [i for i, v in enumerate(ok.reshape(-1)) if not v]
    raise ValueError(f"--workdir={workdir} is not shared between the processes (processes {bad} do not see the file "
                     "process 0 wrote there): use a gs://… path or a folder on a shared file system")


# --------------------------------------------------------------------------------------------------
# Reading.


def read_text(p: PathLike) -> str:
  return epath.Path(p).read_text()


def read_json(p: PathLike) -> Any:
  return json.loads(read_text(p))


def shards(p: PathLike) -> epath.Path:
  """The folder of a JSONL log's per-step objects on an object store: `grpo/rollouts.jsonl` -> `grpo/rollouts/`
  (`append_jsonl(..., shard=...)` writes one object there per step instead of rewriting the log whole)."""
  out = epath.Path(p)
  return out.parent / (out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name + ".d")


def _parse_jsonl(text: str) -> list[dict]:
  rows = []
  for line in text.splitlines():
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows


def _shard_files(p: PathLike) -> list[epath.Path]:
  folder = shards(p)
  if not (is_remote(p) and folder.is_dir()):
    return []
  # Listed by name (not glob: the fsspec backends disagree on the scheme prefix of glob results).
  return sorted((c for c in folder.iterdir() if c.name.endswith(".jsonl")), key=lambda c: c.name)


def jsonl_exists(p: PathLike) -> bool:
  """Whether a JSONL log has any part: the file, or (on an object store) its per-step objects."""
  return exists(p) or bool(_shard_files(p))


def read_jsonl(p: PathLike) -> list[dict]:
  """All complete lines of a JSONL log: the file's, then (on an object store) those of its per-step objects in name
  order (`shards`). A torn last line (a process killed mid-append) is skipped."""
  rows = _parse_jsonl(read_text(p)) if exists(p) or not is_remote(p) else []
  for part in _shard_files(p):
    rows += _parse_jsonl(part.read_text())
  return rows


def filter_jsonl(p: PathLike, keep) -> None:
  """Keeps the rows of a JSONL log for which `keep(row)` holds (a resumed run drops the steps it redoes). The file is
  rewritten whole (local: renamed into place); a per-step object is deleted when none of its rows is kept and left
  untouched when all are."""
  if is_writer():
    if exists(p):
      _write(p, _lines([r for r in read_jsonl_file(p) if keep(r)]))
    for part in _shard_files(p):
      rows = _parse_jsonl(part.read_text())
      kept = [r for r in rows if keep(r)]
      if not kept:
        part.unlink()
      elif len(kept) < len(rows):
        _write(part, _lines(kept))
  barrier(f"filter {p}")


def read_jsonl_file(p: PathLike) -> list[dict]:
  """The complete lines of one JSONL file (without a log's per-step objects)."""
  return _parse_jsonl(read_text(p))


# --------------------------------------------------------------------------------------------------
# Writing (process 0; every process returns once the file is there).


def jsonable(x: Any) -> Any:
  """Plain JSON values: numpy scalars and arrays as numbers and lists, NaN / inf as None (strict JSON)."""
  if isinstance(x, Mapping):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return [jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return jsonable(x.tolist())
  if isinstance(x, np.bool_ | bool):
    return bool(x)
  if isinstance(x, np.integer | int):
    return int(x)
  if isinstance(x, np.floating | float):
    return float(x) if math.isfinite(x) else None
  return x


def dumps(x: Any, **kw) -> str:
  """Strict JSON text of `x` (see `jsonable`)."""
  return json.dumps(jsonable(x), allow_nan=False, **kw)


def _write(p: PathLike, data: bytes) -> None:
  out = epath.Path(p)
  out.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(p):
    out.write_bytes(data)
    return
  tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
  tmp.write_bytes(data)
  os.replace(tmp, out)


def write_bytes(p: PathLike, data: bytes) -> None:
  if is_writer():
    _write(p, data)
  barrier(f"write {p}")


def write_text(p: PathLike, text: str) -> None:
  write_bytes(p, text.encode("utf-8"))


def write_json(p: PathLike, obj: Any) -> None:
  write_text(p, dumps(obj, indent=2) + "\n")


def _lines(rows: Iterable[Any]) -> bytes:
  return "".join(dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def write_jsonl(p: PathLike, rows: Iterable[Any]) -> int:
  """One strict JSON line per row; returns the number of rows."""
  lines = [dumps(r, ensure_ascii=False) for r in rows]
  write_text(p, "".join(line + "\n" for line in lines))
  return len(lines)


def append_jsonl(p: PathLike, rows: Iterable[Any], *, shard: str | None = None) -> None:
  """Adds lines to a JSONL log. Local files are appended to (a killed run keeps every line written). An object
  store has no append: with `shard` (a name that sorts in step order, e.g. `step_000000123`) the lines become the
  new object `shards(p)/<shard>.jsonl`, so a log of hundreds of rollouts a step is never re-uploaded whole
  (`read_jsonl` reads the parts back in order); without it (a log of a few lines) the object is rewritten whole."""
  text = "".join(dumps(r, ensure_ascii=False) + "\n" for r in rows)
  if is_writer():
    out = epath.Path(p)
    if is_remote(p) and shard is not None:
      _write(shards(p) / f"{shard}.jsonl", text.encode("utf-8"))
    elif is_remote(p):
      _write(p, ((out.read_bytes() if out.exists() else b"") + text.encode("utf-8")))
    else:
      out.parent.mkdir(parents=True, exist_ok=True)
      with open(out, "a", encoding="utf-8") as f:
        f.write(text)
  barrier(f"append {p}")


def step_shard(step: int) -> str:
  """The per-step object name of a step's lines (zero-padded: names sort in step order)."""
  return f"step_{int(step):09d}"


def save_figure(fig, p: PathLike, **kw) -> None:
  """A matplotlib figure as PNG (rendered in memory, so the path may be remote)."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", **kw)
  write_bytes(p, buf.getvalue())
