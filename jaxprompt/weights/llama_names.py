"""Which Hugging Face checkpoint tensor fills which Llama param (PyTorch / safetensors names)."""

from __future__ import annotations

from jaxprompt.models.llama_config import LlamaConfig
from jaxprompt.weights.placement import ParamSource

# Per layer: (our path inside the layer, HF name inside `model.layers.{i}`, layout, is_linear).
_LAYER = [
    ("attention/query/kernel", "self_attn.q_proj", "in_heads", True),
    ("attention/key/kernel", "self_attn.k_proj", "in_heads", True),
    ("attention/value/kernel", "self_attn.v_proj", "in_heads", True),
    ("attention/out/kernel", "self_attn.o_proj", "heads_out", True),
    ("mlp/gate/kernel", "mlp.gate_proj", "plain", True),
    ("mlp/up/kernel", "mlp.up_proj", "plain", True),
    ("mlp/down/kernel", "mlp.down_proj", "plain", True),
    ("pre_attention_norm/scale", "input_layernorm", "plain", False),
    ("pre_mlp_norm/scale", "post_attention_layernorm", "plain", False),
]
LM_HEAD = "lm_head.weight"


def llama_param_sources(c: LlamaConfig, prefix: str = "") -> dict[str, ParamSource]:
  """Our '/'-joined param path -> ParamSource, for the layout `c.scan_layers` gives."""
  sources = {
      "token_embedder/embedding": ParamSource((prefix + "model.embed_tokens.weight",)),
      "decoder/final_norm/scale": ParamSource((prefix + "model.norm.weight",)),
  }
  for ours, hf, layout, is_linear in _LAYER:
    names = tuple(f"{prefix}model.layers.{i}.{hf}.weight" for i in range(c.num_layers))
    if c.scan_layers:
      sources[f"decoder/layers/{ours}"] = ParamSource(names, layout, is_linear, stacked=True)
    else:
      for i, name in enumerate(names):
        sources[f"decoder/layers_{i}/{ours}"] = ParamSource((name,), layout, is_linear)
  if not c.tie_word_embeddings:
    sources["lm_head/kernel"] = ParamSource((prefix + LM_HEAD,), "plain", transposed=True)
  return sources
