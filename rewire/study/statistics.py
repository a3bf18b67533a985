"""The study's statistics over seeds, variants, languages and budgets: what `study.json` holds.

Seeds are pretraining seeds: each (variant, seed) is one pretrained model, probed and carried through the
task with that seed. Every interval is over those seeds: t-intervals for per-variant means, and a seed
bootstrap (each variant's seeds resampled with replacement, independently) for the paper's statistic,
the mean over languages of the relative gain 100 * (variant - standard) / standard, for every variant
compared with the standard one (forget, weight_decay).

Everything here is computed from `models`, {(variant, seed): that model's summaries} as
`rewire.study.summaries.load_models` reads them, and nothing here reads or writes a file, so the writing
(`rewire.study.report`) and the figures (`rewire.study.figures`) stay apart from the numbers. Budgets are
strings (the summaries' keys), in ascending order.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rewire.config import parse_pairs
from rewire.config.probe import parse_inits
from rewire.config.variants import BASELINE, compared
from rewire.probe import stats as probe_stats
from rewire.study import layout
from rewire.study.transfer import compute_transfer
from rewire.tasks.scoring import relative_gain


@dataclasses.dataclass(frozen=True)
class Axes:
  """What the statistics range over, read from the study's config."""
  variants: list[str]  # the pretraining variants, standard (the baseline) among them
  seeds: list[int]
  languages: list[str]  # the real zero-shot languages (their curves, language/start, with several starts)
  probe_budgets: list[str]  # every token budget of the probe
  budgets: list[str]  # the probe budgets at which some language was adapted
  main_budget: str  # the largest, at which every language is adapted
  ablation_languages: list[str]  # the real languages adapted at the smaller budgets too (the low-data ablation)
  languages_at: dict[str, list[str]]  # budget -> the real languages adapted at it
  level: float  # the confidence level of every interval
  resamples: int  # the seed bootstrap's resamples
  starts: list[str]  # how the probes' new rows start (`probe.inits`); the first gives the headline

  def of_start(self, curves, start: str | None = None) -> list[str]:
    return curves_of_start(curves, self.starts, start)


def curves_of_start(curves, starts, start: str | None = None) -> list[str]:
  """The curves of `start` (default: the first of `starts`) among `curves`: all of them with one start."""
  start = start or starts[0]
  return list(curves) if len(starts) == 1 else [c for c in curves if c.split("/", 1)[1] == start]


def study_axes(config) -> Axes:
  """The seeds, languages and budgets of `config`'s study, its confidence level and bootstrap size."""
  languages = layout.curves(config, parse_pairs(config.languages, "languages"))
  probe_budgets = [str(b) for b in sorted(int(b) for b in config.probe.token_budgets)]
  main_budget = probe_budgets[-1]
  # The controlled languages are left out here: `rewire.study.transfer` has their statistics.
  ablation = [curve for curve in layout.curves(config, layout.ablation_languages(config)) if curve in languages]
  languages_at = {budget: (languages if budget == main_budget else ablation) for budget in probe_budgets}
  return Axes(variants=list(config.variants), seeds=[int(s) for s in config.seeds], languages=languages, probe_budgets=probe_budgets,
              budgets=[budget for budget in probe_budgets if languages_at[budget]], main_budget=main_budget,
              ablation_languages=ablation, languages_at=languages_at, level=float(config.probe.confidence),
              resamples=int(config.bootstrap), starts=list(parse_inits(config.probe.inits)))


def bootstrap_gain(scores: dict, langs, *, resamples: int, seed: int = 0, level: float = 0.95,
                   variant: str = "forget") -> dict:
  """Seed-bootstrap interval of `relative_gain` of `variant` over the baseline; `scores[v][lang]` is a list
  over seeds."""
  langs, pair = list(langs), (variant, BASELINE)

  def gain(groups: dict) -> np.ndarray:  # groups[v]: an array [resamples, langs, seeds]
    means = {v: dict(zip(langs, np.moveaxis(groups[v].mean(axis=-1), -1, 0))) for v in pair}
    return relative_gain(means[variant], means[BASELINE])

  samples = {v: [scores[v][lang] for lang in langs] for v in pair}
  result = probe_stats.bootstrap(gain, samples, resamples=resamples, seed=seed, level=level)
  return {"mean": result["estimate"], "low": result["low"], "high": result["high"], "resamples": result["resamples"]}


def pretraining_stats(models: dict, axes: Axes) -> dict:
  """Per variant: English validation loss (mean and t-interval), the unigram baseline's loss, how far below
  that baseline the model gets, and each run's count of resets."""
  out = {}
  for variant in axes.variants:
    runs = [models[(variant, seed)]["pretrain"] for seed in axes.seeds]
    out[variant] = {
        "valid_loss": probe_stats.mean_ci([run["valid_loss"] for run in runs], axes.level),
        "unigram_loss": float(np.mean([run["unigram_loss"] for run in runs])),
        "below_unigram": probe_stats.mean_ci([run["unigram_loss"] - run["valid_loss"] for run in runs], axes.level),
        "resets": [len(run.get("resets", [])) for run in runs]}
  return out


def english_task_stats(models: dict, axes: Axes) -> dict:
  """Per variant: the English task model's best dev accuracy and its English test accuracy (t-intervals)."""
  out = {}
  for variant in axes.variants:
    dev, test = [], []
    for seed in axes.seeds:
      model = models[(variant, seed)]
      dev += [value for key, value in model["finetune"].items() if key.startswith("best_dev_")]
      test.append(model["zero_shot"]["en"]["full"]["accuracy"])
    out[variant] = {"dev": probe_stats.mean_ci(dev, axes.level), "test_en": probe_stats.mean_ci(test, axes.level)}
  return out


def zero_shot_accuracies(models: dict, axes: Axes) -> dict:
  """{variant: {budget: {language: [zero-shot accuracy of each seed's model]}}}, at the budgets each language
  was adapted at."""
  out = {}
  for variant in axes.variants:
    out[variant] = {}
    for budget in axes.budgets:
      per_language = {}
      for lang in axes.languages_at[budget]:
        per_language[lang] = [models[(variant, seed)]["zero_shot"][lang][budget]["accuracy"] for seed in axes.seeds]
      out[variant][budget] = per_language
  return out


def zero_shot_stats(accuracies: dict, axes: Axes) -> dict:
  """Per variant, budget and language: the mean zero-shot accuracy over seeds and its t-interval."""
  out = {}
  for variant, per_budget in accuracies.items():
    out[variant] = {}
    for budget, per_language in per_budget.items():
      out[variant][budget] = {lang: probe_stats.mean_ci(per_seed, axes.level)
                              for lang, per_seed in per_language.items()}
  return out


def relative_gains(accuracies: dict, axes: Axes, start: str | None = None) -> dict:
  """Per compared variant and budget: the paper's statistic over the languages adapted at it, their curves
  of `start` (default: the first) (seed-bootstrap interval), and the relative gain of each language's mean
  accuracy (`per_language`)."""
  out = {}
  for variant in compared(axes.variants):
    out[variant] = {}
    for budget in axes.budgets:
      scores = {v: accuracies[v][budget] for v in (variant, BASELINE)}
      languages = axes.of_start(axes.languages_at[budget], start)
      per_language = {lang: relative_gain({lang: np.mean(scores[variant][lang])}, {lang: np.mean(scores[BASELINE][lang])})
                      for lang in languages}
      out[variant][budget] = {**bootstrap_gain(scores, languages, resamples=axes.resamples, level=axes.level,
                                               variant=variant), "per_language": per_language}
  return out


def ablation_gain_at_main_budget(accuracies: dict, axes: Axes) -> dict:
  """Per compared variant: the paper's statistic at the largest budget over the ablation's languages only, so
  that it compares with the smaller budgets' (seed-bootstrap interval)."""
  scores, languages = {}, axes.of_start(axes.ablation_languages)
  for variant in axes.variants:
    at_main = accuracies[variant][axes.main_budget]
    scores[variant] = {lang: at_main[lang] for lang in languages}
  return {variant: bootstrap_gain(scores, languages, resamples=axes.resamples, level=axes.level,
                                  variant=variant) for variant in compared(axes.variants)}


def ablation_mean_accuracy(zero_shot: dict, budget: str, languages) -> dict:
  """{variant: mean over `languages` of the mean zero-shot accuracy at `budget`}; `zero_shot` as
  `zero_shot_stats` gives it."""
  return {variant: np.mean([per_budget[budget][lang]["mean"] for lang in languages])
          for variant, per_budget in zero_shot.items()}


def _first_curve(probe: dict, lang: str, budget: str) -> np.ndarray:
  """The validation-loss curve of a probe's first (in the study, its only) seed."""
  return np.asarray(probe["results"][lang][budget]["per_seed"]["curves"][0])


def _probe_across_seeds(models: dict, variant: str, seeds, target_of) -> dict:
  """One variant's probe results with the models' seeds as the seeds (for bands across models);
  `target_of(lang, budget, result)` is the loss whose updates-to-reach is measured, from the first seed's result."""
  first = models[(variant, seeds[0])]["probe"]
  out = {"results": {}, "token_budgets": first["token_budgets"]}
  for lang, per_budget in first["results"].items():
    for budget, result in per_budget.items():
      curves = np.stack([_first_curve(models[(variant, seed)]["probe"], lang, budget) for seed in seeds])
      summary = probe_stats.summarize(result["steps"], curves, target_of(lang, budget, result))
      out["results"].setdefault(lang, {})[budget] = {**summary, "unigram_loss": result["unigram_loss"]}
  return out


def adaptation_probes(models: dict, axes: Axes) -> dict:
  """Per variant: the adaptation probe's curves across model seeds. The target of the speed statistic is the
  standard model's mean final adaptation loss, per language and budget."""
  standard = _probe_across_seeds(models, BASELINE, axes.seeds, lambda lang, budget, result: result["target_loss"])
  standard_final = {}
  for lang, per_budget in standard["results"].items():
    standard_final[lang] = {budget: result["final_loss"]["mean"] for budget, result in per_budget.items()}

  def target_of(lang, budget, result):
    return standard_final[lang][budget]

  return {variant: _probe_across_seeds(models, variant, axes.seeds, target_of) for variant in axes.variants}


def adaptation_stats(probes: dict) -> dict:
  """Per language, budget and variant: the final adaptation loss, the area under the curve, and the updates
  to the standard model's final loss (with how many seeds reached it); `probes` from `adaptation_probes`."""
  out = {}
  for lang, per_budget in probes[BASELINE]["results"].items():
    out[lang] = {}
    for budget in per_budget:
      row = {}
      for variant in probes:
        result = probes[variant]["results"][lang][budget]
        row[variant] = {"final_loss": result["final_loss"], "auc": result["auc"],
                        "updates_to_standard_final": result["updates_to_target"], "reached": result["reached_target"]}
      out[lang][budget] = row
  return out


def adapted_loss_stats(models: dict, axes: Axes) -> dict:
  """Per language, budget and variant: the validation loss of the adapted embeddings that the zero-shot
  models use (mean of each model's final loss, t-interval over seeds)."""
  out = {}
  for lang in axes.languages:
    out[lang] = {}
    for budget in axes.budgets:
      if lang not in axes.languages_at[budget]:
        continue
      out[lang][budget] = {}
      for variant in axes.variants:
        losses = [models[(variant, seed)]["adapt"][lang][budget]["final_loss"]["mean"] for seed in axes.seeds]
        out[lang][budget][variant] = probe_stats.mean_ci(losses, axes.level)
  return out


def timing_stats(timings: list[dict]) -> dict:
  """The study's wall time and job time (seconds) over its invocations, and how many invocations ran jobs;
  `timings` holds one record per invocation (`layout.TIMINGS`)."""
  return {"wall_s": float(sum(record["invocation_s"] for record in timings)),
          "job_s": float(sum(sum(record["jobs_s"].values()) for record in timings)),
          "invocations": sum(1 for record in timings if record["jobs_s"])}


def compute(config, models: dict) -> tuple[dict, dict]:
  """The study's statistics (the content of study.json, less its timings) and, for the adaptation figure,
  each variant's probe curves across seeds (`adaptation_probes`)."""
  axes = study_axes(config)
  accuracies = zero_shot_accuracies(models, axes)
  gains = relative_gains(accuracies, axes)
  probes = adaptation_probes(models, axes)
  headline = "forget" if "forget" in gains else compared(axes.variants)[0]  # the paper's comparison, if run
  main_gain = gains[headline][axes.main_budget]
  stats = {
      "variants": axes.variants,
      "seeds": axes.seeds, "languages": axes.languages, "budgets": [int(b) for b in axes.budgets],
      "main_budget": int(axes.main_budget),
      "pretrain": pretraining_stats(models, axes),
      "task_en": english_task_stats(models, axes),
      "ablation_languages": axes.ablation_languages,
      "zero_shot": zero_shot_stats(accuracies, axes),
      "relative_gain": gains,
      "starts": axes.starts,
      # with several starts (probe.inits): the statistic per start; `relative_gain` is the first start's
      "relative_gain_by_start": ({start: relative_gains(accuracies, axes, start) for start in axes.starts}
                                 if len(axes.starts) > 1 else None),
      "relative_gain_ablation_main": (ablation_gain_at_main_budget(accuracies, axes) if axes.ablation_languages
                                      else None),  # no real language in the ablation (only controlled ones)
      "adaptation": adaptation_stats(probes),
      "adaptation_updates": int(config.probe.total_steps),
      "adapt_steps": layout.adapt_steps(config),
      "adapted_loss": adapted_loss_stats(models, axes),
      "transfer": compute_transfer(models, config, axes.seeds, axes.probe_budgets, axes.level),
      "headline": {"variant": headline, "relative_gain": main_gain["mean"], "relative_gain_low": main_gain["low"],
                   "relative_gain_high": main_gain["high"]}}
  return stats, probes
