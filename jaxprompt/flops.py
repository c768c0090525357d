"""Analytic FLOPs of a T5 prompt-tuning step, for MFU and for sizing a reservation.

Counts the matmuls (2 FLOPs per multiply-add); norms, softmaxes and activations are a few percent
at real widths and are left out, as in the usual MFU accounting. The encoder sees P soft tokens
followed by L input tokens; the decoder T target tokens (teacher forcing).

A prompt-tuning step is the forward pass plus the activation gradients on the path back to the
prompt: each frozen projection y = x W needs dx = dy W^T (the same FLOPs as its forward) and no
dW; an attention matmul of two activations needs the gradient of whichever operand depends on the
prompt. In the decoder's first layer the self-attention and the cross-attention queries do not
depend on the prompt, so they need no backward at all. A full fine-tuning step adds dW = x^T dy for
every projection and differentiates every attention operand.
"""

from __future__ import annotations

import dataclasses

from jaxprompt.models.t5_config import T5Config


@dataclasses.dataclass(frozen=True)
class StepFlops:
  """FLOPs of one step over a whole batch."""

  forward: float
  prompt_backward: float  # activation gradients back to the soft prompt
  all_weights_backward: float  # activation and weight gradients for every weight

  @property
  def prompt_step(self) -> float:
    return self.forward + self.prompt_backward

  @property
  def all_weights_step(self) -> float:
    return self.forward + self.all_weights_backward


def t5_prompt_tuning_flops(
    config: T5Config, batch: int, prompt_len: int, input_len: int, target_len: int
) -> StepFlops:
  """Matmul FLOPs of a T5 step on `batch` examples of P + L encoder and T decoder tokens."""
  c = config
  inner = c.num_heads * c.d_kv
  enc_tokens = batch * (prompt_len + input_len)
  dec_tokens = batch * target_len
  enc_len = prompt_len + input_len

  projection = 2 * c.d_model * inner  # one of q, k, v, o, per token
  mlp = 2 * c.d_model * c.d_ff * (3 if c.is_gated else 2)  # per token
  enc_attention = 2 * 2 * enc_len * inner  # scores and weighted values, per encoder query token
  self_attention = 2 * 2 * target_len * inner  # per decoder query token
  cross_attention = 2 * 2 * enc_len * inner  # per decoder query token
  logits = 2 * c.d_model * c.vocab_size  # per decoder token

  enc_layer_proj = enc_tokens * (4 * projection + mlp)
  enc_layer_attn = enc_tokens * enc_attention
  # Decoder: self-attention q,k,v,o; cross-attention q,o on decoder tokens and k,v on encoder tokens.
  dec_self_proj = dec_tokens * 4 * projection
  dec_cross_q_o = dec_tokens * 2 * projection
  dec_cross_k_v = enc_tokens * 2 * projection
  dec_mlp = dec_tokens * mlp
  dec_self_attn = dec_tokens * self_attention
  dec_cross_attn = dec_tokens * cross_attention
  dec_layer_proj = dec_self_proj + dec_cross_q_o + dec_cross_k_v + dec_mlp
  dec_layer_attn = dec_self_attn + dec_cross_attn
  head = dec_tokens * logits

  enc_layers, dec_layers = c.num_encoder_layers, c.num_decoder_layers
  forward = enc_layers * (enc_layer_proj + enc_layer_attn) + dec_layers * (dec_layer_proj + dec_layer_attn) + head

  # Prompt-only backward. Every encoder layer: dx of each projection, both operands of attention.
  prompt_enc = enc_layers * (enc_layer_proj + 2 * enc_layer_attn)
  # Decoder layers after the first: everything depends on the prompt (through cross-attention).
  later_dec = (dec_layers - 1) * (dec_layer_proj + 2 * dec_layer_attn)
  # The first decoder layer: no self-attention backward; cross-attention needs dk, dv and the
  # output projection but not dq (scores: only the key operand; weighted values: both).
  first_dec = dec_cross_k_v + dec_tokens * projection + dec_mlp + dec_cross_attn * 3 / 2
  prompt_backward = prompt_enc + later_dec + first_dec + head
  # Full fine-tuning: dx and dW of every projection, both operands of every attention matmul.
  all_weights_backward = 2 * forward
  return StepFlops(float(forward), float(prompt_backward), float(all_weights_backward))
