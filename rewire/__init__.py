"""rewire: masked-LM pretraining with active forgetting, and re-wiring to new languages."""

__version__ = "0.1.0"
