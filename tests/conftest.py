"""Test set-up: 8 fake CPU devices (before JAX starts) and the shared real-data folder."""

import os
import tempfile

# Must happen before jax initialises its backends: sharding tests run on a simulated 8-device host.
# The test models are tiny, so compiling dominates: low CPU backend optimisation cuts the suite's
# time by ~40% without changing float semantics (XLA's CPU backend does not use fast-math).
os.environ["XLA_FLAGS"] = " ".join([
    os.environ.get("XLA_FLAGS", ""),
    "--xla_force_host_platform_device_count=8",
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Many tests compile the same tiny programs (a train step, an eval step) in fresh jits, and some in
# fresh processes (the CLI tests): XLA's persistent cache turns the repeats into cache hits. One
# folder per test run, shared by its pytest-xdist workers and their subprocesses (environment
# variables, which JAX reads at start-up), so no entry outlives the run's code.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
os.environ["JAX_COMPILATION_CACHE_DIR"] = (
    os.path.join(tempfile.gettempdir(), f"jaxprompt-tests-xla-cache-{_RUN}") if _RUN else tempfile.mkdtemp()
)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(
    os.environ.get("JAXPROMPT_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
  """../shared/data: real files nobody here wrote. Missing data is an error, never a skip."""
  if not SHARED_DATA.is_dir():
    raise FileNotFoundError(f"shared test data not found at {SHARED_DATA}; set JAXPROMPT_SHARED_DATA")
  return SHARED_DATA
