"""`python -m grm_jax.serve`: a trained GRM as an OpenAI-compatible server and a reward endpoint.

  python -m grm_jax.serve --workdir=/tmp/spct --stage=grpo          # the run's GRPO policy (+ its meta RM)
  python -m grm_jax.serve --model=/tmp/grm-hf                       # an exported folder (its grm_recipe.json)
  python -m grm_jax.serve --model=builtin:smollm2-135m-instruct     # any models.load spec, the paper's recipe

Then `curl localhost:8000/v1/rewards -d '{"prompt": "2+2?", "responses": ["4", "5"]}'`, or from Python
`grm_jax.reward.RewardClient("http://localhost:8000/v1")`; OpenRLHF: `--remote_rm_url http://host:8000/get_reward`.
The endpoints are listed in `grm_jax/serve/app.py`.

On a pod, start the same command on every host (with --coordinator_address etc., or JAX's cluster detection):
process 0 serves HTTP and every process runs the same sharded sampler calls. SIGTERM stops taking requests and
finishes the ones in flight.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import jax

from grm_jax import models, parallel, runs
from grm_jax.reward.recipe import RECIPE_FILE, Recipe, chat_frame
from grm_jax.serve.app import MetaRM, Server, create_app


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m grm_jax.serve", description=__doc__.split("\n")[0])
  src = p.add_argument_group("what to serve (one of)")
  src.add_argument("--workdir", help="a grm_jax run folder; serves --stage's params with the run's recipe")
  src.add_argument("--model", help="a models.load spec: an HF / exported folder, a .gguf, builtin:..., an HF id")
  p.add_argument("--stage", default="grpo", help="the policy stage of --workdir (rft, grpo, <variant>/<stage>)")
  p.add_argument("--meta", default="auto", help="a metarm stage folder, 'auto' (the run's metarm/ if it finished) "
                                                 "or 'none'")
  p.add_argument("--name", default="grm", help="the model name the server reports")
  p.add_argument("--dtype", default=None, help="float32 (the CPU default) or bfloat16; default the run's")
  p.add_argument("--mesh", default=None, help="with --model: mesh axes as 'data=1,fsdp=-1,tensor=1' (default: one "
                                              "device, or fsdp over every device of a multi-process job)")
  p.add_argument("--host", default="127.0.0.1")
  p.add_argument("--port", type=int, default=8000)
  p.add_argument("--max-queue", type=int, default=256, help="requests in the server before new ones get 503")
  p.add_argument("--slots", type=int, default=16, help="row slots the engine decodes together")
  p.add_argument("--rows-per-prompt", type=int, default=1,
                 help="rows sharing one prompt's KV (a request's samples read it once per step); divides --slots")
  p.add_argument("--max-prompt-tokens", type=int, default=1024, help="the longest prompt a request may send")
  p.add_argument("--max-tokens", type=int, default=None,
                 help="the most tokens a request may ask for (default: 1024, or the recipe's judgement length)")
  p.add_argument("--steps-per-call", type=int, default=16, help="decode steps between two looks at the queue")
  p.add_argument("--request-timeout", type=float, default=600.0, help="seconds before a request answers 504")
  p.add_argument("--k", type=int, default=None, help="override the recipe's k (samples per judgement)")
  p.add_argument("--max-new-tokens", type=int, default=None, help="override the recipe's judgement length")
  p.add_argument("--coordinator_address", default=None)
  p.add_argument("--num_processes", type=int, default=None)
  p.add_argument("--process_id", type=int, default=None)
  return p


def _mesh(spec: str | None):
  """`--mesh` as a mesh: 'fsdp=-1' style axes, or the default for this job."""
  if spec is None:
    return parallel.make_mesh({"fsdp": -1}) if jax.process_count() > 1 else None
  try:
    axes = {k.strip(): int(v) for k, v in (part.split("=") for part in spec.split(",") if part.strip())}
  except ValueError:
    raise ValueError(f"--mesh={spec!r}: expected axes like 'data=1,fsdp=-1,tensor=1'") from None
  unknown = set(axes) - {"data", "fsdp", "tensor"}
  if unknown:
    raise ValueError(f"--mesh={spec!r}: unknown axis {sorted(unknown)[0]!r}; the axes are data, fsdp, tensor")
  return parallel.make_mesh(axes)


def build_server(args: argparse.Namespace) -> Server:
  """The model, recipe and meta RM the arguments name; every check that needs no model runs first."""
  if bool(args.workdir) == bool(args.model):
    raise ValueError("give exactly one of --workdir (a run) or --model (a models.load spec)")
  engine_sizes(args, None)
  meta = None
  if args.workdir:
    config = runs.run_config(args.workdir, None)
    from grm_jax.stages.common import mesh_scope  # noqa: PLC0415

    with mesh_scope(config):  # the GRM on the run's mesh (its meta RM on one device, as before)
      model, _ = runs.policy_model(args.workdir, args.stage, dtype=args.dtype)
    folder = runs.meta_folder(args.workdir, args.stage) if args.meta == "auto" else (
      None if args.meta == "none" else args.meta)
    if folder is not None:
      meta_model, meta_params, max_len = runs.load_meta(folder, dtype=args.dtype)
      meta = MetaRM(meta_model, meta_params, max_len)
    meta_recipe = runs.meta_recipe(folder, meta.model, meta.params) if meta else None
    recipe = runs.recipe(args.workdir, args.stage, model.tokenizer, meta_recipe, args.name)
  else:
    if args.meta not in ("auto", "none"):
      meta_model, meta_params, max_len = runs.load_meta(args.meta, dtype=args.dtype)
      meta = MetaRM(meta_model, meta_params, max_len)
    with parallel.use_mesh(_mesh(args.mesh)):
      model = models.load(args.model, dtype=args.dtype or "float32")
    found = os.path.isdir(args.model) and os.path.exists(os.path.join(args.model, RECIPE_FILE))
    recipe = Recipe.load(args.model) if found else Recipe(chat=tuple(chat_frame(model.tokenizer)), model=args.name)
    if meta is not None:
      recipe = recipe.replace(meta=runs.meta_recipe(args.meta, meta.model, meta.params))
  if args.k:
    recipe = recipe.replace(k=args.k)
  if args.max_new_tokens:
    recipe = recipe.replace(max_new_tokens=args.max_new_tokens)
  return Server(model, recipe.replace(model=args.name), name=args.name, meta=meta, max_queue=args.max_queue,
                request_timeout=args.request_timeout, engine=engine_sizes(args, recipe))


def engine_sizes(args: argparse.Namespace, recipe: Recipe | None) -> dict[str, int]:
  """The engine's flags, checked before any model loads (and against the recipe once it is known)."""
  for flag in ("slots", "rows_per_prompt", "max_prompt_tokens", "steps_per_call"):
    if getattr(args, flag) < 1:
      raise ValueError(f"--{flag.replace('_', '-')}={getattr(args, flag)}: need >= 1")
  if args.slots % args.rows_per_prompt:
    raise ValueError(f"--slots={args.slots} must be a multiple of --rows-per-prompt={args.rows_per_prompt}")
  if args.max_tokens is not None and args.max_tokens < 1:
    raise ValueError(f"--max-tokens={args.max_tokens}: need >= 1")
  if recipe is None:
    return {}
  max_new = args.max_tokens or max(1024, recipe.max_new_tokens)
  if max_new < recipe.max_new_tokens:
    raise ValueError(f"--max-tokens={max_new} < the recipe's judgement length {recipe.max_new_tokens}")
  return {"slots": args.slots, "rows_per_prompt": args.rows_per_prompt, "max_prompt_tokens": args.max_prompt_tokens,
          "max_new_tokens": max_new, "steps_per_call": args.steps_per_call}


def main(argv: list[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
  try:
    server = build_server(args)
  except (ValueError, FileNotFoundError) as e:
    print(f"grm_jax.serve: {e}", file=sys.stderr)
    sys.exit(2)
  pod = jax.process_count() > 1
  if jax.process_index() != 0:
    server.engine.follow()  # only process 0 schedules; the others run the engine calls it broadcasts
    jax.distributed.shutdown()
    return
  import uvicorn  # noqa: PLC0415

  logging.info("grm_jax.serve: %s on http://%s:%d (meta RM: %s)", args.name, args.host, args.port,
               "yes" if server.meta else "no")
  # On a pod, process 0 leaves the distributed runtime last-but-together (a barrier with the others), so no process
  # is killed by the coordination service for losing its leader.
  app = create_app(server, on_shutdown=jax.distributed.shutdown if pod else None)
  uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
              timeout_graceful_shutdown=int(args.request_timeout))


if __name__ == "__main__":
  main()
