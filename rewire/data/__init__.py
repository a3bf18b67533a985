"""Text sources, tokenizers, packing, batching and on-device MLM masking."""
