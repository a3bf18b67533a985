"""rewire: masked-LM pretraining with active forgetting, and re-wiring to new languages.

The core sits directly in this directory, one module per concern: `main` (the command line), `errors`,
`fileio`, `forgetting` (the optax transformation), `optim` (stage masks), `step` (the one train step),
`loop` (the one training loop), `checkpoint`, `workdir` (the on-disk contract), `sharding`, `telemetry`
and `plot`. The core imports nothing of rewire but the core (`main` excepted, which dispatches to the
stages). The groups are packages, each with its own `May import:` rule: `config`, `data`, `tasks`,
`models`, `vocab`, `probe`, `stages`, `steps`, `study` and `hf`.

Words, one per idea, in code, config and docs:

  family        a kind of model (RoBERTa, Llama, ...): one `rewire.models.family.Family` subclass owns its
                config group, modules, objective, vocabulary leaves and Hugging Face mapping
  architecture  one of a family's modules, by the name `model.json` records (e.g. RobertaForMaskedLM)
  body          the parameters a task model takes over from the language model (`Family.body`)
  vocabulary leaves   every vocabulary-sized leaf: the token embeddings ("input"), an untied output head
                ("output"), an LM bias; `embeddings` names the matrices among them (`both`: input and
                output, refused where the head is tied), `vocab` all of them
  fresh         drawn anew: `fresh_rows` is the one N(0, std) draw (the padding row zeroed where the family
                keeps it at zero) behind every reset, adaptation start and probe table
  forgetting    the method: pretraining with periodic resets (`forget_every` = K, the `forget` group)
  reset         one forgetting event: the forgetting group's leaves get fresh rows and its optimizer state
                and learning-rate episode restart
  stage         one kind of run (pretrain, adapt_language, finetune, assemble, evaluate, probe, ...)
  step          one node of a study's or the pipeline's graph (`rewire.steps`): a stage run, or a function,
                in a directory named by its hash; "job" is not used
  update        one optimizer update; metrics and checkpoints are indexed by it ("step" in records)
  table         in the probe only: one set of fresh vocabulary matrices trained on a frozen body
"""

__version__ = "0.1.0"
