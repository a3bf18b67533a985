"""Test session set-up: 8 fake CPU devices, so sharded code paths run on a laptop or CI box."""

import os
import sys
import tempfile

# The tests' XLA flags: fake CPU devices, and a quick compile. The suite's cost is compiling hundreds of tiny
# programs, not running them; backend optimisation level 0 and no expensive LLVM passes cut the compile time
# by about a third (`test_train.py`: 68 s -> 47 s). Every test compares runs compiled alike (its
# subprocesses and Ray workers get the same flags through `xla_flags`), or a reference within a tolerance.
# (`--xla_cpu_use_fusion_emitters=false` would save a little more, but it fuses two programs that differ
# only in their reset differently, and the frozen leaves then differ by rounding: the reset test catches it.)
QUICK_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def xla_flags(devices: int) -> str:
  return f"--xla_force_host_platform_device_count={devices} {QUICK_COMPILE}"


# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One persistent compilation cache for the whole test run: both pytest-xdist workers, their subprocesses and
# the Ray workers compile many of the same tiny programs (the tiny pretraining step in a dozen modules).
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"rewire-test-xla-{_RUN}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


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


def shared_corpus() -> str:
  """The bundled English corpus prepared once (seq_len 32, the shared tokenizer) for every tiny run."""
  if "corpus" not in _SHARED:
    import tempfile
    from rewire.config import data_defaults
    from rewire.data.build import Settings, prepare_into
    d = data_defaults()
    d.update(seq_len=32, tokenizer=shared_tokenizer(), workers=1)
    out = os.path.join(tempfile.mkdtemp(prefix="rewire-corpus-"), "en")
    with open(os.devnull, "w") as sink:
      prepare_into(Settings.from_config(d), out, log_stream=sink)
    _SHARED["corpus"] = out
  return _SHARED["corpus"]


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
  c.data.update(source=f"prepared:{shared_corpus()}", seq_len=32, vocab_size=400, max_valid_sequences=32,
                tokenizer=shared_tokenizer())
  c.optim.update(lr=3e-3, warmup_steps=4)
  if mesh is not None:
    c.mesh.update(data=mesh[0], fsdp=mesh[1], tensor=mesh[2])
  return c


# The test-sized model of each family (1 layer, hidden 32); a family not listed here (a test's own) uses the
# `tiny_shape` it declares.
TEST_SHAPES = {
    "roberta": dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
    "llama": dict(hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2, intermediate_size=48),
}


def family_config(family="roberta", forgetting=True, pattern="input"):
  """The tiny pretraining config (`tiny_config`) with `family`'s own model group at test size."""
  from rewire.models import registry
  c = tiny_config(forgetting)
  c.model = registry.family(family).config_group()
  c.model.update(TEST_SHAPES.get(family, registry.family(family).tiny_shape))
  c.forget.pattern = pattern
  return c


def tiny_llama_config(forgetting=True, pattern="input"):
  """The tiny config for the Llama family: 1 layer, hidden 32, 4 query / 2 key-value heads, untied head."""
  return family_config("llama", forgetting, pattern)


def config_flags(config, base) -> list[str]:
  """`--config.KEY=VALUE` flags for every leaf where `config` differs from `base` (a preset's config)."""
  out = []
  for key, value in config.items():
    if hasattr(value, "items"):
      out += [f.replace("--config.", f"--config.{key}.", 1) for f in config_flags(value, base[key])]
    elif base[key] != value:
      out.append(f"--config.{key}={value!r}" if isinstance(value, tuple) else f"--config.{key}={value}")
  return out


def tiny_cli(workdir, *overrides):
  """The tiny test config (`tiny_config`) as a `python -m rewire.main` command on configs/pretrain_forget.py."""
  from rewire.config import pretrain_preset
  flags = config_flags(tiny_config(), pretrain_preset("tiny", forgetting=True))
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1),
             PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return [sys.executable, "-m", "rewire.main", "--config=configs/pretrain_forget.py", f"--workdir={workdir}",
          *flags, *overrides], env


def flat(params):
  """`{"a/b/c": array}` of a param tree (host numpy arrays)."""
  import jax
  import numpy as np
  from rewire import optim
  return {optim.path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]}


def run_tiny(config, workdir, **kw):
  from rewire.stages.pretrain import train_and_evaluate
  with open(os.devnull, "w") as sink:
    return train_and_evaluate(config, str(workdir), log_stream=sink, **kw)


def losses(workdir):
  from rewire.telemetry import read_records
  return [(r["step"], r["loss"]) for r in read_records(os.path.join(str(workdir), "metrics.jsonl"))
          if "loss" in r and "event" not in r]


def new_language_corpus(directory) -> str:
  """A stand-in 'new language': reversed, upper-cased words of English chapters -> other pieces and ids."""
  from rewire.data.sources import load_documents
  path = os.path.join(str(directory), "corpus.txt")
  docs = [" ".join(w[::-1].upper() for w in d.split()) for d in load_documents("bundled:en_web")[:120]]
  with open(path, "w") as f:
    f.write("\n\n".join(docs))
  return path


def adapt_config(init_from, corpus, budget=6000):
  from rewire.config import adapt_language_defaults
  c = adapt_language_defaults()
  c.init_from = str(init_from)
  c.token_budget = budget
  c.data.update(source=f"files:{corpus}", seq_len=32, vocab_size=300, max_valid_sequences=32)
  c.update(total_steps=8, batch_size=16, log_every=1, eval_every=8, checkpoint_every=8)
  c.optim.update(lr=3e-3, warmup_steps=2)
  return c


def finetune_config(init_from, task="nli"):
  from rewire.config import tiny_stage_config
  c = tiny_stage_config(f"finetune_{task}")
  c.init_from = str(init_from)
  c.update(epochs=2, batch_size=16, eval_batch_size=32, log_every=4, max_train_examples=96, max_len=32)
  if task == "qa":
    c.update(doc_stride=8, max_query_len=8)
  c.dev_source = f"bundled:verse_{task}:dev"
  return c


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
  """Complete tiny runs shared by the tests, built on first use: `tiny_runs(name)` -> (workdir, summary).

  "one_device", "mesh_2_2_2": 12-update forgetting pretraining runs; "adapted": "one_device" adapted to a
  stand-in new language; "finetuned_nli": "one_device" fine-tuned on the bundled verse NLI task;
  "assembled": the adapted embeddings under the fine-tuned body.
  """
  import jax
  done = {}

  def build(name, workdir):
    one = lambda: jax.devices()[:1]
    if name == "one_device":
      return run_tiny(tiny_config(), workdir, devices=one())
    if name == "mesh_2_2_2":
      return run_tiny(tiny_config(mesh=(2, 2, 2)), workdir)
    if name == "adapted":
      corpus = new_language_corpus(tmp_path_factory.mktemp("lang"))
      return run_tiny(adapt_config(get("one_device")[0], corpus), workdir, devices=one())
    if name == "finetuned_nli":
      from rewire.stages.finetune import train_and_evaluate
      with open(os.devnull, "w") as sink:
        return train_and_evaluate(finetune_config(get("one_device")[0]), str(workdir), devices=one(),
                                  log_stream=sink)
    if name == "assembled":
      from rewire.stages.assemble import assemble
      return assemble(str(get("finetuned_nli")[0]), str(get("adapted")[0]), str(workdir))
    raise KeyError(name)

  def get(name):
    if name not in done:
      workdir = tmp_path_factory.mktemp(name)
      done[name] = (workdir, build(name, workdir))
    return done[name]

  return get


def genre_finetune_config(init_from):
  """Fine-tuning on the bundled two-class verse-genre task (every family has a classification head)."""
  c = finetune_config(init_from, task="nli")
  c.update(task="classify", train_source="bundled:verse_genre:train", dev_source="bundled:verse_genre:dev",
           label_names=("narrative", "discourse"))
  return c


@pytest.fixture(scope="session")
def family_runs(tiny_runs, tmp_path_factory):
  """`family_runs(family, name)` -> (workdir, summary), built on first use, for any registered family.

  "pretrained": 12 updates with resets at 4 and 8 (a decoder resets its input and output matrices);
  "adapted": it adapted to a stand-in new language; "finetuned": fine-tuned on a classification task;
  "assembled": the adapted embeddings under the fine-tuned body (summary None). RoBERTa's are the shared
  `tiny_runs`.
  """
  import jax
  one = jax.devices()[:1]
  done = {}
  shared = {"pretrained": "one_device", "adapted": "adapted", "finetuned": "finetuned_nli",
            "assembled": "assembled"}

  def build(family, name, workdir):
    if family == "roberta":
      return tiny_runs(shared[name])[1]
    if name == "pretrained":
      from rewire.models import registry
      pattern = "both" if registry.family(family).output_head else "input"
      return run_tiny(family_config(family, pattern=pattern), workdir, devices=one)
    if name == "adapted":
      corpus = new_language_corpus(tmp_path_factory.mktemp("lang"))
      c = adapt_config(get(family, "pretrained")[0], corpus)
      c.model.update(dropout=0.0, attention_dropout=0.0)
      return run_tiny(c, workdir, devices=one)
    if name == "finetuned":
      from rewire.stages.finetune import train_and_evaluate
      with open(os.devnull, "w") as sink:
        return train_and_evaluate(genre_finetune_config(get(family, "pretrained")[0]), str(workdir), devices=one,
                                  log_stream=sink)
    if name == "assembled":
      from rewire.stages.assemble import assemble
      return assemble(str(get(family, "finetuned")[0]), str(get(family, "adapted")[0]), str(workdir))
    raise KeyError(name)

  def get(family, name):
    if family == "roberta":
      return tiny_runs(shared[name])
    if (family, name) not in done:
      workdir = tmp_path_factory.mktemp(f"{family}_{name}")
      done[family, name] = (workdir, build(family, name, workdir))
    return done[family, name]

  return get



TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the test clusters live on localhost, for one module each
# Every step starts a worker of its own (`max_calls=1`, often with its own environment), so the idle workers
# that Ray prestarts for each driver would only cost CPU (about 1.5 s each).
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
os.environ.setdefault("RAY_enable_worker_prestart", "0")
# Ray waits 30 s for a new head's GCS to publish its port; beside the multi-process tests on 2 cores, allow more.
os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")


def _with_tests_on_path() -> None:
  """Ray workers import the tests' step functions (`step_fns`): they inherit PYTHONPATH from the nodes."""
  paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
  root = os.path.dirname(TESTS_DIR)
  os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([TESTS_DIR, root, *paths]))


def disconnect_ray() -> None:
  import ray
  from rewire.steps import cluster
  ray.shutdown()
  cluster._connected.clear()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
  """A real Ray cluster of 2 nodes on localhost, for one test module: 1 CPU each, and the second node alone
  has the custom resource `second_node`. The test process is its driver (`address`); `second` is the
  second node's id. Started and torn down here, by a process of its own (`ray_nodes.py` says why)."""
  import json
  import select
  import subprocess
  import time
  import types
  import ray_nodes
  disconnect_ray()
  _with_tests_on_path()
  log = tmp_path_factory.mktemp("ray_nodes") / "ray_nodes.log"
  with open(log, "w") as err:
    holder = subprocess.Popen([sys.executable, ray_nodes.__file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=err, text=True)
  try:
    line, deadline = "", time.monotonic() + 180
    while not line.startswith(ray_nodes.MARK):
      ready, _, _ = select.select([holder.stdout], [], [], max(0.0, deadline - time.monotonic()))
      line = holder.stdout.readline() if ready else ""
      if not ready or (not line and holder.poll() is not None):
        pytest.fail(f"the test Ray cluster did not start; its log:\n{log.read_text()[-3000:]}")
    nodes = json.loads(line[len(ray_nodes.MARK):])
    yield types.SimpleNamespace(address=nodes["address"], second=nodes["second"])
  finally:
    disconnect_ray()
    holder.stdin.close()
    try:
      holder.wait(timeout=60)
    except subprocess.TimeoutExpired:
      holder.kill()

