"""BERT / RoBERTa / XLM-RoBERTa hyperparameters, and how a Hugging Face config.json maps onto them."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprompt.models import layer_scan

# HF `hidden_act` (transformers.activations.ACT2FN) -> layers.activation name. HF's "gelu" is the
# exact erf GELU; "gelu_new" and "gelu_pytorch_tanh" are both the tanh approximation.
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "qkv_out")
# model_type -> whether its positions are RoBERTa's (offset by padding_idx + 1). XLM-RoBERTa is
# RoBERTa's architecture with another vocabulary (transformers' modeling file is a copy of it).
SUPPORTED_MODEL_TYPES = {"bert": False, "roberta": True, "xlm-roberta": True}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Everything that shapes a BERT-style encoder and how it runs; hashable (a Flax module attribute)."""

  vocab_size: int = 30522
  hidden_size: int = 768
  num_heads: int = 12
  num_layers: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  activation: str = "gelu"  # feed-forward (and BERT MLM transform) nonlinearity, a layers.activation name
  mlm_activation: str = "gelu"  # RoBERTa's MLM head always uses the exact GELU, whatever hidden_act says
  pad_token_id: int = 0
  # RoBERTa: padding_idx + 1. Its first token takes position padding_idx + 1, padding takes
  # padding_idx, and positions count only valid tokens. BERT (0): positions are plain indices.
  position_offset: int = 0
  has_pooler: bool = True  # dense + tanh on the first position (BertModel, RobertaModel)
  has_mlm_head: bool = False  # *ForMaskedLM / BertForPreTraining checkpoints
  dropout_rate: float = 0.0  # every dropout of the model: embeddings, attention probs, residuals
  # How it runs, not what it is:
  dtype: str = "bfloat16"  # compute dtype of matmuls and activations
  param_dtype: str = "float32"  # dtype params are created in (loaders may cast, e.g. to bf16)
  scan_layers: bool | str = True  # nn.scan over the layer stack; False: unrolled; "auto": by size (layer_scan)
  remat_policy: str = "none"  # one of REMAT_POLICIES: what the backward pass may keep

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f"BertConfig: hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")
    for field in ("activation", "mlm_activation"):
      if getattr(self, field) not in ACTIVATIONS:
        raise ValueError(f"BertConfig.{field}={getattr(self, field)!r} is not one of {ACTIVATIONS}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"BertConfig.remat_policy={self.remat_policy!r} is not one of {REMAT_POLICIES}")
    # A frozen dataclass: the resolved choice replaces "auto" once, so the layout is always a bool.
    object.__setattr__(self, "scan_layers", layer_scan.resolve(self.scan_layers, self.stack_weights, "BertConfig"))

  @property
  def stack_weights(self) -> int:
    """Weights in the layer stack (attention and feed-forward kernels; no embeddings or norms)."""
    return self.num_layers * (4 * self.hidden_size**2 + 2 * self.hidden_size * self.intermediate_size)

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  def replace(self, **changes: Any) -> BertConfig:
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
  ) -> BertConfig:
    """Maps a Hugging Face BERT / RoBERTa / XLM-RoBERTa config.json (as a dict) onto this config.

    Whether the checkpoint has a pooler and an MLM head is told by its tensors, not its config.
    """
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(
          f"{source}: model_type={model_type!r} (architectures={hf.get('architectures')}) is not "
          f"supported by the BERT backbone; supported: {tuple(SUPPORTED_MODEL_TYPES)} — BertModel, "
          "BertForMaskedLM, BertForPreTraining, RobertaModel, RobertaForMaskedLM and XLM-RoBERTa "
          "checkpoints, including sentence-transformers ones"
      )
    for key in ("vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size"):
      if key not in hf:
        raise ValueError(f"{source}: required key {key!r} is missing")
    position_type = hf.get("position_embedding_type") or "absolute"
    if position_type != "absolute":
      raise ValueError(f"{source}: position_embedding_type={position_type!r} is not supported; only 'absolute'")
    if hf.get("is_decoder"):
      raise ValueError(f"{source}: is_decoder=true (a causal BERT) is not supported; the backbone is an encoder")
    hidden_act = hf.get("hidden_act", "gelu")
    if hidden_act not in HF_ACTIVATIONS:
      raise ValueError(f"{source}: hidden_act={hidden_act!r} is not supported; supported: {sorted(HF_ACTIVATIONS)}")
    roberta_positions = SUPPORTED_MODEL_TYPES[model_type]
    pad = hf.get("pad_token_id")
    pad = (1 if roberta_positions else 0) if pad is None else pad
    activation = HF_ACTIVATIONS[hidden_act]
    return cls(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_heads=hf["num_attention_heads"],
        num_layers=hf["num_hidden_layers"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        activation=activation,
        mlm_activation="gelu" if roberta_positions else activation,
        pad_token_id=pad,
        position_offset=pad + 1 if roberta_positions else 0,
        has_pooler=has_pooler,
        has_mlm_head=has_mlm_head,
        **overrides,
    )
