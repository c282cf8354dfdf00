"""One process of a multi-process `grm_jax.main` run on CPU (tests/test_multihost_pipeline.py starts two).

It records every file-system change this process makes under the workdir from Python (open for writing, rename,
mkdir, remove: CPython's audit events), so the test can check that only process 0 writes. Orbax's array shards are
written by tensorstore in C++ and are not seen here: orbax coordinates its processes itself (each writes its own
shards, process 0 finalizes).

Usage: python tests/pipeline_worker.py WRITES_JSONL WORKDIR -- <grm_jax.main flags>
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _record_writes(workdir: str, out: str) -> None:
  """Appends one JSON line per write to `out` as it happens (a SIGKILLed process keeps what it recorded): through a
  descriptor opened before the hook, since os.write raises no audit event of its own."""
  root = os.path.realpath(workdir)
  fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

  def record(entry: list[str]) -> None:
    os.write(fd, (json.dumps(entry) + "\n").encode())

  def inside(path) -> bool:
    try:
      p = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
      return False
    return p == root or p.startswith(root + os.sep)

  def hook(event: str, args: tuple) -> None:
    if event == "open":
      path, mode, flags = args
      writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
      if writing and isinstance(path, str | bytes | os.PathLike) and inside(path):
        record([event, os.fsdecode(path)])
    elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree", "os.symlink"):
      paths = [a for a in args[:2] if isinstance(a, str | bytes | os.PathLike)]
      if any(inside(p) for p in paths):
        record([event, *(os.fsdecode(p) for p in paths)])

  sys.addaudithook(hook)


def main(argv: list[str]) -> None:
  writes, workdir, sep, *flags = argv
  assert sep == "--", argv
  _record_writes(workdir, writes)
  import jax  # noqa: PLC0415

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from absl import app  # noqa: PLC0415

  from grm_jax import main as grm_main  # noqa: PLC0415

  app.run(grm_main.main, argv=["grm_jax.main", *flags], flags_parser=grm_main._parse_flags)


if __name__ == "__main__":
  main(sys.argv[1:])
