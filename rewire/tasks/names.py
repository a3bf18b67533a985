"""The task names and the NLI label order, spelled once for configs, loaders, specs and the task builder."""

TASKS = ("nli", "qa")                                  # 3-way NLI from <s>; SQuAD-style extractive QA
NLI_LABELS = ("entailment", "neutral", "contradiction")  # XNLI/MultiNLI label-index order
