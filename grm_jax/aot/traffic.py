"""HBM traffic of a compiled TPU program, counted from its optimized HLO.

XLA's `cost_analysis()["bytes accessed"]` is not HBM traffic on TPU: it counts every operand and output of every
instruction in every memory space, so a weight that XLA prefetches into on-chip memory (VMEM, `S(1)` in the layout)
by an async copy or slice is counted on the copy's read, again on its write into VMEM and again when the consumer
reads it there (a decode step "moves" 2-5x its weights by that count), and a gather is counted as reading its whole
table. Here each top-level instruction of the entry computation is charged what it moves between HBM and the chip:

- its operands that live in HBM, read in full, and its output if it lands in HBM (an upper bound: a fusion may read
  only part of an operand);
- an async `copy-start` its HBM source, a `slice-start` only the slice it takes; the matching `*-done`, bitcasts,
  tuples and parameters nothing;
- a gather the rows it gathers (its output), not its table;
- a `dynamic-update-slice` its update, read and written: XLA:TPU updates the buffer in place (the decode loop's
  KV cache is donated; where it cannot, XLA inserts a `copy`, which is counted).

Loop bodies are not visited: the count is meant for loop-free programs (the decode step), like XLA's own.
"""

from __future__ import annotations

import re

_ARRAY = re.compile(r"\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|bf16|f16|f32|f64)\[([\d,]*)\](\{[^}]*\})?")
_ITEM = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
         "s64": 8, "u64": 8, "f64": 8}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.+?) ([a-z][\w\-]*)\((.*)$")
_FREE = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "copy-done", "slice-done", "after-all",
         "partition-id", "replica-id"}


def _arrays(shape: str) -> list[tuple[int, bool]]:
  """(bytes, on chip) of each array in an HLO shape (a tuple shape lists several)."""
  out = []
  for dtype, dims, layout in _ARRAY.findall(shape):
    n = 1
    for d in dims.split(","):
      if d:
        n *= int(d)
    out.append((n * _ITEM[dtype], "S(1)" in (layout or "")))
  return out


def _in_hbm(arrays: list[tuple[int, bool]]) -> int:
  return sum(b for b, on_chip in arrays if not on_chip)


def _entry(text: str) -> list[str]:
  m = re.search(r"\nENTRY [^\n]*\{\n(.*?)\n\}", text, re.S)
  if not m:
    raise ValueError("no ENTRY computation in the HLO text")
  return m.group(1).splitlines()


def hbm_bytes(hlo_text: str) -> tuple[int, dict[str, int]]:
  """(bytes moved between HBM and the chip, the same by instruction kind) of the optimized HLO's entry computation
  (`compiled.as_text()`), by the rules in the module docstring."""
  shapes: dict[str, list[tuple[int, bool]]] = {}
  total, by_kind = 0, {}
  for line in _entry(hlo_text):
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, shape, op, rest = m.groups()
    shapes[name] = _arrays(shape)
    if op in _FREE:
      continue
    operands = [a.strip().lstrip("%") for a in rest.split(")", 1)[0].split(",") if a.strip().startswith("%")]
    reads = [_in_hbm(shapes.get(o, [])) for o in operands]
    out = _in_hbm(shapes[name])
    if op == "slice-start":  # ((source), slice, context): reads the slice
      moved = shapes[name][1][0] if len(shapes[name]) > 1 else 0
    elif op == "copy-start":
      moved = sum(reads)
    elif op == "dynamic-update-slice":  # in place: the update in, the same bytes out; plus the indices
      moved = 2 * (reads[1] if len(reads) > 1 else 0) + sum(reads[2:])
    elif op == "gather" or name.startswith("gather"):  # the rows it gathers, not the table
      moved = sum(reads) - max(reads, default=0) + sum(b for b, _ in shapes[name]) + out
    else:
      moved = sum(reads) + out
    total += moved
    kind = "gather" if name.startswith("gather") else op
    by_kind[kind] = by_kind.get(kind, 0) + moved
  return total, by_kind
