"""Writing a (fine-tuned) backbone as a Hugging Face directory: model.safetensors and config.json.

The tensors are named and laid out by inverting the same name tables the loaders read with
(`*_param_sources`: names, layout, transposed, stacked), so an export is what our loader reads back
exactly and what transformers' *ForMaskedLM / *Model / LlamaForCausalLM / T5ForConditionalGeneration
loads with no missing or unexpected weights; tied copies (an MLM decoder, a tied lm_head, T5's
embed_tokens) are left out, as save_pretrained leaves them out. config.json is mapped from our config
and checked to read back (`Config.from_hf`) to the same config, so a config that Hugging Face cannot
express fails before anything is written.

Peak memory: model.safetensors is streamed, one checkpoint tensor (one layer of a stacked param) at
a time. Host memory holds that tensor gathered in its param dtype, its cast contiguous copy, and a
one-byte-per-element mask of the round-trip check; devices hold one layer slice beside the params.
The model is never copied whole: the largest tensor (usually the embedding) sets the peak.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils

from jaxprompt import sharding as sharding_lib
from jaxprompt.models.albert_config import AlbertConfig
from jaxprompt.models.bert_config import HF_ACTIVATIONS, BertConfig
from jaxprompt.models.llama_config import LlamaConfig
from jaxprompt.models.t5_config import T5Config
from jaxprompt.weights import albert_loader, bert_loader, llama_loader, t5_loader, tensor_sources
from jaxprompt.weights.albert_names import albert_param_sources
from jaxprompt.weights.bert_names import CheckpointLayout, bert_param_sources
from jaxprompt.weights.checkpoint_files import WEIGHT_FILES
from jaxprompt.weights.llama_names import llama_param_sources
from jaxprompt.weights.placement import ParamSource
from jaxprompt.weights.t5_names import t5_param_sources

# Ours -> HF's spelling: the first HF name of each activation in the loaders' table (gelu_tanh ->
# "gelu_new", ALBERT's default; silu -> "silu").
_TO_HF_ACTIVATION = {ours: hf for hf, ours in reversed(HF_ACTIVATIONS.items())}
# The dtypes the safetensors reader understands, by their safetensors names: write no other.
_SAFETENSORS_NAMES = {np.dtype(dtype): name for name, dtype in tensor_sources.SAFETENSORS_DTYPES.items()}
# How a model runs, not what it is: from_hf never reads these, so they are carried over in the check.
_RUN_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat_policy", "dropout_rate")


def bert_hf_config(c: BertConfig) -> dict[str, Any]:
  """config.json of a BertModel / BertForMaskedLM, or RoBERTa's when positions are offset."""
  # With both a pooler and an MLM head (a *ForPreTraining source) the pooler is written too, so our
  # loader reads it back; transformers' *ForMaskedLM has none and reports it as unused.
  roberta = c.position_offset != 0  # XLM-RoBERTa is the same architecture: it is written as RoBERTa
  family = "Roberta" if roberta else "Bert"
  return {
      "model_type": "roberta" if roberta else "bert",
      "architectures": [f"{family}ForMaskedLM" if c.has_mlm_head else f"{family}Model"],
      "vocab_size": c.vocab_size,
      "hidden_size": c.hidden_size,
      "num_attention_heads": c.num_heads,
      "num_hidden_layers": c.num_layers,
      "intermediate_size": c.intermediate_size,
      "max_position_embeddings": c.max_position_embeddings,
      "type_vocab_size": c.type_vocab_size,
      "layer_norm_eps": c.layer_norm_eps,
      "hidden_act": _TO_HF_ACTIVATION[c.activation],
      "pad_token_id": c.pad_token_id,
      "position_embedding_type": "absolute",
      "is_decoder": False,
      "tie_word_embeddings": True,  # the MLM decoder is the word embeddings
      # One dropout of ours is both of HF's: training in transformers then matches training here.
      "hidden_dropout_prob": c.dropout_rate,
      "attention_probs_dropout_prob": c.dropout_rate,
  }


def albert_hf_config(c: AlbertConfig) -> dict[str, Any]:
  """config.json of an AlbertModel / AlbertForMaskedLM."""
  # A group no layer applies (num_hidden_groups > num_layers) has no params here: transformers
  # initialises its unused tensors and reports them missing.
  return {
      "model_type": "albert",
      "architectures": ["AlbertForMaskedLM" if c.has_mlm_head else "AlbertModel"],
      "vocab_size": c.vocab_size,
      "embedding_size": c.embedding_size,
      "hidden_size": c.hidden_size,
      "num_attention_heads": c.num_heads,
      "num_hidden_layers": c.num_layers,
      "num_hidden_groups": c.num_hidden_groups,
      "inner_group_num": c.inner_group_num,
      "intermediate_size": c.intermediate_size,
      "max_position_embeddings": c.max_position_embeddings,
      "type_vocab_size": c.type_vocab_size,
      "layer_norm_eps": c.layer_norm_eps,
      "hidden_act": _TO_HF_ACTIVATION[c.activation],
      "pad_token_id": c.pad_token_id,
      "position_embedding_type": "absolute",
      "tie_word_embeddings": True,
      "hidden_dropout_prob": c.dropout_rate,
      "attention_probs_dropout_prob": c.dropout_rate,
  }


def llama_hf_config(c: LlamaConfig) -> dict[str, Any]:
  """config.json of a LlamaForCausalLM (max_position_embeddings is not ours: pass it in `hf_extra`)."""
  hf = {
      "model_type": "llama",
      "architectures": ["LlamaForCausalLM"],
      "vocab_size": c.vocab_size,
      "hidden_size": c.hidden_size,
      "intermediate_size": c.intermediate_size,
      "num_hidden_layers": c.num_layers,
      "num_attention_heads": c.num_heads,
      "num_key_value_heads": c.num_kv_heads,
      "head_dim": c.head_dim,
      "hidden_act": "silu",
      "rms_norm_eps": c.rms_norm_eps,
      # The pre-5 spelling (rope_theta, rope_scaling): transformers 5 converts it to rope_parameters.
      "rope_theta": c.rope_theta,
      "tie_word_embeddings": c.tie_word_embeddings,
      "attention_bias": False,
      "mlp_bias": False,
      "bos_token_id": c.bos_token_id,
      "eos_token_id": c.eos_token_id,
      "pad_token_id": c.pad_token_id,
  }
  if c.rope_scaling is not None:
    scaling = dict(c.rope_scaling)
    # HF validates the original context length as an int; ours keeps every factor a float.
    scaling["original_max_position_embeddings"] = int(scaling["original_max_position_embeddings"])
    hf["rope_scaling"] = {"rope_type": "llama3", **scaling}
  return hf


def t5_hf_config(c: T5Config) -> dict[str, Any]:
  """config.json of a T5ForConditionalGeneration."""
  return {
      "model_type": "t5",
      "architectures": ["T5ForConditionalGeneration"],
      "is_encoder_decoder": True,
      "vocab_size": c.vocab_size,
      "d_model": c.d_model,
      "d_kv": c.d_kv,
      "d_ff": c.d_ff,
      "num_heads": c.num_heads,
      "num_layers": c.num_encoder_layers,
      "num_decoder_layers": c.num_decoder_layers,
      "relative_attention_num_buckets": c.relative_attention_num_buckets,
      "relative_attention_max_distance": c.relative_attention_max_distance,
      "feed_forward_proj": c.feed_forward_proj,
      # transformers < 5 reads both tying and logit scaling off tie_word_embeddings; transformers 5
      # always ties unless lm_head is stored, and scales by scale_decoder_outputs when given.
      "tie_word_embeddings": c.tie_word_embeddings,
      "scale_decoder_outputs": c.scale_decoder_outputs,
      "layer_norm_epsilon": c.layer_norm_epsilon,
      "dropout_rate": c.dropout_rate,
      "pad_token_id": c.pad_token_id,
      "eos_token_id": c.eos_token_id,
      "decoder_start_token_id": c.decoder_start_token_id,
  }


def _bert_layout(c: BertConfig) -> CheckpointLayout:
  """What BertModel / *ForMaskedLM's save_pretrained writes: a prefix only under an MLM head."""
  head = ("roberta" if c.position_offset else "bert") if c.has_mlm_head else None
  prefix = f"{head}." if head else ""
  return CheckpointLayout(prefix, c.has_pooler, head, frozenset())  # no names: weight/bias, head.bias


def _albert_layout(c: AlbertConfig) -> CheckpointLayout:
  """What AlbertModel / AlbertForMaskedLM's save_pretrained writes: a prefix only under an MLM head."""
  head = "predictions" if c.has_mlm_head else None
  return CheckpointLayout("albert." if head else "", c.has_pooler, head, frozenset())


@dataclasses.dataclass(frozen=True)
class _Family:
  """One family's config mapping, its loaders' name table, and how our config reads back."""

  hf_config: Callable[[Any], dict[str, Any]]
  sources: Callable[[Any], dict[str, ParamSource]]
  read_back: Callable[[Any, dict[str, Any]], Any]  # (ours, exported config.json) -> from_hf's config
  abstract_params: Callable[[Any], Any]


_FAMILIES: dict[type, _Family] = {
    BertConfig: _Family(
        bert_hf_config, lambda c: bert_param_sources(c, _bert_layout(c)),
        lambda c, hf: BertConfig.from_hf(hf, has_pooler=c.has_pooler, has_mlm_head=c.has_mlm_head),
        bert_loader.abstract_bert_params),
    AlbertConfig: _Family(
        albert_hf_config, lambda c: albert_param_sources(c, _albert_layout(c)),
        lambda c, hf: AlbertConfig.from_hf(hf, has_pooler=c.has_pooler, has_mlm_head=c.has_mlm_head),
        albert_loader.abstract_albert_params),
    LlamaConfig: _Family(
        llama_hf_config, llama_param_sources, lambda c, hf: LlamaConfig.from_hf(hf),
        llama_loader.abstract_llama_params),
    T5Config: _Family(
        t5_hf_config, lambda c: t5_param_sources(c, "hf"),
        lambda c, hf: T5Config.from_hf(hf, has_lm_head=not c.tie_word_embeddings),
        t5_loader.abstract_t5_params),
}


def _family(config: Any) -> _Family:
  if type(config) not in _FAMILIES:
    exportable = [t.__name__ for t in _FAMILIES]
    raise TypeError(f"no Hugging Face export for {type(config).__name__}; exportable: {exportable}")
  return _FAMILIES[type(config)]


def hf_config(config: Any, hf_extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """config.json for `config`, over `hf_extra` (keys we do not model); fails unless it reads back as `config`."""
  family = _family(config)
  hf = {**(hf_extra or {}), **family.hf_config(config)}
  back = family.read_back(config, hf).replace(**{f: getattr(config, f) for f in _RUN_FIELDS})
  if back != config:
    diffs = [f"{f.name}: ours {getattr(config, f.name)!r}, read back {getattr(back, f.name)!r}"
             for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(back, f.name)]
    raise ValueError(f"{type(config).__name__} cannot be written as a Hugging Face config: {'; '.join(diffs)}")
  return hf


def export_sources(config: Any) -> dict[str, ParamSource]:
  """Our '/'-joined param path -> the ParamSource the loader reads it from in an exported directory."""
  return _family(config).sources(config)


def to_file_layout(source: ParamSource, array: np.ndarray, param_shape: tuple[int, ...]) -> np.ndarray:
  """The inverse of `source.convert`: a param (one layer's slice when stacked) as its checkpoint tensor."""
  file_shape = source.file_shape(param_shape)
  if source.transposed:  # file_shape is already the transposed shape; undo the transpose last
    return array.reshape(file_shape[::-1]).T
  return array.reshape(file_shape)


@jax.jit
def _layer_slice(stacked: jax.Array, layer: jax.Array) -> jax.Array:
  # A traced index: one compile per param shape, not one per layer.
  return jax.lax.dynamic_index_in_dim(stacked, layer, keepdims=False)


def _to_host(param: Any, layer: int | None) -> np.ndarray:
  """One param, or one layer of a stacked one, gathered to this host (every process must call)."""
  if not isinstance(param, jax.Array):
    return np.asarray(param if layer is None else param[layer])
  x = param if layer is None else _layer_slice(param, jnp.int32(layer))
  if not x.is_fully_addressable:  # multi-host: every process takes part, process 0 writes
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def _checked_params(config: Any, params: Mapping[str, Any], sources: Mapping[str, ParamSource]) -> dict[str, Any]:
  """'/'-joined path -> param, after checking the tree against the config's params and the name table."""
  params = params["params"] if set(params) == {"params"} else params
  flat = traverse_util.flatten_dict(sharding_lib.box_values(dict(params)), sep="/")
  targets = traverse_util.flatten_dict(sharding_lib.box_values(_family(config).abstract_params(config)), sep="/")
  name, shape = type(config).__name__, lambda p: tuple(np.shape(flat[p]))
  problems = [f"param {p} {tuple(targets[p].shape)} is missing" for p in targets if p not in flat]
  problems += [f"param {p} {shape(p)} is not in a {name}'s params" for p in flat if p not in targets]
  problems += [f"param {p} has shape {shape(p)}, the config needs {tuple(targets[p].shape)}"
               for p in flat if p in targets and shape(p) != tuple(targets[p].shape)]
  problems += [f"param {p} has no tensor name in the export table" for p in targets if p not in sources]
  if problems:
    raise ValueError(f"params do not fit the {name} being exported:\n  " + "\n  ".join(problems))
  return flat


def _write_safetensors(path: Path, entries: list[tuple[str, tuple[int, ...]]], dtype: np.dtype,
                       fetch: Callable[[str], np.ndarray], write: bool) -> None:
  """Streams tensors, sorted by name, into a safetensors file; `fetch` runs on every process."""
  header, offset = {}, 0
  for name, shape in entries:
    size = int(np.prod(shape)) * dtype.itemsize
    header[name] = {"dtype": _SAFETENSORS_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
    offset += size
  header["__metadata__"] = {"format": "pt"}  # as save_pretrained writes; transformers checks the format
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # tensor data starts 8-byte aligned, as the safetensors library writes
  if not write:  # the other processes only take part in the gathers
    for name, _ in entries:
      fetch(name)
    return
  temporary = path.with_name(path.name + ".partial")  # an interrupted export leaves no valid-looking file
  try:
    with open(temporary, "wb") as f:
      f.write(len(blob).to_bytes(8, "little") + blob)
      for name, shape in entries:
        tensor = np.ascontiguousarray(fetch(name), dtype)  # the one cast copy
        if tensor.shape != shape:
          raise AssertionError(f"{name}: fetched shape {tensor.shape}, the header says {shape}")
        tensor.tofile(f)
    os.replace(temporary, path)
  except BaseException:
    temporary.unlink(missing_ok=True)
    raise


def export_hf(
    config: Any,
    params: Mapping[str, Any],
    directory: str | os.PathLike,
    *,
    dtype: str | np.dtype = "float32",
    tokenizer_files: Iterable[str | os.PathLike] | None = None,
    hf_extra: Mapping[str, Any] | None = None,
) -> Path:
  """Writes `params` of a BertConfig / AlbertConfig / LlamaConfig / T5Config model as a Hugging Face directory.

  `params`: the tree a loader returns ({"params": ...} or its inside), scanned or unrolled as
  `config.scan_layers` says, numpy or jax Arrays in any sharding. Every tensor is written in
  `dtype`; `tokenizer_files` are copied in as they are; `hf_extra` adds config.json keys we do not
  model (a Llama's max_position_embeddings, id2label, ...). Only process 0 writes. Returns the directory.
  """
  directory = Path(directory)
  dtype = jnp.dtype(dtype)
  if dtype not in _SAFETENSORS_NAMES or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"dtype {dtype} cannot be stored in safetensors; use float32, bfloat16 or float16")
  tokenizer_files = [Path(f) for f in tokenizer_files or ()]
  clashes = [str(f) for f in tokenizer_files if f.name in {"config.json", "model.safetensors"}]
  if clashes:
    raise ValueError(f"tokenizer files {clashes} would overwrite the exported config.json / model.safetensors")
  hf = hf_config(config, hf_extra)  # fails before anything is written
  sources = export_sources(config)
  flat = _checked_params(config, params, sources)

  where: dict[str, tuple[str, int | None]] = {}  # tensor name -> (param path, layer)
  for path, source in sources.items():
    for layer, name in enumerate(source.names):
      if name in where:
        raise ValueError(f"tensor {name!r} is named by both {where[name][0]} and {path}")
      where[name] = (path, layer if source.stacked else None)

  def file_tensor(name: str) -> np.ndarray:
    path, layer = where[name]
    source, shape = sources[path], tuple(np.shape(flat[path]))
    value = _to_host(flat[path], layer)
    tensor = to_file_layout(source, value, shape)
    # The loader's own conversion must give the param back, or the table has a layout this inverse lacks.
    if not np.array_equal(source.convert(tensor, shape), value, equal_nan=True):
      raise AssertionError(f"{name}: ParamSource.convert does not invert the export of {path}")
    return tensor

  entries = []
  for name in sorted(where):  # sorted: the same bytes for a scanned and an unrolled model
    path, _ = where[name]
    entries.append((name, sources[path].file_shape(tuple(np.shape(flat[path])))))

  writer = jax.process_index() == 0
  if writer:
    directory.mkdir(parents=True, exist_ok=True)
    others = [f for f, _ in WEIGHT_FILES if f != "model.safetensors" and (directory / f).exists()]
    if others:  # a loader would read those instead of what is written here
      raise FileExistsError(f"{directory} already holds weights {others}; export into an empty directory")
  _write_safetensors(directory / "model.safetensors", entries, dtype, file_tensor, writer)
  if writer:
    hf["dtype"] = dtype.name  # what transformers 5's dtype="auto" loads the weights in
    (directory / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    for file in tokenizer_files:
      shutil.copy2(file, directory / file.name)
  return directory
