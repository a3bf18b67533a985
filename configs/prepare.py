"""Corpus preparation: text -> a tokenizer + ArrayRecord shards of packed sequences, on Apache Beam.

The workdir is the prepared directory; training stages read it with `--config.data.source=prepared:DIR`.
Rerunning on the same inputs and settings is a no-op; different ones are refused (nothing is overwritten).
Progress lines show the bytes read, documents, tokens, throughput and an ETA.

Presets (`--config=configs/prepare.py:PRESET`):

* `tiny` (default) -- the bundled English corpus with the tiny pretraining settings (seq_len 64, 2048-piece
  vocabulary); what `configs/pretrain_forget.py` prepares into its workdir by itself.
    python -m rewire.main --config=configs/prepare.py --workdir=data/tiny_en
  Hardware: 2 CPU cores, about 5 s.

* `cc100` / `cc100.LANG` -- CC-100 (Conneau et al. 2020) as the paper uses it: 512-token sequences, a
  50k-piece unigram tokenizer per language trained on a 100k-document sample. CC-100 ships one
  `LANG.txt.xz` per language (documents separated by blank lines), read as is:
    wget https://data.statmt.org/cc-100/en.txt.xz -P cc100/          # 82 GB
    python -m rewire.main --config=configs/prepare.py:cc100 --workdir=data/cc100_en
    python -m rewire.main --config=configs/pretrain_forget.py:base --workdir=runs/forget_base
  An xz stream cannot be split, so one file is read in `parts_per_file` interleaved parts (16 here: each
  part decompresses the whole stream and tokenizes every 16th block of 1000 documents; decompression is
  ~20x cheaper than tokenization, measured). A Parquet mirror on the hub works too, one unit per row group:
    --config.data.source=hf:NAME:CONFIG:train   (streamed; each hub shard is a unit)
  For an adaptation language only a slice is needed (the paper's low-data budget is 5M tokens):
    python -m rewire.main --config=configs/prepare.py:cc100.de --workdir=data/cc100_de
  prepares the first 2M documents of `cc100/de.txt.xz`, and
    python -m rewire.main --config=configs/adapt_language.py:base --workdir=runs/forget_base_de \
        --config.init_from=runs/forget_base --config.data.source=prepared:data/cc100_de
  trains on the exact prefix of its sequences that holds `token_budget` tokens.
  Other runners: `--config.data.runner=DataflowRunner --config.data.beam_options="--project=P
  --region=R --temp_location=gs://B/tmp --setup_file=./setup.py"` (the workdir must be a filesystem every
  worker mounts). Measured throughput and disk use, and the extrapolation to CC-100 English, are in
  benchmarks/README.md.
"""

from rewire.config import prepare_defaults, pretrain_preset
from rewire.errors import UserError


def get_config(preset: str = "tiny"):
  c = prepare_defaults()
  preset = preset or "tiny"
  if preset == "tiny":
    tiny = pretrain_preset("tiny", forgetting=True).data
    c.data.update(source=tiny.source, seq_len=tiny.seq_len, vocab_size=tiny.vocab_size)
    return c
  lang = preset.split(".", 1)[1] if preset.startswith("cc100.") else "en" if preset == "cc100" else None
  if lang is None:
    raise UserError(f"unknown preset {preset!r}; choose tiny, cc100 or cc100.LANG (e.g. cc100.de)")
  c.data.update(source=f"files:cc100/{lang}.txt.xz", seq_len=512, vocab_size=50_000,
                tokenizer_sample_docs=100_000, parts_per_file=16,
                valid_fraction=0.0005, max_valid_sequences=4096)
  if lang != "en":
    c.data.max_documents = 2_000_000
  return c
