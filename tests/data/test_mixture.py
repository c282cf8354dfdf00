"""Several training sources in one spec: per-source limits, the total cap, seeded mixing, errors naming the key."""

import json
import re

import ml_collections
import pytest

from grm_jax import configs, data
from grm_jax.stages import common


def _source(path, name, count):
  rows = [{"prompt": f"{name} {i}?", "responses": ["a", "b"], "rewards": [1, 0], "source": name, "id": str(i)}
          for i in range(count)]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


@pytest.fixture
def two(tmp_path):
  return _source(tmp_path / "a.jsonl", "A", 30), _source(tmp_path / "b.jsonl", "B", 30)


def test_per_source_limits_and_sources_kept(two):
  a, b = two
  out = data.load_mixture(f"jsonl:{a}@5; {b}@12")
  assert len(out) == 17 and out.files == [str(a), str(b)]
  assert sorted((e.source, int(e.id)) for e in out) == [("A", i) for i in range(5)] + [("B", i) for i in range(12)]
  assert [e.source for e in out] != sorted(e.source for e in out)  # mixed, not one source after the other


def test_total_cap_takes_from_every_source(two):
  a, b = two
  out = data.load_mixture(f"{a};{b}", limit=10, seed=0)
  assert len(out) == 10 and {e.source for e in out} == {"A", "B"}
  # Capped, a source contributes from its first `limit` items only.
  assert all(int(e.id) < 10 for e in out)
  assert len(data.load_mixture(f"{a}@3;{b}@4", limit=100)) == 7


def test_mixing_is_deterministic_per_seed(two):
  a, b = two
  ids = [[(e.source, e.id) for e in data.load_mixture(f"{a};{b}", limit=20, seed=s)] for s in (0, 0, 1)]
  assert ids[0] == ids[1] and ids[0] != ids[2]


def test_single_spec_is_load_dataset(two):
  a, _ = two
  assert data.load_mixture(str(a), limit=7) == data.load_dataset(str(a), limit=7)  # file order, no shuffle
  assert data.load_mixture(f"{a}@4", limit=7) == data.load_dataset(str(a), limit=4)
  spec = "synthetic:n=2,tasks=letter+upper"
  assert data.load_mixture(spec, limit=6, synthetic_split="test", seed=9) == data.load_dataset(spec, split="test",
                                                                                                  limit=6)


def test_synthetic_options_survive_the_separators():
  parts = data.parse_mixture("synthetic:n=2,tasks=letter+upper@8;synthetic:seed=1,n=1+4")
  assert parts == (data.MixturePart("synthetic:n=2,tasks=letter+upper", 8), data.MixturePart("synthetic:seed=1,n=1+4"))
  out = data.load_mixture("synthetic:n=2,tasks=letter+upper@8;synthetic:seed=1,n=1+4@5", limit=100)
  assert len(out) == 13 and sorted({e.n for e in out}) == [1, 2, 4]


@pytest.mark.parametrize(
  ("spec", "message"),
  [
    ("", "config data.train='': empty"),
    ("skywork;;math:x.jsonl", "config data.train='skywork;;math:x.jsonl': empty part"),
    ("skywork;", "empty part"),
    ("skywork@", "config data.train: part 'skywork@': limit '' after '@' is not a positive integer"),
    ("skywork@0", "part 'skywork@0': limit '0'"),
    ("skywork@-2", "part 'skywork@-2': limit '-2'"),
    ("skywork@1e3", "part 'skywork@1e3': limit '1e3'"),
    ("@5", "part '@5' names no data set"),
    ("skywork;skyw0rk@10", "config data.train: part 'skyw0rk@10': unknown data set 'skyw0rk'"),
    ("skywork@5;skywork", "data set 'skywork' is named twice"),
  ],
)
def test_bad_specs_name_the_key_and_the_part(spec, message):
  with pytest.raises(ValueError, match=re.escape(message)) as e:
    data.parse_mixture(spec)
  assert str(e.value).startswith("config data.train") and "\n" not in str(e.value)


def test_reader_errors_name_the_key_and_the_part(tmp_path):
  with pytest.raises(ValueError, match=r"^config data.test: part 'jsonl': 'jsonl' needs a path"):
    data.load_mixture(f"{_source(tmp_path / 'a.jsonl', 'A', 2)};jsonl", key="data.test")


def _config(train, limit, seed=0):
  c = ml_collections.ConfigDict()
  c.seed, c.benchmark_root = seed, "/nonexistent"
  c.data = configs.data()
  c.data.train, c.data.train_limit = train, limit
  return c


def test_training_items_use_the_mixture(two):
  a, b = two
  c = _config(f"{a}@20;{b}", 25, seed=3)
  items = common.training_items(c, "train")
  assert len(items) == 25 and {e.source for e in items} == {"A", "B"}
  assert [e.id for e in items] == [e.id for e in data.load_mixture(f"{a}@20;{b}", limit=25, seed=3)]
  # The default data (one synthetic spec) gives the items it always gave, for either split.
  c = _config("synthetic:n=2,tasks=letter+upper", 5)
  assert common.training_items(c, "train") == data.synthetic("train", size=5, n=(2,), tasks=("letter", "upper"))
  c.data.test, c.data.test_limit = "synthetic", 3
  assert common.training_items(c, "test") == data.synthetic("test", size=3)


def test_validate_rejects_a_bad_data_spec():
  c = configs.base(("rft",))
  c.data.train = "skywork@ten"
  with pytest.raises(ValueError, match="^config data.train: part 'skywork@ten'"):
    configs.validate(c, num_devices=1)
  c.data.train, c.data.test = "skywork@10;synthetic", "nope"
  with pytest.raises(ValueError, match="^config data.test: part 'nope'"):
    configs.validate(c, num_devices=1)
