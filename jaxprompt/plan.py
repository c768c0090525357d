"""`python -m jaxprompt.plan --config=configs/t5_xxl_prompt.py --mesh=data:1,fsdp:4,tensor:1`: will
a run fit, before reserving the machines?

Compiles the config's real train step for the target mesh on simulated CPU devices, with abstract
inputs (no weights are read or allocated), and reports per-device memory from XLA's
`memory_analysis()`, the compile time, and the compiled FLOPs (`cost_analysis()`). For prompt tuning
it adds the analytic FLOPs of a step (jaxprompt/flops.py) and, given the devices' peak
(`--peak_tflops`, dense bf16 per device) and an assumed utilisation (`--mfu`, default 0.4), the
seconds per step and hours for `config.num_steps` that a reservation would take. Options that
change memory are ordinary config keys: `--config.model.remat_policy=full`,
`--config.num_microbatches=4`, `--config.batch_size=32`.

Two compilers can plan. By default XLA's CPU compiler, on simulated devices: weights and optimizer
state come out exact, activations roughly — and bf16 weights overstated, since XLA:CPU has no bf16
matmul and converts whole stacked weights to float32 outside the layer loop. With
`--tpu_topology=v5e:2x4` (any TPU slice name: v4:2x2x1, v5p:2x2x1, v6e:4x4, ...) the TPU compiler
itself compiles for that slice's devices, no TPU needed, only libtpu (`pip install 'jax[tpu]'`):
its memory is the TPU's own plan, and `--mesh` must cover the slice's devices.

With `--fit` the planner searches instead of answering for one setting: it plans the step with
each remat policy in turn, from least recomputation to most, then with full remat and 2, 4, ...
microbatches, and stops at the first that fits the devices (`--device_memory_gib`; for a TPU
compiler, by default the usable HBM it states). The report lists every setting tried.
`--largest_batch` keeps the config's remat and microbatches and finds the largest global batch
that fits, doubling then bisecting.

Every backbone family is planned. The backbone's config is read without its weights: a local
checkpoint's config.json (or GGUF metadata, or T5X shapes); for T5 given as a Hub id, the preset of
`model.size` (T5 configs name the published checkpoint of their size); for other families, the Hub
checkpoint's config; with no checkpoint, the `model.size` preset.
"""

from __future__ import annotations

import math
import os
import sys

MESH_AXES = ("data", "fsdp", "tensor")


def parse_mesh(text: str) -> dict[str, int]:
  """'data:1,fsdp:4,tensor:1' -> {"data": 1, "fsdp": 4, "tensor": 1}; every size explicit."""
  sizes = {}
  for item in filter(None, text.split(",")):
    name, _, size = item.partition(":")
    if name not in MESH_AXES or not size.isdigit() or int(size) < 1:
      raise ValueError(f"--mesh={text!r}: expected comma-separated axis:size with axes from {MESH_AXES}")
    sizes[name] = int(size)
  return {name: sizes.get(name, 1) for name in MESH_AXES}


def _mesh_argument(argv: list[str]) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith("--mesh="):
      return arg.split("=", 1)[1]
    if arg == "--mesh" and i + 1 < len(argv):
      return argv[i + 1]
  return "data:1,fsdp:1,tensor:1"


if __name__ == "__main__":
  # The simulated devices must exist before JAX starts, so the mesh is read ahead of absl's flags.
  _devices = math.prod(parse_mesh(_mesh_argument(sys.argv)).values())
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={_devices}"
  os.environ["JAX_PLATFORMS"] = "cpu"

import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxprompt import experiment  # noqa: E402
from jaxprompt import sharding as sharding_lib  # noqa: E402
from jaxprompt.backbones import Backbone, abstract_backbone  # noqa: E402
from jaxprompt.models.layers import REMAT_BY_RECOMPUTATION  # noqa: E402
from jaxprompt.optimizers import make_optimizer  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py[:args]).")
_MESH = flags.DEFINE_string("mesh", "data:1,fsdp:1,tensor:1", "Target mesh, e.g. data:1,fsdp:4,tensor:1.")
_DEVICE_MEMORY_GIB = flags.DEFINE_float("device_memory_gib", 0.0, "Per-device memory, to say whether it fits.")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0, "Per-device dense bf16 peak, e.g. 197 (v5e), 275 (v4), 989 (H100).")
_MFU = flags.DEFINE_float("mfu", 0.4, "Assumed model FLOPs utilisation, for the time estimate.")
_TPU_TOPOLOGY = flags.DEFINE_string(
    "tpu_topology", "", "Compile with the TPU compiler for this slice, e.g. v4:2x2x1 or v5e:2x4 (needs libtpu).")
_FIT = flags.DEFINE_bool("fit", False, "Search remat policies, then microbatches, for the first setting that fits.")
_LARGEST_BATCH = flags.DEFINE_bool(
    "largest_batch", False, "Search for the largest global batch that fits with the config's remat and microbatches.")

GIB = 2.0**30


def abstract_experiment(config: ml_collections.ConfigDict, mesh) -> experiment.Experiment:
  """The run's Experiment with a backbone of abstract, sharded weights (nothing allocated)."""
  backbone = abstract_backbone(config.model, mesh, tuple(config.rules))
  tasks = experiment.tasks_from_config(config)
  prompt = config.prompt.copy_and_resolve_references()
  prompt.init = "uniform"  # the vocabulary-based inits read weights the planner does not have
  method = experiment.make_method(prompt, backbone, tasks)
  optimizer, schedule = make_optimizer(config.optimizer, config.num_steps)
  backbone, chosen = experiment.split_trainable(backbone, config.model.trainable)
  # Only shapes: the planner needs what the state will hold, never the pretrained weights themselves.
  return experiment.Experiment(config, mesh, backbone, tasks, method, optimizer, schedule, {},
                               experiment.trained_shapes(chosen))


def abstract_batch(config: ml_collections.ConfigDict, sharding: NamedSharding) -> dict[str, jax.ShapeDtypeStruct]:
  """A training batch's shapes at the longest input bucket (the pipeline's batch keys)."""
  b, length, targets = config.batch_size, config.data.max_input_len, config.data.max_target_len
  shapes = {
      "inputs": ((b, length), jnp.int32), "input_mask": ((b, length), jnp.bool_),
      "targets": ((b, targets), jnp.int32), "target_mask": ((b, targets), jnp.bool_),
      "label": ((b,), jnp.int32), "group": ((b,), jnp.int32), "example_mask": ((b,), jnp.bool_),
      "soft_positions": ((b, length), jnp.int32), "task_id": ((b,), jnp.int32),
      "token_labels": ((b, length), jnp.int32), "token_types": ((b, length), jnp.int32),
      "mask_positions": ((b, 1), jnp.int32), "candidates": ((b, 1, 1), jnp.int32),
      "candidate_mask": ((b, 1, 1), jnp.bool_), "score": ((b,), jnp.float32),
      "teacher_logits": ((b, 1), jnp.float32),
  }
  if config.cloze.mlm_alpha:  # PET's unlabeled batch beside each labelled one
    u = config.data.unlabeled_batch_size or b
    shapes.update({"unlabeled_inputs": ((u, length), jnp.int32), "unlabeled_input_mask": ((u, length), jnp.bool_),
                   "unlabeled_token_types": ((u, length), jnp.int32)})
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for k, (shape, dtype) in shapes.items()}


# HBM a TPU device can use, in GiB, as libtpu 0.0.42.1 states it when it refuses a step for memory
# ("... exceeds available HBM (15.75G)"). Its check covers only the step's temporaries, so a step
# it accepts may still not fit beside the weights: the planner compares the whole peak to these.
TPU_USABLE_HBM_GIB = {"TPU v3": 15.48, "TPU v4": 30.75, "TPU v5 lite": 15.75, "TPU v5": 95.74, "TPU v6 lite": 31.25}


def usable_memory_gib(devices: list[jax.Device] | None, given_gib: float) -> float:
  """The per-device memory a plan must fit: `given_gib` (--device_memory_gib), else a known TPU's
  usable HBM; 0.0 (no judgement) for simulated devices or a TPU not in the table."""
  if given_gib or not devices:
    return given_gib
  return TPU_USABLE_HBM_GIB.get(devices[0].device_kind, 0.0)


def tpu_devices(topology: str) -> list[jax.Device]:
  """Compile-only devices of a TPU slice (libtpu's compiler, no TPU attached)."""
  from jax.experimental import topologies  # noqa: PLC0415 - only this path needs libtpu

  # TPU VMs run each v4 chip's two cores as one device; libtpu's default would make two of 16 GiB.
  options = {"chip_config_name": "megacore"} if topology.startswith("v4") else {}
  chips = topology.partition(":")[2].split("x")
  if all(c == "1" for c in chips):  # one chip (v5e:1x1): libtpu's default host is 2x2 chips
    options["chips_per_host_bounds"] = (1, 1, 1)
  try:
    return list(topologies.get_topology_desc(topology_name=topology, platform="tpu", **options).devices)
  except Exception as error:  # noqa: BLE001 - missing libtpu and bad names both land here
    raise ValueError(
        f"--tpu_topology={topology!r}: no TPU compiler for it ({error}). Install libtpu (pip install 'jax[tpu]')"
        " and name a slice as <version>:<chips per axis>, e.g. v4:2x2x1, v5e:2x4, v5p:2x2x1, v6e:4x4."
    ) from error


def plan(config: ml_collections.ConfigDict, mesh_sizes: dict[str, int], devices: list[jax.Device] | None = None) -> dict:
  """Compiles the train step for `mesh_sizes` (over `devices`, default all) and reports its memory,
  compile time and FLOPs."""
  mesh = sharding_lib.make_mesh(mesh_sizes, devices)
  exp = abstract_experiment(config, mesh)
  state, train_step = exp.abstract_state, exp.train_step()
  batch = abstract_batch(config, exp.batch_sharding)
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=NamedSharding(mesh, P()))
  shard_bytes = lambda tree: sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))
  frozen_bytes = shard_bytes(exp.frozen)
  device = mesh.devices.flat[0]
  report = {
      "model": _model_name(config.model), "mesh": dict(mesh.shape), "devices": mesh.size,
      "compiled_for": device.device_kind if device.platform == "tpu" else "simulated CPU devices (XLA:CPU)",
      "batch_size": config.batch_size, "num_microbatches": config.num_microbatches,
      "tokens": f"{config.prompt.length}+{config.data.max_input_len}/{config.data.max_target_len}",
      "remat_policy": config.model.remat_policy, "param_dtype": config.model.param_dtype,
      "quantization": config.model.quantization,
      "frozen_weights_gib_per_device": round(frozen_bytes / GIB, 3),
      # Fine-tuned backbone weights: float32 masters, sharded like the weights, as are their gradients and moments.
      "trained_backbone_weights": len(exp.trainable_paths),
      "trained_masters_gib_per_device": round(shard_bytes(exp.trained_shapes) / GIB, 3),
      "optimizer_state_gib_per_device": round(shard_bytes(state.opt_state) / GIB, 3),
      "analytic_gflops_per_step": analytic_gflops(config, exp.backbone),
  }
  with sharding_lib.activate(exp.mesh, exp.rules):
    start = time.perf_counter()
    try:
      compiled = train_step.lower(state, exp.frozen, batch, rng).compile()
    except jax.errors.JaxRuntimeError as error:
      if "RESOURCE_EXHAUSTED" not in str(error):
        raise
      # The TPU compiler knows its device's memory and refuses a step that cannot fit: say so.
      return {**report, "fits": False, "compiler_error": str(error).splitlines()[0]}
    compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  arguments, temporaries = memory.argument_size_in_bytes, memory.temp_size_in_bytes
  outputs, aliased = memory.output_size_in_bytes, memory.alias_size_in_bytes
  return {
      **report,
      "arguments_gib_per_device": round(arguments / GIB, 3),
      "temporaries_gib_per_device": round(temporaries / GIB, 3),
      # Donated state is both an argument and an output: count it once.
      "peak_gib_per_device": round((arguments + outputs - aliased + temporaries) / GIB, 3),
      "compile_s": round(compile_s, 1),
      "compiled_gflops_per_device": round(float(cost.get("flops", 0.0)) / 1e9, 3),
  }


def judge_fit(report: dict, device_memory_gib: float) -> dict:
  """Adds whether the planned peak fits `device_memory_gib` (when given and the step compiled)."""
  if device_memory_gib and "peak_gib_per_device" in report:
    report["device_memory_gib"] = device_memory_gib
    report["fits"] = report["peak_gib_per_device"] <= device_memory_gib
  return report


def fit_candidates(config: ml_collections.ConfigDict, mesh_sizes: dict[str, int]) -> list[tuple[str, int]]:
  """(remat policy, microbatches) to try, cheapest step first: every policy whole-batch, then full
  remat with 2, 4, ... microbatches while each microbatch still has rows for every batch shard."""
  candidates = [(policy, 1) for policy in REMAT_BY_RECOMPUTATION]
  batch_shards = mesh_sizes["data"] * mesh_sizes["fsdp"]
  microbatches = 2
  while config.batch_size % (microbatches * batch_shards) == 0:
    candidates.append(("full", microbatches))
    microbatches *= 2
  return candidates


class _Search:
  """Plans variants of one config for one mesh, judging each against the device, and keeps a
  summary of every variant tried (what a search prints beside its answer)."""

  def __init__(self, config: ml_collections.ConfigDict, mesh_sizes: dict[str, int],
               devices: list[jax.Device] | None, device_memory_gib: float, flag: str):
    device_memory_gib = usable_memory_gib(devices, device_memory_gib)
    if not device_memory_gib:
      unknown = f" (no usable HBM is known for {devices[0].device_kind!r})" if devices else " or --tpu_topology"
      raise ValueError(f"{flag} needs --device_memory_gib, the per-device memory to fit{unknown}")
    self.config, self.mesh_sizes, self.devices, self.device_memory_gib = config, mesh_sizes, devices, device_memory_gib
    self.tried = []

  def plan(self, remat_policy: str, num_microbatches: int, batch_size: int) -> dict:
    variant = self.config.copy_and_resolve_references()
    variant.model.remat_policy, variant.num_microbatches, variant.batch_size = remat_policy, num_microbatches, batch_size
    report = judge_fit(plan(variant, self.mesh_sizes, self.devices), self.device_memory_gib)
    keys = ("remat_policy", "num_microbatches", "batch_size", "peak_gib_per_device", "fits", "compile_s",
            "compiler_error")
    self.tried.append({key: report[key] for key in keys if key in report})
    return report

  def weights_alone_exceed(self, report: dict) -> str | None:
    """Why nothing smaller can fit, when the weights and optimizer state alone exceed the device."""
    if report.get("arguments_gib_per_device", 0.0) > self.device_memory_gib:
      return ("the weights and optimizer state alone exceed the device: "
              f"{report['arguments_gib_per_device']} > {self.device_memory_gib} GiB; shard over more devices")
    return None


def fit(config: ml_collections.ConfigDict, mesh_sizes: dict[str, int], devices: list[jax.Device] | None = None,
        device_memory_gib: float = 0.0) -> dict:
  """Plans `fit_candidates` in order until one fits (peak <= the device's memory, and for a TPU
  compiler, accepted by it): the first that fits is `chosen` (None if none does), and `tried`
  summarises each plan."""
  search = _Search(config, mesh_sizes, devices, device_memory_gib, "--fit")
  for policy, microbatches in fit_candidates(config, mesh_sizes):
    report = search.plan(policy, microbatches, config.batch_size)
    if report["fits"]:
      return {"chosen": report, "tried": search.tried}
    if why := search.weights_alone_exceed(report):
      return {"chosen": None, "tried": search.tried, "why": why}
  return {"chosen": None, "tried": search.tried, "why": "not even full remat with the most microbatches fits"}


def largest_batch(config: ml_collections.ConfigDict, mesh_sizes: dict[str, int],
                  devices: list[jax.Device] | None = None, device_memory_gib: float = 0.0, limit: int = 8192) -> dict:
  """The largest global batch that fits with the config's remat policy and microbatches: doubles
  from `config.batch_size` while it fits (up to `limit`), then bisects, in steps that keep a row
  of every microbatch on every batch shard. `chosen` is its plan (None if not even one step fits)."""
  search = _Search(config, mesh_sizes, devices, device_memory_gib, "--largest_batch")
  step = mesh_sizes["data"] * mesh_sizes["fsdp"] * config.num_microbatches
  reports = {}

  def fits(units: int) -> bool:
    report = search.plan(config.model.remat_policy, config.num_microbatches, units * step)
    reports[units] = report
    return report["fits"]

  fitting, failing = 0, None  # in units of `step`: the largest known to fit, the smallest known not to
  units = max(1, config.batch_size // step)
  while failing is None and units * step <= limit:
    if fits(units):
      fitting, units = units, units * 2
    else:
      failing = units
  while failing is not None and failing - fitting > 1:
    middle = (fitting + failing) // 2
    if fits(middle):
      fitting = middle
    else:
      failing = middle
  result = {"largest_batch": fitting * step or None, "chosen": reports.get(fitting), "tried": search.tried}
  if failing is None:
    result["why"] = f"still fits at the search's limit of {limit}"
  elif not fitting:
    result["why"] = search.weights_alone_exceed(reports[failing]) or f"not even a batch of {step} fits"
  return result


def analytic_gflops(config: ml_collections.ConfigDict, backbone: Backbone) -> float | None:
  """Matmul GFLOPs of one prompt-tuning step (P soft tokens in the input); None for other methods
  and for families without an analytic count."""
  if config.prompt.method != "prompt_tuning":
    return None
  flops = backbone.family.step_flops(backbone.config, config.batch_size, config.prompt.length,
                                     config.data.max_input_len, config.data.max_target_len)
  return None if flops is None else round(flops.prompt_step / 1e9, 3)


def _model_name(model: ml_collections.ConfigDict) -> str:
  return f"{model.family}:{model.checkpoint}" if model.checkpoint else f"{model.family}-{model.size}"


def time_estimate(report: dict, num_steps: int, peak_tflops: float, mfu: float) -> dict:
  """Seconds per step, and hours (and device-hours, what a reservation is billed by) for the run
  on the planned devices at `mfu` of their peak."""
  seconds = report["analytic_gflops_per_step"] / 1e3 / (report["devices"] * peak_tflops * mfu)
  hours = seconds * num_steps / 3600
  return {"peak_tflops_per_device": peak_tflops, "assumed_mfu": mfu, "step_s": round(seconds, 3),
          "hours_for_num_steps": round(hours, 2), "device_hours_for_num_steps": round(hours * report["devices"], 1)}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  devices = tpu_devices(_TPU_TOPOLOGY.value) if _TPU_TOPOLOGY.value else None
  mesh_sizes = parse_mesh(_MESH.value)
  if _FIT.value and _LARGEST_BATCH.value:
    raise app.UsageError("--fit and --largest_batch are separate searches: give one")
  if _FIT.value or _LARGEST_BATCH.value:
    search = fit if _FIT.value else largest_batch
    output = search(_CONFIG.value, mesh_sizes, devices, _DEVICE_MEMORY_GIB.value)
    report = output["chosen"]
  else:
    memory_gib = usable_memory_gib(devices, _DEVICE_MEMORY_GIB.value)
    output = report = judge_fit(plan(_CONFIG.value, mesh_sizes, devices), memory_gib)
  if report and _PEAK_TFLOPS.value and report.get("analytic_gflops_per_step"):
    report.update(time_estimate(report, _CONFIG.value.num_steps, _PEAK_TFLOPS.value, _MFU.value))
  print(json.dumps(output, indent=2))


if __name__ == "__main__":
  app.run(main)
