"""ALBERT hyperparameters, and how a Hugging Face config.json maps onto them."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprompt.models import layer_scan
from jaxprompt.models.bert_config import HF_ACTIVATIONS, ACTIVATIONS, REMAT_POLICIES


@dataclasses.dataclass(frozen=True)
class AlbertConfig:
  """Everything that shapes an ALBERT encoder and how it runs; hashable (a Flax module attribute)."""

  vocab_size: int = 30000
  embedding_size: int = 128  # E: width of the embedding tables, the soft tokens and the MLM head's output
  hidden_size: int = 768  # H: width of the layers
  num_heads: int = 12
  num_layers: int = 12  # outer layer applications (HF num_hidden_layers)
  num_hidden_groups: int = 1  # distinct parameter groups shared out over the layers
  inner_group_num: int = 1  # distinct layers inside a group, applied in order at every outer layer
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  activation: str = "gelu_tanh"  # HF's "gelu_new": feed-forward and MLM transform nonlinearity
  pad_token_id: int = 0
  has_pooler: bool = True  # dense + tanh on the first position (AlbertModel)
  has_mlm_head: bool = False  # AlbertForMaskedLM / AlbertForPreTraining checkpoints
  dropout_rate: float = 0.0  # embeddings, attention probs, attention output (ALBERT has none after the FFN)
  # How it runs, not what it is:
  dtype: str = "bfloat16"  # compute dtype of matmuls and activations
  param_dtype: str = "float32"  # dtype params are created in (loaders may cast, e.g. to bf16)
  scan_layers: bool | str = True  # nn.scan over each group's repeats; False: unrolled; "auto": by size (layer_scan)
  remat_policy: str = "none"  # one of REMAT_POLICIES: what the backward pass may keep

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f"AlbertConfig: hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")
    if self.num_hidden_groups < 1 or self.inner_group_num < 1 or self.num_layers < 1:
      raise ValueError(
          f"AlbertConfig: num_layers={self.num_layers}, num_hidden_groups={self.num_hidden_groups} and "
          f"inner_group_num={self.inner_group_num} must all be at least 1"
      )
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"AlbertConfig.activation={self.activation!r} is not one of {ACTIVATIONS}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"AlbertConfig.remat_policy={self.remat_policy!r} is not one of {REMAT_POLICIES}")
    # A frozen dataclass: the resolved choice replaces "auto" once, so the layout is always a bool.
    object.__setattr__(self, "scan_layers", layer_scan.resolve(self.scan_layers, self.stack_weights, "AlbertConfig"))

  @property
  def stack_weights(self) -> int:
    """Weights the layer applications run through (shared weights counted at each application,
    as the scan's cost is per application)."""
    return self.num_attention_layers * (4 * self.hidden_size**2 + 2 * self.hidden_size * self.intermediate_size)

  @property
  def position_offset(self) -> int:
    """ALBERT's positions are plain slot indices (RoBERTa's start after padding_idx: BertConfig)."""
    return 0

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def num_attention_layers(self) -> int:
    """Self-attention applications, each taking its own key/value prefix: num_layers * inner_group_num."""
    return self.num_layers * self.inner_group_num

  @property
  def group_runs(self) -> tuple[tuple[int, int], ...]:
    """(group, consecutive outer layers) in order of application.

    Hugging Face's float formula, int(i / (num_layers / num_hidden_groups)): it also covers layer
    counts that the groups do not divide (3 layers, 2 groups: groups 0, 0, 1).
    """
    runs: list[list[int]] = []
    for i in range(self.num_layers):
      group = int(i / (self.num_layers / self.num_hidden_groups))
      if runs and runs[-1][0] == group:
        runs[-1][1] += 1
      else:
        runs.append([group, 1])
    return tuple((g, n) for g, n in runs)

  def replace(self, **changes: Any) -> AlbertConfig:
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_hf(
      cls,
      hf: dict[str, Any],
      *,
      has_pooler: bool,
      has_mlm_head: bool,
      source: str = "config.json",
      **overrides: Any,
  ) -> AlbertConfig:
    """Maps a Hugging Face ALBERT config.json (as a dict) onto this config.

    Whether the checkpoint has a pooler and an MLM head is told by its tensors, not its config.
    """
    if hf.get("model_type") != "albert":
      raise ValueError(
          f"{source}: model_type={hf.get('model_type')!r} (architectures={hf.get('architectures')}) is not "
          "supported by the ALBERT backbone; it loads model_type 'albert' (AlbertModel, AlbertForMaskedLM, "
          "AlbertForPreTraining and other Albert* checkpoints)"
      )
    required = ("vocab_size", "embedding_size", "hidden_size", "num_attention_heads", "num_hidden_layers",
                "intermediate_size")
    missing = [key for key in required if key not in hf]
    if missing:
      raise ValueError(f"{source}: required keys {missing} are missing")
    position_type = hf.get("position_embedding_type") or "absolute"
    if position_type != "absolute":
      raise ValueError(f"{source}: position_embedding_type={position_type!r} is not supported; only 'absolute'")
    if hf.get("tie_word_embeddings") is False:
      raise ValueError(f"{source}: tie_word_embeddings=false is not supported; the MLM decoder is the word embeddings")
    hidden_act = hf.get("hidden_act", "gelu_new")  # HF AlbertConfig's default
    if hidden_act not in HF_ACTIVATIONS:
      raise ValueError(f"{source}: hidden_act={hidden_act!r} is not supported; supported: {sorted(HF_ACTIVATIONS)}")
    pad = hf.get("pad_token_id")
    return cls(
        vocab_size=hf["vocab_size"],
        embedding_size=hf["embedding_size"],
        hidden_size=hf["hidden_size"],
        num_heads=hf["num_attention_heads"],
        num_layers=hf["num_hidden_layers"],
        num_hidden_groups=hf.get("num_hidden_groups", 1),
        inner_group_num=hf.get("inner_group_num", 1),
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        activation=HF_ACTIVATIONS[hidden_act],
        pad_token_id=0 if pad is None else pad,
        has_pooler=has_pooler,
        has_mlm_head=has_mlm_head,
        **overrides,
    )
