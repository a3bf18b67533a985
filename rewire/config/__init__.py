"""The schema of a pretraining config: every key, its default, and the check for unknown keys.

Config files in `configs/` start from `pretrain_defaults()` and override what a preset changes. `validate`
compares a config against the defaults of its stage, so a misspelt key stops the run with an error naming
it (and the nearest known key) instead of being silently ignored.
"""

from __future__ import annotations

import difflib

import ml_collections

from rewire.errors import UserError
from rewire.models.roberta import WORD_EMBEDDING
from rewire.tasks.names import NLI_LABELS


def data_defaults() -> ml_collections.ConfigDict:
  """The `data` group: what a corpus is prepared from (`rewire.data.build`) and how a run reads it."""
  return ml_collections.ConfigDict(dict(
      # prepared:DIR (from configs/prepare.py) | bundled:NAME | files:GLOB[,GLOB] | hf:NAME[:CONFIG]:SPLIT
      # | tfds:NAME[:CONFIG]:SPLIT; a raw source is prepared into <workdir>/data first
      source="bundled:en_web",
      text_field="text",         # the text field of .jsonl/.parquet files and dataset rows
      valid_source="",           # "": hold out valid_fraction of the source's documents (by a seeded hash)
      valid_fraction=0.02,
      split_seed=0,              # seeds the train/validation split and the tokenizer sample (not `seed`)
      max_valid_sequences=256,   # the validation sequences a run evaluates on (0: all)
      seq_len=512,
      tokenizer="",              # "": train a unigram tokenizer on a seeded sample of the training text
      vocab_size=50_000,
      tokenizer_sample_docs=100_000,  # documents the tokenizer is trained on
      parts_per_file=1,          # read each file in this many interleaved parts (parallelism for big files)
      max_documents=0,           # >0: prepare only about this many documents of each source
      tfds_data_dir="",          # TFDS data directory for tfds: sources ("": TFDS's default)
      runner="DirectRunner",     # Apache Beam runner of the preparation (DataflowRunner, FlinkRunner, ...)
      workers=0,                 # DirectRunner worker processes (0: one per core)
      beam_options="",           # extra Beam pipeline flags, e.g. "--project=P --region=R --temp_location=gs://B/t"
      verify_shards=True,        # re-hash a prepared:DIR's shards against its manifest when a run starts
      mask_prob=0.15))


def prepare_defaults() -> ml_collections.ConfigDict:
  """Corpus preparation (`configs/prepare.py`): the workdir is the prepared directory itself."""
  c = ml_collections.ConfigDict()
  c.stage = "prepare"
  c.data = data_defaults()
  return c


def pretrain_defaults() -> ml_collections.ConfigDict:
  """Every key a pretraining run reads, with the paper's recipe (RoBERTa-base) as the default values."""
  c = ml_collections.ConfigDict()
  c.stage = "pretrain"
  c.seed = 0
  c.total_steps = 125_000        # optimizer updates
  c.forget_every = 1000          # K; 0 turns forgetting off (the standard baseline)
  c.batch_size = 2048            # global batch, in sequences

  c.log_every = 100              # metrics.jsonl record + progress line
  c.eval_every = 5000            # validation loss
  c.checkpoint_every = 5000
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.peak_flops = 0.0             # per-device peak FLOP/s for MFU; 0: look the device up (unknown on CPU)

  # Warm start: begin from another run's params (a rewire workdir, or `python -m rewire.hf import` output).
  c.init_from = ""               # "": random init
  c.init_step = 0                # 0: the newest checkpoint of init_from
  c.reinit = ml_collections.ConfigDict(dict(
      pattern="",                # leaves drawn afresh instead of loaded (2-D: N(0, init_std), pad row 0; 1-D: 0)
      init_std=0.02))
  c.token_budget = 0             # >0: train on the shortest prefix of the corpus with this many tokens, repeated
  # Plasticity during pretraining: every probe_every updates, probe the current body (see configs/probe.py)
  # on a small budget; results go to plasticity.jsonl and plasticity.png. 0: never.
  c.probe_every = 0
  c.probe = ml_collections.ConfigDict(dict(
      languages="en=bundled:bible_en", token_budgets=(50_000,), seeds=1, total_steps=100, batch_size=32,
      eval_every=20, target_margin=0.5, targets="", confidence=0.95, init_std=0.02,
      data=data_defaults(),
      optim=dict(lr=2e-3, warmup_steps=10, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01)))
  c.probe.data.update(seq_len=64, vocab_size=4096, max_valid_sequences=64)

  c.model = ml_collections.ConfigDict(dict(
      vocab_size=0,              # 0: taken from the tokenizer
      hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
      max_position_embeddings=0,  # 0: data.seq_len + 2 (RoBERTa offsets positions past the pad index)
      type_vocab_size=1, layer_norm_eps=1e-5, dropout=0.1, attention_dropout=0.1, init_std=0.02,
      dtype="float32", remat=False))

  c.data = data_defaults()

  c.optim = ml_collections.ConfigDict(dict(
      lr=7e-4, warmup_steps=10_000, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01,
      clip_norm=0.5,             # global-norm clip; 0 disables
      rules=((".*", "train"),),  # (regex over param paths, "train" | "frozen"); first match wins
  ))

  c.forget = ml_collections.ConfigDict(dict(
      pattern=WORD_EMBEDDING,    # the leaves that are reset (regex over param paths)
      init_std=0.02,             # std of the fresh N(0, std) sample (padding row 0)
      reset_optimizer=True,      # False: keep the reset leaves' Adam moments (their schedule still restarts)
      until=0))                  # U > 0: no resets after update U; the last episode then runs to the end

  c.mesh = ml_collections.ConfigDict(dict(
      data=-1, fsdp=1, tensor=1,  # -1: the rest of the devices
      rules=(("batch", ("data", "fsdp")), ("length", None), ("embed", "fsdp"), ("vocab", "tensor"),
             ("heads", "tensor"), ("mlp", "tensor"), ("embed_out", None))))
  return c


def adapt_language_defaults() -> ml_collections.ConfigDict:
  """Language adaptation (Chen et al. 2023, step 2): a new tokenizer and new token embeddings, body frozen.

  The recipe is pretraining's without clipping or resets, over a token budget of the new language.
  """
  c = pretrain_defaults()
  c.stage = "adapt_language"
  c.forget_every = 0
  c.token_budget = 5_000_000
  c.data.source = ""             # the new language's corpus (required)
  c.optim.clip_norm = 0.0
  # Only the token embeddings (and so the tied decoder) train; body, positions and LM head stay frozen.
  c.optim.rules = ((WORD_EMBEDDING, "train"), (".*", "frozen"))
  c.reinit.pattern = f"{WORD_EMBEDDING}|lm_head/bias"
  return c


def finetune_defaults() -> ml_collections.ConfigDict:
  """Task adaptation (step 3): the body and a new task head train on an English task, embeddings frozen."""
  base = pretrain_defaults()
  c = ml_collections.ConfigDict()
  c.stage = "finetune"
  c.task = "nli"                 # "nli" (3-way, from <s>), "classify" (one text) or "qa" (SQuAD-style extractive)
  c.seed = 0
  c.init_from = ""               # the pretrained workdir (required); its tokenizer is used
  c.init_step = 0
  c.train_source = "hf:multi_nli:train"         # see rewire/tasks/data.py for the accepted forms
  c.dev_source = "hf:xnli:en:validation"        # model selection
  c.label_names = NLI_LABELS     # the class names in label-index order (classify: e.g. GENRE_LABELS)
  c.max_train_examples = 0       # >0: the first N training examples
  c.max_len = 128
  c.doc_stride = 128
  c.max_query_len = 64
  c.epochs = 10
  c.batch_size = 32
  c.eval_batch_size = 64
  c.log_every = 50
  c.model = ml_collections.ConfigDict(dict(dropout=0.1, attention_dropout=0.1, dtype="float32", remat=False))
  c.optim = ml_collections.ConfigDict(dict(
      lr=1e-5, warmup_steps=0, warmup_fraction=0.0, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01,
      clip_norm=0.0,
      # Token embeddings stay frozen (the LM head is not part of a task model); body and head train.
      rules=((WORD_EMBEDDING, "frozen"), (".*", "train"))))
  c.mesh = base.mesh
  return c


def evaluate_defaults() -> ml_collections.ConfigDict:
  """Zero-shot evaluation (step 4) of assembled task models, one per language."""
  c = ml_collections.ConfigDict()
  c.stage = "evaluate"
  # "name=workdir pattern" pairs, comma-separated; {lang} in a pattern becomes each language, e.g.
  # "standard=runs/standard_nli_{lang},forget=runs/forget_nli_{lang}".
  c.models = ""
  c.languages = ("es",)
  c.test_source = "hf:xnli:{lang}:test"     # {lang} is replaced by each language
  c.eval_batch_size = 64
  c.max_examples = 0                        # >0: the first N test examples per language
  c.mesh = pretrain_defaults().mesh
  return c


def assemble_defaults() -> ml_collections.ConfigDict:
  """Assembly (step 4): a task model with the token embeddings and tokenizer of a language-adapted model."""
  c = ml_collections.ConfigDict()
  c.stage = "assemble"
  c.task_from = ""               # a fine-tuned workdir (configs/finetune_*.py)
  c.embeddings_from = ""         # a language-adapted workdir (configs/adapt_language.py)
  return c


def pipeline_defaults() -> ml_collections.ConfigDict:
  """Every stage, for a standard and a forgetting model: see `rewire/pipeline.py`."""
  c = ml_collections.ConfigDict()
  c.stage = "pipeline"
  c.seed = 0
  c.variants = ("standard", "forget")
  c.languages = ("es",)
  c.forget_every = 1000          # K for the forgetting variant (the standard one uses 0)
  c.forget_clip_norm = 0.5
  c.include_english = True       # also score the English task model on the English test split
  c.adapt_source = "prepared:data/cc100_{lang}"  # {lang} is replaced by each language
  c.pretrain = pretrain_defaults()
  c.adapt = adapt_language_defaults()
  c.finetune = finetune_defaults()
  c.evaluate = evaluate_defaults()
  return c


def probe_defaults() -> ml_collections.ConfigDict:
  """Every key of a probe run; the defaults suit the CPU-sized models of the `tiny` presets."""
  c = ml_collections.ConfigDict()
  c.stage = "probe"
  c.init_from = ""               # a rewire workdir (pretraining) or a `python -m rewire.hf import` directory
  c.init_step = 0                # 0: the newest checkpoint
  # NAME=SOURCE pairs (any text source, or prepared:DIR); the pretraining language itself is a fair probe.
  c.languages = "en=bundled:bible_en,es=bundled:bible_es,ja=bundled:bible_ja"
  c.token_budgets = (100_000,)   # each a curve per language: the budget's exact prefix of the training text
  c.seed = 0
  c.seeds = 3                    # seeds seed .. seed+seeds-1: fresh embeddings, batch order, masking, dropout
  c.total_steps = 300            # updates per table
  c.batch_size = 32
  c.eval_every = 25
  c.target_margin = 0.5          # target loss: the language's unigram baseline minus this many nats
  c.targets = ""                 # NAME=LOSS[,NAME=LOSS] overrides of the target
  c.confidence = 0.95            # of the t-intervals over seeds
  c.init_std = 0.02
  c.save_embeddings = False      # also write every table as an adapted workdir under embeddings/ (for assemble)
  c.data = data_defaults()
  c.data.update(seq_len=64, vocab_size=4096, max_valid_sequences=128)
  c.model = ml_collections.ConfigDict(dict(dropout=0.1, attention_dropout=0.1, dtype="float32", remat=False))
  c.optim = ml_collections.ConfigDict(dict(lr=2e-3, warmup_steps=30, b1=0.9, b2=0.98, eps=1e-6,
                                           weight_decay=0.01))
  c.mesh = pretrain_defaults().mesh
  return c


def study_defaults() -> ml_collections.ConfigDict:
  """The plasticity study (`rewire.study.graph`): standard vs forgetting, several seeds, probed and zero-shot."""
  c = ml_collections.ConfigDict()
  c.stage = "study"
  c.seeds = (0, 1, 2)
  c.forget_every = 100
  c.forget_clip_norm = 0.5
  c.workers = 0                  # jobs at once (0: one per CPU core); 1 on an accelerator host
  c.pin_cores = True             # pin each job to its own core (CPU hosts)
  c.relearn = "en=bundled:bible_en"   # probe-only languages: the pretraining language, relearned
  c.languages = "es=bundled:bible_es,ja=bundled:bible_ja,uk=bundled:bible_uk"  # zero-shot languages
  c.pretrain = pretrain_defaults()
  c.probe = probe_defaults()
  c.finetune = finetune_defaults()
  c.evaluate = ml_collections.ConfigDict(dict(test_source="bundled:verse_genre:test", eval_batch_size=64,
                                              max_examples=0))
  c.adapt_steps = 600            # updates of the language adaptation whose embeddings go to the zero-shot test
  c.ablation_languages = "es"    # zero-shot languages adapted at every probe budget (the others: the largest)
  c.bootstrap = 10_000           # seed-bootstrap resamples of the relative gain
  return c


DEFAULTS = {"study": study_defaults, "probe": probe_defaults, "prepare": prepare_defaults, "pipeline": pipeline_defaults, "pretrain": pretrain_defaults, "adapt_language": adapt_language_defaults,
            "finetune": finetune_defaults, "assemble": assemble_defaults, "evaluate": evaluate_defaults}


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises UserError for an unknown stage or any key its stage does not know."""
  stage = config.get("stage")
  if stage not in DEFAULTS:
    raise UserError(f"unknown config.stage {stage!r}; known stages: {sorted(DEFAULTS)}")
  _check_keys(config, DEFAULTS[stage](), "config")


def _check_keys(cfg, ref, prefix: str) -> None:
  for key in cfg.keys():
    if key not in ref:
      near = difflib.get_close_matches(key, list(ref.keys()), n=1)
      hint = f" (did you mean {prefix}.{near[0]}?)" if near else ""
      raise UserError(f"unknown config key {prefix}.{key}{hint}")
    if isinstance(ref[key], ml_collections.ConfigDict):
      if not isinstance(cfg[key], (ml_collections.ConfigDict, dict)):
        raise UserError(f"config key {prefix}.{key} must be a group of keys, got {cfg[key]!r}")
      _check_keys(cfg[key], ref[key], f"{prefix}.{key}")


PRESETS = ("tiny", "base")


def pretrain_preset(preset: str, *, forgetting: bool) -> ml_collections.ConfigDict:
  """The `:tiny` (CPU demo) and `:base` (paper recipe) presets, with or without forgetting."""
  preset = preset or "tiny"
  if preset not in PRESETS:
    raise UserError(f"unknown preset {preset!r}; choose one of {PRESETS}")
  c = pretrain_defaults()
  if preset == "tiny":
    c.total_steps = 1200
    c.forget_every = 200
    c.batch_size = 32
    c.log_every = 10
    c.eval_every = 90           # not a divisor of forget_every: no evaluation lands right after a reset
    c.checkpoint_every = 300
    c.model.update(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512)
    c.data.update(seq_len=64, vocab_size=2048, max_valid_sequences=256)
    c.optim.update(lr=2e-3, warmup_steps=100)
  if preset == "base":
    c.data.source = "prepared:data/cc100_en"  # python -m rewire.main --config=configs/prepare.py:cc100 ...
  if not forgetting:
    c.forget_every = 0
    c.optim.clip_norm = 0.0  # the reference clips only its forgetting runs
  return c


def tiny_stage_config(stage: str) -> ml_collections.ConfigDict:
  """The `:tiny` presets of the later stages: CPU-sized, on the bundled data, reading `runs/<variant>`."""
  if stage == "adapt_language":
    c = adapt_language_defaults()
    c.init_from = "runs/forget"
    c.data.update(source="bundled:bible_es", seq_len=64, vocab_size=2048, max_valid_sequences=128)
    c.update(total_steps=300, batch_size=32, log_every=10, eval_every=100, checkpoint_every=150,
             token_budget=100_000)
    c.optim.update(lr=2e-3, warmup_steps=30)
    return c
  if stage in ("finetune_nli", "finetune_qa"):
    c = finetune_defaults()
    c.init_from = "runs/forget"
    c.update(epochs=3, batch_size=32, log_every=20, max_train_examples=3000, max_len=64)
    c.model.update(dropout=0.1, attention_dropout=0.1)
    c.optim.update(lr=5e-4, warmup_fraction=0.06)
    if stage == "finetune_nli":
      c.update(task="nli", train_source="bundled:verse_nli:train", dev_source="bundled:verse_nli:dev")
    else:
      c.update(task="qa", train_source="bundled:verse_qa:train", dev_source="bundled:verse_qa:dev",
               doc_stride=24, max_query_len=24)
    return c
  raise UserError(f"no tiny preset for stage {stage!r}")


def pipeline_preset(preset: str) -> ml_collections.ConfigDict:
  """`tiny`: the whole method on the bundled Bibles in minutes on a CPU; `base`: the paper's recipe."""
  if preset not in PRESETS:
    raise UserError(f"unknown preset {preset!r}; choose one of {PRESETS}")
  c = pipeline_defaults()
  c.pretrain = pretrain_preset(preset, forgetting=True)
  c.forget_every = c.pretrain.forget_every
  if preset == "tiny":
    c.languages = ("es",)
    c.adapt_source = "bundled:bible_{lang}"
    c.adapt = tiny_stage_config("adapt_language")
    # Extractive QA: a 2-layer model learns it in minutes (its NLI head on <s> stays at chance this small).
    c.finetune = tiny_stage_config("finetune_qa")
    c.finetune.update(max_train_examples=2000, epochs=2)
    c.finetune.optim.lr = 5e-4
    c.evaluate.test_source = "bundled:verse_qa:test"
  else:
    c.languages = ("ar", "de", "es", "hi", "ru", "th", "tr", "vi", "zh")
    c.adapt_source = "prepared:data/cc100_{lang}"  # configs/prepare.py:cc100.LANG for each language
    c.finetune.update(task="nli", train_source="hf:multi_nli:train", dev_source="hf:xnli:en:validation",
                      epochs=10, batch_size=32)
    c.evaluate.test_source = "hf:xnli:{lang}:test"
  c.adapt.init_from = ""
  c.finetune.init_from = ""
  return c
