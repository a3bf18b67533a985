"""How each row of a new vocabulary starts, as a recipe over the source model's rows.

A recipe says, for every new id, one of:
  copied  the old row of the same piece (`overlap`, and the special tokens of every method but `random`);
  mixed   a weighted sum of old rows: FOCUS's sparsemax weights, OMP's coefficients, or the mean of the old
          rows of the piece's Unicode script (`script`);
  random  drawn afresh: from the family's N(0, init_std) (`random`), or from the old rows' mean and
          covariance (`mean`, as Hugging Face's `resize_token_embeddings` does since transformers #33325).
The same recipe then builds every vocabulary leaf of the family (`apply`): the token embeddings, an untied
output head along its vocabulary axis, and an LM bias (whose random rows are 0).

  METHODS    random (the paper's), mean, overlap, focus, omp, script
  FALLBACKS  how `overlap`, `focus` and `omp` start the rows they cannot build: random, mean, script
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import scipy.sparse

from rewire.errors import UserError
from rewire.vocab import pieces as vpieces
from rewire.vocab import sparse

METHODS = ("random", "mean", "overlap", "focus", "omp", "script")
FALLBACKS = ("random", "mean", "script")
DRAWS = ("normal", "mean")


@dataclasses.dataclass
class Recipe:
  """Which old rows make each of `size` new rows. `copy_from[i]` is the old id copied into row i (-1: not
  copied); `mix` (a sparse [size, old size] matrix) holds the weights of the mixed rows; `group_of[i]`
  names the group (`groups`: arrays of old ids) whose mean row i takes (-1: none); every other row is
  drawn, the `draw` way. `notes` are the lines to announce (a fallback taken)."""
  method: str
  size: int
  copy_from: np.ndarray
  mix: scipy.sparse.csr_matrix
  mixed: np.ndarray                  # bool [size]: rows of `mix`
  group_of: np.ndarray
  groups: list[np.ndarray]
  draw: str = "normal"
  notes: tuple[str, ...] = ()

  @classmethod
  def all_drawn(cls, method: str, size: int, old_size: int, draw: str = "normal") -> "Recipe":
    return cls(method, size, np.full(size, -1, np.int64), scipy.sparse.csr_matrix((size, old_size)),
               np.zeros(size, bool), np.full(size, -1, np.int64), [], draw)

  @property
  def drawn(self) -> np.ndarray:
    return (self.copy_from < 0) & ~self.mixed & (self.group_of < 0)

  def counts(self) -> dict[str, int]:
    """How many rows it copied, mixed (weights or a script's mean) and drew at random."""
    return {"copied": int((self.copy_from >= 0).sum()),
            "mixed": int(self.mixed.sum() + (self.group_of >= 0).sum()), "random": int(self.drawn.sum())}

  def describe(self) -> str:
    c = self.counts()
    return (f"{self.method}: {c['copied']:,} rows copied, {c['mixed']:,} mixed, {c['random']:,} drawn at random"
            + (" (from the old rows' mean and covariance)" if self.draw == "mean" and c["random"] else ""))

  def apply(self, old: np.ndarray, fresh: np.ndarray, *, vocab_axis: int, seed: int,
            covariance_scale: float = 1.0) -> np.ndarray:
    """The new leaf: `fresh` (the family's draw at the new size) with its rows along `vocab_axis` replaced
    as the recipe says; `old` is the source's leaf. A 1-D leaf (a bias) keeps its fresh zeros when drawn."""
    o = np.moveaxis(np.asarray(old, np.float64), vocab_axis, 0)
    out = np.moveaxis(np.array(fresh, np.float64), vocab_axis, 0)
    drawn = self.drawn
    if self.draw == "mean" and o.ndim == 2 and drawn.any():
      out[drawn] = mean_and_covariance_draw(o, int(drawn.sum()), seed=seed, scale=covariance_scale)
    copied = self.copy_from >= 0
    out[copied] = o[self.copy_from[copied]]
    if self.mixed.any():
      out[self.mixed] = self.mix[self.mixed] @ o
    for g, ids in enumerate(self.groups):
      rows = self.group_of == g
      if rows.any():
        out[rows] = o[ids].mean(axis=0)
    return np.moveaxis(out, 0, vocab_axis).astype(np.asarray(fresh).dtype)


def mean_and_covariance_draw(rows: np.ndarray, n: int, *, seed: int, scale: float = 1.0) -> np.ndarray:
  """`n` rows drawn from N(mean, scale * covariance) of `rows` [V, H]. (Hugging Face draws with scale 1e-9,
  which is the mean with a tie-breaking jitter.)"""
  rows = np.asarray(rows, np.float64)
  mu = rows.mean(axis=0)
  centered = rows - mu
  cov = scale * (centered.T @ centered) / len(rows)
  eigenvalues, eigenvectors = np.linalg.eigh(cov)  # covariance may be singular (fewer rows than dimensions)
  root = eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
  z = np.random.default_rng(seed).standard_normal((n, len(mu)))
  return mu + z @ root.T


@dataclasses.dataclass
class Vocabularies:
  """The old and new pieces (id order) and their special tokens ({"bos": id, "pad": id, ...})."""
  old: list[str]
  new: list[str]
  old_specials: dict[str, int]
  new_specials: dict[str, int]


def check_names(method: str, fallback: str, *, what: str = "reinit.method") -> None:
  """A UserError naming an unknown `reinit.method` (the key `what`) or `reinit.fallback`."""
  if method not in METHODS:
    raise UserError(f"unknown {what} {method!r}; choose one of {', '.join(METHODS)}")
  if fallback not in FALLBACKS:
    raise UserError(f"unknown reinit.fallback {fallback!r}; choose one of {', '.join(FALLBACKS)}")


def copied_rows(method: str, vocab: Vocabularies) -> np.ndarray:
  """Which new rows `method`'s recipe copies from old rows (bool [new size]), without auxiliary vectors:
  `focus` and `omp` copy what `overlap` copies (and mix or draw the rest), so their copies are its."""
  return build("overlap" if method in ("focus", "omp") else method, vocab).copy_from >= 0


def build(method: str, vocab: Vocabularies, *, fallback: str = "random",
          aux: Callable[[], "AuxSpace"] | None = None, temperature: float = 0.1, atoms: int = 8) -> Recipe:
  """The recipe of `method`. `aux` trains the auxiliary space when `focus` or `omp` needs it."""
  check_names(method, fallback)
  size, old_size = len(vocab.new), len(vocab.old)
  if method == "random":
    return Recipe.all_drawn(method, size, old_size)
  new_ids, old_ids, special_new, special_old = vpieces.shared(
      vocab.old, vocab.new, old_specials=vocab.old_specials, new_specials=vocab.new_specials)
  recipe = Recipe.all_drawn(method, size, old_size, draw="mean" if method == "mean" else "normal")
  recipe.copy_from[special_new] = special_old  # the special tokens keep their roles' rows
  if method == "mean":
    return recipe
  if method == "script":
    return _by_script(recipe, vocab)
  recipe.copy_from[new_ids] = old_ids
  if method in ("focus", "omp"):
    # Anchors are shared pieces with some text: the bare word-start marker, which any two SentencePiece
    # tokenizers share, would make every new piece a copy of its row.
    content = np.asarray([vpieces.has_text(vocab.new[i]) for i in new_ids], bool)
    if not content.any():
      return _fallback(recipe, vocab, fallback, note=(
          f"reinit.method={method}: the two tokenizers share no piece (only their special tokens and the "
          f"word-start marker), so there is nothing to mix from; every other row starts as "
          f"reinit.fallback={fallback}"))
    recipe = _mixed(recipe, method, new_ids[content], old_ids[content], aux(), temperature=temperature,
                    atoms=atoms)
  return _fallback(recipe, vocab, fallback)


def _fallback(recipe: Recipe, vocab: Vocabularies, fallback: str, note: str = "") -> Recipe:
  """The drawn rows of `recipe` started as `fallback` says."""
  recipe.notes += (note,) if note else ()
  if fallback == "mean":
    recipe.draw = "mean"
  elif fallback == "script":
    recipe = _by_script(recipe, vocab, only=recipe.drawn)
  return recipe


def _by_script(recipe: Recipe, vocab: Vocabularies, only: np.ndarray | None = None) -> Recipe:
  """Each row of `only` (default: every drawn row) as the mean of the old ordinary rows of its script;
  a script the old vocabulary lacks leaves its rows drawn."""
  specials = set(vocab.old_specials.values())
  members: dict[str, list[int]] = {}
  for i, p in enumerate(vocab.old):
    if i not in specials:
      members.setdefault(vpieces.script(p), []).append(i)
  names = sorted(members)
  index = {name: g for g, name in enumerate(names)}
  recipe.groups = [np.asarray(members[name], np.int64) for name in names]
  rows = np.flatnonzero(recipe.drawn if only is None else only)
  for i in rows:
    recipe.group_of[i] = index.get(vpieces.script(vocab.new[i]), -1)
  return recipe


@dataclasses.dataclass
class AuxSpace:
  """Auxiliary vectors of new pieces: `vectors[k]` belongs to new id `ids[k]` (pieces never seen in the
  text have none)."""
  ids: np.ndarray
  vectors: np.ndarray


def _mixed(recipe: Recipe, method: str, new_ids: np.ndarray, old_ids: np.ndarray, aux: AuxSpace, *,
           temperature: float, atoms: int) -> Recipe:
  """The rows neither copied nor special, that have an auxiliary vector, as FOCUS's or OMP's combination
  of the anchors' old rows (the anchors: shared pieces with an auxiliary vector)."""
  where = {int(i): k for k, i in enumerate(aux.ids)}
  anchor = np.asarray([where.get(int(i), -1) for i in new_ids])
  have = anchor >= 0
  if not have.any():
    recipe.notes += (f"reinit.method={method}: no shared piece occurs in the adaptation text, so there is "
                     f"nothing to mix from",)
    return recipe
  anchor_vectors, anchor_old = aux.vectors[anchor[have]], old_ids[have]
  targets = [i for i in aux.ids if recipe.copy_from[i] < 0]
  if not targets:
    return recipe
  target_vectors = aux.vectors[[where[int(i)] for i in targets]]
  if method == "focus":
    weights = sparse.focus_weights(target_vectors, anchor_vectors, temperature=temperature)
  else:
    weights = sparse.omp_weights(target_vectors, anchor_vectors, atoms=atoms)
  rows, cols, vals = [], [], []
  for i, (idx, w) in zip(targets, weights):
    rows += [i] * len(idx)
    cols += list(anchor_old[idx])
    vals += list(w)
  recipe.mix = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=recipe.mix.shape)
  recipe.mixed[np.asarray(targets, np.int64)] = True
  return recipe
