"""Finding a checkpoint's files: a local directory, a single file, or a Hugging Face Hub id.

Hub downloads fetch only the preferred weight format (safetensors, then Flax msgpack, then PyTorch)
plus config.json, and work offline from the local HF cache (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from jaxprompt.weights import tensor_sources

# Weight files in order of preference, with the reader for each.
WEIGHT_FILES = (
    ("model.safetensors.index.json", "safetensors"),
    ("model.safetensors", "safetensors"),
    ("flax_model.msgpack.index.json", "flax_msgpack"),
    ("flax_model.msgpack", "flax_msgpack"),
    ("pytorch_model.bin.index.json", "torch_bin"),
    ("pytorch_model.bin", "torch_bin"),
)
_HUB_PATTERNS = {
    "safetensors": ["*.safetensors", "*.safetensors.index.json"],
    "flax_msgpack": ["*.msgpack", "*.msgpack.index.json"],
    "torch_bin": ["*.bin", "*.bin.index.json"],
}
_OPENERS = {
    "safetensors": tensor_sources.open_safetensors,
    "flax_msgpack": tensor_sources.open_flax_msgpack,
    "torch_bin": tensor_sources.open_torch_bin,
    "t5x_msgpack": tensor_sources.open_flax_msgpack,
}


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
  """The weights file (or shard index) of a checkpoint, its format, and config.json if any."""

  weights: Path
  format: str  # safetensors | flax_msgpack | torch_bin | t5x_msgpack
  config: Path | None

  def open(self) -> tensor_sources.TensorSource:
    return _OPENERS[self.format](self.weights)


def _format_of_file(path: Path) -> str:
  name = path.name
  for filename, fmt in WEIGHT_FILES:
    if name == filename:
      return fmt
  if name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
    return "safetensors"
  if name.endswith(".msgpack") or name.endswith(".msgpack.index.json"):
    return "flax_msgpack"
  if name.endswith(".bin") or name.endswith(".bin.index.json"):
    return "torch_bin"
  return "t5x_msgpack"  # T5X legacy checkpoints are msgpack files named checkpoint[_N]


def _from_directory(directory: Path, what: str) -> CheckpointFiles:
  config = directory / "config.json"
  config = config if config.is_file() else None
  for filename, fmt in WEIGHT_FILES:
    if (directory / filename).is_file():
      return CheckpointFiles(directory / filename, fmt, config)
  if (directory / "checkpoint").is_file():  # a T5X checkpoint_N directory
    return CheckpointFiles(directory / "checkpoint", "t5x_msgpack", config)
  looked_for = ", ".join(name for name, _ in WEIGHT_FILES) + ", checkpoint (T5X)"
  raise FileNotFoundError(f"{what}: no weights found in {directory}; looked for {looked_for}")


def resolve(checkpoint: str | os.PathLike, cache_dir: str | None = None) -> CheckpointFiles:
  """A local directory or file, else a Hugging Face Hub id such as google/flan-t5-xxl."""
  path = Path(checkpoint).expanduser()
  if path.is_dir():
    return _from_directory(path, str(checkpoint))
  if path.is_file():
    config = path.parent / "config.json"
    return CheckpointFiles(path, _format_of_file(path), config if config.is_file() else None)
  if os.path.isabs(str(checkpoint)) or str(checkpoint).startswith(".") or str(checkpoint).count("/") != 1:
    raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} is neither a local path nor a Hub id (org/name)")
  return _download(str(checkpoint), cache_dir)


def _download(repo_id: str, cache_dir: str | None) -> CheckpointFiles:
  """Fetches config.json and the first weight format the repo has."""
  import huggingface_hub

  errors = []
  for fmt, patterns in _HUB_PATTERNS.items():
    try:
      local = huggingface_hub.snapshot_download(
          repo_id, allow_patterns=["config.json", *patterns], cache_dir=cache_dir
      )
    except Exception as e:  # offline without a cached copy, unknown repo, no network, ...
      errors.append(f"{type(e).__name__}: {e}")
      break
    for filename, file_fmt in WEIGHT_FILES:
      if file_fmt == fmt and (Path(local) / filename).is_file():
        config = Path(local) / "config.json"
        return CheckpointFiles(Path(local) / filename, fmt, config if config.is_file() else None)
  raise FileNotFoundError(
      f"could not get weights for {repo_id!r} from the Hugging Face Hub"
      + (f" ({errors[0]})" if errors else " (the repo has no safetensors, msgpack or .bin weights)")
      + "; pass a local directory, or set HF_HUB_OFFLINE=1 with the model in the HF cache"
  )
