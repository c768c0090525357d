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


# The module name every family gives its layer stack (models/layers.layer_stack): scanned, one path
# segment `layers` holds the stacked weights; unrolled, the layers are `layers_0`, `layers_1`, ...
STACK_NAME = "layers"


def check(scan_layers: bool | str, where: str) -> None:
  """Raises, naming `where` (a config class or config key), unless the value is a bool or AUTO."""
  if not (isinstance(scan_layers, bool) or scan_layers == AUTO):
    raise ValueError(f"{where}.scan_layers={scan_layers!r}: use True (scanned), False (unrolled) or {AUTO!r} (by model size)")


def resolve(scan_layers: bool | str, stack_weights: int, where: str) -> bool:
  """True (scan) or False (unrolled) for a config's `scan_layers`, given its layer stacks' weights."""
  check(scan_layers, where)
  return scan_layers if isinstance(scan_layers, bool) else stack_weights >= SCAN_FROM_STACK_WEIGHTS


def unrolled_layer_name(stack: str, layer: int) -> str:
  return f"{stack}_{layer}"


def is_scanned_path(path: str) -> bool:
  """Whether a '/'-joined param path lies in a scanned stack (its weights stacked on axis 0)."""
  return STACK_NAME in path.split("/")


def unrolled_path(path: str, layer: int) -> str:
  """The path layer `layer` of a scanned stack's weight has when the stack is unrolled."""
  return "/".join(unrolled_layer_name(part, layer) if part == STACK_NAME else part for part in path.split("/"))
