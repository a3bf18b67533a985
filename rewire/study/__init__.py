"""The plasticity study: standard against forgetting pretraining, several seeds, carried to a zero-shot task.

  graph.py      the study's job graph (pretrain, probe, adapt, fine-tune, zero-shot per variant and seed), `run`
  layout.py     where every job of the study writes, and its languages (real, controlled, probe-only)
  jobs.py       a job-graph runner: stage runs in worker processes, several at once, each skipped when complete
  summaries.py  reads back what the jobs wrote: each model's summaries, its pretraining curve, the timings
  statistics.py the statistics over seeds, variants, languages and budgets (t-intervals, the seed bootstrap
                of the paper's statistic): what study.json holds
  report.py     writes study.json and study.md (its tables and sentences) from the statistics
  figures.py    the report's figures (pretraining, adaptation, zero-shot against budget, transfer)
  transfer.py   the controlled languages' transfer ratio (zero-shot over the English ceiling), its table, figure

May import: the core (modules directly in rewire/), rewire.config, rewire.data, rewire.tasks,
rewire.models, rewire.probe, rewire.stages.
"""
