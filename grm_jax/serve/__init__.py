"""`python -m grm_jax.serve`: the GRM behind HTTP on our jitted sampler (`engine`: concurrent requests merged into
one sampler call; `app`: the FastAPI endpoints)."""
