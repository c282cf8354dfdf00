"""The one mark of a user's mistake: `UserError`.

A wrong path, a file that is not what it claims (a broken config.json, a truncated parquet, a bad JSONL row), a model
this code does not implement, a hub id that is neither cached nor downloadable, a workdir that cannot be reached: the
message says which file, key or value and what to do, and `grm_jax.main` prints it as one line and exits 2 (as for a
config mistake), without a traceback. Every other exception is a bug and keeps its traceback.

The error classes of the readers (`data.DataError`, `models.CheckpointError`, ...) subclass it next to their
`ValueError` / `FileNotFoundError` base, so callers that catch those keep working.
"""

from __future__ import annotations


class UserError(Exception):
  """A mistake in what the user gave; the message names it and says what to do."""


class MissingFile(FileNotFoundError, UserError):
  """A path the user gave (a model, a data file) or a hub id that is not there."""


class Unreachable(OSError, UserError):
  """A workdir on an object store that does not answer (no network, no credentials, no such bucket, no gcsfs)."""


def one_line(error: BaseException) -> str:
  """The message on one line (a library's message may span several)."""
  return " ".join(str(error).split()) or type(error).__name__
