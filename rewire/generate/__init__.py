"""Sampling from a decoder: `python -m rewire.generate --checkpoint=DIR --prompt=...`.

People who adapt a model to a new language want to read what it writes. Any Llama-family workdir can be
sampled: pretrained, language-adapted, imported, or an assembled task model (its fine-tuned body with the
new language's embeddings, and the output head of the adaptation it came from).

  sampler.py  `Sampler`: a jitted prefill + key/value-cache decode loop, one compile per prompt-length
              bucket; greedy, temperature and top-p sampling; `sample_uncached`, the reference without a cache
  load.py     a workdir -> (causal LM, params, tokenizer), whatever stage wrote it
  cli.py / __main__.py  the command line

May import: the core (modules directly in rewire/), rewire.data, rewire.models.
"""

from rewire.generate.load import Decoder, load_decoder
from rewire.generate.sampler import Sampler, sample_uncached

__all__ = ["Decoder", "Sampler", "load_decoder", "sample_uncached"]
