"""The command line: bad input gives one `rewire: error:` line, exit status 2, and no workdir writes."""

import os
import subprocess
import sys

import pytest

from conftest import QUICK_COMPILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rewire_main(*args):
  env = dict(os.environ, XLA_FLAGS=QUICK_COMPILE, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "rewire.main", *args], capture_output=True, text=True, cwd=ROOT,
                        env=env, timeout=120)


BAD_CONFIG = """
from rewire.config import pretrain_preset
def get_config():
  c = pretrain_preset("tiny", forgetting=True)
  c.unlock()
  c.forget_evry = 3
  return c
"""


@pytest.mark.parametrize("case", ["override", "config_file", "corpus", "mesh"])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path):
  workdir = tmp_path / "run"
  cfg = os.path.join(ROOT, "configs", "pretrain_forget.py")
  extra, expect = {
      "override": (["--config.forget_evry=3"], "forget_every"),
      "config_file": ([], "unknown config key config.forget_evry (did you mean config.forget_every?)"),
      "corpus": ([f"--config.data.source=files:{tmp_path}/nothing/*.txt"], "no file matches"),
      "mesh": (["--config.mesh.data=3"], "mesh"),
  }[case]
  if case == "config_file":
    cfg = str(tmp_path / "bad.py")
    with open(cfg, "w") as f:
      f.write(BAD_CONFIG)
  out = rewire_main(f"--config={cfg}", f"--workdir={workdir}", *extra)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("rewire: error: "), out.stderr[-2000:]
  assert expect in lines[0]
  assert not workdir.exists()


def test_resuming_with_a_mismatched_tokenizer_fails_in_a_fresh_process(tmp_path):
  from conftest import run_tiny, tiny_cli, tiny_config
  import jax
  workdir = tmp_path / "run"
  run_tiny(tiny_config(), workdir, devices=jax.devices()[:1])
  before = sorted((p, os.path.getmtime(os.path.join(r, p))) for r, _, fs in os.walk(workdir) for p in fs)
  from rewire.data.tokenizer import save_tokenizer, train_tokenizer
  other = tmp_path / "other.json"
  save_tokenizer(train_tokenizer(["another small corpus with other words"] * 20, 50), str(other))
  cmd, env = tiny_cli(workdir, f"--config.data.tokenizer={other}")
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and "rewire: error:" in lines[0] and "other settings: data.tokenizer" in lines[0], lines
  after = sorted((p, os.path.getmtime(os.path.join(r, p))) for r, _, fs in os.walk(workdir) for p in fs)
  assert before == after


@pytest.mark.parametrize("case", ["missing_config", "unknown_preset", "mask_prob", "negative_lr", "workdir_file",
                                  "unwritable", "llama_key_on_roberta", "roberta_key_on_llama", "heads"])
def test_more_bad_inputs_are_one_line(case, tmp_path):
  cfg = os.path.join(ROOT, "configs", "pretrain_forget.py")
  workdir = tmp_path / "run"
  if case == "workdir_file":
    workdir.write_text("not a directory")
  if case == "unwritable":
    (tmp_path / "a_file").write_text("x")
    workdir = tmp_path / "a_file" / "run"
  args, expect = {
      "missing_config": ([f"--config={tmp_path}/nope.py"], "nope.py"),
      "unknown_preset": ([f"--config={cfg}:huge"], "unknown preset 'huge'"),
      "mask_prob": ([f"--config={cfg}", "--config.data.mask_prob=1.5"], "data.mask_prob must be in (0, 1)"),
      "negative_lr": ([f"--config={cfg}", "--config.optim.lr=-0.1"], "optim.lr must be positive"),
      "workdir_file": ([f"--config={cfg}"], "is a file"),
      "unwritable": ([f"--config={cfg}"], "cannot write to workdir"),
      # A key of another family is an unknown key, as a typo is (one model group holds one family's keys).
      "llama_key_on_roberta": ([f"--config={cfg}", "--config.model.rope_theta=1"], "rope_theta"),
      "roberta_key_on_llama": ([f"--config={cfg}:tiny-llama", "--config.model.type_vocab_size=2"],
                               "type_vocab_size"),
      # A model value the config alone cannot tell is wrong: checked before the workdir is touched.
      "heads": ([f"--config={cfg}", "--config.model.num_heads=3"], "not a multiple of model.num_heads=3"),
  }[case]
  out = rewire_main(*args, f"--workdir={workdir}")
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("rewire: error: ") and expect in lines[0], out.stderr[-2000:]
  assert case == "workdir_file" or not workdir.exists()
  assert case != "unwritable" or (tmp_path / "a_file").read_text() == "x"


def test_every_stage_ends_with_a_closing_line_that_gives_its_result(tmp_path):
  from rewire.main import closing_line
  assert closing_line("runs/f", {"step": 12, "valid_loss": 5.1234, "unigram_loss": 6.0}) == \
      "done: runs/f  step 12  valid loss 5.123 (unigram baseline 6.000)"
  assert closing_line("runs/ft", {"task": "nli", "best_step": 40, "steps": 80, "best_dev_accuracy": 61.25}) == \
      "done: runs/ft  best dev accuracy 61.2 at update 40 of 80 (the checkpoint kept)"
  assembled = {"architecture": "RobertaForSequenceClassification", "assembled_from": {"task": "t", "embeddings": "e"}}
  assert closing_line("runs/a", assembled) == \
      "done: runs/a  RobertaForSequenceClassification: the body of t with the embeddings of e"
  from rewire.stages.evaluate import write_results
  summary = write_results({"forget": {"es": {"accuracy": 55.0}}}, str(tmp_path))
  line = closing_line(str(tmp_path), summary)
  assert "| forget | 55.0 | 55.0 |" in line and line.endswith(f"done: {tmp_path}/results.md, results.json")
