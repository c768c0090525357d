"""P-tuning v1 (Liu et al. 2021, "GPT Understands, Too"): pseudo-token embeddings produced by a
prompt encoder and placed at the template's [P0] [P1] ... markers, between its anchor words.

The encoder is P-tuning's: a 2-layer bidirectional LSTM over P trainable embeddings, then a
Linear-ReLU-Linear head (or the MLP alone). It couples the pseudo tokens, which trains better than
independent embeddings. For serving, `export` collapses it into the P embeddings it produces.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprompt.models.prompt import Prompt
from jaxprompt.prompts.soft_prompt import SoftPrompt, placed_prompt

ENCODERS = ("lstm", "mlp")


class PromptEncoder(nn.Module):
  """P trainable embeddings -> (BiLSTM ->) MLP -> P pseudo-token embeddings of the model's width."""

  length: int
  embed_dim: int
  encoder: str = "lstm"
  hidden: int = 0  # MLP width; 0: the model's width

  def __post_init__(self):
    if self.encoder not in ENCODERS:
      raise ValueError(f"prompt encoder {self.encoder!r} is not one of {ENCODERS}")
    super().__post_init__()

  def __call__(self, batch: dict[str, jax.Array]) -> Prompt:
    return placed_prompt(self.pseudo_tokens(), "markers", batch)

  @nn.compact
  def pseudo_tokens(self) -> jax.Array:
    """The [P, D] pseudo-token embeddings."""
    d = self.embed_dim
    init = nn.with_logical_partitioning(nn.initializers.normal(1.0), ("prompt", "prompt_embed"))
    x_1xPxD = self.param("embedding", init, (self.length, d), jnp.float32)[None]
    if self.encoder == "lstm":
      for i in range(2):  # two bidirectional layers, d/2 per direction: the output is d wide again
        rnn = lambda direction: nn.RNN(nn.OptimizedLSTMCell(d // 2, name=f"lstm_{i}_{direction}"))
        x_1xPxD = nn.Bidirectional(rnn("forward"), rnn("backward"), name=f"lstm_{i}")(x_1xPxD)
    hidden = self.hidden or d
    x_1xPxD = nn.Dense(d, name="mlp_out")(nn.relu(nn.Dense(hidden, name="mlp_in")(x_1xPxD)))
    return x_1xPxD[0]

  def export(self, params: dict) -> dict[str, np.ndarray]:
    """The pseudo-token embeddings the encoder produces: what serving needs."""
    tokens = _pseudo_tokens(self, params)
    return {"embeddings": np.asarray(tokens, np.float32)}

  def collapsed(self) -> SoftPrompt:
    """A plain soft prompt at the markers, whose params are the export."""
    return SoftPrompt(self.length, self.embed_dim, nn.initializers.zeros, "markers", parent=None)

  def params_from_export(self, arrays: dict[str, np.ndarray]) -> dict:
    return self.collapsed().params_from_export(arrays)


@functools.partial(jax.jit, static_argnums=0)  # modules hash by their fields: one compile per encoder shape
def _pseudo_tokens(encoder: PromptEncoder, params: dict) -> jax.Array:
  return encoder.apply({"params": params}, method=PromptEncoder.pseudo_tokens)
