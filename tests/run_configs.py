"""The real run configs, shrunk for tests: tiny T5, the real T5 vocabulary, the real data files."""

from __future__ import annotations

from pathlib import Path

import ml_collections

from configs import t5_prompt
from tests.conftest import SHARED_DATA

SUPERGLUE_DIRS = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "rte": "RTE", "wic": "WiC", "wsc": "WSC", "multirc": "MultiRC"}


def tiny_config(task: str = "sst2", **overrides) -> ml_collections.ConfigDict:
  """configs/t5_prompt.py:size=tiny with absolute data paths and small eval sets."""
  config = t5_prompt.get_config(f"size=tiny,task={task},data=local")
  config.model.tokenizer = str(SHARED_DATA / "t5_vocab" / "spiece.model")
  if task == "sst2":
    small_sst2_files(config)
  else:
    folder = SHARED_DATA / "superglue" / SUPERGLUE_DIRS[task]
    config.data.train.files = (str(folder / "train32.jsonl"),)
    config.data.eval.files = (str(folder / "dev32.jsonl"),)
  config.data.max_eval_examples = 16
  config.num_steps = 6
  config.eval_every = 6
  config.checkpoint_every = 3
  config.mesh.data = 2
  config.mesh.fsdp = 4
  return apply_overrides(config, **overrides)


def small_sst2_files(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """SST-2's 872-row dev set trains and its test set evaluates: fast to read."""
  config.data.train.files = (str(SHARED_DATA / "sst2" / "dev.tsv"),)
  config.data.eval.files = (str(SHARED_DATA / "sst2" / "test.tsv"),)
  return config


def localized(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config with its ../shared/data/... files (relative to the repo root) made absolute."""
  prefix = "../shared/data/"
  sources = [config.data.train, config.data.eval] + [e[s] for e in config.mixture.values() for s in ("train", "eval")]
  for source in sources:
    source.files = tuple(str(SHARED_DATA / f[len(prefix):]) if f.startswith(prefix) else f for f in source.files)
  return config


def apply_overrides(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """Sets dotted keys, e.g. apply_overrides(config, **{"prompt.length": 4})."""
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def cli_overrides(config: ml_collections.ConfigDict, keys: list[str]) -> list[str]:
  """--config.<key>=<value> flags that reproduce `keys` of `config` on the command line."""
  flags = []
  for key in keys:
    value = config
    for part in key.split("."):
      value = value[part]
    if isinstance(value, tuple):
      value = "(" + ",".join(repr(str(v)) for v in value) + ("," if len(value) == 1 else "") + ")"
    flags.append(f"--config.{key}={value}")
  return flags


def workdir_files(workdir: Path) -> list[Path]:
  return sorted(p for p in workdir.rglob("*") if p.is_file())
