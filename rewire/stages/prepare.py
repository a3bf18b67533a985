"""The `prepare` stage: a corpus prepared into the workdir (`configs/prepare.py`), read later as `prepared:DIR`.

The work is `rewire.data`'s (Apache Beam jobs, the tokenizer, the commit); this entry point only runs it
from a config and prints what was written.
"""

from __future__ import annotations

from rewire.data.build import Engine, Settings, prepare_into


def run(config, workdir: str) -> dict:
  corpus = prepare_into(Settings.from_config(config.data), workdir, engine=Engine.from_config(config.data))
  splits = corpus.manifest["splits"]
  print(f"done: {corpus.directory}  " + ", ".join(
      f"{k} {v['sequences']:,} sequences ({v['tokens']:,} tokens)" for k, v in splits.items()))
  return {}
