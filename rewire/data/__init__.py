"""The text side of rewire: from a source string to the batches and masked tokens a training step reads.

A corpus is prepared once (text -> tokenizer + packed ArrayRecord shards + manifest), then every run reads
the shards through grain; masking happens on device inside the jitted step.

  sources       source strings (bundled:, files:, hf:, tfds:) cut into units and streamed as documents
  cipher        cipher:SEED:SOURCE, a controlled new language: a seeded bijection of a source's characters
  bundled       the corpora shipped in rewire/data/corpora/: the English demo corpus, the verse-aligned Bibles
  file_formats  streamed readers of .txt / .jsonl (optionally compressed) and .parquet files
  tokenizer     training, saving and loading unigram tokenizers with RoBERTa's special-token layout
  packing       documents -> fixed-length `<s> ... </s> <pad>` rows that never cross a document
  settings      the `config.data` settings that determine a prepared corpus, and how its jobs run
  build         the `prepare` driver: checks, tokenizer, the Beam jobs, and the commit of a corpus
  beam          the Apache Beam jobs `build` runs, and the per-unit work they distribute
  corpus        the on-disk contract of a prepared corpus: manifest, shards, checksums, reading
  batches       grain iterators of global batches (corpus or in-memory arrays), evaluation batches
  run_data      a run's data: prepare or open its corpus, tokenizer checks, validation set, baseline
  masking       BERT/RoBERTa MLM corruption in jax.numpy, run on device

May import: the core (modules directly in rewire/).
"""
