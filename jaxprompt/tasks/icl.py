"""GPT-3-style in-context learning: k labelled training examples, rendered with the task's template
and verbalizer, written before each input (Brown et al. 2020). A template's pseudo tokens belong to
the prompt of the example itself, so demonstrations are rendered without them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxprompt.tasks.features import label_index
from jaxprompt.tasks.readers import flatten_multirc
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import TaskSpec
from jaxprompt.tasks.templates import Template, text_without_pseudo_tokens


class Demonstrations:
  """A pool of rendered demonstrations ("<input><answer>") and a seeded draw of k per example."""

  def __init__(self, pool: Sequence[Record], spec: TaskSpec, k: int, seed: int, separator: str = "\n\n"):
    if spec.token_label_names:
      raise ValueError(f"Task {spec.name!r} labels tokens: it has no text answers to demonstrate")
    if spec.pattern:
      raise ValueError(f"Task {spec.name!r} has a cloze pattern: its demonstrations are config.demonstrations"
                       " (LM-BFF's, one per class), not config.icl's")
    if spec.flatten == "multirc":
      pool = flatten_multirc(pool)
    template = Template(spec.template)
    answer = Template(spec.target_template) if spec.target_template is not None else None
    self.rendered: list[str] = []
    for record in pool:
      try:
        if answer is not None:
          text = answer.render(record.fields, record.where)
        else:
          raw = record.fields.get(spec.label_field)
          if raw is None:
            continue  # unlabelled records cannot demonstrate an answer
          text = spec.verbalizer[label_index(raw, spec, record.where)]
        pieces = template.fill_pieces(template.values(record.fields, record.where))
        self.rendered.append(text_without_pseudo_tokens(pieces) + text)
      except DataError:
        continue  # a record that cannot be rendered is not a demonstration
    if len(self.rendered) < k:
      raise ValueError(f"{k}-shot prompts need {k} labelled training examples; the pool has {len(self.rendered)}")
    self.k, self.seed, self.separator = k, seed, separator

  def draw(self, index: int) -> list[int]:
    """The pool positions of example `index`'s demonstrations: seeded by (seed, index), no repeats."""
    rng = np.random.default_rng([self.seed, index])
    return [int(i) for i in rng.choice(len(self.rendered), self.k, replace=False)]

  def text_before(self, index: int) -> str:
    """The demonstrations of example `index`, each followed by the separator."""
    return "".join(self.rendered[i] + self.separator for i in self.draw(index))
