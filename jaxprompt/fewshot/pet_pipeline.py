"""PET and iPET (Schick & Schütze 2021) as one resumable pipeline of ordinary runs in one workdir.

    workdir/g<g>/p<i>-r<j>/     member (pattern i, repetition j) of generation g: a training run
                                (checkpoints/ until it is done when it trains backbone weights:
                                finished_runs.py; metrics), then member.json, unlabeled_scores.npy and
                                test_scores.npy; train.jsonl for g >= 1 (the labelled set and the
                                examples its peers labelled, iPET)
    workdir/final/distill.jsonl the unlabeled records with the ensemble's scores (teacher_logits)
    workdir/final/classifier/   the final sequence classifier's run, distilled with KL · T²
    workdir/report.md, report.json

Each member trains whatever the config trains (the whole MLM as in the paper, or a prompt on the
frozen backbone), from the pretrained weights, with its own seed derived from (generation,
pattern, repetition). Before training, its accuracy on its training set with the bare pattern (no
prompt, pretrained weights) is its weight in the ensemble (PET's train_set_before_training);
after it, its scores of the unlabeled and test sets are saved. A member is done when its
member.json exists: re-running the command skips finished members, resumes a member's training
from its last checkpoint, and rebuilds anything derived (iPET sets, the distillation file), which
is deterministic. Zero labelled examples means none: the generation-0 members are then the bare
patterns, scoring without training (zero-shot iPET).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from etils import epath

from jaxprompt import evaluation, experiment
from jaxprompt import sharding as sharding_lib
from jaxprompt.fewshot import finished_runs, ipet, merge, report
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks import metrics as metrics_lib
from jaxprompt.tasks import readers, task_spec
from jaxprompt.tasks.cloze_presets import PET_PATTERNS
from jaxprompt.tasks.records import Record
from jaxprompt.training import train_and_evaluate

log = logging.getLogger(__name__)
TEACHER_FIELD = "teacher_logits"
_FINAL_SEED_PATH = 1_000_000  # the classifier's seed path, apart from every (generation, pattern, repetition)


@dataclasses.dataclass(frozen=True)
class Member:
  """One model of the ensemble: pattern `pattern` (an index into the pipeline's patterns), repetition
  `repetition`, generation `generation` (0: PET; 1, 2, ...: iPET)."""

  generation: int
  pattern: int
  repetition: int

  @property
  def name(self) -> str:
    return f"p{self.pattern}-r{self.repetition}"

  def workdir(self, root: epath.Path) -> epath.Path:
    return root / f"g{self.generation}" / self.name


def derived_seed(seed: int, *path: int) -> int:
  """A seed of its own for each (generation, pattern, repetition): PET's one stream shared by every
  member shifts whenever a member is skipped or reordered (pet#48); this does not."""
  return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0] % 2**31)


def pattern_specs(config: ml_collections.ConfigDict) -> list[task_spec.TaskSpec]:
  """The ensemble's patterns: PET's presets config.pet.pattern_ids of config.pet.task, or
  config.pet.patterns, pattern texts of your own for config.task's labels and words (when
  config.task is empty: those of the first preset, e.g. patterns that end at the mask for a decoder)."""
  pet = config.pet
  if pet.patterns:
    base = task_spec.task_spec_from_config(config.task) if config.task.keys() else _preset_specs(config)[0]
    return [dataclasses.replace(base, name=f"{pet.task}_own{i}", pattern=text) for i, text in enumerate(pet.patterns)]
  return _preset_specs(config)


def _preset_specs(config: ml_collections.ConfigDict) -> list[task_spec.TaskSpec]:
  pet = config.pet
  missing = [i for i in pet.pattern_ids if (pet.task, i) not in PET_PATTERNS]
  if missing or not pet.pattern_ids:
    raise ValueError(f"config.pet.pattern_ids={tuple(pet.pattern_ids)}: PET has no pattern {missing} of"
                     f" config.pet.task={pet.task!r}; it has {sorted(i for t, i in PET_PATTERNS if t == pet.task)}")
  specs = []
  for i in pet.pattern_ids:
    spec = PET_PATTERNS[pet.task, i].task_spec(f"{pet.task}_p{i}")
    specs.append(dataclasses.replace(spec, **_overrides(config.task, spec)))
  return specs


def _overrides(task: ml_collections.ConfigDict, spec: task_spec.TaskSpec) -> dict[str, Any]:
  """config.task's fields that re-map the preset's data (label_field, label_names, ...), if set."""
  allowed = {"label_field", "label_names", "metric", "pattern_fields"}
  given = {k: v for k, v in task.items() if k in allowed and v}
  return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in given.items() if getattr(spec, k) != v}


def _jsonl_source(path: epath.Path) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(kind="jsonl", files=(str(path),), columns=(), tfds_name="", split="",
                                        data_dir=""))


def _run_config(config: ml_collections.ConfigDict, spec: task_spec.TaskSpec, seed: int,
                train: ml_collections.ConfigDict, eval_: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """One training run of the pipeline: the config without its pipeline section."""
  run = ml_collections.ConfigDict({k: v for k, v in config.to_dict().items() if k != "pet"})
  run.task = ml_collections.ConfigDict(vars(spec))
  run.seed = seed
  run.data.train, run.data.eval = train, eval_
  run.data.max_eval_examples = 0
  run.eval_every = run.num_steps  # the run evaluates once, at its end: the pipeline scores the test set itself
  return run


def _write_jsonl(path: epath.Path, rows: Sequence[dict]) -> None:
  """Written whole, then renamed: a killed pipeline never leaves half a file that looks finished."""
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.parent / (path.name + ".partial")
  partial.write_text("".join(json.dumps(readers.to_python(row)) + "\n" for row in rows), encoding="utf-8")
  partial.rename(path)


def _write_json(path: epath.Path, value: Any) -> None:
  partial = path.parent / (path.name + ".partial")
  partial.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n", encoding="utf-8")
  partial.rename(path)


@dataclasses.dataclass
class Pipeline:
  """Runs (or resumes) the whole pipeline of `config` in `workdir`."""

  config: ml_collections.ConfigDict
  workdir: epath.Path

  def __post_init__(self):
    pet = self.config.pet
    if pet.reduction not in merge.REDUCTIONS:
      raise ValueError(f"config.pet.reduction={pet.reduction!r} is not one of {merge.REDUCTIONS}")
    if pet.generations < 1 or pet.repetitions < 1:
      raise ValueError(f"config.pet.generations ({pet.generations}) and repetitions ({pet.repetitions}) must be >= 1")
    self.specs = pattern_specs(self.config)
    if any(spec.flatten for spec in self.specs):
      raise ValueError("the PET pipeline scores one record per example; a flattened task (MultiRC) does not fit it")
    self.labeled = readers.read_records(task_spec.data_source_from_config(pet.labeled)) if pet.num_labeled else []
    self.labeled = self.labeled[: pet.num_labeled] if pet.num_labeled > 0 else self.labeled
    self.unlabeled = readers.read_records(task_spec.data_source_from_config(pet.unlabeled))
    self.num_classes = self.specs[0].num_classes

  def members(self, generation: int) -> list[Member]:
    return [Member(generation, p, r) for p in range(len(self.specs)) for r in range(self.config.pet.repetitions)]

  def run(self) -> dict[str, Any]:
    for generation in range(self.config.pet.generations):
      for member in self.members(generation):
        if not (member.workdir(self.workdir) / "member.json").exists():
          self.run_member(member)
    final = self.distil()
    return report.write(self.workdir, self.specs, self.member_results(), final)

  # -- members

  def member_train_records(self, member: Member) -> list[Record]:
    """Generation 0: the labelled set; later ones add what the previous generation labelled (iPET)."""
    if member.generation == 0:
      return self.labeled
    path = member.workdir(self.workdir) / "train.jsonl"
    if not path.exists():
      rows = [r.fields for r in self.labeled] + self.peer_labelled_rows(member)
      _write_jsonl(path, rows)
    return readers.read_records(task_spec.data_source_from_config(_jsonl_source(path)))

  def peer_labelled_rows(self, member: Member) -> list[dict]:
    """iPET: unlabeled records with the hard labels a random share of the other members gave them."""
    pet, spec = self.config.pet, self.specs[member.pattern]
    rng = np.random.default_rng(derived_seed(self.config.seed, member.generation, member.pattern, member.repetition))
    previous = {m.name: m for m in self.members(member.generation - 1)}
    labellers = ipet.pick_labellers([n for n in previous if n != member.name], pet.labeller_fraction, rng)
    results = [self.member_result(previous[n]) for n in labellers]
    scores = [np.load(str(previous[n].workdir(self.workdir) / "unlabeled_scores.npy")) for n in labellers]
    probs = ipet.labelled_by_peers(scores, [r["weight"] for r in results], pet.reduction)
    labels = [features_lib.label_index(r.fields.get(spec.label_field), spec, r.where) for r in self.labeled]
    total = ipet.total_examples(len(self.labeled), member.generation, pet.scale_factor)
    quotas = ipet.label_quotas(labels, self.num_classes, total - len(self.labeled))
    n_most_likely = pet.n_most_likely if member.generation == 1 and not self.labeled else 0
    unlabeled = self.scored_unlabeled(previous[labellers[0]])
    picked, picked_labels = ipet.sample_examples(probs, quotas, rng, n_most_likely)
    return [{**unlabeled[i].fields, spec.label_field: spec.label_names[y]} for i, y in zip(picked, picked_labels)]

  def scored_unlabeled(self, member: Member) -> list[Record]:
    """The unlabeled records the member's scores are rows of (those its pattern could render)."""
    positions = json.loads((member.workdir(self.workdir) / "member.json").read_text())["unlabeled_positions"]
    return [self.unlabeled[i] for i in positions]

  def run_member(self, member: Member) -> None:
    spec, directory = self.specs[member.pattern], member.workdir(self.workdir)
    seed = derived_seed(self.config.seed, member.generation, member.pattern, member.repetition)
    records = self.member_train_records(member)
    directory.mkdir(parents=True, exist_ok=True)
    train_path = directory / "train.jsonl"
    if records and not train_path.exists():
      _write_jsonl(train_path, [r.fields for r in records])
    run = _run_config(self.config, spec, seed, _jsonl_source(train_path), _jsonl_source(train_path))
    exp = experiment.build(run if records else _bare(run, self.config.pet.test))  # the backbone, loaded once
    if records:
      log.info("PET member %s/%s: training on %d examples", f"g{member.generation}", member.name, len(records))
      train_and_evaluate(run, str(directory), beside=exp)
    with sharding_lib.activate(exp.mesh, exp.rules):
      bare_step, bare_weights = exp.eval_step_of(None), exp.merged(exp.pretrained)
      before = None
      if records:
        train_features = self.features(exp, spec, records)[0]
        before = self.accuracy(bare_step, {}, bare_weights, train_features, spec, exp)
        latest = max(int(p.name) for p in (directory / "checkpoints").iterdir() if p.name.isdigit())
        method, params, trained, _ = evaluation.load_prompt_params(exp, str(directory / "checkpoints" / str(latest)))
        step, weights = exp.eval_step_of(method), exp.merged(trained)
      else:  # zero-shot: the bare pattern
        step, params, weights = bare_step, {}, bare_weights
      unlabeled_features, positions = self.features(exp, spec, self.unlabeled)
      test_records = readers.read_records(task_spec.data_source_from_config(self.config.pet.test))
      test_features = self.features(exp, spec, test_records)[0]
      unlabeled_scores = evaluation.class_scores(step, params, weights, unlabeled_features, spec, exp)
      test_scores = evaluation.class_scores(step, params, weights, test_features, spec, exp)
    np.save(str(directory / "unlabeled_scores.npy"), unlabeled_scores)
    np.save(str(directory / "test_scores.npy"), test_scores)
    test = _metrics(spec, test_scores, test_features)
    _write_json(directory / "member.json", {
        "generation": member.generation, "pattern": spec.pattern, "repetition": member.repetition, "seed": seed,
        "train_examples": len(records), "train_accuracy_before": before, "weight": before or 0.0, "test": test,
        "test_labels": [f.label for f in test_features], "unlabeled_positions": positions,
    })
    finished_runs.prune(directory, run.model.trainable, self.config.pet.keep_run_checkpoints)
    log.info("PET member g%d/%s: before %s, test %s", member.generation, member.name, before, test)

  def features(self, exp: experiment.Experiment, spec: task_spec.TaskSpec,
               records: Sequence[Record]) -> tuple[list[features_lib.Feature], list[int]]:
    """(features, the position of each one's record): records the pattern cannot render are left
    out with config.data.skip_bad_examples, and an error otherwise."""
    data = exp.config.data
    feats, stats = features_lib.featurize(records, spec, exp.backbone.codec, data.max_input_len, data.max_target_len,
                                          data.skip_bad_examples, None, exp.config.cloze.multi_token)
    if not feats:
      raise ValueError(f"pattern {spec.pattern!r} rendered none of {len(records)} records ({stats.summary()})")
    return feats, [f.group for f in feats]

  @staticmethod
  def accuracy(step, params, weights, feats, spec, exp) -> float:
    scores = evaluation.class_scores(step, params, weights, feats, spec, exp)
    return _metrics(spec, scores, feats)["accuracy"]

  def member_result(self, member: Member) -> dict[str, Any]:
    return json.loads((member.workdir(self.workdir) / "member.json").read_text())

  def member_results(self) -> dict[Member, dict[str, Any]]:
    return {m: self.member_result(m) for g in range(self.config.pet.generations) for m in self.members(g)}

  # -- the ensemble and the final classifier

  def distil(self) -> dict[str, Any]:
    """Merges the last generation's scores into soft labels and trains the final classifier on them."""
    pet, spec = self.config.pet, self.specs[0]
    last = self.members(pet.generations - 1)
    results = [self.member_result(m) for m in last]
    weights = [r["weight"] for r in results]
    positions = {tuple(r["unlabeled_positions"]) for r in results}
    if len(positions) != 1:
      raise ValueError("the patterns rendered different unlabeled records, so their scores cannot be merged: fix the"
                       " records they skip (config.data.skip_bad_examples)")
    load = lambda m, name: np.load(str(m.workdir(self.workdir) / name))
    teacher = merge.merge_scores([load(m, "unlabeled_scores.npy") for m in last], weights, pet.reduction)
    ensemble_test = merge.merge_scores([load(m, "test_scores.npy") for m in last], weights, pet.reduction)
    final = self.workdir / "final"
    distill_path = final / "distill.jsonl"
    if not distill_path.exists():
      records = self.scored_unlabeled(last[0])
      _write_jsonl(distill_path, [{**r.fields, TEACHER_FIELD: list(map(float, s))} for r, s in zip(records, teacher)])
    classifier = self.classifier_config(_jsonl_source(distill_path))
    train_and_evaluate(classifier, str(final / "classifier"))
    distilled = evaluation.evaluate_prompt(classifier, str(final / "classifier"))
    test_labels = np.asarray(results[0]["test_labels"])
    ensemble = metrics_lib.task_metrics(spec.metric, ensemble_test.argmax(-1), test_labels, np.arange(len(test_labels)))
    return {"ensemble": ensemble, "distilled": {k.removeprefix("eval/"): v for k, v in distilled.items()},
            "weights": dict(zip((m.name for m in last), weights))}

  def classifier_config(self, train: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The final sequence classifier: the members' backbone with a head, on the soft labels."""
    pet, spec = self.config.pet, self.specs[0]
    head = pet.classifier
    classifier_spec = task_spec.TaskSpec(
        name=f"{spec.name}_classifier", template=head.template, label_names=spec.label_names,
        verbalizer=spec.label_names, label_field=spec.label_field, metric=spec.metric, teacher_field=TEACHER_FIELD)
    run = _run_config(self.config, classifier_spec, derived_seed(self.config.seed, _FINAL_SEED_PATH), train,
                      pet.test)
    run.prompt.method, run.model.trainable = head.method, head.trainable
    run.num_steps, run.batch_size, run.eval_every = head.num_steps, head.batch_size, head.num_steps
    run.optimizer.learning_rate = head.learning_rate
    run.checkpoint_every = min(run.checkpoint_every, head.num_steps)
    return run


def _bare(run: ml_collections.ConfigDict, test: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A zero-shot member's run: no prompt, no trained weights, and the test set as its (unused) data."""
  run = run.copy_and_resolve_references()
  run.prompt.method, run.model.trainable = "none", "none"
  run.data.train = run.data.eval = test
  return run


def _metrics(spec: task_spec.TaskSpec, scores_NxC: np.ndarray, feats: Sequence[features_lib.Feature]) -> dict:
  labels, groups = (np.asarray([getattr(f, key) for f in feats]) for key in ("label", "group"))
  return metrics_lib.task_metrics(spec.metric, scores_NxC.argmax(-1), labels, groups)
