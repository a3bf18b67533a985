"""Stage dispatch: `run(config, workdir)` hands a validated config to its stage's entry point.

Kept apart from `rewire.main`, which defines the command line's flags, so that worker processes (the study's
job runner spawns them) can run a stage without importing the flag definitions a second time.
"""

from __future__ import annotations

from rewire.errors import UserError


def run(config, workdir: str) -> dict:
  from rewire import config as rconfig
  rconfig.validate(config)
  if config.stage == "prepare":
    from rewire.data.build import Engine, Settings, prepare_into
    corpus = prepare_into(Settings.from_config(config.data), workdir, engine=Engine.from_config(config.data))
    splits = corpus.manifest["splits"]
    print(f"done: {corpus.directory}  " + ", ".join(
        f"{k} {v['sequences']:,} sequences ({v['tokens']:,} tokens)" for k, v in splits.items()))
    return {}
  if config.stage in ("pretrain", "adapt_language"):
    from rewire.stages.pretrain import train_and_evaluate
    return train_and_evaluate(config, workdir)
  if config.stage == "finetune":
    from rewire.stages.finetune import train_and_evaluate
    return train_and_evaluate(config, workdir)
  if config.stage == "assemble":
    from rewire.stages.assemble import assemble
    return assemble(config.task_from, config.embeddings_from, workdir)
  if config.stage == "evaluate":
    from rewire.stages.evaluate import run as evaluate
    return evaluate(config, workdir)
  if config.stage == "probe":
    from rewire.probe.stage import run as probe
    return probe(config, workdir)
  if config.stage == "study":
    from rewire.study.graph import run as study
    return study(config, workdir)
  if config.stage == "pipeline":
    from rewire.stages.pipeline import run as pipeline
    return pipeline(config, workdir)
  raise UserError(f"stage {config.stage!r} is not implemented")
