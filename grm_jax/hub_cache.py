"""Files of a Hugging Face Hub repository, resolved to a local folder: the local cache first (no network), else a
download into it, else one line that says what to download and where to put it.

Checkpoints (`models.hub`) and data sets (`data.hub`) both come through `snapshot`. The cache is huggingface_hub's
(`HF_HUB_CACHE`, default ~/.cache/huggingface/hub); `HF_TOKEN` is read for gated repositories.

A cached snapshot is only returned when every required pattern matches a file in it: two callers that ask one
repository for different files (the HelpSteer2 ratings, then its `preference/` folder) share one snapshot folder, and
huggingface_hub's offline lookup returns that folder whether or not it holds the second caller's files.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence


def missing_patterns(folder: str, patterns: Sequence[str]) -> list[str]:
  """The patterns of `patterns` that match no file under `folder` (paths relative to it, "/"-separated, matched as
  huggingface_hub's `allow_patterns` are: fnmatch, where "*" also crosses "/")."""
  files = []
  for root, _, names in os.walk(folder):
    rel = os.path.relpath(root, folder)
    files.extend(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/") for name in names)
  return [p for p in patterns if not any(fnmatch.fnmatch(f, p) for f in files)]


def download_command(repo_id: str, patterns: Sequence[str], *, repo_type: str = "model",
                     revision: str | None = None) -> str:
  """The `hf download` command (huggingface_hub >= 1.0's CLI) that fetches `patterns` of `repo_id` into the cache."""
  kind = "" if repo_type == "model" else f" --repo-type {repo_type}"
  rev = f" --revision {revision}" if revision else ""
  include = "".join(f" --include '{p}'" for p in patterns)
  return f"hf download {repo_id}{kind}{rev}{include}"


def snapshot(repo_id: str, patterns: Sequence[str], *, repo_type: str = "model", revision: str | None = None,
             required: Sequence[str] | None = None, cache_dir: str | None = None, instead: str = "") -> str:
  """The local folder holding `repo_id`'s files that match `patterns` at `revision` (None: the default branch).

  The cached snapshot is returned when each pattern of `required` (default: all of `patterns`) matches a file in it;
  otherwise the files are downloaded into the cache. When that is impossible (offline, no network, gated) or the
  download still lacks a required pattern, a one-line FileNotFoundError names the repository, the missing patterns,
  the cache, the `hf download` command that fetches them elsewhere and `instead` (what else the user can do).
  """
  from huggingface_hub import snapshot_download  # noqa: PLC0415
  from huggingface_hub.constants import HF_HUB_CACHE  # noqa: PLC0415
  from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: PLC0415

  need = list(patterns if required is None else required)
  kwargs = dict(repo_type=repo_type, revision=revision, allow_patterns=list(patterns), cache_dir=cache_dir,
                token=os.environ.get("HF_TOKEN") or None)
  missing: list[str] = need
  cached = False  # a snapshot folder of this revision is in the cache (perhaps without some of `need`)
  try:  # IncompleteSnapshotError (huggingface_hub's own tree check, when it has one) is a LocalEntryNotFoundError
    folder = snapshot_download(repo_id, local_files_only=True, **kwargs)
    cached, missing = True, missing_patterns(folder, need)
    if not missing:
      return folder
  except LocalEntryNotFoundError:  # not cached: download it
    pass
  reason = ""
  try:
    # Offline, huggingface_hub returns the cached folder as it is, so the check below runs after a "download" too.
    folder = snapshot_download(repo_id, **kwargs)
    cached, missing = True, missing_patterns(folder, need)
    if not missing:
      return folder
    reason = "the download did not bring them"
  except Exception as e:
    reason = f"not downloadable here: {type(e).__name__}"
  where = cache_dir or HF_HUB_CACHE
  at = f" at revision {revision}" if revision else ""
  what = f"no file matching {', '.join(missing)} in the Hugging Face cache" if cached else \
    "not in the Hugging Face cache"
  # Every pattern is required: the missing ones are what to fetch. Otherwise fetch all (optional files too; the
  # command skips the files already in the cache).
  fetch = missing if required is None else list(patterns)
  raise FileNotFoundError(
    f"{repo_id}{at}: {what} ({where}) and {reason}; on a machine that reaches the hub run "
    f"`{download_command(repo_id, fetch, repo_type=repo_type, revision=revision)}` and copy the cache"
    f"{', ' + instead if instead else ''} (gated repositories need HF_TOKEN)")
