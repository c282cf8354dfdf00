"""Checkpoints named by their Hugging Face Hub id ("google/gemma-2-2b-it"), resolved to a local snapshot folder.

`models.load` and `models.load_config` take a hub id wherever they take an HF directory. The files a checkpoint needs
(config, safetensors and their index, tokenizer and chat template; `FILES`) come through `grm_jax.hub_cache`: the
local Hugging Face cache without touching the network, else a download into it, else a one-line error that says
what to download.
"""

from __future__ import annotations

import os
import re

from grm_jax import hub_cache
from grm_jax.errors import MissingFile

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FILES = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer*",
         "special_tokens_map.json", "*.model", "vocab.json", "merges.txt", "*.jinja")
# The files without which no checkpoint loads: a cached snapshot lacking one is completed by a download (or is an
# error). The others depend on the family (a SentencePiece `*.model`, a `*.jinja` template) and may be absent.
REQUIRED = ("config.json", "*.safetensors")


def is_hub_id(spec: str) -> bool:
  """"org/name" that is not a local path."""
  return bool(HUB_ID.match(spec)) and not os.path.exists(spec)


def snapshot(repo_id: str, cache_dir: str | None = None) -> str:
  """The local folder of `repo_id`'s checkpoint files: the cached snapshot, or a fresh download into the cache."""
  try:
    return hub_cache.snapshot(repo_id, FILES, required=REQUIRED, cache_dir=cache_dir,
                              instead="or pass a local checkpoint directory")
  except FileNotFoundError as e:  # neither cached nor downloadable: the message says what to download (a UserError)
    raise MissingFile(str(e)) from None
