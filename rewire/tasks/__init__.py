"""Task adaptation and zero-shot evaluation: NLI, text-classification and extractive-QA features, QA
post-processing, metrics."""
