"""Typed, frozen settings read from a config group at the library's edge (`GrpoConfig`, `OptimConfig`,
`FitConfig`): each field cast once, a missing key named. The values and their defaults live in `grm_jax.configs`
only; the library never reads a raw config group past this point."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_CASTS = {"float": float, "int": int, "str": str, "bool": bool}


def read(cls: type[T], group: Mapping[str, Any], name: str, **given: Any) -> T:
  """`cls` (a frozen dataclass of float / int / str / bool fields) from the config group `name`; fields in `given`
  are passed as they are (already typed sub-settings)."""
  fields = [f for f in dataclasses.fields(cls) if f.name not in given]
  missing = [f.name for f in fields if f.name not in group]
  if missing:
    raise ValueError(f"config {name}: missing key(s) {missing}")
  return cls(**{f.name: _CASTS[f.type](group[f.name]) for f in fields}, **given)


def check(name: str, checks) -> None:
  """Raise for the first (ok, key, value, why) that does not hold, naming `config <name>.<key>=<value>`."""
  for ok, key, value, why in checks:
    if not ok:
      raise ValueError(f"config {name}.{key}={value!r}: {why}")
