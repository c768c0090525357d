"""T5 hyperparameters: the published sizes of T5 v1.0 and v1.1 (LM-adapted, Flan-T5), and HF config.json."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprompt.models import layer_scan

# (d_model, d_kv, d_ff, num_heads, num_layers) of each published size.
_V1_1_SIZES = {
    "tiny": (16, 4, 32, 4, 2),  # for tests: real vocabulary, toy width
    "small": (512, 64, 1024, 6, 8),
    "base": (768, 64, 2048, 12, 12),
    "large": (1024, 64, 2816, 16, 24),
    "xl": (2048, 64, 5120, 32, 24),
    "xxl": (4096, 64, 10240, 64, 24),
}
_V1_0_SIZES = {
    "tiny": (16, 4, 32, 4, 2),
    "small": (512, 64, 2048, 8, 6),
    "base": (768, 64, 3072, 12, 12),
    "large": (1024, 64, 4096, 16, 24),
    "3b": (1024, 128, 16384, 32, 24),
    "11b": (1024, 128, 65536, 128, 24),
}
# HF `feed_forward_proj` -> (gated, activation). HF maps "gated-gelu" to the tanh GELU ("gelu_new").
_FEED_FORWARD = {
    "relu": (False, "relu"),
    "gelu": (False, "gelu"),
    "gated-gelu": (True, "gelu_tanh"),
    "gated-relu": (True, "relu"),
    "gated-silu": (True, "silu"),
}
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "qkv_out")
SUPPORTED_MODEL_TYPES = ("t5", "mt5")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Everything that shapes a T5 and how it runs; hashable, so it can be a Flax module attribute."""

  vocab_size: int = 32128
  d_model: int = 512
  d_kv: int = 64
  d_ff: int = 1024
  num_heads: int = 6
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  feed_forward_proj: str = "gated-gelu"  # v1.1 / LM-adapt / Flan; v1.0 is "relu"
  tie_word_embeddings: bool = False  # v1.0 reuses the input embedding as the output projection
  scale_decoder_outputs: bool = False  # v1.0 scales decoder outputs by d_model**-0.5 before it
  layer_norm_epsilon: float = 1e-6
  dropout_rate: float = 0.0
  pad_token_id: int = 0
  eos_token_id: int = 1
  decoder_start_token_id: int = 0
  # How it runs, not what it is:
  dtype: str = "bfloat16"  # compute dtype of matmuls and activations
  param_dtype: str = "float32"  # dtype params are created in (loaders may cast, e.g. to bf16)
  scan_layers: bool | str = True  # nn.scan over each layer stack; False: unrolled; "auto": by size (layer_scan)
  remat_policy: str = "none"  # one of REMAT_POLICIES: what the backward pass may keep

  def __post_init__(self):
    if self.feed_forward_proj not in _FEED_FORWARD:
      raise ValueError(
          f"T5Config.feed_forward_proj={self.feed_forward_proj!r} is not supported; "
          f"use one of {sorted(_FEED_FORWARD)}"
      )
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(
          f"T5Config.remat_policy={self.remat_policy!r} is not one of {REMAT_POLICIES}"
      )
    # A frozen dataclass: the resolved choice replaces "auto" once, so the layout is always a bool.
    object.__setattr__(self, "scan_layers", layer_scan.resolve(self.scan_layers, self.stack_weights, "T5Config"))

  @property
  def stack_weights(self) -> int:
    """Weights in the layer stacks (attention and feed-forward kernels; no embeddings or norms)."""
    attention = 4 * self.d_model * self.num_heads * self.d_kv
    feed_forward = self.d_model * self.d_ff * (3 if self.is_gated else 2)
    return self.num_encoder_layers * (attention + feed_forward) + self.num_decoder_layers * (2 * attention + feed_forward)

  @property
  def is_gated(self) -> bool:
    return _FEED_FORWARD[self.feed_forward_proj][0]

  @property
  def activation(self) -> str:
    return _FEED_FORWARD[self.feed_forward_proj][1]

  def replace(self, **changes: Any) -> T5Config:
    return dataclasses.replace(self, **changes)

  @classmethod
  def preset(cls, size: str, version: str = "1.1", **overrides: Any) -> T5Config:
    """A published size: version "1.1" (also LM-adapted and Flan-T5) or "1.0"."""
    sizes = {"1.1": _V1_1_SIZES, "1.0": _V1_0_SIZES}.get(version)
    if sizes is None:
      raise ValueError(f"T5 version {version!r} is unknown; use '1.0' or '1.1'")
    if size not in sizes:
      raise ValueError(f"T5 v{version} has no size {size!r}; sizes: {list(sizes)}")
    d_model, d_kv, d_ff, num_heads, num_layers = sizes[size]
    version_fields = (
        dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, scale_decoder_outputs=False)
        if version == "1.1"
        else dict(feed_forward_proj="relu", tie_word_embeddings=True, scale_decoder_outputs=True)
    )
    return cls(
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_heads=num_heads,
        num_encoder_layers=num_layers,
        num_decoder_layers=num_layers,
        **version_fields,
        **overrides,
    )

  @classmethod
  def from_hf(
      cls, hf: dict[str, Any], has_lm_head: bool, source: str = "config.json", **overrides: Any
  ) -> T5Config:
    """Maps a Hugging Face T5 config.json (as a dict) onto this config.

    `has_lm_head`: whether the checkpoint holds a separate output projection (lm_head). Configs
    written by transformers >= 5 always say tie_word_embeddings=true and carry the v1.0 logit
    scaling as scale_decoder_outputs; what is tied is then told by the weights themselves.
    """
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(
          f"{source}: model_type={model_type!r} (architectures={hf.get('architectures')}) is not "
          f"supported by the T5 backbone; supported: {SUPPORTED_MODEL_TYPES} — T5 v1.0, v1.1, "
          "LM-adapted, Flan-T5 and mT5 checkpoints"
      )
    for key in ("d_model", "d_kv", "d_ff", "num_heads", "num_layers", "vocab_size"):
      if key not in hf:
        raise ValueError(f"{source}: required key {key!r} is missing")
    num_layers = hf["num_layers"]
    decoder_layers = hf.get("num_decoder_layers") or num_layers
    eos = hf.get("eos_token_id", 1)
    eos = eos[0] if isinstance(eos, list) else eos
    says_tied = hf.get("tie_word_embeddings", True)
    # An old-style config that says untied needs an lm_head: keep it untied so a missing one errors.
    tied = (not has_lm_head) if (says_tied or "scale_decoder_outputs" in hf) else False
    return cls(
        vocab_size=hf["vocab_size"],
        d_model=hf["d_model"],
        d_kv=hf["d_kv"],
        d_ff=hf["d_ff"],
        num_heads=hf["num_heads"],
        num_encoder_layers=num_layers,
        num_decoder_layers=decoder_layers,
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        feed_forward_proj=hf.get("feed_forward_proj", "relu"),
        tie_word_embeddings=tied,
        scale_decoder_outputs=hf.get("scale_decoder_outputs", says_tied),
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
        pad_token_id=hf.get("pad_token_id") or 0,
        eos_token_id=1 if eos is None else eos,
        decoder_start_token_id=hf.get("decoder_start_token_id") or 0,
        **overrides,
    )
