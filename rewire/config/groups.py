"""Config groups that several stages share: the data, model, optimizer, forgetting and mesh groups.

Each function returns a fresh `ConfigDict` with every key of its group and the paper's recipe (RoBERTa-base,
Chen et al. 2023) as the defaults; a stage's schema (`rewire.config.pretrain`, `.finetune`, `.probe`, ...)
assembles the groups it reads and overrides what it changes.
"""

from __future__ import annotations

import ml_collections

from rewire.models import registry


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
      workers=0,                 # DirectRunner worker processes (0: one per core; 1 under 8 MB of text)
      beam_options="",           # extra Beam pipeline flags, e.g. "--project=P --region=R --temp_location=gs://B/t"
      verify_shards=True,        # re-hash a prepared:DIR's shards against its manifest when a run starts
      mask_prob=0.15))


def model_defaults(family: str = registry.DEFAULT_FAMILY) -> ml_collections.ConfigDict:
  """The `model` group of a run that builds its model: `family` and that family's keys only, with the
  defaults its config class declares (`Family.config_group`; RoBERTa-base by default, a ~160M-parameter
  decoder for `llama`). A key of another family is an unknown key, as a typo is."""
  return registry.family(family).config_group()


def run_model_defaults() -> ml_collections.ConfigDict:
  """The `model` group of a run that takes its shape from another workdir: only what may change per run."""
  return ml_collections.ConfigDict(dict(dropout=0.1, attention_dropout=0.1, dtype="float32", remat=False))


def adamw_defaults(**overrides) -> ml_collections.ConfigDict:
  """AdamW as fairseq runs it (peak lr, linear warm-up then linear decay to 0), with `overrides`."""
  return ml_collections.ConfigDict(dict(dict(lr=7e-4, warmup_steps=10_000, b1=0.9, b2=0.98, eps=1e-6,
                                             weight_decay=0.01), **overrides))


def forget_defaults() -> ml_collections.ConfigDict:
  """The `forget` group: which leaves a reset draws fresh, how, and until when."""
  return ml_collections.ConfigDict(dict(
      # the leaves that are reset: input (the token embeddings), output (a decoder's untied head), both,
      # or a regex over param paths
      pattern="input",
      init_std=0.02,             # std of the fresh N(0, std) sample (padding row 0)
      reset_optimizer=True,      # False: keep the reset leaves' Adam moments (their schedule still restarts)
      until=0))                  # U > 0: no resets after update U; the last episode then runs to the end


def vocab_start_defaults() -> ml_collections.ConfigDict:
  """How the methods of `rewire.vocab` build new vocabulary rows from a source model's (the settings of a
  `reinit.method`, and of the probe's `inits`)."""
  return ml_collections.ConfigDict(dict(
      fallback="random",         # rows overlap / focus / omp cannot build: random, mean or script
      covariance_scale=1.0,      # mean: the covariance's scale (Hugging Face's resize_token_embeddings: 1e-9)
      focus_temperature=0.1,     # focus: sparsemax(cosine similarity / temperature)
      omp_atoms=8,               # omp: shared pieces per new piece, at most
      # focus / omp: fastText vectors (gensim) of the new pieces, trained on the run's own text
      aux_dim=100, aux_epochs=5, aux_window=5, aux_min_count=3, aux_min_tokens=20_000))


def mesh_defaults() -> ml_collections.ConfigDict:
  """The `mesh` group: the device mesh's axis sizes and the logical-axis rules (`rewire.sharding`)."""
  return ml_collections.ConfigDict(dict(
      data=-1, fsdp=1, tensor=1,  # -1: the rest of the devices
      rules=(("batch", ("data", "fsdp")), ("length", None), ("embed", "fsdp"), ("vocab", "tensor"),
             ("heads", "tensor"), ("mlp", "tensor"), ("embed_out", None))))
