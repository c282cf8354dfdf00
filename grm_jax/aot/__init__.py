"""Compile a preset's programs for TPU slices without a TPU: memory per chip, FLOPs, roofline (`python -m
grm_jax.aot`). See `__main__` for the command, `programs` for what is compiled, `cost` for the counting rules."""
