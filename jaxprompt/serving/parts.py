"""A trained prompt in its batch-independent form: plain arrays, reparameterisations collapsed.

Every method the bank serves reduces to some of three parts: soft tokens [P, D] and where they go,
key/value prefixes [L, P, H, K] per attention kind, and a linear head [D, C]. The method's own
`export` does the collapsing (P-tuning's encoder into the embeddings it produces, prefix tuning's
MLP into the keys and values); its `collapsed()` form says which parts the export holds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from flax import traverse_util

from jaxprompt.prompts.classifier import ClassifierHead
from jaxprompt.prompts.p_tuning_v2 import DeepPromptWithHead
from jaxprompt.prompts.prefix_tuning import PrefixTuning
from jaxprompt.prompts.soft_prompt import SoftPrompt


@dataclasses.dataclass(frozen=True)
class PromptParts:
  """One prompt's soft tokens, prefixes and head; absent parts are empty."""

  soft_PxD: np.ndarray | None = None
  placement: str = ""  # where the soft tokens go: prefix | after_bos | suffix | markers
  prefixes: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)  # kind -> keys, values
  head_kernel_DxC: np.ndarray | None = None
  head_bias_C: np.ndarray | None = None

  @property
  def soft_length(self) -> int:
    return 0 if self.soft_PxD is None else self.soft_PxD.shape[0]

  @property
  def num_head_classes(self) -> int:
    return 0 if self.head_kernel_DxC is None else self.head_kernel_DxC.shape[1]


def prompt_parts(method: Any, params: Any) -> PromptParts:
  """The parts of a trained prompt (any of its forms: a checkpoint's full method or an export's)."""
  collapsed = method.collapsed()
  plain = collapsed.params_from_export(method.export(params))
  plain = {k: np.asarray(v, np.float32) for k, v in traverse_util.flatten_dict(plain, sep="/").items()}
  if isinstance(collapsed, SoftPrompt):
    return PromptParts(soft_PxD=plain["embeddings"], placement=collapsed.placement)
  if isinstance(collapsed, PrefixTuning):
    return PromptParts(prefixes=_prefixes(plain, "", collapsed))
  if isinstance(collapsed, DeepPromptWithHead):
    if collapsed.head != "sequence":
      raise ValueError(f"its head labels every token ({collapsed.head!r}); the bank serves sequence classifiers")
    return PromptParts(prefixes=_prefixes(plain, "prompts/", collapsed),
                       head_kernel_DxC=plain["classifier/kernel"], head_bias_C=plain["classifier/bias"])
  if isinstance(collapsed, ClassifierHead):
    return PromptParts(head_kernel_DxC=plain["classifier/kernel"], head_bias_C=plain["classifier/bias"])
  raise ValueError(f"a {type(method).__name__} prompt is not served by the bank; it serves prompt tuning, prefix"
                   " tuning, P-tuning, P-tuning v2 and classifier heads")


def _prefixes(plain: dict[str, np.ndarray], scope: str,
              method: PrefixTuning | DeepPromptWithHead) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  return {s.kind: (plain[f"{scope}{s.kind}/keys"], plain[f"{scope}{s.kind}/values"]) for s in method.shapes}

