"""PreferenceExample: validation names the field, ground truth is derived consistently, JSON round-trips."""

import dataclasses

import pytest

from grm_jax.data import DataError, PreferenceExample, read_examples, write_examples


def _ex(**kw):
  base = dict(context="What is 2 + 2?", responses=("4", "5"), rewards=(1.0, 0.0), source="t", id="1")
  base.update(kw)
  return PreferenceExample(**base)


def test_pairwise_best_is_derived_from_rewards():
  ex = _ex()
  assert ex.best == 0 and ex.n == 2 and ex.query == "What is 2 + 2?" and ex.history == ()
  assert ex.context == ({"role": "user", "content": "What is 2 + 2?"},)


def test_rewards_are_filled_one_hot_from_best():
  ex = _ex(rewards=None, best=1)
  assert ex.rewards == (0.0, 1.0)


def test_ties_leave_best_unset():
  ex = _ex(responses=("a", "b", "c"), rewards=(1, 1, 0))
  assert ex.best is None and ex.rewards == (1.0, 1.0, 0.0)


def test_single_response_keeps_its_label_and_has_no_best():
  assert _ex(responses=("4",), rewards=(1,)).best is None
  with pytest.raises(DataError, match=r"PreferenceExample\.best: must be None for n = 1"):
    _ex(responses=("4",), rewards=(1,), best=0)


@pytest.mark.parametrize(
  ("kw", "pattern"),
  [
    (dict(responses=()), r"PreferenceExample\.responses: needs n >= 1"),
    (dict(responses="4"), r"PreferenceExample\.responses: expected a sequence"),
    (dict(responses=("4", 5)), r"PreferenceExample\.responses: response 1 is a int"),
    (dict(rewards=(1.0,)), r"PreferenceExample\.rewards: has 1 values but there are 2 responses"),
    (dict(rewards=(1.0, float("nan"))), r"PreferenceExample\.rewards: values must be finite"),
    (dict(rewards=None), r"PreferenceExample\.rewards: neither rewards nor best"),
    (dict(best=2), r"PreferenceExample\.best: index 2 is out of range"),
    (dict(best=1), r"PreferenceExample\.best: index 1 is not the unique maximum"),
    (dict(context=[]), r"PreferenceExample\.context: is empty"),
    (dict(context=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]), r"last turn"),
    (dict(context=[{"role": "robot", "content": "q"}]), r"PreferenceExample\.context: turn 0 has role 'robot'"),
    (dict(metadata={"x": object()}), r"PreferenceExample\.metadata: must be JSON-serializable"),
    (dict(id=3), r"PreferenceExample\.id: expected str"),
  ],
)
def test_validation_names_the_field(kw, pattern):
  with pytest.raises(DataError, match=pattern):
    _ex(**kw)


def test_hashable_and_consistent_with_equality():
  assert len({_ex(), _ex(), _ex(id="2")}) == 2


def test_frozen():
  with pytest.raises(dataclasses.FrozenInstanceError):
    _ex().best = 1  # type: ignore[misc]


def test_json_round_trip_is_exact(tmp_path):
  exs = [
    _ex(metadata={"styles": ("a", "b"), "k": 1}),
    _ex(
      context=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "é?"},
      ],
      responses=("x", "y", "z"),
      rewards=(0.2, 0.9, 0.1),
      category="c",
      id="2",
    ),
  ]
  assert exs[0].metadata["styles"] == ["a", "b"]  # normalized to JSON values at construction
  assert [PreferenceExample.from_json(e.to_json()) for e in exs] == exs
  path = tmp_path / "x.jsonl"
  assert write_examples(exs, str(path)) == 2
  assert read_examples(path) == exs


def test_from_dict_rejects_unknown_keys_and_accepts_prompt():
  with pytest.raises(DataError, match=r"unknown key\(s\) \['reward'\]"):
    PreferenceExample.from_dict({"prompt": "q", "responses": ["a"], "reward": [1]})
  ex = PreferenceExample.from_dict({"prompt": "q", "responses": ["a", "b"], "best": 1})
  assert ex.rewards == (0.0, 1.0) and ex.query == "q"


def test_write_jsonl_refuses_realmistake(tmp_path):
  ex = _ex(responses=("r",), rewards=(0,), source="realmistake/math/gpt-4")
  with pytest.raises(DataError, match="refusing to write ReaLMistake"):
    write_examples([ex], str(tmp_path / "leak.jsonl"))
  assert not (tmp_path / "leak.jsonl").exists()  # refused before anything is written
