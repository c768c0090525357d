"""Compiling the bank's step for every input bucket and batch size before the server takes requests,
so that no client's request waits for XLA: the step's shapes are fixed by the batch's rows (one of
the bank's batch_sizes) and the bucket, so one batch of each size per bucket (filler requests, one
for each prompt whose template reaches it, repeated to fill the rows) compiles them all.

Shapes a task's examples choose themselves (a cloze mask block, COPA's choices) are compiled as the
bank's prompts all together give them; a batch holding only some of those prompts may still compile.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from typing import Any

from jaxprompt.serving.bank import PromptBank
from jaxprompt.serving.http_inputs import input_fields
from jaxprompt.serving.requests import Request, serve
from jaxprompt.serving.soft_slots import added_slots
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks.records import DataError, Record

log = logging.getLogger(__name__)

_MAX_WORDS = 4096  # far past any bucket: the search below stops at the longest input that fits


def warm_up(bank: PromptBank) -> float:
  """Serves one batch of each batch size per input bucket; the seconds it took (logged)."""
  start = time.perf_counter()
  buckets = bank.input_buckets
  by_bucket: dict[int, list[Request]] = {}
  for prompt in bank.prompts:
    slots = added_slots(prompt.parts)  # its soft tokens' slots in each of its rows
    for bucket in buckets:
      filler = _filler(bank, prompt.name, bucket - slots)
      # A bucket narrower than one more word in each field is reached by no filler of this prompt.
      if filler is not None and buckets[bisect.bisect_left(buckets, filler[1] + slots)] == bucket:
        by_bucket.setdefault(bucket, []).append(filler[0])
  for bucket in buckets:
    for rows in bank.batch_sizes if bucket in by_bucket else ():
      serve(bank, list(itertools.islice(itertools.cycle(by_bucket[bucket]), rows)))
  seconds = time.perf_counter() - start
  log.info("warmed up the step for input buckets %s (prompts reaching each: %s) x batch sizes %s in %.1f s",
           sorted(by_bucket), {b: len(r) for b, r in sorted(by_bucket.items())}, bank.batch_sizes, seconds)
  return seconds


def _filler(bank: PromptBank, name: str, length: int) -> tuple[Request, int] | None:
  """A request for prompt `name` with the longest input of at most `length` tokens, and its
  length, found by bisection over the words in each field; None when even one word each is longer
  or the task cannot be filled with plain words."""
  lo, lo_tokens, hi = 0, 0, _MAX_WORDS  # tokens(lo) <= length < tokens(hi); no words: nothing fits yet
  while hi - lo > 1:
    mid = (lo + hi) // 2
    tokens = _input_tokens(bank, name, mid)
    if tokens is None:
      return None
    if tokens <= length:
      lo, lo_tokens = mid, tokens
    else:
      hi = mid
  return (Request(name, _fields(bank, name, lo)), lo_tokens) if lo else None


def _input_tokens(bank: PromptBank, name: str, words: int) -> int | None:
  data = bank.exp.config.data
  spec = bank.prompts[bank.prompt_id(name)].spec
  try:
    _, stats = features_lib.featurize([Record(_fields(bank, name, words), "warm-up")], spec, bank.exp.backbone.codec,
                                      data.max_input_len, data.max_target_len)
  except DataError as e:  # a task whose fields are not plain text (a number, a choice among labels)
    log.warning("no warm-up for prompt %r: %s", name, e)
    return None
  return stats.longest_input


def _fields(bank: PromptBank, name: str, words: int) -> dict[str, Any]:
  spec = bank.prompts[bank.prompt_id(name)].spec
  value: Any = ["a"] * words if spec.token_label_names else " ".join(["a"] * words)
  record: dict[str, Any] = {}
  for path in input_fields(spec):
    *parents, leaf = path.split(".")
    node = record
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return record

