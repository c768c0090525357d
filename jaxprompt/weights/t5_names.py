"""Which checkpoint tensor fills which T5 param, for Hugging Face (PyTorch / safetensors), Hugging
Face Flax and T5X checkpoints."""

from __future__ import annotations

from typing import Literal

from jaxprompt.models.t5_config import T5Config
from jaxprompt.weights.placement import ParamSource

Dialect = Literal["hf", "hf_flax", "t5x"]

# Per layer: (our path inside the layer, HF name inside `block.{i}`, T5X name inside `layers_{i}`,
# layout). HF names are PyTorch's; HF Flax uses the same with '/' and `kernel` for Linear weights.
_ATTENTION = [
    ("query/kernel", "q", "query/kernel", "in_heads"),
    ("key/kernel", "k", "key/kernel", "in_heads"),
    ("value/kernel", "v", "value/kernel", "in_heads"),
    ("out/kernel", "o", "out/kernel", "heads_out"),
]


def _mlp(c: T5Config, hf_layer: int) -> list[tuple[str, str, str, str]]:
  inputs = ["wi_0", "wi_1"] if c.is_gated else ["wi"]
  rows = [(f"mlp/{w}/kernel", f"layer.{hf_layer}.DenseReluDense.{w}", f"mlp/{w}/kernel", "plain") for w in inputs]
  return rows + [("mlp/wo/kernel", f"layer.{hf_layer}.DenseReluDense.wo", "mlp/wo/kernel", "plain")]


def _encoder_layer(c: T5Config) -> list[tuple[str, str, str, str, bool]]:
  """(ours, hf, t5x, layout, is_linear) of one encoder layer."""
  rows = [(f"attention/{o}", f"layer.0.SelfAttention.{h}", f"attention/{t}", lay, True) for o, h, t, lay in _ATTENTION]
  rows.append(("pre_attention_norm/scale", "layer.0.layer_norm", "pre_attention_layer_norm/scale", "plain", False))
  rows += [(o, h, t, lay, True) for o, h, t, lay in _mlp(c, 1)]
  rows.append(("pre_mlp_norm/scale", "layer.1.layer_norm", "pre_mlp_layer_norm/scale", "plain", False))
  return rows


def _decoder_layer(c: T5Config) -> list[tuple[str, str, str, str, bool]]:
  rows = [(f"self_attention/{o}", f"layer.0.SelfAttention.{h}", f"self_attention/{t}", lay, True) for o, h, t, lay in _ATTENTION]
  rows.append(("pre_self_attention_norm/scale", "layer.0.layer_norm", "pre_self_attention_layer_norm/scale", "plain", False))
  rows += [(f"cross_attention/{o}", f"layer.1.EncDecAttention.{h}", f"encoder_decoder_attention/{t}", lay, True) for o, h, t, lay in _ATTENTION]
  rows.append(("pre_cross_attention_norm/scale", "layer.1.layer_norm", "pre_cross_attention_layer_norm/scale", "plain", False))
  rows += [(o, h, t, lay, True) for o, h, t, lay in _mlp(c, 2)]
  rows.append(("pre_mlp_norm/scale", "layer.2.layer_norm", "pre_mlp_layer_norm/scale", "plain", False))
  return rows


def _hf_name(dialect: Dialect, dotted: str, kind: str) -> str:
  """A PyTorch-style HF name in this dialect; kind is "linear", "norm" or "embedding"."""
  if dialect == "hf":
    return f"{dotted}.weight"
  suffix = {"linear": "kernel", "norm": "weight", "embedding": "embedding"}[kind]
  return dotted.replace(".", "/") + "/" + suffix


def t5_param_sources(c: T5Config, dialect: Dialect, prefix: str = "") -> dict[str, ParamSource]:
  """Our '/'-joined param path -> ParamSource, for the layout `c.scan_layers` gives."""
  sources: dict[str, ParamSource] = {}
  torch_linear = dialect == "hf"  # nn.Linear stores [out, in]; Flax kernels are [in, out]

  def add(path: str, names: list[str], layout: str, transposed: bool, stacked: bool):
    sources[path] = ParamSource(tuple(prefix + n for n in names), layout, transposed, stacked)

  if dialect == "t5x":
    add("token_embedder/embedding", ["token_embedder/embedding"], "plain", False, False)
  else:
    add("token_embedder/embedding", [_hf_name(dialect, "shared", "embedding")], "plain", False, False)

  stacks = [
      ("encoder", c.num_encoder_layers, _encoder_layer(c), "encoder_norm"),
      ("decoder", c.num_decoder_layers, _decoder_layer(c), "decoder_norm"),
  ]
  for stack, num_layers, rows, t5x_norm in stacks:
    if dialect == "t5x":
      add(f"{stack}/relpos_bias/embedding", [f"{stack}/relpos_bias/rel_embedding"], "plain", True, False)
      add(f"{stack}/final_norm/scale", [f"{stack}/{t5x_norm}/scale"], "plain", False, False)
    else:
      relpos = _hf_name(dialect, f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias", "embedding")
      add(f"{stack}/relpos_bias/embedding", [relpos], "plain", False, False)
      add(f"{stack}/final_norm/scale", [_hf_name(dialect, f"{stack}.final_layer_norm", "norm")], "plain", False, False)

    for ours, hf, t5x, layout, is_linear in rows:
      if dialect == "t5x":
        per_layer = [f"{stack}/layers_{i}/{t5x}" for i in range(num_layers)]
      else:
        kind = "linear" if is_linear else "norm"
        per_layer = [_hf_name(dialect, f"{stack}.block.{i}.{hf}", kind) for i in range(num_layers)]
      transposed = torch_linear and is_linear
      if c.scan_layers:
        add(f"{stack}/layers/{ours}", per_layer, layout, transposed, True)
      else:
        for i, name in enumerate(per_layer):
          add(f"{stack}/layers_{i}/{ours}", [name], layout, transposed, False)

  if not c.tie_word_embeddings:
    name = "decoder/logits_dense/kernel" if dialect == "t5x" else _hf_name(dialect, "lm_head", "linear")
    add("decoder/logits_dense/kernel", [name], "plain", torch_linear, False)
  return sources


# Tensors a HF T5 checkpoint may carry that no param reads: copies of the shared embedding, and
# the output projection of a tied (v1.0) model, which equals the embedding.
HF_REDUNDANT = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight",
                "encoder/embed_tokens/embedding", "decoder/embed_tokens/embedding", "lm_head/kernel")
