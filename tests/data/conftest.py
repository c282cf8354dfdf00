"""Shared fixtures for the data tests: the benchmark root and each benchmark read once per session."""

from pathlib import Path

import pytest

from grm_jax import data

ROOT = Path(data.DEFAULT_ROOT)


def _root() -> Path:
  if not ROOT.is_dir():
    pytest.skip(f"benchmark folder {ROOT} is not present on this machine")
  return ROOT


@pytest.fixture(scope="session")
def bench_root() -> Path:
  return _root()


@pytest.fixture(scope="session")
def rewardbench(bench_root: Path) -> data.Examples:
  return data.read_rewardbench(bench_root / "rewardbench")


@pytest.fixture(scope="session")
def rmb(bench_root: Path) -> data.Examples:
  return data.read_rmb(bench_root / "rmb")


@pytest.fixture(scope="session")
def rm_bench(bench_root: Path) -> data.Examples:
  return data.read_rm_bench(bench_root / "rm-bench")


@pytest.fixture(scope="session")
def realmistake(bench_root: Path) -> data.Examples:
  return data.read_realmistake(bench_root / "realmistake")
