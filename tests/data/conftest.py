"""Shared fixtures for the data tests: the benchmark root and each benchmark read once per session.

Whether the files are there is asked of tests/conftest.py's `benchmark_root` only: a missing folder skips with its
path as the reason (a failure under --require-benchmarks); a reader's error is a failure."""

from pathlib import Path

import pytest

from grm_jax import data

BENCHMARKS = ("rewardbench", "rmb", "rm-bench", "realmistake")


@pytest.fixture(scope="session")
def bench_root(benchmark_root) -> Path:
  """The root, with every benchmark folder the data tests read in it."""
  return benchmark_root(*BENCHMARKS)


@pytest.fixture(scope="session")
def rewardbench(benchmark_root) -> data.Examples:
  return data.read_rewardbench(benchmark_root("rewardbench") / "rewardbench")


@pytest.fixture(scope="session")
def rmb(benchmark_root) -> data.Examples:
  return data.read_rmb(benchmark_root("rmb") / "rmb")


@pytest.fixture(scope="session")
def rm_bench(benchmark_root) -> data.Examples:
  return data.read_rm_bench(benchmark_root("rm-bench") / "rm-bench")


@pytest.fixture(scope="session")
def realmistake(benchmark_root) -> data.Examples:
  return data.read_realmistake(benchmark_root("realmistake") / "realmistake")
