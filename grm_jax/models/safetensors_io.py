"""Reading and writing safetensors files with numpy memory maps.

A small reader of our own (the format is an 8-byte header length, a JSON header, raw bytes)
because it memory-maps lazily, handles bf16 through `ml_dtypes`, and can say exactly which
file is truncated or malformed. Sharded checkpoints (`model.safetensors.index.json`) are read
through the index.

A checkpoint may also live on an object store (`gs://…`, any `etils.epath` / fsspec URL): its headers are read
from the object and each tensor with one ranged read when it is asked for, so the weights stream from the bucket
into their shards and no host ever stores a copy on its disk.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

from grm_jax import files
from grm_jax.errors import UserError
from grm_jax.models.weights import TensorSource

_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "BF16": ml_dtypes.bfloat16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
  "F8_E4M3": ml_dtypes.float8_e4m3fn,
  "F8_E5M2": ml_dtypes.float8_e5m2,
}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointError(ValueError, UserError):
  """A weight file is missing, truncated or malformed; the message names it."""


def _size(path: str) -> int:
  return files.path(path).stat().length if files.is_remote(path) else os.path.getsize(path)


def read_header(path: str) -> tuple[dict, int]:
  """(header dict, byte offset where tensor data starts)."""
  size = _size(path)
  with files.path(path).open("rb") as f:
    raw = f.read(8)
    if len(raw) < 8:
      raise CheckpointError(f"{path}: {size} bytes, too short to be a safetensors file (truncated? re-download it)")
    (n,) = struct.unpack("<Q", raw)
    if n > size - 8:
      raise CheckpointError(
        f"{path}: header claims {n} bytes but the file has {size}; it is truncated or not a safetensors "
        "file (re-download it)"
      )
    try:
      header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise CheckpointError(f"{path}: header is not valid JSON ({e}); the file is corrupt") from e
  start = 8 + n
  for name, meta in header.items():
    if name == "__metadata__":
      continue
    end = start + meta["data_offsets"][1]
    if end > size:
      raise CheckpointError(
        f"{path}: tensor {name!r} ends at byte {end} but the file has {size}; the file is truncated (re-download it)"
      )
    if meta["dtype"] not in _DTYPES:
      raise CheckpointError(
        f"{path}: tensor {name!r} has unsupported dtype {meta['dtype']}; supported: {', '.join(_DTYPES)} "
        "(re-save the checkpoint in float32 or bfloat16)"
      )
  return header, start


class SafetensorsSource(TensorSource):
  """All tensors of an HF directory (single file or sharded with an index)."""

  def __init__(self, directory: str):
    self.directory = directory
    index = os.path.join(directory, INDEX_FILE)
    single = os.path.join(directory, SINGLE_FILE)
    if files.exists(index):
      try:
        weight_map = json.loads(files.read_text(index))["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
      shards = sorted(set(weight_map.values()))
    elif files.exists(single):
      shards, weight_map = [SINGLE_FILE], None
    else:
      raise CheckpointError(
        f"{directory}: no {SINGLE_FILE} or {INDEX_FILE}; an HF checkpoint directory needs its "
        "safetensors weights (PyTorch .bin files are not read: convert them with transformers' "
        "save_pretrained(safe_serialization=True))"
      )
    self._where: dict[str, tuple[str, dict, int]] = {}
    for fname in shards:
      path = os.path.join(directory, fname)
      if not files.exists(path):
        raise CheckpointError(f"{path}: listed in {INDEX_FILE} but missing; re-download the checkpoint")
      header, start = read_header(path)
      for name, meta in header.items():
        if name != "__metadata__":
          self._where[name] = (path, meta, start)
    if weight_map:
      for name, fname in weight_map.items():
        if name not in self._where:
          raise CheckpointError(f"{os.path.join(directory, fname)}: tensor {name!r} from the index is missing")

  def names(self) -> set[str]:
    return set(self._where)

  def describe(self, name: str) -> str:
    path = self._where[name][0] if name in self._where else self.directory
    return f"{path} [{name}]"

  def get(self, name: str) -> np.ndarray:
    path, meta, start = self._where[name]
    begin, end = meta["data_offsets"]
    dtype = np.dtype(_DTYPES[meta["dtype"]])
    shape = tuple(meta["shape"])
    if end - begin != int(np.prod(shape)) * dtype.itemsize:
      raise CheckpointError(f"{path}: tensor {name!r} byte range does not match its shape {shape}")
    if not files.is_remote(path):
      return np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=shape)
    # An object store has no memory map: one ranged read of exactly this tensor's bytes.
    with files.path(path).open("rb") as f:
      f.seek(start + begin)
      raw = f.read(end - begin)
    if len(raw) != end - begin:
      raise CheckpointError(f"{path}: tensor {name!r} read {len(raw)} of {end - begin} bytes; the object is truncated "
                            "(upload it again)")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def write(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
  header: dict = {"__metadata__": metadata or {"format": "pt"}}
  offset = 0
  for name, arr in tensors.items():
    nbytes = arr.nbytes
    header[name] = {"dtype": _CODES[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # keep data 8-byte aligned, as the reference writer does
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for arr in tensors.values():
      f.write(np.ascontiguousarray(arr).tobytes())


def write_sharded(directory: str, tensors: dict[str, np.ndarray], max_shard_bytes: int = 4 << 30) -> list[str]:
  """Write one file, or shards plus an index when the total exceeds `max_shard_bytes`."""
  total = sum(a.nbytes for a in tensors.values())
  if total <= max_shard_bytes:
    write(os.path.join(directory, SINGLE_FILE), tensors)
    return [SINGLE_FILE]
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, arr in tensors.items():
    if size and size + arr.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = arr
    size += arr.nbytes
  names, weight_map = [], {}
  for k, shard in enumerate(shards):
    fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
    write(os.path.join(directory, fname), shard)
    names.append(fname)
    weight_map.update({n: fname for n in shard})
  with open(os.path.join(directory, INDEX_FILE), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  return names
