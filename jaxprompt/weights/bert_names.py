"""Which checkpoint tensor fills which BERT param, for Hugging Face BERT / RoBERTa / XLM-RoBERTa
checkpoints (PyTorch names, in safetensors or .bin files).

The base model's names carry the prefix of the class that saved it: "bert." (BertForMaskedLM,
BertForPreTraining, ...), "roberta." (RobertaForMaskedLM, XLM-RoBERTa, ...) or none (BertModel,
RobertaModel, sentence-transformers checkpoints such as all-MiniLM-L6-v2). MLM heads sit outside
the prefix: "cls.predictions." (BERT) or "lm_head." (RoBERTa). Checkpoints converted from the
original TensorFlow BERT name LayerNorm params gamma/beta instead of weight/bias.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection

from jaxprompt.models.bert_config import BertConfig
from jaxprompt.weights.placement import ParamSource

BASE_PREFIXES = ("bert.", "roberta.", "")
# MLM head kind -> (transform dense, transform LayerNorm, output bias names in order of preference).
MLM_HEADS = {
    "bert": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
             ("cls.predictions.bias", "cls.predictions.decoder.bias")),
    "roberta": ("lm_head.dense", "lm_head.layer_norm", ("lm_head.bias", "lm_head.decoder.bias")),
}
# Tensors a checkpoint may carry that no param reads and that are not worth a warning: torch
# buffers, and the MLM decoder, which is tied to the word embeddings (its bias to the head's bias).
REDUNDANT_SUFFIXES = (
    "embeddings.position_ids", "embeddings.token_type_ids",
    "cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
    "lm_head.decoder.weight", "lm_head.decoder.bias",
)

# Per layer: (our module path inside the layer, HF module inside `encoder.layer.{i}`, kind).
_LAYER = (
    ("attention/query", "attention.self.query", "in_heads"),
    ("attention/key", "attention.self.key", "in_heads"),
    ("attention/value", "attention.self.value", "in_heads"),
    ("attention/out", "attention.output.dense", "heads_out"),
    ("attention_norm", "attention.output.LayerNorm", "norm"),
    ("mlp/wi", "intermediate.dense", "dense"),
    ("mlp/wo", "output.dense", "dense"),
    ("mlp_norm", "output.LayerNorm", "norm"),
)


@dataclasses.dataclass(frozen=True)
class FlatSource(ParamSource):
  """A param whose tensor is stored flat: a [H*K] attention bias for a [H, K] param."""

  def file_shape(self, param_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = param_shape[1:] if self.stacked else param_shape
    return (math.prod(shape),)


@dataclasses.dataclass(frozen=True)
class CheckpointLayout:
  """What a checkpoint holds, read off its tensor names."""

  prefix: str  # "bert.", "roberta." or ""
  has_pooler: bool
  mlm_head: str | None  # which head: a key of MLM_HEADS (ALBERT: "predictions"), or None
  names: frozenset[str] = dataclasses.field(repr=False)

  def norm(self, module: str) -> tuple[str, str]:
    """(scale, bias) tensor names of a LayerNorm: weight/bias, or gamma/beta in TF-converted files."""
    if f"{module}.gamma" in self.names and f"{module}.weight" not in self.names:
      return f"{module}.gamma", f"{module}.beta"
    return f"{module}.weight", f"{module}.bias"


def detect_layout(names: Collection[str]) -> CheckpointLayout:
  """The prefix, pooler and MLM head of a checkpoint; with no word embeddings the prefix is ""."""
  names = frozenset(names)
  prefix = next((p for p in BASE_PREFIXES if f"{p}embeddings.word_embeddings.weight" in names), "")
  mlm_head = next((kind for kind, (dense, _, _) in MLM_HEADS.items() if f"{dense}.weight" in names), None)
  return CheckpointLayout(prefix, f"{prefix}pooler.dense.weight" in names, mlm_head, names)


def module_sources(kind: str, modules: list[str], stacked: bool, layout: CheckpointLayout) -> dict[str, ParamSource]:
  """Our params of one module from its HF tensors (one module per layer when stacked)."""
  if kind == "norm":
    pairs = [layout.norm(m) for m in modules]
    return {"scale": ParamSource(tuple(s for s, _ in pairs), stacked=stacked),
            "bias": ParamSource(tuple(b for _, b in pairs), stacked=stacked)}
  bias_class = FlatSource if kind == "in_heads" else ParamSource
  # nn.Linear keeps its weight as [out, in]: transposed into our [in, ..., out] kernels.
  kernel = ParamSource(tuple(f"{m}.weight" for m in modules), "plain" if kind == "dense" else kind, True, stacked)
  return {"kernel": kernel, "bias": bias_class(tuple(f"{m}.bias" for m in modules), stacked=stacked)}


def bert_param_sources(c: BertConfig, layout: CheckpointLayout) -> dict[str, ParamSource]:
  """Our '/'-joined param path -> ParamSource, for the layout `c.scan_layers` gives."""
  sources: dict[str, ParamSource] = {}
  p = layout.prefix

  def add(path: str, kind: str, modules: list[str], stacked: bool = False) -> None:
    sources.update({f"{path}/{param}": src for param, src in module_sources(kind, modules, stacked, layout).items()})

  sources["token_embedder/embedding"] = ParamSource((f"{p}embeddings.word_embeddings.weight",))
  sources["embeddings/position_embedding"] = ParamSource((f"{p}embeddings.position_embeddings.weight",))
  sources["embeddings/token_type_embedding"] = ParamSource((f"{p}embeddings.token_type_embeddings.weight",))
  add("embeddings/norm", "norm", [f"{p}embeddings.LayerNorm"])

  for ours, hf, kind in _LAYER:
    modules = [f"{p}encoder.layer.{i}.{hf}" for i in range(c.num_layers)]
    if c.scan_layers:
      add(f"encoder/layers/{ours}", kind, modules, stacked=True)
    else:
      for i, module in enumerate(modules):
        add(f"encoder/layers_{i}/{ours}", kind, [module])

  if c.has_pooler:
    add("pooler/dense", "dense", [f"{p}pooler.dense"])
  if c.has_mlm_head:
    dense, norm, biases = MLM_HEADS[layout.mlm_head or ("roberta" if p == "roberta." else "bert")]
    add("mlm_head/dense", "dense", [dense])
    add("mlm_head/norm", "norm", [norm])
    sources["mlm_head/bias"] = ParamSource((next((b for b in biases if b in layout.names), biases[0]),))
  return sources


def is_redundant(name: str) -> bool:
  """Whether a tensor no param reads is expected to be unread (a buffer or a tied copy)."""
  return any(name == s or name.endswith("." + s) for s in REDUNDANT_SUFFIXES)
