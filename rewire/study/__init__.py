"""Studies: the plasticity study and the pipeline, each a graph of steps run on Ray (`rewire.steps`).

The plasticity study: standard against forgetting pretraining, several seeds, carried to a zero-shot task.

  graph.py      the study's steps (pretrain, probe, adapt, fine-tune, zero-shot per variant and seed), `run`
  pipeline.py   the pipeline: every stage for a standard and a forgetting model, with a report, as steps
  layout.py     the names of the study's steps, and its languages (real, controlled, probe-only)
  summaries.py  reads back what the jobs wrote: each model's summaries, its pretraining curve, the timings
  statistics.py the statistics over seeds, variants, languages and budgets (t-intervals, the seed bootstrap
                of the paper's statistic): what study.json holds
  report.py     writes study.json and study.md (its tables and sentences) from the statistics
  figures.py    the report's figures (pretraining, adaptation, zero-shot against budget, transfer)
  transfer.py   the controlled languages' transfer ratio (zero-shot over the English ceiling), its table, figure

May import: the core (modules directly in rewire/), rewire.config, rewire.data, rewire.tasks,
rewire.models, rewire.probe, rewire.stages, rewire.steps.
"""
