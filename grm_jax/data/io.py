"""File plumbing shared by the readers: finding files, iterating rows, and turning bad rows into errors.

Every reader is "rows in, `PreferenceExample`s out". Rows come from here with a human location
("line 12", "row 40") so any failure can name the file and row; `Sink` applies the caller's
`on_error` policy ("raise": stop at the first bad row; "skip": count it in `Examples.skipped`, keep the
message in `Examples.errors`, and go on). A file that cannot be read at all (truncated parquet, JSON
syntax error in a JSON array, wrong zip password) always raises: there is no row to skip.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from etils.epath import Path

from grm_jax.data.example import DataError, Examples, PreferenceExample

OnError = Literal["raise", "skip"]
PathLike = str | os.PathLike

ROW_EXTS = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz")


class BadRow:
  """Stands in for a row that could not even be decoded (a JSONL line that is not JSON)."""

  def __init__(self, message: str):
    self.message = message


def _has_ext(path: Path, exts: Iterable[str]) -> bool:
  return any(path.name.endswith(e) for e in exts)


def split_matches(path: Path, split: str) -> bool:
  """HF file naming: `{split}.jsonl`, `{split}-00000-of-00001.parquet`; "train" must not match "train_prefs"."""
  name = path.name
  return name.startswith(split + ".") or name.startswith(split + "-")


def list_files(
  path: PathLike, exts: Iterable[str] = ROW_EXTS, *, split: str | None = None, recursive: bool = True
) -> list[Path]:
  """A file itself, or every file under a directory (sorted; recursively by default) with one of `exts`.

  With `split`, files of a directory are restricted to HF-style `{split}.*` / `{split}-*` names.
  """
  p = Path(path)
  exts = tuple(exts)
  if p.is_file():
    return [p]
  if not p.is_dir():
    raise DataError("no such file or directory", file=str(p))
  if recursive:  # epath has no rglob (it would be thousands of calls on GCS); walk lists each folder once
    found = [Path(root) / name for root, _, names in p.walk() for name in names]
  else:
    found = [f for f in p.iterdir() if f.is_file()]
  files = sorted(f for f in found if _has_ext(f, exts))
  if split is not None:
    matching = [f for f in files if split_matches(f, split)]
    if not matching:
      names = ", ".join(f.name for f in files[:10]) or "none"
      raise DataError(f"no file for split {split!r} (expected '{split}.*' or '{split}-*'; found: {names})", file=str(p))
    files = matching
  if not files:
    raise DataError(f"no data files ({', '.join(exts)}) found", file=str(p))
  return files


def binary_source(path: Path) -> str | io.BufferedIOBase:
  """What pyarrow or zipfile can read: a local file's name, or an open binary stream of a remote (gs://) one."""
  name = os.fspath(path)
  return path.open("rb") if "://" in name else name


def _open_text(path: Path) -> io.TextIOBase:
  if path.name.endswith(".gz"):
    return io.TextIOWrapper(gzip.open(path.open("rb"), "rb"), encoding="utf-8")
  return path.open("r", encoding="utf-8")


def _read_text(path: Path) -> str:
  try:
    with _open_text(path) as f:
      return f.read()
  except (OSError, UnicodeDecodeError, EOFError) as e:
    raise DataError(f"cannot read file: {e}", file=str(path)) from None


def iter_jsonl_text(text: str, file: str) -> Iterator[tuple[str, Any]]:
  """Rows of JSONL text; an undecodable line becomes a `BadRow` so the policy decides."""
  for lineno, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    try:
      yield f"line {lineno}", json.loads(line)
    except json.JSONDecodeError as e:
      yield f"line {lineno}", BadRow(f"invalid JSON at column {e.colno}: {e.msg}")


def iter_json_text(text: str, file: str) -> Iterator[tuple[str, Any]]:
  """Rows of a .json file: a JSON array (location "item i", 0-based) or, failing that, JSON lines."""
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    if e.msg == "Extra data" and text.lstrip().startswith("{"):
      yield from iter_jsonl_text(text, file)  # JSON lines under a .json name (common on HF)
      return
    raise DataError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", file=file) from None
  if not isinstance(data, list):
    raise DataError(f"expected a JSON array of rows at top level, got {type(data).__name__}", file=file)
  for i, row in enumerate(data):
    yield f"item {i}", row


def iter_parquet(path: Path, columns: list[str] | None = None) -> Iterator[tuple[str, Any]]:
  """Rows of a parquet file as dicts (location "row i", 0-based), read in batches to bound memory."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  try:
    pf = pq.ParquetFile(binary_source(path))
  except (pa.ArrowException, OSError) as e:
    raise DataError(f"cannot open parquet (truncated or not parquet?): {e}", file=str(path)) from None
  start = 0
  batches = pf.iter_batches(batch_size=256, columns=columns)
  while True:
    try:
      batch = next(batches)
    except StopIteration:
      return
    except (pa.ArrowException, OSError) as e:
      raise DataError(f"cannot decode parquet data after row {start} (corrupt?): {e}", file=str(path)) from None
    for i, row in enumerate(batch.to_pylist()):
      yield f"row {start + i}", row
    start += batch.num_rows


def iter_rows(path: PathLike) -> Iterator[tuple[str, Any]]:
  """(location, row) pairs of one .parquet / .jsonl[.gz] / .json[.gz] file."""
  p = Path(path)
  if p.name.endswith(".parquet"):
    yield from iter_parquet(p)
  elif p.name.endswith((".jsonl", ".jsonl.gz")):
    yield from iter_jsonl_text(_read_text(p), str(p))
  elif p.name.endswith((".json", ".json.gz")):
    yield from iter_json_text(_read_text(p), str(p))
  else:
    raise DataError(f"unsupported file type (expected one of {', '.join(ROW_EXTS)})", file=str(p))


Converted = PreferenceExample | Iterable[PreferenceExample] | None


class Sink:
  """Collects converted rows into `Examples`, applying `on_error` and `limit` in one place."""

  def __init__(self, on_error: OnError = "raise", limit: int | None = None):
    if on_error not in ("raise", "skip"):
      raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if limit is not None and limit < 0:
      raise ValueError(f"limit must be >= 0, got {limit}")
    self.on_error = on_error
    self.limit = limit
    self.out = Examples()

  @property
  def full(self) -> bool:
    return self.limit is not None and len(self.out) >= self.limit

  def add_file(self, path: PathLike) -> None:
    self.out.files.append(str(path))

  def error(self, err: DataError) -> None:
    """Raises under "raise"; records and counts under "skip"."""
    if self.on_error == "raise":
      raise err
    self.out.skipped += 1
    if len(self.out.errors) < Examples.MAX_ERRORS:
      self.out.errors.append(str(err))

  def convert(self, file: PathLike, location: str, fn: Callable[..., Converted], *args: Any) -> None:
    """Runs `fn(*args)` for one row; its result (an example, several, or None = filtered) is kept.

    Conversion code indexes rows freely (`row["chosen"]`); the resulting KeyError/TypeError is turned
    into a DataError naming the file and row here, instead of every reader checking every key.
    """
    if self.full:
      return
    if args and isinstance(args[0], BadRow):
      self.error(DataError(args[0].message, file=str(file), location=location))
      return
    try:
      result = fn(*args)
    except DataError as e:
      self.error(DataError(e.reason, file=str(file), location=location))
      return
    except KeyError as e:
      self.error(DataError(f"missing key {e.args[0]!r}", file=str(file), location=location))
      return
    except (TypeError, ValueError, AttributeError, IndexError) as e:
      self.error(DataError(f"malformed row ({type(e).__name__}: {e})", file=str(file), location=location))
      return
    if result is None:
      self.out.filtered += 1
      return
    items = [result] if isinstance(result, PreferenceExample) else list(result)
    for ex in items:
      if self.full:
        return
      self.out.append(ex)


def require(condition: bool, message: str) -> None:
  """Row-level check that becomes a DataError (named file and row are added by `Sink.convert`)."""
  if not condition:
    raise DataError(message)


def as_str(value: Any, name: str) -> str:
  require(isinstance(value, str), f"field {name!r} must be a string, got {type(value).__name__}")
  return value
