"""One example as read from data, where it came from, and the error for bad data."""

from __future__ import annotations

import dataclasses
from typing import Any


class DataError(ValueError):
  """Data that does not fit the task: the message names the file:line (or TFDS element) and the problem."""


@dataclasses.dataclass(frozen=True)
class Record:
  """The fields of one example and its origin: "<file>:<line>" (1-based) or "<tfds_name>/<split>[<i>]"."""

  fields: dict[str, Any]
  where: str
