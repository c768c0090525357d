"""Objectives: what the loss and the eval step read off a backbone's output, side by side.

    seq2seq    T5: the verbalizer's text is decoded from the (prompted) encoder states
    causal_lm  decoders: the answer continues the input (or PET's loss over the label words)
    head       a prompt method's own head (P-tuning v2) classifies or tags
    cloze      masked LMs: label words scored at a pattern's [MASK] (PET, LM-BFF; multi_mask.py
               for label words and choices of several tokens)

Each is a module with
    labels(tasks, backbone, config)             what its steps score, bound into them once
    label_targets(task_spec, codec, max_len)    per-task label texts that evaluation passes in
    bind_loss(backbone, method, labels)         -> loss_sum(params, frozen, batch, rng)
    bind_eval(backbone, method, labels, max_decode_len)
                                                -> eval_step(params, frozen, batch, label_targets, label_mask)
A family names its text objective (Family.text_objective); a method with a head trains "head".
A new objective is one module and one entry in OBJECTIVES.
"""

from __future__ import annotations

from typing import Any, Protocol

from jaxprompt.objectives import causal_lm, cloze, head, seq2seq


class Objective(Protocol):
  """What an objective module provides (the modules above satisfy it)."""

  def labels(self, tasks: Any, backbone: Any, config: Any) -> Any: ...

  def label_targets(self, spec: Any, codec: Any, max_target_len: int) -> Any: ...

  def bind_loss(self, backbone: Any, method: Any, labels: Any) -> Any: ...

  def bind_eval(self, backbone: Any, method: Any, labels: Any, max_decode_len: int) -> Any: ...


OBJECTIVES: dict[str, Objective] = {"seq2seq": seq2seq, "causal_lm": causal_lm, "head": head, "cloze": cloze}
