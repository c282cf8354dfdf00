"""Sharding by name: mesh shapes, logical-axis rules, the mesh scope, and sharded forwards on 8 fake CPU devices.

conftest.py gives this process 8 CPU devices. Every sharded forward is compared with the
single-device model built from the same seed (params come out identical: random init is
partitionable), and the test prints where each param lives (`pytest -s` shows the table).
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from grm_jax import models, parallel
from grm_jax.models import weights

P = PartitionSpec
# README: the sharded forward equals the single-device one to <= 1.8e-7 (Llama, Qwen2) and <= 8.6e-6 (Gemma-2, logits
# up to +-30). Llama and Qwen2 are held to twice the printed value; Gemma-2 stays at 1e-5, tighter than twice its
# printed 8.6e-6 (its left-padded d2t4 forward measures 9.5e-6: the logits' scale, 30, puts its f32 noise there).
TOL = {"llama": 2 * 1.8e-7, "qwen2": 2 * 1.8e-7, "gemma2": 1e-5}
MESHES = {
  "fsdp8": {"fsdp": 8},
  "d2f2t2": {"data": 2, "fsdp": 2, "tensor": 2},
  "d2t4": {"data": 2, "tensor": 4},
}
FAMILIES = ("llama", "qwen2", "gemma2")
BATCH, LENGTH = 8, 12


# --------------------------------------------------------------------------- resolve_mesh_shape


def test_resolve_mesh_shape_fills_minus_one():
  assert parallel.resolve_mesh_shape({"fsdp": -1}, 8) == {"data": 1, "fsdp": 8, "tensor": 1}
  assert parallel.resolve_mesh_shape({"data": 2, "tensor": -1}, 8) == {"data": 2, "fsdp": 1, "tensor": 4}
  assert parallel.resolve_mesh_shape({"data": 2, "fsdp": 2, "tensor": 2}, 8) == {"data": 2, "fsdp": 2, "tensor": 2}
  # Axes not named are 1; a full explicit shape needs no -1.
  assert parallel.resolve_mesh_shape({"data": 1}, 1) == {"data": 1, "fsdp": 1, "tensor": 1}


def test_resolve_mesh_shape_errors_name_the_problem():
  with pytest.raises(ValueError, match=r"at most one axis may be -1.*'data'.*'tensor'"):
    parallel.resolve_mesh_shape({"data": -1, "tensor": -1}, 8)
  with pytest.raises(ValueError, match=r"needs 6 devices but 8 are available"):
    parallel.resolve_mesh_shape({"data": 2, "tensor": 3}, 8)
  with pytest.raises(ValueError, match=r"unknown axis 'model'"):
    parallel.resolve_mesh_shape({"model": 2, "data": -1}, 8)
  with pytest.raises(ValueError, match=r"8 devices are not divisible by 3"):
    parallel.resolve_mesh_shape({"tensor": 3, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match=r"positive or -1.*'fsdp': 0"):
    parallel.resolve_mesh_shape({"fsdp": 0}, 8)


def test_make_mesh_axes_and_devices():
  mesh = parallel.make_mesh({"data": 2, "tensor": -1})
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "tensor": 4}
  assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


# --------------------------------------------------------------------------- logical_to_spec


def test_logical_to_spec_maps_names_through_rules():
  rules = parallel.DEFAULT_RULES
  assert parallel.logical_to_spec(("vocab", "embed"), rules=rules) == P("tensor", "fsdp")
  assert parallel.logical_to_spec(("layers", "embed", "q_heads", "head_dim"), rules=rules) == P(
    None, "fsdp", "tensor", None)
  assert parallel.logical_to_spec(("activation_batch", "activation_length"), rules=rules) == P(("data", "fsdp"), None)
  # None and names missing from the table are replicated.
  assert parallel.logical_to_spec((None, "no_such_name"), rules=rules) == P(None, None)
  # Custom rules: strings, tuples and None all work.
  custom = (("a", "data"), ("b", ("fsdp", "tensor")), ("c", None))
  assert parallel.logical_to_spec(("a", "b", "c"), rules=custom) == P("data", ("fsdp", "tensor"), None)
  # Without rules given, the scope's: none without a mesh (everything replicated), the mesh's rules under one.
  assert parallel.logical_to_spec(("vocab", "embed")) == P(None, None)
  with parallel.use_mesh(_mesh("d2f2t2"), custom):
    assert parallel.logical_to_spec(("a", "b", "c")) == P("data", ("fsdp", "tensor"), None)


def test_logical_to_spec_uses_each_mesh_axis_once():
  rules = (("x", "tensor"), ("y", "tensor"), ("z", ("data", "tensor")))
  # The second name that wants `tensor` gets nothing: an axis may split one dimension only.
  assert parallel.logical_to_spec(("x", "y"), rules=rules) == P("tensor", None)
  # Partially used: `z` keeps only the axes still free.
  assert parallel.logical_to_spec(("x", "z"), rules=rules) == P("tensor", "data")
  # Default rules: mlp and vocab both want `tensor`; the first one wins.
  assert parallel.logical_to_spec(("mlp", "vocab"), rules=parallel.DEFAULT_RULES) == P("tensor", None)


@functools.cache
def _mesh(name: str) -> Mesh:
  return parallel.make_mesh(MESHES[name])


def test_logical_to_spec_drops_indivisible_and_trivial_axes():
  with parallel.use_mesh(_mesh("d2t4"), parallel.DEFAULT_RULES):
    # 3 KV heads (SmolLM2) on tensor=4: left replicated instead of failing.
    assert parallel.logical_to_spec(("embed", "kv_heads", "head_dim"), (64, 3, 16)) == P(None, None, None)
    assert parallel.logical_to_spec(("embed", "kv_heads", "head_dim"), (64, 4, 16)) == P(None, "tensor", None)
    # fsdp has size 1 here, so it is left out of the spec.
    assert parallel.logical_to_spec(("activation_batch",), (8,)) == P("data")
    # A batch of 3 is not divisible by data=2 -> replicated; batch over data*fsdp needs 4 on d2f2t2.
    assert parallel.logical_to_spec(("activation_batch",), (3,)) == P(None)
    # A dimension the axis cannot divide frees that axis for later dimensions.
    assert parallel.logical_to_spec(("mlp", "vocab"), (6, 8)) == P(None, "tensor")
  with parallel.use_mesh(_mesh("d2f2t2")):
    assert parallel.logical_to_spec(("activation_batch",), (4,)) == P(("data", "fsdp"))
    assert parallel.logical_to_spec(("activation_batch",), (2,)) == P(None)


# --------------------------------------------------------------------------- sharded forward


def _cfg(family: str):
  # 4 heads / 2 KV heads: q heads split over tensor 2 and 4; KV heads over tensor 2 only
  # (tensor=4 exercises the replicated fallback). hidden 64, mlp 128, vocab 256 divide every mesh.
  return models.tiny(family, num_heads=4, num_kv_heads=2)


def _batch(cfg, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, cfg.vocab_size, size=(BATCH, LENGTH), dtype=np.int32)
  mask = np.ones((BATCH, LENGTH), bool)
  for row, pad in enumerate((0, 3, 0, 5, 1, 0, 7, 2)):  # left padding of various lengths
    mask[row, :pad] = False
    tokens[row, :pad] = 0
  return tokens, mask


@functools.cache
def _reference(family: str):
  """Single-device model and its logits (full and left-padded), computed once per family."""
  cfg = _cfg(family)
  model = models.from_config(cfg, seed=0)
  tokens, mask = _batch(cfg)
  return model, np.asarray(models.logits(model, tokens)), np.asarray(models.logits(model, tokens, mask))


# Compiling random init takes seconds per (config, mesh) on 2 CPU cores, so `from_config` with
# a mesh runs on one mesh per family (every family and every mesh once); checkpoint loading,
# which needs no init, covers the full family x mesh matrix.
BUILT = {"qwen2": "d2f2t2", "llama": "d2t4", "gemma2": "fsdp8"}


@functools.cache
def _sharded(family: str, mesh_name: str):
  with parallel.use_mesh(_mesh(mesh_name)):
    return models.from_config(_cfg(family), seed=0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """family -> HF directory holding the reference model (written lazily, once)."""
  out = {}

  def get(family):
    if family not in out:
      path = tmp_path_factory.mktemp(f"ckpt_{family}")
      models.save_pretrained(_reference(family)[0], str(path))
      out[family] = str(path)
    return out[family]

  return get


def _placements(params) -> list[str]:
  shardings = jax.tree_util.tree_map(lambda a: a.sharding, params)
  return parallel.describe(params, shardings)


def _spec(arr) -> tuple:
  """A spec as a tuple padded to the array's rank (trailing Nones are implicit in PartitionSpec)."""
  spec = tuple(arr.sharding.spec)
  return spec + (None,) * (arr.ndim - len(spec))


def _check_forward(model, family: str, label: str) -> None:
  """Sharded logits == single-device logits (full and left-padded); logits sharded by batch."""
  _, ref_full, ref_padded = _reference(family)
  tokens, mask = _batch(model.config)
  out = models.logits(model, tokens)
  out_padded = models.logits(model, tokens, mask)
  d_full = float(np.max(np.abs(np.asarray(out) - ref_full)))
  d_pad = float(np.max(np.abs(np.asarray(out_padded) - ref_padded)))
  scale = float(np.max(np.abs(ref_full)))
  shape = ",".join(f"{a}={n}" for a, n in model.mesh.shape.items() if n > 1)
  print(f"\n[{label} {family} {shape}] max|Δ| full={d_full:.2e} left-padded={d_pad:.2e} (max|logit| {scale:.2f})")
  assert d_full <= TOL[family] and d_pad <= TOL[family], (family, shape, d_full, d_pad)

  # The logits are constrained to (activation_batch, activation_length, activation_vocab):
  # rows over data x fsdp (the axes of size > 1), vocab over tensor.
  mesh = model.mesh
  batch_axes = tuple(a for a in ("data", "fsdp") if mesh.shape[a] > 1)
  want = (batch_axes[0] if len(batch_axes) == 1 else batch_axes, None, "tensor" if mesh.shape["tensor"] > 1 else None)
  for o in (out, out_padded):
    assert _spec(o) == want, o.sharding
    rows = BATCH // (mesh.shape["data"] * mesh.shape["fsdp"])
    vocab = model.config.vocab_size // mesh.shape["tensor"]
    assert {s.data.shape for s in o.addressable_shards} == {(rows, LENGTH, vocab)}


@pytest.mark.parametrize(("family", "mesh_name"), list(BUILT.items()))
def test_from_config_with_mesh_matches_single_device(family, mesh_name):
  model = _sharded(family, mesh_name)
  # Same seed, same numbers: random init does not depend on the mesh.
  ref = _reference(family)[0]
  for a, b in zip(jax.tree_util.tree_leaves(ref.params), jax.tree_util.tree_leaves(model.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # ... and every leaf sits in the sharding the rules give it.
  with model.scope():
    want = weights.param_shardings(model.config)
  for (path, a), s in zip(
    jax.tree_util.tree_leaves_with_path(model.params), jax.tree_util.tree_leaves(want), strict=True
  ):
    assert a.sharding.is_equivalent_to(s, a.ndim), jax.tree_util.keystr(path)
  _check_forward(model, family, "from_config")


@pytest.mark.parametrize("mesh_name", list(MESHES))
@pytest.mark.parametrize("family", FAMILIES)
def test_load_checkpoint_with_mesh_matches_single_device(checkpoints, family, mesh_name):
  mesh = _mesh(mesh_name)
  with parallel.use_mesh(mesh):
    loaded = models.load(checkpoints(family), tokenizer=False)
  assert loaded.mesh is mesh and loaded.config == _cfg(family) and loaded.rules == parallel.DEFAULT_RULES

  # Each tensor lands in its rules' sharding, with exactly the saved values.
  ref = _reference(family)[0]
  with parallel.use_mesh(mesh, loaded.rules):
    want = weights.param_shardings(loaded.config)
  flat_l = jax.tree_util.tree_leaves_with_path(loaded.params)
  for (path, a), b, s in zip(
    flat_l, jax.tree_util.tree_leaves(ref.params), jax.tree_util.tree_leaves(want), strict=True
  ):
    assert a.sharding.is_equivalent_to(s, a.ndim), jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
  _check_forward(loaded, family, "load")


def test_placements_d2f2t2():
  """Where every param lives under {data: 2, fsdp: 2, tensor: 2}, printed and asserted."""
  model = _sharded("qwen2", "d2f2t2")
  cfg, p = model.config, model.params
  print("\nqwen2 tiny on {data: 2, fsdp: 2, tensor: 2}:\n" + "\n".join(_placements(p)))

  L, D, H, KV, HD, F, V = (
    cfg.num_layers,
    cfg.hidden_size,
    cfg.num_heads,
    cfg.num_kv_heads,
    cfg.head_dim,
    cfg.intermediate_size,
    cfg.vocab_size,
  )
  expected = {
    # path: (global shape, spec, per-device shard shape)
    ("embed",): ((V, D), ("tensor", "fsdp"), (V // 2, D // 2)),
    ("lm_head",): ((D, V), ("fsdp", "tensor"), (D // 2, V // 2)),
    ("final_norm", "scale"): ((D,), (None,), (D,)),
    ("layers", "attn_norm", "scale"): ((L, D), (None, None), (L, D)),
    ("layers", "mlp_norm", "scale"): ((L, D), (None, None), (L, D)),
    ("layers", "attn", "q"): ((L, D, H, HD), (None, "fsdp", "tensor", None), (L, D // 2, H // 2, HD)),
    ("layers", "attn", "k"): ((L, D, KV, HD), (None, "fsdp", "tensor", None), (L, D // 2, KV // 2, HD)),
    ("layers", "attn", "v"): ((L, D, KV, HD), (None, "fsdp", "tensor", None), (L, D // 2, KV // 2, HD)),
    ("layers", "attn", "o"): ((L, H, HD, D), (None, "tensor", None, "fsdp"), (L, H // 2, HD, D // 2)),
    ("layers", "attn", "q_bias"): ((L, H, HD), (None, "tensor", None), (L, H // 2, HD)),
    ("layers", "attn", "k_bias"): ((L, KV, HD), (None, "tensor", None), (L, KV // 2, HD)),
    ("layers", "mlp", "gate"): ((L, D, F), (None, "fsdp", "tensor"), (L, D // 2, F // 2)),
    ("layers", "mlp", "up"): ((L, D, F), (None, "fsdp", "tensor"), (L, D // 2, F // 2)),
    ("layers", "mlp", "down"): ((L, F, D), (None, "tensor", "fsdp"), (L, F // 2, D // 2)),
  }
  for path, (shape, spec, shard_shape) in expected.items():
    arr = p
    for k in path:
      arr = arr[k]
    where = "/".join(path)
    assert arr.shape == shape, where
    assert _spec(arr) == spec, f"{where}: {arr.sharding.spec}"
    assert len(arr.addressable_shards) == 8, where
    for s in arr.addressable_shards:
      assert s.data.shape == shard_shape, f"{where} on {s.device}: {s.data.shape}"

  # The data axis replicates params: devices differing only in `data` hold the same block,
  # and the 4 devices of one data replica hold 4 different blocks.
  q = p["layers"]["attn"]["q"]
  block = {s.device: tuple((i.start, i.stop) for i in s.index) for s in q.addressable_shards}
  devs = model.mesh.devices  # [data, fsdp, tensor]
  for f in range(2):
    for t in range(2):
      assert block[devs[0, f, t]] == block[devs[1, f, t]]
  assert len({block[d] for d in devs[0].flat}) == 4

  # Every leaf appears in the table.
  assert len(_placements(p)) == len(jax.tree_util.tree_leaves(p))


def test_placements_tensor4_replicates_indivisible_kv_heads():
  """{data: 2, tensor: 4}: 2 KV heads cannot split 4 ways, so K/V stay whole; Q heads split."""
  model = _sharded("llama", "d2t4")
  print("\nllama tiny on {data: 2, tensor: 4}:\n" + "\n".join(_placements(model.params)))
  attn = model.params["layers"]["attn"]
  assert _spec(attn["q"]) == (None, None, "tensor", None)
  assert {s.data.shape for s in attn["q"].addressable_shards} == {(2, 64, 1, 16)}
  assert _spec(attn["k"]) == (None, None, None, None)
  assert {s.data.shape for s in attn["k"].addressable_shards} == {attn["k"].shape}
  assert _spec(model.params["embed"]) == ("tensor", None)
  assert {s.data.shape for s in model.params["embed"].addressable_shards} == {(64, 64)}


def test_placements_fsdp8():
  model = _sharded("gemma2", "fsdp8")
  p = model.params
  print("\ngemma2 tiny on {fsdp: 8}:\n" + "\n".join(_placements(p)))
  assert _spec(p["embed"]) == (None, "fsdp")
  assert {s.data.shape for s in p["embed"].addressable_shards} == {(256, 8)}
  assert _spec(p["layers"]["mlp"]["down"]) == (None, None, "fsdp")
  assert _spec(p["layers"]["post_mlp_norm"]["scale"]) == (None, None)
  assert "lm_head" not in p  # tied embeddings


def test_shard_batch_places_rows_over_data_and_fsdp():
  x = np.arange(8 * 3, dtype=np.int32).reshape(8, 3)
  with parallel.use_mesh(_mesh("d2f2t2"), parallel.DEFAULT_RULES):
    arr = parallel.shard_batch(x)
    # A batch the mesh cannot divide is replicated rather than failing.
    odd = parallel.shard_batch(x[:3])
  assert _spec(arr) == (("data", "fsdp"), None)
  assert {s.data.shape for s in arr.addressable_shards} == {(2, 3)}
  np.testing.assert_array_equal(np.asarray(arr), x)
  assert _spec(odd) == (None, None)
  np.testing.assert_array_equal(np.asarray(odd), x[:3])
  with pytest.raises(ValueError, match="needs a mesh"):
    parallel.shard_batch(x)  # no mesh in scope: nowhere to shard it


# --------------------------------------------------------------------------- the mesh scope


def _doubled():
  """A program whose output sharding comes only from the constraint inside it (its input is a host array)."""
  return jax.jit(lambda x: parallel.constrain(2 * x, ("activation_batch", "activation_embed")))


def test_use_mesh_sets_normalizes_and_restores_the_scope():
  assert parallel.scope() == parallel.NO_MESH and parallel.current_mesh() is None
  mesh = _mesh("d2f2t2")
  as_json = [["activation_batch", ["data", "fsdp"]], ["embed", None]]  # a config read back from JSON has lists
  with parallel.use_mesh(mesh, as_json) as entered:
    assert entered is mesh and parallel.current_mesh() is mesh
    assert parallel.scope().rules == (("activation_batch", ("data", "fsdp")), ("embed", None))  # hashable
    assert parallel.batch_shards() == 4
    with parallel.use_mesh(None, as_json):  # one device: no rules, so no constraint
      assert parallel.scope() == parallel.NO_MESH and parallel.batch_shards() == 1
      x = np.ones((8, 16), np.float32)
      assert parallel.constrain(x, ("activation_batch", None)) is x
    assert parallel.current_mesh() is mesh
  assert parallel.scope() == parallel.NO_MESH


def test_per_mesh_caches_one_program_per_scope():
  program = parallel.per_mesh(maxsize=8)(_doubled)
  a, b = _mesh("d2f2t2"), _mesh("fsdp8")
  with parallel.use_mesh(a):
    on_a = program()
    assert program() is on_a  # built once per scope
  with parallel.use_mesh(b):
    on_b = program()
  with parallel.use_mesh(a, (("activation_batch", "data"),)):  # the same mesh with other rules: another scope
    on_a_data = program()
  assert len({id(on_a), id(on_b), id(on_a_data), id(program())}) == 4  # program(): no mesh, a fourth
  assert (on_a.scope.mesh, on_b.scope.mesh) == (a, b)
  assert program.cache_info().currsize == 4
  x = np.ones((8, 16), np.float32)
  assert _spec(on_a(x)) == (("data", "fsdp"), None)
  assert _spec(on_b(x)) == ("fsdp", None)
  assert _spec(on_a_data(x)) == ("data", None)


def test_a_program_runs_on_its_own_mesh_from_a_thread_without_one():
  """A scope does not cross threads (the server calls the engine from its worker thread): a program built under one
  is traced, called and lowered under it wherever it runs."""
  program = parallel.per_mesh(maxsize=2)(_doubled)
  x = np.ones((8, 16), np.float32)
  with parallel.use_mesh(_mesh("d2f2t2")):
    bound = program()  # built here, traced first in the thread below
    want = _doubled()(x)  # the same program traced here, under the scope
  got = {}

  def worker():
    got["scope"] = parallel.scope()
    got["plain"] = _doubled()(x)  # what a program that does not carry its scope does in this thread
    got["bound"] = bound(x)
    got["lowered"] = bound.lower(x).compile().output_shardings

  thread = threading.Thread(target=worker)
  thread.start()
  thread.join()
  assert got["scope"] == parallel.NO_MESH
  assert len(got["plain"].sharding.device_set) == 1  # unconstrained: one device
  assert _spec(got["bound"]) == _spec(want) == (("data", "fsdp"), None)
  assert got["bound"].sharding.is_equivalent_to(want.sharding, 2)
  assert got["lowered"].is_equivalent_to(want.sharding, 2)
  np.testing.assert_array_equal(np.asarray(got["bound"]), 2 * x)


def test_a_partial_slurm_environment_is_a_single_process_run(monkeypatch, caplog):
  """Older jax took SLURM_JOB_ID alone for a SLURM cluster and then raised KeyError on the step's missing variables
  (an allocation entered by ssh or salloc, no srun step); with no arguments that is one process, with a warning."""
  def old_jax_initialize(**kwargs):
    if kwargs["coordinator_address"] is None:
      raise KeyError("SLURM_STEP_NODELIST")
    raise AssertionError("not reached")

  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", old_jax_initialize)
  with caplog.at_level(logging.WARNING):
    assert parallel.initialize_distributed() is False
  assert "'SLURM_STEP_NODELIST'" in caplog.text and "srun" in caplog.text
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: (_ for _ in ()).throw(KeyError("X")))
  with pytest.raises(KeyError):  # explicit arguments are the user's cluster: their error is not swallowed
    parallel.initialize_distributed("localhost:1234", 2, 0)


# Slow tier: a fresh process (JAX's cluster detection runs before any backend starts), about 5 s of imports.
@pytest.mark.slow
def test_a_partial_slurm_environment_through_jax_s_own_detection():
  code = ("import os\n"
          "from jax._src.clusters import slurm_cluster\n"
          "# the detection of older jax: SLURM_JOB_ID alone\n"
          "slurm_cluster.SlurmCluster.is_env_present = classmethod(lambda cls: 'SLURM_JOB_ID' in os.environ)\n"
          "import jax\n"
          "from grm_jax import parallel\n"
          "print(parallel.initialize_distributed(), jax.distributed.is_initialized(), jax.process_count())\n")
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "XLA_FLAGS"))}
  env.update(SLURM_JOB_ID="123", JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  assert p.stdout.split() == ["False", "False", "1"]
  assert "SLURM_STEP_NODELIST" in p.stderr
