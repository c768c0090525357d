"""Trained prompts as Hugging Face PEFT adapters, and PEFT adapters as jaxprompt prompts.

A PEFT prompt-learning adapter is a folder: adapter_config.json (method, shapes) and
adapter_model.safetensors holding one float32 tensor, `prompt_embeddings`:

  prompt tuning  [P, D]: soft tokens prepended to the input (on T5 the encoder's), our placement
                 "prefix". With num_transformer_submodules=2 PEFT stores 2P rows on T5 but its
                 forward and generate prepend only the first P. PEFT's P-tuning saves the tokens
                 its encoder produces in the same place, so its adapters import as prompt tuning.
  prefix tuning  [P, layers * 2 * heads * head_dim], each row laid out (layer, key|value, head,
                 dim): the keys/values as Hugging Face's past_key_values (already rotated on a
                 decoder, whose prefixes have the key/value heads of grouped-query attention).
                 PEFT saves what its PrefixEncoder produces, never the reparameterisation MLP, so
                 `prefix_projection` changes nothing in the file: a reparameterised prefix of ours
                 is exported collapsed, with prefix_projection=False, which PEFT also loads with
                 is_trainable=True (a True there would make PEFT expect the MLP).

Where PEFT puts prefixes (PEFT 0.21, transformers 5): on a decoder, layer j's self-attention gets
stored layer j (our "encoder_self"). On T5, only the decoder's self-attention (our "decoder_self"),
and not layer by layer: PeftModel.get_prompt concatenates a cross-attention copy along the layer
axis before cutting it into per-layer (key, value, cross key, cross value) groups, so decoder layer
j gets stored layer 2j mod L — and then it empties the cross-attention cache (with
num_transformer_submodules=1 T5's forward fails). With an odd L that is a permutation, which the
export undoes; with an even L layers j and j + L/2 share one stored prefix, so a prefix of ours
exports only where those are equal (an import always works: both layers get the shared one).
Only what PEFT runs with our numbers is exported; anything else is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from etils import epath
import jax
import ml_collections
import numpy as np
import safetensors.numpy

from jaxprompt import experiment
from jaxprompt import sharding as sharding_lib
from jaxprompt.backbones import Backbone, abstract_backbone
from jaxprompt.checkpoint import export_prompt
from jaxprompt.evaluation import load_prompt_params
from jaxprompt.models.llama_config import LlamaConfig
from jaxprompt.models.t5_config import T5Config
from jaxprompt.prompts.classifier import ClassifierHead
from jaxprompt.prompts.multi_task import MultiTaskPrompt
from jaxprompt.prompts.p_tuning import PromptEncoder
from jaxprompt.prompts.p_tuning_v2 import DeepPromptWithHead
from jaxprompt.prompts.prefix_tuning import AttentionShape, PrefixTuning
from jaxprompt.prompts.soft_prompt import SoftPrompt

log = logging.getLogger(__name__)
CONFIG_FILE, WEIGHTS_FILE, TENSOR = "adapter_config.json", "adapter_model.safetensors", "prompt_embeddings"


@dataclasses.dataclass(frozen=True)
class PeftPlacement:
  """How PEFT wraps one family's Hugging Face model, and so where its prompts go."""

  task_type: str  # PEFT's TaskType: which PeftModel class runs the adapter
  prefix_kind: str  # the attention kind PEFT's prefix tuning fills
  prefix_submodules: int  # the num_transformer_submodules PEFT's prefix forward runs with

  def stored_layer(self, layer: int, num_layers: int) -> int:
    """The stored prefix PEFT hands `layer`: get_prompt concatenates `prefix_submodules` copies of
    the layers along the layer axis, then gives each layer the next 2 x prefix_submodules tensors."""
    return self.prefix_submodules * layer % num_layers


# Keyed by the backbone's config type, as weights/hf_export.py keys its families.
_PLACEMENTS: dict[type, PeftPlacement] = {
    T5Config: PeftPlacement("SEQ_2_SEQ_LM", "decoder_self", 2),  # T5ForConditionalGeneration
    LlamaConfig: PeftPlacement("CAUSAL_LM", "encoder_self", 1),  # LlamaForCausalLM
}

# Why the other methods have no PEFT adapter that computes what they do.
_REFUSED = {
    type(None): "the run trains no prompt (config.prompt.method='none')",
    PromptEncoder: "p_tuning places its pseudo tokens at the template's [Pi] markers between the anchor words;"
                   " PEFT's P-tuning prepends all virtual tokens before the input",
    DeepPromptWithHead: "p_tuning_v2 trains a classification head with its deep prompts; a PEFT prompt adapter"
                        " holds no head",
    MultiTaskPrompt: "multi_task concatenates or adds a shared and a per-task prompt; PEFT's multitask prompt"
                     " tuning multiplies a shared prompt by per-task low-rank matrices",
    ClassifierHead: "classifier is a classification head, not a prompt",
}
# The PEFT types whose saved prompt_embeddings are soft tokens before the input, and prefixes.
_SOFT_TOKEN_TYPES, _PREFIX_TYPE = ("PROMPT_TUNING", "P_TUNING"), "PREFIX_TUNING"


def placement_of(backbone: Backbone) -> PeftPlacement:
  if type(backbone.config) not in _PLACEMENTS:
    raise ValueError(f"no PEFT adapter for a {backbone.family.name} backbone: jaxprompt maps PEFT's prompt learning"
                     " on T5ForConditionalGeneration (SEQ_2_SEQ_LM) and Llama-style decoders (CAUSAL_LM); for"
                     " encoders PEFT has classification and feature-extraction models, not a masked LM's scoring")
  return _PLACEMENTS[type(backbone.config)]


def export_adapter(method: Any, params: Any, backbone: Backbone, directory: str | epath.PathLike,
                   base_model: str = "") -> dict[str, Any]:
  """Writes the prompt as a PEFT adapter folder (on process 0); returns its adapter_config."""
  placement = placement_of(backbone)
  if isinstance(method, SoftPrompt):
    if method.placement != "prefix":
      raise ValueError(f"prompt_tuning with placement {method.placement!r}: PEFT's prompt tuning prepends the"
                       " virtual tokens before the whole input (before a decoder's BOS), our placement 'prefix' only")
    tensor = method.export(params)["embeddings"]
    config = _prompt_tuning_config(placement, len(tensor), backbone.embed_dim, 1)
  elif isinstance(method, PrefixTuning):
    kinds = tuple(shape.kind for shape in method.shapes)
    if kinds != (placement.prefix_kind,):
      raise ValueError(f"prefix_tuning on attention kinds {kinds}: PEFT puts prefixes on a {backbone.family.name}"
                       f" backbone's {placement.prefix_kind!r} only (config.prompt.prefix_attention="
                       f"('{placement.prefix_kind}',))")
    if method.reparam_hidden:
      log.info("the reparameterised prefix is exported as the keys/values it collapses to (prefix_projection=False):"
               " a PEFT adapter file holds no MLP")
    arrays, (shape,) = method.export(params), method.shapes
    tensor = prefix_to_peft(arrays[f"{shape.kind}/keys"], arrays[f"{shape.kind}/values"], placement)
    config = _prefix_tuning_config(placement, method.length, shape.num_layers, shape.num_heads, shape.head_dim)
  else:
    reason = _REFUSED.get(type(method), f"{type(method).__name__} has no PEFT counterpart")
    raise ValueError(f"no PEFT adapter for this prompt: {reason}")
  config["base_model_name_or_path"] = base_model or None
  _write(epath.Path(directory), config, np.ascontiguousarray(tensor, np.float32))
  return config


def prefix_to_peft(keys_LxPxHxK: np.ndarray, values_LxPxHxK: np.ndarray, placement: PeftPlacement) -> np.ndarray:
  """Our per-layer keys/values as PEFT's [P, layers * 2 * heads * head_dim] rows, each layer's at
  the stored layer PEFT hands it; the stored layers PEFT hands no layer stay zero."""
  layers = len(keys_LxPxHxK)
  stored = np.zeros((layers, 2) + keys_LxPxHxK.shape[1:], np.float32)  # [L, key|value, P, H, K]
  owner: dict[int, int] = {}
  for layer in range(layers):
    at = placement.stored_layer(layer, layers)
    ours = np.stack([keys_LxPxHxK[layer], values_LxPxHxK[layer]])
    if at in owner and not np.array_equal(stored[at], ours):
      raise ValueError(f"prefix_tuning: PEFT gives layers {owner[at]} and {layer} (of {layers}) one stored prefix"
                       f" (layer j gets stored layer {placement.prefix_submodules}j mod {layers}), and this prefix's"
                       " differ there: PEFT cannot run it")
    owner.setdefault(at, layer)
    stored[at] = ours
  return np.transpose(stored, (2, 0, 1, 3, 4)).reshape(keys_LxPxHxK.shape[1], -1)


def prefix_from_peft(rows: np.ndarray, shape: AttentionShape,
                     placement: PeftPlacement) -> tuple[np.ndarray, np.ndarray]:
  """(keys, values) [layers, P, heads, head_dim]: each layer's, the stored layer PEFT hands it."""
  table = rows.reshape(rows.shape[0], shape.num_layers, 2, shape.num_heads, shape.head_dim)
  which = [placement.stored_layer(layer, shape.num_layers) for layer in range(shape.num_layers)]
  kv_2xLxPxHxK = np.transpose(table, (2, 1, 0, 3, 4))[:, which]
  return np.ascontiguousarray(kv_2xLxPxHxK[0]), np.ascontiguousarray(kv_2xLxPxHxK[1])


def _prompt_tuning_config(placement: PeftPlacement, tokens: int, width: int, submodules: int) -> dict[str, Any]:
  return {"peft_type": "PROMPT_TUNING", "task_type": placement.task_type, "num_virtual_tokens": tokens,
          "token_dim": width, "num_transformer_submodules": submodules, "prompt_tuning_init": "RANDOM",
          "inference_mode": True}


def _prefix_tuning_config(placement: PeftPlacement, tokens: int, layers: int, heads: int, head_dim: int) -> dict:
  # PEFT reads the prefix's shape from these (not from the model): token_dim // heads is the head width.
  return {"peft_type": "PREFIX_TUNING", "task_type": placement.task_type, "num_virtual_tokens": tokens,
          "token_dim": heads * head_dim, "num_attention_heads": heads, "num_layers": layers,
          "num_transformer_submodules": placement.prefix_submodules, "prefix_projection": False,
          "encoder_hidden_size": heads * head_dim, "inference_mode": True}


def _write(directory: epath.Path, config: dict[str, Any], tensor: np.ndarray) -> None:
  if jax.process_index() != 0:
    return
  directory.mkdir(parents=True, exist_ok=True)
  # Bytes first: the folder may be a gs:// bucket. "pt" is the format save_pretrained writes.
  (directory / WEIGHTS_FILE).write_bytes(safetensors.numpy.save({TENSOR: tensor}, metadata={"format": "pt"}))
  (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def import_adapter(directory: str | epath.PathLike, backbone: Backbone) -> tuple[str, dict[str, np.ndarray]]:
  """(our method, its export arrays) of a PEFT prompt-tuning, P-tuning or prefix-tuning adapter
  folder, checked against the backbone; `method.collapsed().params_from_export(arrays)` are its params."""
  directory = epath.Path(directory)
  config_file, weights_file = directory / CONFIG_FILE, directory / WEIGHTS_FILE
  config = json.loads(config_file.read_text())
  peft_type, placement = config.get("peft_type"), placement_of(backbone)
  if peft_type not in (*_SOFT_TOKEN_TYPES, _PREFIX_TYPE):
    raise ValueError(f"{config_file}: peft_type {peft_type!r}; jaxprompt imports {(*_SOFT_TOKEN_TYPES, _PREFIX_TYPE)}")
  if config.get("task_type") != placement.task_type:
    raise ValueError(f"{config_file}: task_type {config.get('task_type')!r}; a {backbone.family.name} backbone"
                     f" runs PEFT's {placement.task_type!r}")
  if not weights_file.exists():
    raise FileNotFoundError(f"{weights_file} not found (an adapter_model.bin: save it with safe_serialization=True)")
  tensors = safetensors.numpy.load(weights_file.read_bytes())
  if TENSOR not in tensors:
    raise ValueError(f"{weights_file} has no {TENSOR!r} tensor, only {sorted(tensors)}")
  rows, tokens = tensors[TENSOR].astype(np.float32), int(config["num_virtual_tokens"])

  def check(want: tuple[int, ...], what: str) -> None:
    if rows.shape != want:
      raise ValueError(f"{weights_file}: {TENSOR} has shape {rows.shape}; this {backbone.family.name} backbone needs"
                       f" {want} ({what})")

  if peft_type in _SOFT_TOKEN_TYPES:
    submodules = int(config.get("num_transformer_submodules") or 1)
    check((tokens * submodules, backbone.embed_dim),
          f"{tokens} x {submodules} virtual tokens x hidden size {backbone.embed_dim}")
    return "prompt_tuning", {"embeddings": rows[:tokens]}  # PEFT prepends the first P rows only
  if config.get("num_transformer_submodules") not in (None, placement.prefix_submodules):
    raise ValueError(f"{config_file}: num_transformer_submodules {config['num_transformer_submodules']}; PEFT runs"
                     f" prefix tuning on a {backbone.family.name} backbone with {placement.prefix_submodules}")
  (shape,) = backbone.attention_shapes((placement.prefix_kind,), "PEFT's prefix placement")
  theirs = (config.get("num_layers"), config.get("num_attention_heads"), config.get("token_dim"))
  ours = (shape.num_layers, shape.num_heads, shape.num_heads * shape.head_dim)
  if theirs != ours:
    raise ValueError(f"{config_file}: (num_layers, num_attention_heads, token_dim) {theirs}; this"
                     f" {backbone.family.name} backbone's {shape.kind} prefixes need {ours}")
  check((tokens, shape.num_layers * 2 * shape.num_heads * shape.head_dim),
        f"{tokens} virtual tokens x {shape.num_layers} layers x key|value x {shape.num_heads} heads x {shape.head_dim}")
  keys, values = prefix_from_peft(rows, shape, placement)
  return "prefix_tuning", {f"{shape.kind}/keys": keys, f"{shape.kind}/values": values}


def export_run(config: ml_collections.ConfigDict, prompt_path: str, out: str) -> dict[str, Any]:
  """A run's trained prompt (workdir, checkpoint or export, as `jaxprompt.evaluate --prompt` takes)
  as a PEFT adapter folder for config.model.checkpoint."""
  exp = experiment.build(config)
  method, params, trained, where = load_prompt_params(exp, prompt_path)
  if trained:
    raise ValueError(f"{where} fine-tuned backbone weights (config.model.trainable={config.model.trainable!r}),"
                     " which a PEFT prompt adapter cannot carry")
  return export_adapter(method, jax.device_get(params), exp.backbone, out, config.model.checkpoint)


def import_run(config: ml_collections.ConfigDict, adapter: str, out: str) -> dict[str, Any]:
  """A PEFT adapter folder as our exported prompt out/prompts/peft.npy (.npz for prefixes), checked
  against config.model's backbone; returns its path and the overrides that evaluate it."""
  mesh = sharding_lib.make_mesh(config.mesh.to_dict())
  backbone = abstract_backbone(config.model, mesh, tuple(config.rules))  # shapes only: no weights read
  method, arrays = import_adapter(adapter, backbone)
  if method == "prompt_tuning":
    length, where = len(arrays["embeddings"]), "--config.prompt.placement=prefix"
  else:
    kind = placement_of(backbone).prefix_kind
    length, where = arrays[f"{kind}/keys"].shape[1], f"--config.prompt.prefix_attention=('{kind}',)"
  path = export_prompt(out, "peft", arrays)
  overrides = [f"--config.prompt.method={method}", f"--config.prompt.length={length}", where]
  return {"prompt": str(path), "config": overrides}
