"""rewire: masked-LM pretraining with active forgetting, and re-wiring to new languages.

The core sits directly in this directory, one module per concern: `main` (the command line), `errors`,
`fileio`, `forgetting` (the optax transformation), `optim` (stage masks), `step` (the one train step),
`loop` (the one training loop), `checkpoint`, `workdir` (the on-disk contract), `sharding`, `telemetry`
and `plot`. The core imports nothing of rewire but the core (`main` excepted, which dispatches to the
stages). The groups are packages, each with its own `May import:` rule: `config`, `data`, `tasks`,
`models`, `probe`, `stages`, `study` and `hf`.
"""

__version__ = "0.1.0"
