"""Why a stage stopped, as exceptions `grm_jax.main` turns into one line and an exit code (tracebacks are for bugs)."""

from __future__ import annotations


class Preempted(RuntimeError):
  """SIGTERM arrived (TPU preemption, SLURM time limit); the state was saved. Rerun the same command to resume."""


class StageStopped(RuntimeError):
  """A stage stopped for a reason the user has to act on; the message says what happened and what to do."""


class TrainingDiverged(StageStopped):
  """Too many optimizer steps in a row had a non-finite loss or gradient norm."""


class NonFiniteParams(StageStopped):
  """Params with NaN or infinite values were about to be written as a stage's output."""
