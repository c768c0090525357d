"""Many prompts as one prompt method: its params are the bank's tables, and example b gets the
prompt `batch["prompt_id"][b]`, gathered inside the step.

The tables stack every prompt's parts (serving/parts.py), padded to the longest: soft tokens
[N, Ps, D], keys and values [L, N, Pk, H, K] per attention kind, and all heads side by side
[D, C1 + ... + CN]. Validity masks come from each prompt's own lengths, and masked slots take no
position (models/prompt.py), so an example in a mixed batch sees exactly its own prompt: a prompt
without soft tokens or without some prefix kind has them all masked. Heads are not gathered: every
example gets every head's logits (a [D, C] matmul), and each request reads its own prompt's block.

A BankPrompt has a prompt method's interface (`__call__(batch) -> Prompt`, and `logits` with
`objective` when it holds heads), so the objectives' eval steps run over mixed batches unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprompt.models.prompt import KVPrefix, Prompt
from jaxprompt.prompts.prefix_tuning import AttentionShape
from jaxprompt.prompts.soft_prompt import insert_positions
from jaxprompt.serving.parts import PromptParts

INSERTED = ("prefix", "after_bos", "suffix")  # placements by insertion; "markers" replaces template tokens


class BankPrompt(nn.Module):
  """N prompts' parts; each example's prompt is `batch["prompt_id"]` (-1, a padding row: any)."""

  soft_lengths: tuple[int, ...]  # per prompt (0: no soft tokens)
  placements: tuple[str, ...]  # per prompt: INSERTED, or "markers" for every prompt with soft tokens
  embed_dim: int
  prefix_shapes: tuple[AttentionShape, ...]  # every attention kind some prompt has prefixes for
  prefix_lengths: tuple[tuple[int, ...], ...]  # per kind, per prompt (0: none for that kind)
  hidden_dim: int  # what the heads read
  head_classes: tuple[int, ...]  # per prompt: its head's classes (all 0: no heads)

  @property
  def num_prompts(self) -> int:
    return len(self.soft_lengths)

  @property
  def markers(self) -> bool:
    return "markers" in self.placements

  @property
  def objective(self) -> str:
    """A bank of heads classifies (objectives.head); otherwise the backbone's text objective."""
    return "classify" if any(self.head_classes) else ""

  def setup(self):
    n = self.num_prompts
    if any(self.soft_lengths):
      self.soft_NxPxD = self.param("soft", nn.initializers.zeros, (n, max(self.soft_lengths), self.embed_dim))
    prefixes = {}
    for s, lengths in zip(self.prefix_shapes, self.prefix_lengths, strict=True):
      size = (s.num_layers, n, max(lengths), s.num_heads, s.head_dim)
      prefixes[s.kind] = (self.param(f"{s.kind}_keys", nn.initializers.zeros, size),
                          self.param(f"{s.kind}_values", nn.initializers.zeros, size))
    self.prefixes_LxNxPxHxK = prefixes
    if self.objective:
      self.head_kernel_DxC = self.param("head_kernel", nn.initializers.zeros, (self.hidden_dim, sum(self.head_classes)))
      self.head_bias_C = self.param("head_bias", nn.initializers.zeros, (sum(self.head_classes),))

  def __call__(self, batch: dict[str, jax.Array]) -> Prompt:
    ids_B = jnp.clip(batch["prompt_id"], 0, self.num_prompts - 1)
    fields = {}
    if any(self.soft_lengths):
      fields["embeddings_BxPxD"] = jnp.take(self.soft_NxPxD, ids_B, axis=0)
      if self.markers:  # soft token i replaces the [Pi] marker: each prompt's markers name its own slots
        fields["replace_at_BxL"] = batch["soft_positions"]
      else:
        fields["embeddings_mask_BxP"] = _valid(self.soft_lengths, ids_B)
        fields["insert_at_B"] = self._insert_at(ids_B, batch["input_mask"])
    for s, lengths in zip(self.prefix_shapes, self.prefix_lengths, strict=True):
      keys, values = self.prefixes_LxNxPxHxK[s.kind]
      fields[s.kind] = KVPrefix(jnp.take(keys, ids_B, axis=1), jnp.take(values, ids_B, axis=1), _valid(lengths, ids_B))
    return Prompt(**fields)

  def _insert_at(self, ids_B: jax.Array, mask_BxL: jax.Array) -> jax.Array | None:
    """Where each example's soft tokens go: its prompt's placement (None: all before the first token)."""
    used = sorted({p for p in self.placements if p})
    if used == ["prefix"]:
      return None
    code_N = np.array([used.index(p) if p else 0 for p in self.placements], np.int32)
    at_UxB = jnp.stack([insert_positions(p, mask_BxL) for p in used])
    return jnp.take_along_axis(at_UxB, jnp.asarray(code_N)[ids_B][None], axis=0)[0]

  def logits(self, features_BxD: jax.Array) -> jax.Array:
    """Every head's class logits [B, C1 + ... + CN] (float32) of pooled features."""
    return features_BxD.astype(jnp.float32) @ self.head_kernel_DxC + self.head_bias_C


def _valid(lengths: Sequence[int], ids_B: jax.Array) -> jax.Array:
  """[B, max length] masks: the first `lengths[id]` slots of each example's prompt are valid."""
  slots_1xP = jnp.arange(max(lengths))[None]
  return slots_1xP < jnp.asarray(lengths, jnp.int32)[ids_B][:, None]


def bank_prompt(parts: Sequence[PromptParts], shapes: tuple[AttentionShape, ...], embed_dim: int,
                hidden_dim: int) -> BankPrompt:
  """The BankPrompt for these prompts' parts (`shapes`: every attention kind the backbone has)."""
  placements = tuple(p.placement for p in parts)
  inserted = {p for p, part in zip(placements, parts) if part.soft_length and p in INSERTED}
  if inserted and "markers" in placements:
    raise ValueError(f"P-tuning's pseudo tokens replace template markers and soft prompts placed by insertion"
                     f" ({sorted(inserted)}) cannot share a bank: serve them from two banks")
  heads = [part.num_head_classes for part in parts]
  if any(heads) and not all(heads):
    raise ValueError("prompts with a head (P-tuning v2, classifier) and prompts without cannot share a bank: their"
                     " steps score differently; serve them from two banks")
  kinds = [s for s in shapes if any(s.kind in part.prefixes for part in parts)]
  lengths = tuple(tuple(part.prefixes[s.kind][0].shape[1] if s.kind in part.prefixes else 0 for part in parts)
                  for s in kinds)
  return BankPrompt(tuple(part.soft_length for part in parts), placements, embed_dim, tuple(kinds), lengths,
                    hidden_dim, tuple(heads))


def bank_tables(method: BankPrompt, parts: Sequence[PromptParts]) -> dict[str, np.ndarray]:
  """The BankPrompt's params: every prompt's parts stacked and padded (float32, on the host)."""
  tables = {}
  n = method.num_prompts
  if any(method.soft_lengths):
    soft = np.zeros((n, max(method.soft_lengths), method.embed_dim), np.float32)
    for i, part in enumerate(parts):
      if part.soft_length:
        soft[i, : part.soft_length] = part.soft_PxD
    tables["soft"] = soft
  for shape, lengths in zip(method.prefix_shapes, method.prefix_lengths, strict=True):
    s = shape
    keys = np.zeros((s.num_layers, n, max(lengths), s.num_heads, s.head_dim), np.float32)
    values = np.zeros_like(keys)
    for i, part in enumerate(parts):
      if s.kind in part.prefixes:
        k, v = part.prefixes[s.kind]
        keys[:, i, : k.shape[1]], values[:, i, : v.shape[1]] = k, v
    tables[f"{s.kind}_keys"], tables[f"{s.kind}_values"] = keys, values
  if method.objective:
    tables["head_kernel"] = np.concatenate([part.head_kernel_DxC for part in parts], axis=1)
    tables["head_bias"] = np.concatenate([part.head_bias_C for part in parts])
  return tables
