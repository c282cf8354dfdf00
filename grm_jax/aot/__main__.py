"""`python -m grm_jax.aot --config=experiments/spct.py:gemma2_27b --topology=v5p-128 [--json=OUT]`

Compiles every jitted program of the preset's stages for a TPU slice on this machine (XLA:TPU from libtpu, no TPU
and no weights needed) and prints, per program: bytes per chip (arguments, temporaries, outputs, aliased) against
the chip's HBM, whether it fits with 10% headroom, FLOPs (analytic, and XLA's where countable), the roofline time,
tokens/s and MFU at the chip's published peak, and the largest replicated arguments. Then the same per-device
memory counted by hand for one GPU. Exit status 1 (with one line per program naming the bytes needed and available)
when a program does not fit; 2 for bad input.
"""

from __future__ import annotations

import sys

from absl import app, flags

from grm_jax import configs, files
from grm_jax.aot import hardware
from grm_jax.aot.run import markdown, run

_CONFIG = configs.define_experiment_flag("config", "experiment file or name:preset, e.g. spct:gemma2_27b")
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice: v4-8 ..., v5e-1/4/8/..., v5p-8 ..., v6e-1/4/8/...")
_JSON = flags.DEFINE_string("json", None, "write every number to this JSON file")
_MARKDOWN = flags.DEFINE_string("markdown", None, "write the tables of docs/scaling.md to this file")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 0, "longest judging prompt in tokens (0 = rft.max_len - "
                                   "rft.sampling.max_new_tokens, or 2048 without an rft group)")
_ONLY = flags.DEFINE_list("programs", [], "compile only programs whose name starts with one of these")
_HBM_GIB = flags.DEFINE_float("hbm_gib", 0.0, "judge every fit against this many GiB per device instead of the chip's "
                               "usable HBM (a GPU planned through one TPU chip, e.g. 74.5 for an 80 GB card with "
                               "--topology=v5p-2)")
_HBM_NAME = flags.DEFINE_string("hbm_name", "", "the device --hbm_gib stands for, for the report")
_XLA_FLOPS = flags.DEFINE_bool("xla_flops", True, "also count training FLOPs with XLA on loop-free copies")
flags.mark_flags_as_required(["config", "topology"])

def _prompt_len(config) -> int:
  if _PROMPT_LEN.value:
    return _PROMPT_LEN.value
  if "rft" in config:
    return int(config.rft.max_len) - int(config.rft.sampling.max_new_tokens)
  return 2048


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    config = _CONFIG.value
    summary = run(config, _TOPOLOGY.value, _ONLY.value, _XLA_FLOPS.value, _prompt_len(config),
                  hbm_bytes=int(_HBM_GIB.value * (1 << 30)), hbm_name=_HBM_NAME.value)
  except (hardware.TopologyError, ValueError, FileNotFoundError) as e:
    print(f"grm_jax.aot: {e}", file=sys.stderr)
    sys.exit(2)
  summary["command"] = " ".join(["python -m grm_jax.aot", *sys.argv[1:]])
  if _JSON.value:  # strict JSON: an undefined ratio is null
    files.write_text(_JSON.value, files.dumps(summary, indent=2, default=str) + "\n")
  if _MARKDOWN.value:
    files.write_text(_MARKDOWN.value, markdown(summary))
  failed = [p for p in summary["programs"] if not p["fits_with_headroom"]]
  for p in failed:
    print(f"grm_jax.aot: {p['name']} does not fit {summary['topology']} with 10% headroom: needs "
          f"{p['total']:,} bytes per chip (the program {p['needed']:,}, kept beside it {p['resident']:,}), "
          f"{p['capacity']:,} available ({p['headroom']:+.0%})", file=sys.stderr)
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  app.run(main)
