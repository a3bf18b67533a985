"""Sparse weights over the shared pieces: sparsemax (FOCUS) and orthogonal matching pursuit (OMP).

Both take, for each new piece, its auxiliary vector and those of the anchors (the pieces both tokenizers
share) and return a few weights over the anchors; the new row is then the same combination of the
anchors' old rows. Rows are processed in chunks, so a 50k vocabulary needs memory for one chunk's
similarities only.
"""

from __future__ import annotations

import numpy as np

CHUNK = 1024


def sparsemax(z: np.ndarray, *, top: int = 64) -> np.ndarray:
  """Sparsemax of each row of `z` (Martins & Astudillo 2016): the Euclidean projection onto the simplex,
  so most weights are exactly 0 and a row far ahead of the others takes all the mass.

  The threshold is found among each row's `top` + 1 largest entries (a partial sort); a row whose support
  turns out larger than `top` is done again with a full sort, so the result is exact either way.
  """
  z = np.asarray(z, np.float64)
  n = z.shape[-1]
  if n <= top + 1:
    return np.maximum(z - _threshold(-np.sort(-z, axis=-1)), 0.0)
  head = -np.sort(-np.partition(z, n - top - 1, axis=-1)[..., n - top - 1:], axis=-1)  # the top + 1 largest
  tau = _threshold(head[..., :top])
  wide = (head[..., top:] > tau)[..., 0]  # the (top + 1)-th entry is in the support: not found among the top
  if wide.any():
    tau[wide] = _threshold(-np.sort(-z[wide], axis=-1))
  return np.maximum(z - tau, 0.0)


def _threshold(s: np.ndarray) -> np.ndarray:
  """Sparsemax's tau for rows `s` sorted in descending order (a column: broadcasts over the row)."""
  ks = np.arange(1, s.shape[-1] + 1)
  cumulative = np.cumsum(s, axis=-1)
  k = (1 + ks * s > cumulative).sum(axis=-1, keepdims=True)
  return (np.take_along_axis(cumulative, k - 1, axis=-1) - 1) / k


def _unit(x: np.ndarray) -> np.ndarray:
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.where(norm > 0, norm, 1.0)


def focus_weights(targets: np.ndarray, anchors: np.ndarray, *, temperature: float) -> list[tuple[np.ndarray, np.ndarray]]:
  """FOCUS's weights (Dobler & de Melo 2023): sparsemax of the cosine similarities between each target's
  auxiliary vector and the anchors', divided by `temperature`. One (anchor indices, weights) per target."""
  a = _unit(np.asarray(anchors, np.float32))
  out = []
  for start in range(0, len(targets), CHUNK):
    sims = _unit(np.asarray(targets[start:start + CHUNK], np.float32)) @ a.T
    w = sparsemax(sims / temperature)
    for row in w:
      idx = np.flatnonzero(row)
      out.append((idx, row[idx]))
  return out


def omp_weights(targets: np.ndarray, anchors: np.ndarray, *, atoms: int,
                tol: float = 1e-6) -> list[tuple[np.ndarray, np.ndarray]]:
  """Orthogonal matching pursuit: each target as a combination of at most `atoms` anchors. Each round adds
  the anchor most correlated with the residual (anchors compared as unit vectors) and refits all chosen
  coefficients by least squares; a target stops once its residual is below `tol` of its norm. One
  (anchor indices, coefficients) per target."""
  d = np.asarray(anchors, np.float64)
  unit = _unit(d)
  atoms = min(atoms, len(d))
  out = []
  for start in range(0, len(targets), CHUNK):
    x = np.asarray(targets[start:start + CHUNK], np.float64)
    b = len(x)
    chosen = np.zeros((b, 0), np.int64)
    coef = np.zeros((b, 0))
    residual = x.copy()
    done = np.linalg.norm(x, axis=1) == 0
    for _ in range(atoms):
      active = np.flatnonzero(~done)
      if not len(active):
        break
      corr = np.abs(residual[active] @ unit.T)
      np.put_along_axis(corr, chosen[active], -np.inf, axis=1)
      pick = np.full(b, -1, np.int64)
      pick[active] = np.argmax(corr, axis=1)
      chosen = np.concatenate([chosen, pick[:, None]], axis=1)
      basis = d[np.maximum(chosen, 0)]                        # (b, t, dim)
      basis[chosen < 0] = 0.0                                  # a finished target's unused slot
      gram = basis @ basis.transpose(0, 2, 1) + 1e-10 * np.eye(chosen.shape[1])
      rhs = basis @ x[:, :, None]
      new = np.linalg.solve(gram, rhs)[:, :, 0]
      coef = np.concatenate([coef, np.zeros((b, 1))], axis=1)
      coef[active] = new[active]
      residual = x - np.einsum("bt,btd->bd", coef, basis)
      done |= np.linalg.norm(residual, axis=1) <= tol * np.linalg.norm(x, axis=1)
    for row_idx, row_coef in zip(chosen, coef):
      keep = (row_idx >= 0) & (row_coef != 0)
      out.append((row_idx[keep], row_coef[keep]))
  return out
