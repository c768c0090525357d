"""A prompt bank described in one JSON file, as `python -m jaxprompt.infer --bank` and
`python -m jaxprompt.serve --bank` read it:

    {
      "backbone": "configs/smollm_sst2_prompt.py:data=local",
      "overrides": {"model.checkpoint": "/models/SmolLM2-135M-Instruct.Q4_1.gguf"},
      "prompts": [
        {"name": "sst2-seed0", "path": "runs/sst2-seed0"},
        {"name": "rte", "config": "configs/p_tuning.py:task=rte", "overrides": {"prompt.length": 20},
         "path": "runs/rte/prompts/best.npz"}
      ]
    }

`backbone` is a config file with its argument, as `--config` takes it (relative to the working
directory): its model, mesh and rules make the bank's backbone, and its data lengths, buckets,
eval_batch_size and max_decode_len the serving limits. Each prompt names its run (`path`: a
workdir, a checkpoint directory or an export, relative to this file's folder) and the config it
was trained with (`config`; default: the backbone's). `overrides` are dotted config keys with JSON
values; the top-level ones apply to every config (they usually say where the weights are), a
prompt's own after them. An optional "ensembles" list names prompt ensembles a server serves like
prompts: `{"name": "sst2", "members": ["sst2-seed0", "sst2-seed1", ...], "reduction": "vote"}`
(or "mean"; serving/ensemble.py).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import ml_collections

from jaxprompt.serving.bank import PromptBank, load_bank
from jaxprompt.serving.ensemble import REDUCTIONS, Ensemble
from jaxprompt.serving.loading import PromptSource


class BankFileError(ValueError):
  """A bank file that cannot be read: the message names the file and the entry."""


def load_bank_file(path: str) -> PromptBank:
  """The bank the file at `path` describes, its prompts loaded and checked against the backbone."""
  config, sources = read_bank_file(path)
  return load_bank(config, sources)


def read_bank_file(path: str) -> tuple[ml_collections.ConfigDict, list[PromptSource]]:
  """The backbone's config and the prompts' sources of the bank file at `path` (nothing loaded)."""
  file = Path(path)
  try:
    spec = json.loads(file.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise BankFileError(f"{file}:{e.lineno}:{e.colno}: not JSON: {e.msg}") from None
  if not isinstance(spec, dict) or not isinstance(spec.get("backbone"), str):
    raise BankFileError(f'{file}: needs an object with "backbone": "<config file>[:<argument>]"')
  shared = _overrides(spec, file, "overrides")
  config = config_with_overrides(spec["backbone"], shared, f"{file}: backbone")
  prompts = spec.get("prompts")
  if not isinstance(prompts, list) or not prompts:
    raise BankFileError(f'{file}: "prompts" must be a non-empty list')
  sources = []
  for i, entry in enumerate(prompts):
    where = f"prompts[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("path"), str):
      raise BankFileError(f'{file}: {where} needs "name" and "path" strings, got {entry!r:.200}')
    own = {**shared, **_overrides(entry, file, f"{where}.overrides")}
    prompt_config = config_with_overrides(entry.get("config", spec["backbone"]), own, f"{file}: {where}.config")
    sources.append(PromptSource(entry["name"], prompt_config, str(file.parent / entry["path"])))
  return config, sources


def read_ensembles(path: str) -> list[Ensemble]:
  """The ensembles the bank file at `path` names (none without an "ensembles" list)."""
  file = Path(path)
  entries = json.loads(file.read_text(encoding="utf-8")).get("ensembles", [])
  if not isinstance(entries, list):
    raise BankFileError(f'{file}: "ensembles" must be a list')
  ensembles = []
  for i, entry in enumerate(entries):
    members = entry.get("members") if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(members, list) or len(
        members) < 2 or not all(isinstance(m, str) for m in members):
      raise BankFileError(f'{file}: ensembles[{i}] needs "name" and "members" (two or more prompt names), got'
                          f" {entry!r:.200}")
    reduction = entry.get("reduction", "vote")
    if reduction not in REDUCTIONS:
      raise BankFileError(f"{file}: ensembles[{i}].reduction {reduction!r} is not one of {REDUCTIONS}")
    ensembles.append(Ensemble(entry["name"], tuple(members), reduction))
  return ensembles


def _overrides(entry: dict, file: Path, where: str) -> dict[str, Any]:
  overrides = entry.get("overrides", {})
  if not isinstance(overrides, dict):
    raise BankFileError(f"{file}: {where} must be an object of dotted config keys, got {overrides!r:.200}")
  return overrides


def config_from_file(name: str) -> ml_collections.ConfigDict:
  """`path/config.py[:argument]`'s get_config(argument), as --config reads it (ml_collections keeps
  its file loader private to its flags)."""
  path, _, argument = name.partition(":")
  spec = importlib.util.spec_from_file_location(Path(path).stem, path)
  if spec is None or not Path(path).is_file():
    raise FileNotFoundError(f"no config file {path!r}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(argument) if argument else module.get_config()


def config_with_overrides(name: str, overrides: dict[str, Any], where: str) -> ml_collections.ConfigDict:
  """The config file `name` (`path[:argument]`) with dotted-key `overrides` (JSON values) set;
  errors begin with `where` (the file and entry, or the HTTP request, that gave them)."""
  try:
    config = config_from_file(name)
  except Exception as e:  # the config file's own error (a bad argument, a missing file)
    raise BankFileError(f"{where} {name!r}: {e}") from e
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise BankFileError(f"{where}: override {key!r}: the config has no section {part!r}")
      node = node[part]
    if leaf not in node:
      raise BankFileError(f"{where}: override {key!r}: the config has no key {leaf!r}")
    try:
      node[leaf] = tuple(value) if isinstance(value, list) else value  # JSON lists are config tuples
    except (TypeError, ValueError) as e:
      raise BankFileError(f"{where}: override {key!r}={value!r}: {e}") from None
  return config
