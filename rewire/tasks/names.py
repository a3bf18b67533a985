"""The task names and label orders, spelled once for configs, loaders, specs and the task builder."""

TASKS = ("nli", "qa", "classify")  # 3-way NLI on a pair, SQuAD-style extractive QA, one-text classification
NLI_LABELS = ("entailment", "neutral", "contradiction")  # XNLI/MultiNLI label-index order
GENRE_LABELS = ("narrative", "discourse")  # label order of the bundled verse_genre task (task "classify")
