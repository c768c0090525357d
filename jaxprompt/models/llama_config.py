"""Llama-style decoder hyperparameters (Llama 2/3, SmolLM, TinyLlama, ...), and HF config.json."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprompt.models import layer_scan
from jaxprompt.models.t5_config import REMAT_POLICIES

SUPPORTED_MODEL_TYPES = ("llama",)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """RoPE, RMS norm, SwiGLU, grouped-query attention; hashable, so it can be a module attribute."""

  vocab_size: int = 32000
  hidden_size: int = 576
  intermediate_size: int = 1536
  num_layers: int = 30
  num_heads: int = 9
  num_kv_heads: int = 3
  head_dim: int = 64
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  # Llama 3.1's frequency-dependent RoPE rescaling (factor, low/high freq factors, original
  # context); None: plain RoPE.
  rope_scaling: tuple[tuple[str, float], ...] | None = None
  tie_word_embeddings: bool = False
  bos_token_id: int | None = 1
  eos_token_id: int | None = 2
  pad_token_id: int | None = None
  # How it runs:
  dtype: str = "bfloat16"
  param_dtype: str = "float32"
  scan_layers: bool | str = True  # nn.scan over the layers; False: unrolled; "auto": by size (layer_scan)
  remat_policy: str = "none"
  dropout_rate: float = 0.0  # unused by Llama checkpoints; kept for the shared run interface

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"LlamaConfig.remat_policy={self.remat_policy!r} is not one of {REMAT_POLICIES}")
    # A frozen dataclass: the resolved choice replaces "auto" once, so the layout is always a bool.
    object.__setattr__(self, "scan_layers", layer_scan.resolve(self.scan_layers, self.stack_weights, "LlamaConfig"))

  @property
  def stack_weights(self) -> int:
    """Weights in the layer stack (attention and SwiGLU kernels; no embeddings or norms)."""
    attention = self.hidden_size * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
    return self.num_layers * (attention + 3 * self.hidden_size * self.intermediate_size)

  def replace(self, **changes: Any) -> LlamaConfig:
    return dataclasses.replace(self, **changes)

  @classmethod
  def tiny(cls, **overrides: Any) -> LlamaConfig:
    """A 2-layer toy with GQA, for tests."""
    fields = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=8)
    return cls(**{**fields, **overrides})

  @classmethod
  def from_hf(cls, hf: dict[str, Any], source: str = "config.json", **overrides: Any) -> LlamaConfig:
    """Maps a Hugging Face Llama config.json (as a dict) onto this config."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(
          f"{source}: model_type={model_type!r} (architectures={hf.get('architectures')}) is not supported "
          f"by the Llama backbone; supported: {SUPPORTED_MODEL_TYPES}"
      )
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
      if key not in hf:
        raise ValueError(f"{source}: required key {key!r} is missing")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
      raise ValueError(f"{source}: attention_bias/mlp_bias are not supported by the Llama backbone")
    heads = hf["num_attention_heads"]
    scaling = hf.get("rope_scaling") or hf.get("rope_parameters")
    return cls(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=float(hf.get("rope_theta") or (scaling or {}).get("rope_theta") or 10000.0),
        rope_scaling=_rope_scaling(scaling, source),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        bos_token_id=_first(hf.get("bos_token_id")),
        eos_token_id=_first(hf.get("eos_token_id")),
        pad_token_id=_first(hf.get("pad_token_id")),
        **overrides,
    )


def _first(value):
  return value[0] if isinstance(value, list) else value


def _rope_scaling(scaling: dict | None, source: str) -> tuple[tuple[str, float], ...] | None:
  if not scaling or scaling.get("rope_type", scaling.get("type")) in (None, "default"):
    return None
  if scaling.get("rope_type", scaling.get("type")) != "llama3":
    raise ValueError(f"{source}: rope_scaling {scaling} is not supported (only llama3)")
  keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
  return tuple((k, float(scaling[k])) for k in keys)
