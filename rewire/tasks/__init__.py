"""The downstream tasks: examples, features, heads, losses and scores for fine-tuning and zero-shot evaluation.

The paper fine-tunes on an English task (NLI or extractive QA) and evaluates in other languages; this
package turns task sources into canonical examples and model features and model outputs into scores.

  names     the task names and label orders, spelled once
  loading   task examples from the hub, TFDS, local files or the bundled verse tasks (`load_task_split`)
  schema    source rows -> the canonical NLI, classify and QA example schemas
  nli       sequence-classification features: sentence pairs (NLI) and single texts (classify)
  qa        extractive-QA windowed features and span post-processing
  scoring   accuracy, SQuAD and MLQA F1 / exact match, relative gain
  spec      `TaskSpec`: what differs between tasks (features, head, loss, scores) in one place

May import: the core (modules directly in rewire/), rewire.data.
"""
