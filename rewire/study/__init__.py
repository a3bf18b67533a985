"""The plasticity study: standard against forgetting pretraining, several seeds, carried to a zero-shot task.

  graph.py    the study's job graph (pretrain, probe, adapt, fine-tune, zero-shot per variant and seed), `run`
  layout.py   where every job of the study writes, and its languages (real, controlled, probe-only)
  jobs.py     a job-graph runner: stage runs in worker processes, several at once, each skipped when complete
  report.py   the statistics (t-intervals, the seed bootstrap of the paper's statistic) and study.md, figures
  transfer.py the controlled languages' transfer ratio (zero-shot over the English ceiling), its table, figure

May import: the core (modules directly in rewire/), rewire.config, rewire.data, rewire.tasks,
rewire.models, rewire.probe, rewire.stages.
"""
