"""Files of a Hugging Face Hub repository, resolved to a local folder: the local cache first (no network), else a
download into it, else one line that says what to download and where to put it.

Checkpoints (`models.hub`) and data sets (`data.hub`) both come through `snapshot`. The cache is huggingface_hub's
(`HF_HUB_CACHE`, default ~/.cache/huggingface/hub); `HF_TOKEN` is read for gated repositories.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def snapshot(repo_id: str, patterns: Sequence[str], *, repo_type: str = "model", cache_dir: str | None = None,
             instead: str = "") -> str:
  """The local folder holding `repo_id`'s files that match `patterns`: the cached snapshot, or a fresh download into
  the cache. Neither is a FileNotFoundError naming the cache, the `huggingface-cli download` command that fetches
  them elsewhere, and `instead` (what else the user can do)."""
  from huggingface_hub import snapshot_download  # noqa: PLC0415
  from huggingface_hub.constants import HF_HUB_CACHE  # noqa: PLC0415
  from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: PLC0415

  kwargs = dict(repo_type=repo_type, allow_patterns=list(patterns), cache_dir=cache_dir,
                token=os.environ.get("HF_TOKEN") or None)
  try:
    return snapshot_download(repo_id, local_files_only=True, **kwargs)
  except LocalEntryNotFoundError:  # not cached: download it
    pass
  try:
    return snapshot_download(repo_id, **kwargs)
  except Exception as e:
    where = cache_dir or HF_HUB_CACHE
    kind = "" if repo_type == "model" else f" --repo-type {repo_type}"
    include = " ".join(f"--include '{p}'" for p in patterns)
    raise FileNotFoundError(
      f"{repo_id}: not in the Hugging Face cache ({where}) and not downloadable here ({type(e).__name__}); on a "
      f"machine that reaches the hub run `huggingface-cli download {repo_id}{kind} {include}` and copy the cache"
      f"{', ' + instead if instead else ''} (gated repositories need HF_TOKEN)") from None
