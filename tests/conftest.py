"""Test session set-up: 8 fake CPU devices, so sharded code paths run on a laptop or CI box."""

import os
import tempfile

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Runs with the same shapes and mesh (a run and its resumption) reuse compiled executables.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"rewire-test-xla-{os.getpid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


import pytest  # noqa: E402

TOTAL, K = 12, 4


_SHARED = {}


def shared_tokenizer() -> str:
  """One tokenizer for every tiny run of the session (training it is the slowest part of a tiny run)."""
  if "tokenizer" not in _SHARED:
    import tempfile
    from rewire.data.sources import load_documents
    from rewire.data.tokenizer import save_tokenizer, train_tokenizer
    path = os.path.join(tempfile.mkdtemp(prefix="rewire-tok-"), "tokenizer.json")
    save_tokenizer(train_tokenizer(load_documents("bundled:en_web")[:200], 400), path)
    _SHARED["tokenizer"] = path
  return _SHARED["tokenizer"]


def tiny_config(forgetting=True, mesh=None):
  """A seconds-long pretraining config: 1 layer, hidden 32, 12 updates, a reset every 4."""
  from rewire.config import pretrain_preset
  c = pretrain_preset("tiny", forgetting=forgetting)
  c.total_steps = TOTAL
  if forgetting:
    c.forget_every = K
  c.batch_size = 16
  c.log_every = 1
  c.eval_every = 6
  c.checkpoint_every = 6
  c.model.update(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
  c.data.update(seq_len=32, vocab_size=400, max_valid_sequences=32, tokenizer=shared_tokenizer())
  c.optim.update(lr=3e-3, warmup_steps=4)
  if mesh is not None:
    c.mesh.update(data=mesh[0], fsdp=mesh[1], tensor=mesh[2])
  return c


def run_tiny(config, workdir, **kw):
  from rewire.train import train_and_evaluate
  with open(os.devnull, "w") as sink:
    return train_and_evaluate(config, str(workdir), log_stream=sink, **kw)


def losses(workdir):
  from rewire.metrics import read_records
  return [(r["step"], r["loss"]) for r in read_records(os.path.join(str(workdir), "metrics.jsonl"))
          if "loss" in r and "event" not in r]


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
  """Complete tiny forgetting runs shared by the tests: `tiny_runs("one_device")` -> (workdir, summary)."""
  import jax
  specs = {
      "one_device": dict(devices=lambda: jax.devices()[:1]),
      "mesh_2_2_2": dict(mesh=(2, 2, 2)),
  }
  done = {}

  def get(name):
    if name not in done:
      spec = specs[name]
      workdir = tmp_path_factory.mktemp(name)
      kw = {"devices": spec["devices"]()} if "devices" in spec else {}
      done[name] = (workdir, run_tiny(tiny_config(mesh=spec.get("mesh")), workdir, **kw))
    return done[name]

  return get
