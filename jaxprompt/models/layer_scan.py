"""Whether a model's layer stacks run as one scanned layer or unrolled: `scan_layers="auto"` picks.

Scanned (nn.scan, the weights stacked on a 'layers' axis) compiles one layer whatever the depth;
unrolled compiles every layer but skips the scan's bookkeeping (per-iteration weight slices,
stacked saved activations). Measured in BENCHMARKS.md ("Scanned or unrolled layers, picked by
size"): at CPU sizes unrolled runs the prompt step 5-10% faster and still compiles in seconds (T5
v1.1-small to -large, SmolLM2-135M's 30 layers); at XL / XXL / 7B sizes the matmuls dominate, the
scan's overhead is noise, and the scan keeps the compile short on a pod slice, where the
memory plans were made with it. The layout of the weights follows the choice: the loaders, the
HF export and the trainable-weight patterns read the resolved value.
"""

from __future__ import annotations

AUTO = "auto"
# Weights in the layer stacks from which "auto" scans: T5 v1.1-large (0.7B) and smaller, BERT and
# the small decoders unroll; T5-XL (2.8B), T5-XXL and 7B decoders scan.
SCAN_FROM_STACK_WEIGHTS = 1_000_000_000


def resolve(scan_layers: bool | str, stack_weights: int, where: str) -> bool:
  """True (scan) or False (unrolled) for a config's `scan_layers`, given its layer stacks' weights."""
  if isinstance(scan_layers, bool):
    return scan_layers
  if scan_layers == AUTO:
    return stack_weights >= SCAN_FROM_STACK_WEIGHTS
  raise ValueError(f"{where}.scan_layers={scan_layers!r}: use True (scanned), False (unrolled) or {AUTO!r} (by model size)")
