"""What a trained GRM's numbers mean: the recipe every export carries as `grm_recipe.json`.

A GRM folder is a causal LM; without its recipe nobody can turn its text into a reward. The recipe records, as
plain JSON, everything `grm_jax.reward` needs to judge with it on any OpenAI-compatible server (ours, vLLM, SGLang):
the prompt templates (name and text), the score range and how scores are read (the parse rule of `grm.parse`), the
sampling settings of Voting@k (k, temperature, top-p, max new tokens), k_meta, the most responses one prompt shows,
how the chat template frames one user turn (so a plain `/v1/completions` endpoint gets exactly the tokens the model
was trained on), the value of a response whose judgements never parse, and the meta RM's input template and score
bias when there is one.

Nothing here imports jax: a recipe is read inside a PyTorch RL job. Building one from a tokenizer (`chat_frame`) only
calls the tokenizer's own `apply_chat_template`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from grm_jax.grm import parse, prompts

RECIPE_FILE = "grm_recipe.json"
FORMAT = "grm_jax.recipe/1"
# The texts a chat template renders around these markers are the frame; the markers never occur in real templates.
_MARKS = ("\x00GRM_USER\x00", "\x00GRM_ASSISTANT\x00")


def chat_frame(tokenizer: Any, with_assistant: bool = False) -> list[str]:
  """The literal text a tokenizer's chat template puts around one user turn followed by the generation prompt
  ([before, after]), or around a user and an assistant turn ([before, between, after], `with_assistant`: the meta
  RM's input). `before + content + after` tokenized without added special tokens is `apply_chat_template`'s ids."""
  messages = [{"role": "user", "content": _MARKS[0]}]
  if with_assistant:
    messages.append({"role": "assistant", "content": _MARKS[1]})
  text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not with_assistant)
  before, rest = text.split(_MARKS[0])
  if not with_assistant:
    return [before, rest]
  between, after = rest.split(_MARKS[1])
  return [before, between, after]


def frame_text(frame: Sequence[str], *contents: str) -> str:
  """`frame[0] + contents[0] + frame[1] (+ contents[1] + frame[2])`: a conversation as the chat template renders it."""
  if len(frame) != len(contents) + 1:
    raise ValueError(f"a chat frame of {len(frame)} parts holds {len(frame) - 1} turns, got {len(contents)}")
  out = frame[0]
  for content, tail in zip(contents, frame[1:], strict=True):
    out += content + tail
  return out


@dataclasses.dataclass(frozen=True)
class MetaRecipe:
  """How the meta RM reads a judgement: the user turn's template (`grm.prompts.META_TEMPLATE`), the chat frame of
  (user, assistant), the longest input it was trained on (longer ones lose their start), and the bias the exported
  sequence-classification head lacks (`export`: exported score + bias = our logit; rankings do not need it)."""

  template_text: str = prompts.META_TEMPLATE.template
  chat: tuple[str, ...] = ()
  max_len: int = 0
  score_bias: float = 0.0
  model: str = ""  # the model name to send to the meta RM endpoint


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A GRM's judging recipe (module docstring). The defaults are the paper's (App. G template, 1-10 scores, k = 8 at
  temperature 0.5, k_meta = k/2) with no chat frame, which `Recipe.for_tokenizer` or an export fills in."""

  template: str = "default"
  template_text: str = ""  # "": the named template's text (`grm.prompts.template_text`)
  single_template: str = "default"  # n = 1 (pointwise) prompts: the 1-10 template, as the paper evaluates them
  single_template_text: str = ""
  score_range: tuple[int, int] = (1, 10)
  clip: bool = True
  parse_pattern: str = parse.BLOCK_PATTERN
  max_responses: int = 4
  k: int = 8
  temperature: float = 0.5
  top_p: float = 1.0
  max_new_tokens: int = 512
  k_meta: int | None = None  # None: ceil(k / 2) of the k actually drawn
  invalid_reward: float | None = None  # None: the middle of score_range (neither rewards nor punishes)
  chat: tuple[str, ...] = ()
  model: str = ""  # the name to send as "model" to the endpoint (ours ignores it; vLLM checks it)
  meta: MetaRecipe | None = None
  provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self) -> None:
    for name in ("template", "single_template"):
      if getattr(self, name) not in prompts.TEMPLATES:
        raise ValueError(f"recipe {name}={getattr(self, name)!r}: expected one of {prompts.TEMPLATES}")
    for name in ("template", "single_template"):
      if not getattr(self, f"{name}_text"):
        object.__setattr__(self, f"{name}_text", prompts.template_text(getattr(self, name)))
    if self.single_template in prompts.JUDGE_TEMPLATES:
      raise ValueError(f"recipe single_template={self.single_template!r}: a judge template needs n >= 2 responses")
    lo, hi = self.score_range
    if lo > hi:
      raise ValueError(f"recipe score_range={self.score_range}: empty")
    if self.max_responses < 1 or self.k < 1 or self.max_new_tokens < 1:
      raise ValueError("recipe max_responses, k and max_new_tokens must be >= 1")
    if self.temperature < 0 or not 0 < self.top_p <= 1:
      raise ValueError(f"recipe temperature={self.temperature}, top_p={self.top_p}: need >= 0 and (0, 1]")
    if self.k_meta is not None and self.k_meta < 1:
      raise ValueError(f"recipe k_meta={self.k_meta}: need >= 1 (or null for ceil(k/2))")

  @property
  def neutral_reward(self) -> float:
    """What a response gets when none of its judgements parse: `invalid_reward`, else the middle of the range."""
    if self.invalid_reward is not None:
      return float(self.invalid_reward)
    return (self.score_range[0] + self.score_range[1]) / 2

  def template_for(self, n: int) -> tuple[str, str]:
    """(name, text) of the template for a prompt showing n responses."""
    return (self.single_template, self.single_template_text) if n == 1 else (self.template, self.template_text)

  def replace(self, **changes: Any) -> Recipe:
    return dataclasses.replace(self, **changes)

  # ------------------------------------------------------------------ JSON

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["format"] = FORMAT
    out["score_range"] = list(self.score_range)
    out["chat"] = list(self.chat)
    if self.meta is not None:
      out["meta"]["chat"] = list(self.meta.chat)
    return out

  @classmethod
  def from_dict(cls, data: Mapping[str, Any], where: str = "recipe") -> Recipe:
    data = dict(data)
    fmt = data.pop("format", FORMAT)
    if fmt != FORMAT:
      raise ValueError(f"{where}: format {fmt!r} is not {FORMAT!r} (written by another grm_jax version)")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
      raise ValueError(f"{where}: unknown key {unknown[0]!r}; expected some of {sorted(known)}")
    if data.get("meta") is not None:
      meta = dict(data["meta"])
      meta_known = {f.name for f in dataclasses.fields(MetaRecipe)}
      if set(meta) - meta_known:
        raise ValueError(f"{where}: unknown meta key {sorted(set(meta) - meta_known)[0]!r}")
      meta["chat"] = tuple(meta.get("chat", ()))
      data["meta"] = MetaRecipe(**meta)
    if "score_range" in data:
      data["score_range"] = tuple(int(v) for v in data["score_range"])
    if "chat" in data:
      data["chat"] = tuple(data["chat"])
    try:
      return cls(**data)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{where}: {e}") from None

  def save(self, folder: str) -> str:
    path = os.path.join(folder, RECIPE_FILE)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(self.to_dict(), f, indent=2, ensure_ascii=False)
      f.write("\n")
    return path

  @classmethod
  def load(cls, path: str) -> Recipe:
    """From an exported GRM folder (its `grm_recipe.json`) or the JSON file itself."""
    file = os.path.join(path, RECIPE_FILE) if os.path.isdir(path) else path
    if not os.path.exists(file):
      raise FileNotFoundError(f"{file}: no GRM recipe (export the GRM with `python -m grm_jax.export`)")
    try:
      with open(file, encoding="utf-8") as f:
        data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{file}: line {e.lineno}: not valid JSON ({e.msg})") from None
    return cls.from_dict(data, where=file)


def recipe_from_config(config: Mapping[str, Any], tokenizer: Any = None, meta: MetaRecipe | None = None,
                       **provenance: Any) -> Recipe:
  """A run's recipe from its config (a dict of groups, as a workdir's config.json holds): the GRM template, the
  evaluation's sampling settings (k, temperature, top-p, max new tokens: how the run itself voted), the meta RM's
  k_meta when the run has one, and the chat frame of `tokenizer`."""
  ev = config.get("eval", {})
  ev = ev.get("sampling", ev)  # runs written before the `eval.sampling` group kept these keys in `eval` itself
  grm_group = config.get("grm", {})
  template = str(grm_group.get("template", "default"))
  lo_hi = prompts.SCORE_RANGES[template]
  return Recipe(
    template=template,
    single_template="default",
    score_range=tuple(lo_hi),
    clip=prompts.CLIP_RANGES[template] is not None,
    max_responses=int(grm_group.get("max_responses", 4)),
    k=int(ev.get("k", 8)),
    temperature=float(ev.get("temperature", 0.5)),
    top_p=float(ev.get("top_p", 1.0)),
    max_new_tokens=int(ev.get("max_new_tokens", 512)),
    chat=tuple(chat_frame(tokenizer)) if tokenizer is not None else (),
    meta=meta,
    provenance=dict(provenance),
  )
