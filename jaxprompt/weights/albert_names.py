"""Which checkpoint tensor fills which ALBERT param, for Hugging Face ALBERT checkpoints (PyTorch
names, in safetensors or .bin files).

The base model's names carry the prefix "albert." (AlbertForMaskedLM, AlbertForPreTraining, ...) or
none (AlbertModel). A shared layer is one set of tensors,
`encoder.albert_layer_groups.{g}.albert_layers.{j}.*`, however many layers apply it. The MLM head
sits outside the prefix as "predictions.*"; its decoder is tied to the word embeddings (and its
decoder bias to "predictions.bias"), so files saved by recent transformers omit it.
"""

from __future__ import annotations

from collections.abc import Collection

from jaxprompt.models.albert_config import AlbertConfig
from jaxprompt.weights.bert_names import CheckpointLayout, module_sources
from jaxprompt.weights.placement import ParamSource

BASE_PREFIXES = ("albert.", "")
MLM_HEAD = "predictions"
# Tensors a checkpoint may carry that no param reads and that are not worth a warning: torch
# buffers (older files saved them), and the MLM decoder, tied to the word embeddings and the head's bias.
REDUNDANT_SUFFIXES = (
    "embeddings.position_ids", "embeddings.token_type_ids", "predictions.decoder.weight", "predictions.decoder.bias",
)

# Per layer: (our module path inside the layer, HF module inside `albert_layers.{j}`, kind).
_LAYER = (
    ("attention/query", "attention.query", "in_heads"),
    ("attention/key", "attention.key", "in_heads"),
    ("attention/value", "attention.value", "in_heads"),
    ("attention/out", "attention.dense", "heads_out"),
    ("attention_norm", "attention.LayerNorm", "norm"),
    ("mlp/wi", "ffn", "dense"),
    ("mlp/wo", "ffn_output", "dense"),
    ("mlp_norm", "full_layer_layer_norm", "norm"),
)


def detect_layout(names: Collection[str]) -> CheckpointLayout:
  """The prefix, pooler and MLM head of a checkpoint (mlm_head "predictions" or None)."""
  names = frozenset(names)
  prefix = next((p for p in BASE_PREFIXES if f"{p}embeddings.word_embeddings.weight" in names), "")
  mlm_head = MLM_HEAD if f"{MLM_HEAD}.dense.weight" in names else None
  return CheckpointLayout(prefix, f"{prefix}pooler.weight" in names, mlm_head, names)


def albert_param_sources(c: AlbertConfig, layout: CheckpointLayout) -> dict[str, ParamSource]:
  """Our '/'-joined param path -> ParamSource (one layout, scanned or not: shared params have no layer axis)."""
  sources: dict[str, ParamSource] = {}
  p = layout.prefix

  def add(path: str, kind: str, module: str) -> None:
    sources.update({f"{path}/{param}": src for param, src in module_sources(kind, [module], False, layout).items()})

  sources["token_embedder/embedding"] = ParamSource((f"{p}embeddings.word_embeddings.weight",))
  sources["embeddings/position_embedding"] = ParamSource((f"{p}embeddings.position_embeddings.weight",))
  sources["embeddings/token_type_embedding"] = ParamSource((f"{p}embeddings.token_type_embeddings.weight",))
  add("embeddings/norm", "norm", f"{p}embeddings.LayerNorm")
  add("encoder/mapping_in", "dense", f"{p}encoder.embedding_hidden_mapping_in")

  for group in sorted({g for g, _ in c.group_runs}):  # groups no layer applies have no params
    for j in range(c.inner_group_num):
      for ours, hf, kind in _LAYER:
        hf_module = f"{p}encoder.albert_layer_groups.{group}.albert_layers.{j}.{hf}"
        add(f"encoder/groups_{group}/layers_{j}/{ours}", kind, hf_module)

  if c.has_pooler:
    add("pooler/dense", "dense", f"{p}pooler")
  if c.has_mlm_head:
    add("mlm_head/dense", "dense", f"{MLM_HEAD}.dense")
    add("mlm_head/norm", "norm", f"{MLM_HEAD}.LayerNorm")
    bias = next((b for b in (f"{MLM_HEAD}.bias", f"{MLM_HEAD}.decoder.bias") if b in layout.names), f"{MLM_HEAD}.bias")
    sources["mlm_head/bias"] = ParamSource((bias,))
  return sources


def is_redundant(name: str) -> bool:
  """Whether a tensor no param reads is expected to be unread (a buffer or a tied copy)."""
  return any(name == s or name.endswith("." + s) for s in REDUNDANT_SUFFIXES)
