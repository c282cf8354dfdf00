"""The XLA flag the suite compiles with, in its own processes (conftest.py) and in the subprocesses it starts.

LLVM at -O0: the tiny models spend most of their test time compiling, not running, and -O0 compiles them about a
third faster (a whole default suite: 18 min 25 s -> 11 min 56 s with worksteal scheduling, 2026-12-07). XLA's own
passes and its float semantics (no fast-math) are the same at every LLVM level. Real runs keep XLA's default."""

FAST_COMPILE = "--xla_backend_optimization_level=0"
