"""Model families: the flax modules, the registry that builds them, and the objectives they train with.

  family.py         the family interface: the one class per family that owns its config group, modules,
                    objective and baseline, vocabulary leaves, fresh rows, FLOPs and HF mapping
  registry.py       the one place families are registered, and the lookups (by name, architecture, config)
  roberta_family.py, llama_family.py   the two families rewire ships, each a `Family` subclass
  layers.py         building blocks with HF names and logical axes (Dense, LayerNorm, RMSNorm, dropout, GELU,
                    attention)
  roberta.py        the RoBERTa encoder and its config;  roberta_heads.py  its MLM, classification, QA heads
  llama.py          the Llama-family decoder (RoPE, SwiGLU, GQA, KV cache) and its config;
                    llama_heads.py  its causal-LM and last-token classification heads
  config_base.py    what every family's config shares (from a dict, dtype and padding checks)
  mlm.py            the masked-LM objective: on-device masking, the loss at masked positions, the baseline
  causal_lm.py      the next-token objective of decoders and its baseline
  head_xent.py      the LM head and its cross-entropy as one chunked op that never holds the logits
  task_model.py     a task model on a mesh (shardings, prediction) and the task objective
  flops.py          FLOPs per step and accelerator peaks, for MFU

Stages, the probe, the study, the HF interop and the sampler ask `registry` for a family and call its
methods instead of importing a family's modules or branching on its name.

May import: the core (modules directly in rewire/), rewire.data, rewire.tasks.
"""
