"""Where the study keeps what: its workdir layout, spelt once for the graph that writes it and the report
that reads it back (`rewire.study.graph`, `rewire.study.summaries`).

    data/<name>                      a prepared corpus (PRETRAIN_CORPUS, or a probe language)
    <variant>_s<seed>/<job>          one model's steps: PRETRAIN, PROBE, ADAPT, ADAPT_ABLATION, FINETUNE, ZERO_SHOT
    timings.jsonl                    one line per invocation: its wall time and each step's seconds

These are step names; each step's directory is its name plus its hash (`rewire.steps.step.directory`), and
the report finds it through the graph.

`adapt` holds the zero-shot languages' embeddings at the largest probe budget, `adapt_ablation` those of
`ablation_languages` at the smaller budgets; `ADAPTED` lists both, in the order they are read (with
`adapt_steps=0`, the probe's own tables are read instead: `adapted_jobs`). The
languages are spelt here too: the real zero-shot languages (`languages`), the controlled ones
(`controlled`: the pretraining language relearned, or enciphered, tested on the English items) and the
probe-only ones (`relearn`). With several starts of new rows (`probe.inits`), every result is kept per
curve, language/start (`curves`).
"""

from __future__ import annotations

from rewire.config import parse_pairs
from rewire.config.probe import curve_name, parse_inits
from rewire.data import cipher
from rewire.errors import UserError
from rewire.steps.step import ref

PRETRAIN, PROBE, FINETUNE, ZERO_SHOT = "pretrain", "probe", "finetune", "zero_shot"
ADAPT, ADAPT_ABLATION = "adapt", "adapt_ablation"
ADAPTED = (ADAPT, ADAPT_ABLATION)
PRETRAIN_CORPUS = "pretrain"  # the name of the English pretraining corpus under data/
LOGS, TIMINGS = "logs", "timings.jsonl"


def model_name(variant: str, seed: int) -> str:
  """One pretrained model's name: its directory under the root and the prefix of its jobs' names."""
  return f"{variant}_s{int(seed)}"


def variant_of(name: str) -> str:
  """The variant of a `model_name`."""
  return name.rsplit("_s", 1)[0]


def job_name(variant: str, seed: int, job: str) -> str:
  """The runner's name of one model's job (also its log's name), e.g. forget_s1/probe."""
  return f"{model_name(variant, seed)}/{job}"


def data_name(corpus: str) -> str:
  """The runner's name of the job that prepares `corpus`."""
  return f"data/{corpus}"


def prepared(corpora) -> str:
  """A probe's `languages` value reading the prepared `corpora` (references to their steps): NAME=prepared:DIR,..."""
  return ",".join(f"{n}=prepared:{ref(data_name(n))}" for n in corpora)


def adapted_jobs(config) -> tuple[str, ...]:
  """The jobs whose embedding tables go to the zero-shot test: ADAPTED, or with `adapt_steps=0` the probe
  itself (its tables are then saved, and no separate adaptation runs)."""
  return ADAPTED if int(config["adapt_steps"]) > 0 else (PROBE,)


def adapt_steps(config) -> int:
  """The updates of the embeddings the zero-shot test uses."""
  return int(config["adapt_steps"]) or int(config["probe"]["total_steps"])


def controlled(config) -> dict[str, str]:
  """{name: text source} of the controlled languages, `{pretrain}` replaced by the pretraining text source."""
  pretrain = str(config["pretrain"]["data"]["source"])
  return {n: s.replace("{pretrain}", pretrain) for n, s in parse_pairs(config["controlled"], "controlled").items()}


def zero_shot_languages(config) -> dict[str, str]:
  """{name: text source} of every language with a zero-shot test: the real ones, then the controlled ones."""
  return {**parse_pairs(config["languages"], "languages"), **controlled(config)}


def all_languages(config) -> dict[str, str]:
  """{name: text source} of every language the study prepares and probes."""
  return {**parse_pairs(config["relearn"], "relearn"), **zero_shot_languages(config)}


def test_set(config, name: str) -> tuple[str, str]:
  """(task source, language) of the zero-shot test of language `name`: a controlled language takes the
  English test items, enciphered with its corpus's cipher."""
  source, languages = str(config["evaluate"]["test_source"]), controlled(config)
  if name not in languages:
    return source, name
  ciphered = cipher.parse(languages[name])
  return (f"{cipher.PREFIX}{ciphered[0]}:{source}" if ciphered else source), "en"


def ablation_languages(config) -> list[str]:
  """The zero-shot languages adapted at every smaller budget (ADAPT_ABLATION): the chosen real languages
  and every controlled one."""
  langs = parse_pairs(config["languages"], "languages")
  chosen = [l.strip() for l in str(config["ablation_languages"]).split(",") if l.strip()]
  unknown = [l for l in chosen if l not in langs]
  if unknown:
    raise UserError(f"ablation_languages {unknown} are not zero-shot languages ({', '.join(langs)})")
  return chosen + [l for l in controlled(config) if l not in chosen]


def curves(config, names) -> list[str]:
  """The curves of languages `names` in the study's probes and zero-shot results: the names, or with several
  starts (`probe.inits`) language/start for each."""
  inits = parse_inits(config["probe"]["inits"])
  return [curve_name(n, i, inits) for n in names for i in inits]


def language_of(curve: str) -> str:
  """The language of a curve (`curves`)."""
  return curve.split("/")[0]
