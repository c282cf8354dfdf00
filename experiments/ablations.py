"""The paper's RFT ablations (Table 4, §3.2) beside the RFT GRM, trained and judged by the same stages on the same
held-out items.

  python -m grm_jax.main --config=experiments/ablations.py --workdir=/tmp/ablations \
      --config.rft.general_data=/path/to/chats          # embedded SmolLM2, CPU; a chat SFT set for general_only
  python -m grm_jax.main --config=experiments/ablations.py:smoke --workdir=/tmp/abl   # tiny model, seconds

One table (`compare/report.md`) of the GRM after RFT (Table 4's "DeepSeek-GRM-27B-RFT", `eval.policy=rft`) and:
- `no_hinted`: "RFT w/o Hinted Sampling" (`rft.hinted=False`);
- `no_non_hinted`: "RFT w/o Non-Hinted Sampling" (`rft.non_hinted=False`: only hinted trajectories, every n >= 2 item
  hinted once);
- `general_only`: "RFT w/o Rejective Sampling" (`rft.rm_data=False`: no RM trajectory, SFT on the general chat data
  alone; evaluated as the variant's `@rft` baseline) and the RL row "w/o Rejective Sampling" of Table 4 (GRPO on
  those params, the variant's own columns);
- `no_rejection` (ours, not a row of Table 4): every sampled trajectory kept, right or wrong (`rft.reject=False`).
Each variant's evaluation sits in `<workdir>/<variant>/eval/`; none uses a meta RM (Table 4 reports greedy / voting).

`rft.general_data` must name a chat SFT set (e.g. a snapshot of HuggingFaceH4/ultrachat_200k): the preset's path is
a placeholder, as in spct.py's accelerator presets. Only `general_only` reads it (the other systems keep spct.py's
`general_fraction`, 0 on CPU); its SFT runs `GENERAL_ONLY_STEPS` steps over it.

Presets:
  default  CPU, spct.py's default model, data, templates, evaluation items and budget for every system
  smoke    tiny:llama, seconds (what the preset test runs: every switch above)
"""

import ml_collections

from grm_jax import configs

PRESETS = ("default", "smoke")
GENERAL_DATA = "/data/ultrachat_200k"  # a placeholder: pass --config.rft.general_data
GENERAL_ONLY_STEPS = 20  # spct.py's default RFT makes ~19 SFT steps of 4 rows; the same budget on general chats
RFT_ONLY = "eval.policy=rft;eval.meta_model=;eval.baseline="
VARIANTS = {
  "no_hinted": f"rft.hinted=False;{RFT_ONLY}",
  "no_non_hinted": f"rft.non_hinted=False;rft.hinted_scope=all;{RFT_ONLY}",
  "no_rejection": f"rft.reject=False;{RFT_ONLY}",
  "general_only": f"rft.rm_data=False;rft.steps={GENERAL_ONLY_STEPS};grpo.init=rft;eval.policy=grpo;"
                  "eval.meta_model=;eval.baseline=rft",
}
VARIANT_STAGES = {"no_hinted": ("rft", "eval"), "no_non_hinted": ("rft", "eval"), "no_rejection": ("rft", "eval"),
                  "general_only": ("rft", "grpo", "eval")}
SYSTEMS = ("RFT=eval;RFT w/o hinted=no_hinted/eval;RFT w/o non-hinted=no_non_hinted/eval;"
           "RFT w/o rejective sampling=general_only/eval@rft;RL on it=general_only/eval;"
           "RFT keeping wrong trajectories (ours)=no_rejection/eval")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  c = configs.on_spct(__file__, preset, PRESETS, "smoke" if preset == "smoke" else "default")
  c.rft.general_data = GENERAL_DATA
  c.eval.policy, c.eval.meta_model, c.eval.baseline = "rft", "", ""  # the reference: the GRM after RFT (RFT_ONLY)
  c.variants = ml_collections.ConfigDict(dict(VARIANTS))
  c.compare = configs.compare()
  c.compare.systems = SYSTEMS
  c.stages = ("rft", "eval", *(f"{v}/{s}" for v in VARIANTS for s in VARIANT_STAGES[v]), "compare")
  return c
