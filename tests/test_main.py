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


CFG = os.path.join(ROOT, "configs", "pretrain_forget.py")

# Bad inputs: (arguments, what the one line must say). {tmp} is the cases' folder; each case's workdir is
# {tmp}/<case>/run, which must not exist afterwards (but for workdir_file, which is a file).
CASES = {
    "override": ([f"--config={CFG}", "--config.forget_evry=3"], "forget_every"),
    "config_file": (["--config={tmp}/bad.py"],
                    "unknown config key config.forget_evry (did you mean config.forget_every?)"),
    "corpus": ([f"--config={CFG}", "--config.data.source=files:{tmp}/nothing/*.txt"], "no file matches"),
    "mesh": ([f"--config={CFG}", "--config.mesh.data=3"], "mesh"),
    "missing_config": (["--config={tmp}/nope.py"], "nope.py"),
    "unknown_preset": ([f"--config={CFG}:huge"], "unknown preset 'huge'"),
    "mask_prob": ([f"--config={CFG}", "--config.data.mask_prob=1.5"], "data.mask_prob must be in (0, 1)"),
    "negative_lr": ([f"--config={CFG}", "--config.optim.lr=-0.1"], "optim.lr must be positive"),
    "workdir_file": ([f"--config={CFG}"], "is a file"),
    "unwritable": ([f"--config={CFG}"], "cannot write to workdir"),
    # A key of another family is an unknown key, as a typo is (one model group holds one family's keys).
    "llama_key_on_roberta": ([f"--config={CFG}", "--config.model.rope_theta=1"], "rope_theta"),
    "roberta_key_on_llama": ([f"--config={CFG}:tiny-llama", "--config.model.type_vocab_size=2"], "type_vocab_size"),
    # A model value the config alone cannot tell is wrong: checked before the workdir is touched.
    "heads": ([f"--config={CFG}", "--config.model.num_heads=3"], "not a multiple of model.num_heads=3"),
}
FRESH = "override"  # run as its own `python -m rewire.main`, as typed; the others in forks of one process


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
  """{case: (exit status, stderr, workdir)} for every case of `CASES`."""
  import json
  tmp = tmp_path_factory.mktemp("bad_inputs")
  (tmp / "bad.py").write_text(BAD_CONFIG)
  workdirs = {case: tmp / case / "run" for case in CASES}
  for case in CASES:
    (tmp / case).mkdir()
  workdirs["workdir_file"].write_text("not a directory")
  (tmp / "unwritable" / "a_file").write_text("x")
  workdirs["unwritable"] = tmp / "unwritable" / "a_file" / "run"
  args = {case: [a.replace("{tmp}", str(tmp)) for a in CASES[case][0]] + [f"--workdir={workdirs[case]}"]
          for case in CASES}
  out = {}
  fresh = rewire_main(*args[FRESH])
  out[FRESH] = (fresh.returncode, fresh.stderr, workdirs[FRESH])
  forked = [case for case in CASES if case != FRESH]
  spec = [{"args": args[case], "stdout": str(tmp / case / "stdout"), "stderr": str(tmp / case / "stderr")}
          for case in forked]
  env = dict(os.environ, XLA_FLAGS=QUICK_COMPILE, PYTHONPATH=ROOT)
  server = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "cli_forks.py")], input=json.dumps(spec),
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
  assert server.returncode == 0, server.stderr[-2000:]
  codes = [int(line) for line in server.stdout.split()]
  for case, code in zip(forked, codes, strict=True):
    out[case] = (code, (tmp / case / "stderr").read_text(), workdirs[case])
  return out


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, bad_inputs):
  code, stderr, workdir = bad_inputs[case]
  assert code == 2, stderr[-2000:]
  lines = [l for l in stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("rewire: error: "), stderr[-2000:]
  assert CASES[case][1] in lines[0]
  assert case == "workdir_file" or not workdir.exists()
  if case == "unwritable":
    assert (workdir.parent).read_text() == "x"


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
