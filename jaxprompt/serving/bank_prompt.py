"""Many prompts as one prompt method: its params are the bank's tables, and example b gets the
prompt `batch["prompt_id"][b]`, gathered inside the step.

The tables stack every prompt's parts (serving/parts.py), padded to the table's capacity: soft
tokens [R, Ps, D], keys and values [L, R, Pk, H, K] per attention kind, and all heads side by side
[D, C]. Soft tokens replace their slots in each example's own sequence (`batch["soft_positions"]`:
P-tuning's template markers, or the placeholders serving/soft_slots.py puts where an inserted
prompt goes), so a row is as long as its own prompt makes it. Each prefix's length is data (an
int32 [R] table), and its validity mask comes from it; masked slots take no position
(models/prompt.py), so an example in a mixed batch sees exactly its own prompt: a prompt without
some prefix kind has it all masked. Heads are not gathered: every example gets every head's logits
(a [D, C] matmul), and each request reads its own prompt's block.

Only the capacities are static (rows R, the longest soft prompt and prefix, which attention kinds
occur, head columns), so a bank whose prompts still fit them is the same program:
prompts added or removed at runtime change table contents, not the compiled step. `bank_prompt`
with `floor` (the serving bank's method) keeps its capacities and grows only what no longer fits.

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
from jaxprompt.serving.parts import PromptParts


class BankPrompt(nn.Module):
  """Tables of `rows` prompts; each example's prompt is `batch["prompt_id"]` (-1, a padding row: any)."""

  rows: int
  soft_length: int  # the longest soft prompt the table holds (0: no soft tokens)
  embed_dim: int
  prefix_shapes: tuple[AttentionShape, ...]  # every attention kind some prompt has prefixes for
  prefix_length: tuple[int, ...]  # per kind, the longest prefix the table holds
  hidden_dim: int  # what the heads read
  head_columns: int  # every head's classes side by side, spare columns included (0: no heads)

  @property
  def capacity(self) -> tuple:
    """What the compiled step depends on: equal capacities, one program."""
    return (self.rows, self.soft_length, self.embed_dim, self.prefix_shapes, self.prefix_length, self.hidden_dim,
            self.head_columns)

  @property
  def objective(self) -> str:
    """A bank of heads classifies (objectives.head); otherwise the backbone's text objective."""
    return "classify" if self.head_columns else ""

  def setup(self):
    r, int_rows = self.rows, lambda name: self.param(name, nn.initializers.zeros, (self.rows,), jnp.int32)
    if self.soft_length:
      self.soft_RxPxD = self.param("soft", nn.initializers.zeros, (r, self.soft_length, self.embed_dim))
    prefixes = {}
    for s, length in zip(self.prefix_shapes, self.prefix_length, strict=True):
      size = (s.num_layers, r, length, s.num_heads, s.head_dim)
      prefixes[s.kind] = (self.param(f"{s.kind}_keys", nn.initializers.zeros, size),
                          self.param(f"{s.kind}_values", nn.initializers.zeros, size), int_rows(f"{s.kind}_lengths"))
    self.prefixes_LxRxPxHxK = prefixes
    if self.objective:
      self.head_kernel_DxC = self.param("head_kernel", nn.initializers.zeros, (self.hidden_dim, self.head_columns))
      self.head_bias_C = self.param("head_bias", nn.initializers.zeros, (self.head_columns,))

  def __call__(self, batch: dict[str, jax.Array]) -> Prompt:
    ids_B = jnp.clip(batch["prompt_id"], 0, self.rows - 1)
    fields = {}
    if self.soft_length:  # soft token i replaces the slot marked i: each example's slots are its own prompt's
      fields["embeddings_BxPxD"] = jnp.take(self.soft_RxPxD, ids_B, axis=0)
      fields["replace_at_BxL"] = batch["soft_positions"]
    for s in self.prefix_shapes:
      keys, values, lengths_R = self.prefixes_LxRxPxHxK[s.kind]
      fields[s.kind] = KVPrefix(jnp.take(keys, ids_B, axis=1), jnp.take(values, ids_B, axis=1),
                                _valid(keys.shape[2], lengths_R[ids_B]))
    return Prompt(**fields)

  def logits(self, features_BxD: jax.Array) -> jax.Array:
    """Every head's class logits [B, C] (float32) of pooled features, spare columns included."""
    return features_BxD.astype(jnp.float32) @ self.head_kernel_DxC + self.head_bias_C


def _valid(length: int, lengths_B: jax.Array) -> jax.Array:
  """[B, length] masks: the first `lengths_B[b]` slots of example b's prompt are valid."""
  return jnp.arange(length)[None] < lengths_B[:, None]


def bank_prompt(parts: Sequence[PromptParts], shapes: tuple[AttentionShape, ...], embed_dim: int,
                hidden_dim: int, floor: BankPrompt | None = None, spare_rows: int = 0,
                spare_head_columns: int = 0) -> BankPrompt:
  """The BankPrompt for these prompts' parts (`shapes`: every attention kind the backbone has):
  capacities for them plus the spare rows and head columns, and at least `floor`'s."""
  heads = sum(part.num_head_classes for part in parts)
  if (any(part.num_head_classes for part in parts) or bool(floor and floor.head_columns)) and not all(
      part.num_head_classes for part in parts):
    raise ValueError("prompts with a head (P-tuning v2, classifier) and prompts without cannot share a bank: their"
                     " steps score differently; serve them from two banks")
  old_kinds = dict(zip((s.kind for s in floor.prefix_shapes), floor.prefix_length)) if floor else {}
  kinds = [s for s in shapes if s.kind in old_kinds or any(s.kind in part.prefixes for part in parts)]
  prefix_length = tuple(max([old_kinds.get(s.kind, 0)] + [part.prefixes[s.kind][0].shape[1] for part in parts
                                                          if s.kind in part.prefixes]) for s in kinds)
  soft_length = max([floor.soft_length if floor else 0] + [part.soft_length for part in parts])
  rows = grown(len(parts), floor.rows if floor else 0, spare_rows)
  columns = grown(heads, floor.head_columns if floor else 0, spare_head_columns)
  return BankPrompt(
      rows=rows, soft_length=soft_length, embed_dim=embed_dim, prefix_shapes=tuple(kinds),
      prefix_length=prefix_length, hidden_dim=hidden_dim,
      head_columns=columns if heads else 0)


def grown(needed: int, held: int, spare: int) -> int:
  """A table dimension's capacity: what it holds while `needed` fits there, else `needed` plus
  `spare` (spares are added when the table grows, not every time it is rebuilt)."""
  return held if needed <= held else needed + spare


def table_axes(name: str) -> tuple[str | None, ...]:
  """The logical axes of the table `name`, as the prompt methods name theirs: the config's rules
  place the tables (replicated by default; e.g. map prompt_rows or prefix_layers to a mesh axis
  to shard a bank of many long prefixes)."""
  if name == "soft":
    return ("prompt_rows", "prompt", "prompt_embed")
  if name.endswith(("_keys", "_values")):
    return ("prefix_layers", "prompt_rows", "prompt", "prefix_heads", "kv")
  if name == "head_kernel":
    return ("prompt_embed", None)
  if name == "head_bias":
    return (None,)
  return ("prompt_rows",)  # each prompt's prefix lengths


def bank_tables(method: BankPrompt, parts: Sequence[PromptParts]) -> dict[str, np.ndarray]:
  """The BankPrompt's params: every prompt's parts in its row, padded (on the host); unused rows
  have length 0."""
  tables = {}
  r = method.rows
  if method.soft_length:
    soft = np.zeros((r, method.soft_length, method.embed_dim), np.float32)
    for i, part in enumerate(parts):
      if part.soft_length:
        soft[i, : part.soft_length] = part.soft_PxD
    tables.update(soft=soft)
  for s, length in zip(method.prefix_shapes, method.prefix_length, strict=True):
    keys = np.zeros((s.num_layers, r, length, s.num_heads, s.head_dim), np.float32)
    values, lengths = np.zeros_like(keys), np.zeros(r, np.int32)
    for i, part in enumerate(parts):
      if s.kind in part.prefixes:
        k, v = part.prefixes[s.kind]
        keys[:, i, : k.shape[1]], values[:, i, : v.shape[1]], lengths[i] = k, v, k.shape[1]
    tables.update({f"{s.kind}_keys": keys, f"{s.kind}_values": values, f"{s.kind}_lengths": lengths})
  if method.objective:
    kernel = np.zeros((method.hidden_dim, method.head_columns), np.float32)
    bias = np.zeros(method.head_columns, np.float32)
    used = sum(part.num_head_classes for part in parts)
    kernel[:, :used] = np.concatenate([part.head_kernel_DxC for part in parts], axis=1)
    bias[:used] = np.concatenate([part.head_bias_C for part in parts])
    tables.update(head_kernel=kernel, head_bias=bias)
  return tables
