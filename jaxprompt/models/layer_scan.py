"""Whether a model's layer stacks run as one scanned layer or unrolled: `scan_layers="auto"` picks.

Scanned (nn.scan, the weights stacked on a 'layers' axis) compiles one layer whatever the depth;
unrolled compiles every layer but skips the scan's bookkeeping (per-iteration weight slices,
stacked saved activations). Measured in BENCHMARKS.md ("Scanned or unrolled layers, picked by
size", bench/layer_scan_choice.py and bench/smollm_prompt_step.py): unrolled runs the CPU prompt
step 6-12% faster for T5 v1.1-small and -base and 2-11% for SmolLM2-135M's 30 layers, compiling in
about the same time; at T5-large (0.7B layer weights) the matmuls dominate, unrolled is no faster
(1.00x) and compiles 3x longer (20 s against 6), and at XL / XXL / 7B sizes the scan also keeps the
compile short on a pod slice, where the memory plans were made with it. The layout of the weights
follows the choice: the loaders, the HF export and the trainable-weight patterns read the resolved
value.
"""

from __future__ import annotations

AUTO = "auto"
# Weights in the layer stacks from which "auto" scans: T5 v1.1-base (0.2B), BERT-large (0.3B) and
# SmolLM2-135M unroll; T5-large (0.7B), -XL, -XXL and 7B decoders scan.
SCAN_FROM_STACK_WEIGHTS = 500_000_000


def resolve(scan_layers: bool | str, stack_weights: int, where: str) -> bool:
  """True (scan) or False (unrolled) for a config's `scan_layers`, given its layer stacks' weights."""
  if isinstance(scan_layers, bool):
    return scan_layers
  if scan_layers == AUTO:
    return stack_weights >= SCAN_FROM_STACK_WEIGHTS
  raise ValueError(f"{where}.scan_layers={scan_layers!r}: use True (scanned), False (unrolled) or {AUTO!r} (by model size)")
