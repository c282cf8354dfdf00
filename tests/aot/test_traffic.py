"""HBM traffic from optimized HLO (grm_jax.aot.traffic): on-chip staging copies are not HBM traffic, a slice reads
its slice, a gather its rows. Golden numbers counted by hand on a small module; runs without libtpu."""

import pytest

from grm_jax.aot import traffic

HLO = """HloModule m

%g (a: bf16[1024,256], i: s32[8]) -> bf16[8,256] {
  %a = bf16[1024,256]{1,0} parameter(0)
}

ENTRY %main (p0: bf16[1024,256], p1: s32[8]) -> f32[8,1024] {
  %p0 = bf16[1024,256]{1,0:T(8,128)(2,1)} parameter(0)
  %p1 = s32[8]{0} parameter(1)
  %copy-start = (bf16[1024,256]{1,0:T(8,128)(2,1)S(1)}, bf16[1024,256]{1,0:T(8,128)(2,1)}, u32[]{:S(2)}) copy-start(%p0)
  %copy-done = bf16[1024,256]{1,0:T(8,128)(2,1)S(1)} copy-done(%copy-start)
  %gather_fusion = bf16[8,256]{1,0} fusion(%p0, %p1), kind=kLoop, calls=%g
  %slice-start = ((bf16[1024,256]{1,0}), bf16[128,256]{1,0:S(1)}, s32[]{:S(2)}) slice-start(%p0), slice={[0:128]}
  %slice-done = bf16[128,256]{1,0:S(1)} slice-done(%slice-start)
  %c0 = s32[]{:T(128)} constant(0)
  %dynamic-update-slice.1 = bf16[1024,256]{1,0} dynamic-update-slice(%p0, %gather_fusion, %c0, %c0)
  ROOT %fusion = f32[8,1024]{1,0} fusion(%gather_fusion, %copy-done, %slice-done), kind=kOutput, calls=%g
}
"""


def test_hbm_bytes_by_hand():
  total, kinds = traffic.hbm_bytes(HLO)
  table = 1024 * 256 * 2
  rows = 8 * 256 * 2
  assert kinds["copy-start"] == table  # the prefetch reads the table from HBM once; its VMEM copy is not HBM
  assert kinds["gather"] == 8 * 4 + rows + rows  # indices, the 8 rows read, the 8 rows written
  assert kinds["slice-start"] == 128 * 256 * 2  # only the slice
  assert kinds["fusion"] == rows + 8 * 1024 * 4  # the gathered rows from HBM (VMEM operands free), its f32 output
  assert kinds["dynamic-update-slice"] == 2 * rows + 2 * 4  # in place: the 8 rows in and out, two indices
  assert total == sum(kinds.values())


def test_not_hlo_text_is_refused():
  with pytest.raises(ValueError, match="no ENTRY"):
    traffic.hbm_bytes("HloModule m\n")
