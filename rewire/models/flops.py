"""Model FLOPs of an LM train step (each family picks its formula) and accelerators' peak FLOP/s, for MFU.

MFU here is the usual "model FLOPs utilisation": the FLOPs the model mathematically needs (matmuls, forward
plus backward = 3x forward; no rematerialisation counted) divided by elapsed time and the chip's peak.
"""

from __future__ import annotations

import jax

# Dense peak FLOP/s per device for bf16 matmuls, by `device.device_kind` prefix (vendor spec sheets).
PEAK_BF16_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,   # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,   # Trillium (v6e)
    "TPU v6e": 918e12,
    "NVIDIA H200": 989e12,
    "NVIDIA H100": 989e12,   # SXM; the PCIe card is 756e12
    "NVIDIA A100": 312e12,
    "NVIDIA L4": 121e12,
}


def peak_flops(device: jax.Device, override: float = 0.0) -> float | None:
  """The device's peak FLOP/s (`override` wins when positive); None when unknown, e.g. on CPU."""
  if override > 0:
    return override
  kind = getattr(device, "device_kind", "")
  for prefix in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
    if kind.startswith(prefix):
      return PEAK_BF16_FLOPS[prefix]
  return None


def mlm_step_flops(*, hidden: int, layers: int, intermediate: int, vocab: int, batch: int, seq_len: int,
                   predictions: int) -> float:
  """FLOPs of one MLM train step (forward + backward) with the head run at `predictions` positions per row."""
  tokens = batch * seq_len
  body = 2 * tokens * layers * (4 * hidden * hidden + 2 * hidden * intermediate)  # QKV, out, MLP matmuls
  attention = 2 * 2 * batch * layers * seq_len * seq_len * hidden                   # QK^T and AV
  head = 2 * batch * predictions * (hidden * hidden + hidden * vocab)               # dense + tied decoder
  return 3.0 * (body + attention + head)


def decoder_step_flops(*, hidden: int, layers: int, intermediate: int, vocab: int, batch: int, seq_len: int,
                       kv_fraction: float = 1.0) -> float:
  """FLOPs of one causal-decoder train step (forward + backward): SwiGLU's three MLP matmuls, K/V projections
  `kv_fraction` of Q's, causal attention at half the square, an H x V projection at every position."""
  tokens = batch * seq_len
  body = 2 * tokens * layers * ((2 + 2 * kv_fraction) * hidden * hidden + 3 * hidden * intermediate)
  attention = 2 * batch * layers * seq_len * seq_len * hidden   # QK^T and AV, causal: half of 2 x 2 x L^2 x H
  head = 2 * tokens * hidden * vocab
  return 3.0 * (body + attention + head)
