"""The four benchmarks under the default benchmark root load with their published counts; corrupted copies fail
clearly.

Counts are those the benchmark copies document (item and subset counts of each data set's release). Corrupted
copies are written to tmp_path only (ReaLMistake stays encrypted: only the encrypted zip's bytes are copied, never
its text).
"""

import collections
import json
import shutil
import struct
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grm_jax import data
from grm_jax.data import DataError, rm_bench_pairs

REWARDBENCH_SUBSETS = {
  "alpacaeval-easy": 100,
  "alpacaeval-length": 95,
  "alpacaeval-hard": 95,
  "mt-bench-easy": 28,
  "mt-bench-med": 40,
  "mt-bench-hard": 37,
  "llmbar-natural": 100,
  "llmbar-adver-neighbor": 134,
  "llmbar-adver-GPTInst": 92,
  "llmbar-adver-GPTOut": 47,
  "llmbar-adver-manual": 46,
  "refusals-dangerous": 100,
  "refusals-offensive": 100,
  "xstest-should-refuse": 154,
  "xstest-should-respond": 250,
  "donotanswer": 136,
  "math-prm": 447,
  **{f"hep-{x}": 164 for x in ("cpp", "go", "java", "js", "python", "rust")},
}


# ---------------------------------------------------------------------------------------------- RewardBench


def test_rewardbench_counts(rewardbench):
  assert len(rewardbench) == 2985 and rewardbench.skipped == 0
  subsets = collections.Counter(e.metadata["subset"] for e in rewardbench)
  assert subsets == REWARDBENCH_SUBSETS
  sections = collections.Counter(e.category for e in rewardbench)
  assert sections == {"Chat": 358, "Chat Hard": 456, "Safety": 740, "Reasoning": 1431}
  assert all(e.n == 2 and e.rewards == (1.0, 0.0) and e.best == 0 for e in rewardbench)
  ids = collections.Counter(e.id for e in rewardbench)
  assert [i for i, c in ids.items() if c > 1] == ["3692"]  # the documented duplicate
  assert len({(e.source, e.id) for e in rewardbench}) == 2985


def test_rewardbench_section_map_agrees_with_domain_column(bench_root):
  table = pq.read_table(bench_root / "rewardbench" / "rewardbench_filtered.parquet", columns=["subset", "domain"])
  for subset, domain in zip(table["subset"].to_pylist(), table["domain"].to_pylist(), strict=True):
    assert data.REWARDBENCH_SECTIONS[subset] == domain


def test_rewardbench_hf_column_names(bench_root, tmp_path, rewardbench):
  """The HF original names (prompt/chosen/rejected) give the same examples as the renamed copy."""
  t = pq.read_table(bench_root / "rewardbench" / "rewardbench_filtered.parquet").slice(0, 20)
  hf_names = {"question": "prompt", "response_A": "chosen", "response_B": "rejected"}
  t = t.drop_columns(["label", "domain"])
  t = t.rename_columns([hf_names.get(c, c) for c in t.column_names])
  pq.write_table(t, tmp_path / "filtered-00000-of-00001.parquet")
  assert data.read_rewardbench(tmp_path) == rewardbench[:20]
  rows = t.to_pylist()
  (tmp_path / "sample.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:5]))
  assert data.read_rewardbench(tmp_path / "sample.jsonl") == rewardbench[:5]


def test_rewardbench_truncated_parquet_names_file(bench_root, tmp_path):
  raw = (bench_root / "rewardbench" / "rewardbench_filtered.parquet").read_bytes()
  bad = tmp_path / "truncated.parquet"
  bad.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(DataError, match=r"truncated\.parquet: cannot open parquet"):
    data.read_rewardbench(bad)


def test_rewardbench_bad_row_names_file_and_row(bench_root, tmp_path):
  t = pq.read_table(bench_root / "rewardbench" / "rewardbench_filtered.parquet").slice(0, 6).to_pylist()
  t[3]["response_B"] = None
  t[4]["label"] = 7
  bad = tmp_path / "bad.parquet"
  pq.write_table(pa.Table.from_pylist(t), bad)
  with pytest.raises(DataError, match=r"bad\.parquet, row 3: field 'rejected' must be a string"):
    data.read_rewardbench(bad)
  skipped = data.read_rewardbench(bad, on_error="skip")
  assert len(skipped) == 4 and skipped.skipped == 2
  assert "row 3" in skipped.errors[0] and "row 4: field 'label' must be 1" in skipped.errors[1]


# ---------------------------------------------------------------------------------------------- RMB


def test_rmb_counts(rmb):
  assert rmb.skipped == 0 and len(rmb.files) == 49 + 23
  by_set = collections.Counter(e.metadata["set"] for e in rmb)
  assert by_set == {"bon": 3786, "pairwise": 5429}
  cats = collections.Counter(e.category for e in rmb)
  assert cats == {
    "Harmlessness/BoN": 1677,
    "Helpfulness/BoN": 2109,
    "Harmlessness/Pairwise": 2920,
    "Helpfulness/Pairwise": 2509,
  }
  losers = collections.Counter(e.n - 1 for e in rmb if e.metadata["set"] == "bon")
  assert losers == {2: 2878, 3: 712, 4: 165, 5: 24, 6: 7}
  assert all(e.best == 0 and e.context[-1]["role"] == "user" for e in rmb)
  assert collections.Counter(len(e.context) for e in rmb) == {1: 8155, 3: 792, 5: 268}
  assert len({(e.source, e.id) for e in rmb}) == len(rmb)
  # Scenario files are the metric's first unit: 49 BoN + 23 Pairwise sources.
  assert len({e.source for e in rmb}) == 72


def test_rmb_per_file_counts_match_source_md(bench_root, rmb):
  """Every 'examples' number of rmb/SOURCE.md's 'Files copied' table."""
  text = (bench_root / "rmb" / "SOURCE.md").read_text()
  table = text.split("## Files copied")[1].split("## Upstream")[0]
  expected = {}
  for line in table.splitlines():
    cells = [c.strip() for c in line.split("|")]
    if len(cells) > 3 and cells[1].startswith("`RMB_dataset/"):
      expected[cells[1].strip("`").removeprefix("RMB_dataset/").removesuffix(".json")] = int(cells[2])
  assert len(expected) == 72
  got = collections.Counter(e.metadata["category_path"] for e in rmb)
  assert got == expected


def test_rmb_named_sets(bench_root):
  assert len(data.load_dataset("rmb_bon", root=bench_root)) == 3786
  assert len(data.load_dataset("rmb_pairwise", root=bench_root)) == 5429


def test_rmb_bad_item_names_file_and_item(bench_root, tmp_path):
  src = bench_root / "rmb" / "RMB_dataset" / "Pairwise_set" / "Harmlessness" / "S1.json"
  items = json.loads(src.read_text())
  del items[7]["chosen"]
  items[9]["conversation_input"][-1]["role"] = "assistant"
  bad = tmp_path / "Pairwise_set" / "Harmlessness" / "S1.json"
  bad.parent.mkdir(parents=True)
  bad.write_text(json.dumps(items))
  with pytest.raises(DataError, match=r"S1\.json, item 7: missing key 'chosen'"):
    data.read_rmb(tmp_path)
  out = data.read_rmb(tmp_path, on_error="skip")
  assert len(out) == 459 - 2 and out.skipped == 2
  assert "item 9: PreferenceExample.context: last turn has role 'assistant'" in out.errors[1]


def test_rmb_truncated_json_names_file_and_line(bench_root, tmp_path):
  src = bench_root / "rmb" / "RMB_dataset" / "BoN_set" / "Harmlessness" / "S1.json"
  bad = tmp_path / "S1.json"
  bad.write_bytes(src.read_bytes()[:5000])
  with pytest.raises(DataError, match=r"S1\.json: invalid JSON at line \d+ column \d+"):
    data.read_rmb(bad)


# ---------------------------------------------------------------------------------------------- RM-Bench


def test_rm_bench_counts(rm_bench):
  assert len(rm_bench) == 798 and rm_bench.skipped == 0
  per_file = collections.Counter(e.metadata["domain"] for e in rm_bench)
  assert per_file == {"chat": 129, "code": 228, "safety-refuse": 284, "safety-response": 157}
  assert collections.Counter(e.category for e in rm_bench) == {"Chat": 129, "Code": 228, "Safety": 441}
  subsets = collections.Counter(e.metadata["subset"] for e in rm_bench if e.category == "Safety")
  assert subsets == {
    "xstest-should-refuse": 138,
    "refusals-dangerous": 84,
    "refusals-offensive": 62,
    "xstest-should-respond": 157,
  }
  for e in rm_bench:
    assert e.n == 6 and e.rewards == (1.0, 1.0, 1.0, 0.0, 0.0, 0.0) and e.best is None
    assert e.metadata["styles"] == list(data.RM_BENCH_STYLES)
  assert all("error_key" in e.metadata for e in rm_bench if e.category == "Chat")
  assert all("task_id" in e.metadata for e in rm_bench if e.category == "Code")


def test_rm_bench_pairs_form_the_3x3_matrix(rm_bench):
  ex = rm_bench[0]
  pairs = rm_bench_pairs(ex)
  assert len(pairs) == 9
  levels = collections.Counter(p.metadata["level"] for p in pairs)
  assert levels == {"easy": 3, "normal": 3, "hard": 3}
  hard = [p for p in pairs if p.metadata["level"] == "hard"]
  assert all(p.metadata["chosen_style"] < p.metadata["rejected_style"] for p in hard)  # plainer chosen
  p = pairs[5]  # chosen 1 vs rejected 2
  assert p.responses == (ex.responses[1], ex.responses[3 + 2]) and p.best == 0
  assert len({p.id for p in pairs}) == 9


def test_rm_bench_bad_item_names_file_and_item(bench_root, tmp_path):
  items = json.loads((bench_root / "rm-bench" / "data" / "chat_filtered.json").read_text())
  items[4]["chosen"] = items[4]["chosen"][:2]
  bad = tmp_path / "chat_filtered.json"
  bad.write_text(json.dumps(items))
  with pytest.raises(DataError, match=r"chat_filtered\.json, item 4: fields 'chosen' and 'rejected' must be lists"):
    data.read_rm_bench(tmp_path)


# ---------------------------------------------------------------------------------------------- ReaLMistake

REALMISTAKE_MEMBERS = {
  ("math_word_problem_generation", "gpt-4-0613"): (87, 53),
  ("math_word_problem_generation", "Llama-2-70b-chat-hf"): (128, 32),
  ("finegrained_fact_verification", "gpt-4-0613"): (88, 52),
  ("finegrained_fact_verification", "Llama-2-70b-chat-hf"): (129, 31),
  ("answerability_classification", "gpt-4-0613"): (87, 53),
  ("answerability_classification", "Llama-2-70b-chat-hf"): (130, 30),
}


def test_realmistake_counts(realmistake):
  assert len(realmistake) == 900 and realmistake.skipped == 0 and len(realmistake.files) == 6
  got = collections.defaultdict(lambda: [0, 0])
  for e in realmistake:
    task, model = e.source.split("/")[1:]
    got[(task, model)][0 if e.metadata["error_label"] == "error" else 1] += 1
    assert e.n == 1 and e.best is None
    assert e.rewards == ((0.0,) if e.metadata["label"] == 1 else (1.0,))
  assert {k: tuple(v) for k, v in got.items()} == REALMISTAKE_MEMBERS
  assert len({e.id for e in realmistake}) == 900


def test_realmistake_examples_are_opt_in(bench_root):
  out = data.read_realmistake(bench_root / "realmistake" / "data.zip", include_examples=True)
  assert len(out) == 903


def test_realmistake_wrong_password_names_zip_and_member(bench_root):
  with pytest.raises(DataError, match=r"data\.zip: cannot read member 'data/.+\.jsonl'.*wrong password"):
    data.read_realmistake(bench_root / "realmistake", password=b"not-the-password")


def test_realmistake_corrupt_member_names_zip_and_member(bench_root, tmp_path):
  src = bench_root / "realmistake" / "data.zip"
  copy = tmp_path / "data.zip"
  shutil.copy(src, copy)  # still encrypted: only ciphertext is written
  with zipfile.ZipFile(copy) as z:
    info = z.getinfo("data/answerability_classification/gpt-4-0613.jsonl")
  raw = bytearray(copy.read_bytes())
  name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
  start = info.header_offset + 30 + name_len + extra_len + 12  # past the ZipCrypto header
  for k in range(64):
    raw[start + info.compress_size // 2 + k] ^= 0xFF
  copy.write_bytes(bytes(raw))
  with pytest.raises(DataError, match=r"data\.zip: cannot read member 'data/answerability_classification/gpt-4-0613"):
    data.read_realmistake(copy)


def test_realmistake_bad_line_names_member_and_line(tmp_path):
  row = {"input": "q", "llm_response": "r", "error_label": "error", "metadata": {"id": "a"}}
  bad = dict(row, error_label="maybe")
  zpath = tmp_path / "data.zip"
  with zipfile.ZipFile(zpath, "w") as z:  # an unencrypted stand-in: the reader handles both
    z.writestr("data/task/model.jsonl", "\n".join(json.dumps(r) for r in (row, row, bad)))
  with pytest.raises(DataError, match=r"data\.zip\[data/task/model\.jsonl\], line 3: field 'error_label'"):
    data.read_realmistake(zpath)
  assert len(data.read_realmistake(zpath, on_error="skip")) == 2


def test_not_a_zip(tmp_path):
  (tmp_path / "data.zip").write_bytes(b"PK\x03\x04 nonsense")
  with pytest.raises(DataError, match=r"data\.zip: cannot open zip"):
    data.read_realmistake(tmp_path)
