"""Checkpoints named by their Hugging Face Hub id ("google/gemma-2-2b-it"), resolved to a local snapshot folder.

`models.load` and `models.load_config` take a hub id wherever they take an HF directory. The files a checkpoint needs
(config, safetensors and their index, tokenizer and chat template; `FILES`) come from the local Hugging Face cache
(`HF_HUB_CACHE`, default ~/.cache/huggingface/hub) when they are there, without touching the network, else are
downloaded into it (`HF_TOKEN` for gated models). Offline and not cached is a one-line error that says what to
download and where to put it.
"""

from __future__ import annotations

import os
import re

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FILES = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer*",
         "special_tokens_map.json", "*.model", "vocab.json", "merges.txt", "*.jinja")


def is_hub_id(spec: str) -> bool:
  """"org/name" that is not a local path."""
  return bool(HUB_ID.match(spec)) and not os.path.exists(spec)


def snapshot(repo_id: str, cache_dir: str | None = None) -> str:
  """The local folder of `repo_id`'s checkpoint files: the cached snapshot, or a fresh download into the cache."""
  from huggingface_hub import snapshot_download  # noqa: PLC0415
  from huggingface_hub.constants import HF_HUB_CACHE  # noqa: PLC0415
  from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: PLC0415

  token = os.environ.get("HF_TOKEN") or None
  try:
    return snapshot_download(repo_id, allow_patterns=list(FILES), cache_dir=cache_dir, token=token,
                             local_files_only=True)
  except LocalEntryNotFoundError:  # not cached: download it
    pass
  try:
    return snapshot_download(repo_id, allow_patterns=list(FILES), cache_dir=cache_dir, token=token)
  except Exception as e:
    where = cache_dir or HF_HUB_CACHE
    raise FileNotFoundError(
      f"{repo_id}: not in the Hugging Face cache ({where}) and not downloadable here ({type(e).__name__}); on a "
      f"machine that reaches the hub run `huggingface-cli download {repo_id}` and copy the cache, or pass a local "
      "checkpoint directory (gated models need HF_TOKEN)") from None
