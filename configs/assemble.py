"""Assembly: the English task model's body and head with a new language's token embeddings and tokenizer.

    python -m rewire.main --config=configs/assemble.py --workdir=runs/forget_nli_es \
        --config.task_from=runs/forget_nli --config.embeddings_from=runs/forget_es
  Seconds on any machine. A hidden-size or vocabulary mismatch stops with a one-line error.
"""

from rewire.config import assemble_defaults


def get_config():
  return assemble_defaults()
