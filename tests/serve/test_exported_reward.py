"""An exported GRM used with no grm_jax model code: transformers `generate` on the exported folder plus the recipe's
parse and vote reproduce the server's reward; and `python -m grm_jax.serve` as a process: SIGTERM finishes what is in
flight, then exits."""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from grm_jax import export, runs
from grm_jax.reward import Recipe, combine, frame_text, plan, sample_texts
from grm_jax.serve.app import Server
from grm_jax.train.checkpoint import save_params
from tests.serve.conftest import QUESTIONS, RESPONSES, free_port, serving

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _run_dir(tmp_path, params):
  work = tmp_path / "run"
  work.mkdir()
  config = {"model": {"name": "tiny:llama", "dtype": "float32"}, "grm": {"template": "compact"},
            "eval": {"k": 3, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 16}, "stages": ["rft", "grpo"]}
  (work / "config.json").write_text(json.dumps(config))
  save_params(str(work / "grpo" / "final"), params)
  return work


def test_transformers_generate_on_the_export_reproduces_the_servers_reward(smoke_grm, tmp_path):
  work = _run_dir(tmp_path, smoke_grm.params)
  out = tmp_path / "exported"
  export.export(str(work), "grpo", str(out))
  recipe = Recipe.load(str(out))
  assert (recipe.template, recipe.k, recipe.temperature) == ("compact", 3, 0.0)
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
  tok = transformers.AutoTokenizer.from_pretrained(str(out))

  def hf_rewards(prompt, responses, seed, mode):
    chunks = plan(recipe, prompt, responses, k=recipe.k, mode=mode, seed=seed)
    texts = []
    for ch in chunks:
      outs = []
      for c in ch.completions:
        ids = tok(frame_text(recipe.chat, c.content), add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
          gen = hf.generate(**ids, do_sample=False, max_new_tokens=recipe.max_new_tokens, pad_token_id=tok.pad_token_id)
        text = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        outs.append([text] * c.n)  # greedy: the n samples of one prompt are the same
      texts.append(sample_texts(ch, outs))
    return combine(recipe, len(responses), chunks, texts, with_judgements=True)

  model, _ = runs.policy_model(str(work), "grpo")
  parsed = 0
  with serving(Server(model, recipe)) as url:
    for i, (mode, n) in enumerate([("group", 2), ("group", 3), ("pointwise", 2)]):
      body = {"prompt": QUESTIONS[i], "responses": RESPONSES[i: i + n], "seed": i, "mode": mode,
              "return_judgements": True}
      served = httpx.post(f"{url}/v1/rewards", json=body, timeout=600).json()
      theirs = hf_rewards(body["prompt"], body["responses"], i, mode)
      assert [s["text"] for c in served["judgements"] for s in c["samples"]] == [
        s["text"] for c in theirs.judgements for s in c["samples"]]
      assert served["rewards"] == theirs.rewards
      parsed += sum(served["parsed"])
  assert parsed > 0, "no greedy judgement parsed: the parse path went unchecked"


def test_sigterm_finishes_requests_in_flight_then_exits(tmp_path):
  port = free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen([sys.executable, "-m", "grm_jax.serve", "--model", "tiny:llama", "--port", str(port),
                           "--max-new-tokens", "48", "--k", "8"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + 180
    while True:
      assert proc.poll() is None, proc.stdout.read()
      try:
        if httpx.get(f"{url}/health", timeout=1).status_code == 200:
          break
      except httpx.HTTPError:
        pass
      assert time.monotonic() < deadline, "the server did not start"
      time.sleep(0.25)
    httpx.post(f"{url}/v1/rewards", json={"prompt": "q", "responses": ["a", "b"]}, timeout=300)  # compile first

    def ask(i):
      return httpx.post(f"{url}/v1/rewards", json={"prompt": QUESTIONS[i % 3], "responses": RESPONSES[: 1 + i % 4],
                                                   "seed": i}, timeout=300)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
      futures = [pool.submit(ask, i) for i in range(6)]
      time.sleep(0.5)
      proc.send_signal(signal.SIGTERM)
      answers = [f.result() for f in futures]
    assert [a.status_code for a in answers] == [200] * 6
    # Uvicorn re-raises the signal once shutdown has finished: the exit status says "ended by SIGTERM".
    assert proc.wait(timeout=120) in (0, -signal.SIGTERM)
  finally:
    if proc.poll() is None:
      proc.kill()
  with pytest.raises(httpx.HTTPError):
    httpx.get(f"{url}/health", timeout=2)
