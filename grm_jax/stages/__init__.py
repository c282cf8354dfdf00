"""Stages: thin loops that glue data, model, sampling and the paper's math.

Each stage is `run(config, workdir) -> dict`, reads only the config, writes under `workdir/<stage>/`, and skips or
resumes work already finished there, so rerunning a pipeline is cheap.
"""
