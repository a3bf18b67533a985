"""The command line: bad input gives one `rewire: error:` line, exit status 2, and no workdir writes."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rewire_main(*args):
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
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


def test_resuming_with_a_mismatched_tokenizer_fails_in_a_fresh_process(tiny_runs, tmp_path):
  workdir, _ = tiny_runs("one_device")
  before = sorted((p, os.path.getmtime(os.path.join(r, p))) for r, _, fs in os.walk(workdir) for p in fs)
  from rewire.data.tokenizer import save_tokenizer, train_tokenizer
  other = tmp_path / "other.json"
  save_tokenizer(train_tokenizer(["another small corpus with other words"] * 20, 50), str(other))
  out = rewire_main(f"--config={os.path.join(ROOT, 'configs', 'pretrain_forget.py')}", f"--workdir={workdir}",
                    f"--config.data.tokenizer={other}")
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and "rewire: error: tokenizer" in lines[0] and "400-row embedding" in lines[0]
  after = sorted((p, os.path.getmtime(os.path.join(r, p))) for r, _, fs in os.walk(workdir) for p in fs)
  assert before == after
