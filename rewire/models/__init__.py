"""Model families: the flax modules, the registry that builds them, and the objectives they train with.

  registry.py       every family's architectures, builders and parameter paths ("the model of this family")
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

Stages, the probe, the study and the HF interop ask `registry` for a family's models and paths instead of
importing a family's modules; `llama.py` is the second family, a sibling of `roberta.py` registered there.

May import: the core (modules directly in rewire/), rewire.data, rewire.tasks.
"""
