"""The plasticity probe: how fast fresh token embeddings learn a language on a frozen body.

  stage.py      the `probe` stage: one checkpoint in, probe.json / probe.md / probe.png out
  languages.py  probe languages: a tokenizer each, read at every token budget
  prober.py     `Prober`: tables laid out by language, budget and seed; one compile per vocabulary
  stacked.py    the tables' training: stacked [T, V, H], one vmapped, donated step on the frozen body
  stats.py      t-intervals, updates to a target, area under the curve, the seed bootstrap
  report.py     probe.md, probe.png and plasticity.png
  during.py     `probe_every`: the probe run on a pretraining run's own body every N updates

May import: the core (modules directly in rewire/), rewire.config, rewire.data, rewire.tasks,
rewire.models, rewire.vocab. Never rewire.stages or rewire.study, which use the probe.
"""
