"""Task adaptation and zero-shot evaluation: NLI and extractive-QA features, QA post-processing, metrics."""
