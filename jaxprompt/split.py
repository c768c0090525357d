"""`python -m jaxprompt.split --protocol=kshot|pet --input=FILE --out=DIR`: few-shot data splits of one file.

kshot: LM-BFF's K-shot protocol, one train / dev pair per seed in DIR/<task>/<K>-<seed>/.
pet: PET's labeled / unlabeled (labels removed) / test files in DIR/.
Rows keep the input's format and bytes; each folder's split.json records the source's sha256, the
seed and the sizes. The library is jaxprompt.fewshot.splits.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from jaxprompt.fewshot import splits

_PROTOCOL = flags.DEFINE_enum("protocol", None, ["kshot", "pet"], "LM-BFF's K-shot sets, or PET's three-way split.")
_INPUT = flags.DEFINE_string("input", None, "A labelled .tsv, .csv or .jsonl file (e.g. a task's training set).")
_OUT = flags.DEFINE_string("out", None, "Where the split folders go.")
_LABEL_COLUMN = flags.DEFINE_string("label_column", "label", "The column (jsonl: field) holding the label.")
_COLUMNS = flags.DEFINE_list("columns", [], "A header-less tsv/csv's column names (text,label); none: row 1 has them.")
_THRESHOLD = flags.DEFINE_float("regression_threshold", None,
                                "Bin a regression score at this value to balance labels (LM-BFF's STS-B: 2.5).")
# kshot only
_TASK = flags.DEFINE_string("task", None, "kshot: the folder under --out; default: the input's folder name.")
_K = flags.DEFINE_integer("k", 16, "kshot: training examples per label.")
_SEEDS = flags.DEFINE_list("seeds", [str(s) for s in splits.LMBFF_SEEDS], "kshot: one split per seed.")
_DEV_MULTIPLIER = flags.DEFINE_integer("dev_multiplier", 1, "kshot: dev examples per label in units of K (10x: 10).")
# pet only
_SEED = flags.DEFINE_integer("seed", 42, "pet: the shuffle's seed (PET's default).")
_NUM_LABELED = flags.DEFINE_integer("num_labeled", None, "pet: labeled examples; 0 means none.")
_NUM_UNLABELED = flags.DEFINE_integer("num_unlabeled", 0, "pet: unlabeled examples, written without their labels.")
_NUM_TEST = flags.DEFINE_integer("num_test", None, "pet: test examples; unset: all the rest.")
_BALANCED = flags.DEFINE_bool("balanced", True, "pet: labeled examples split evenly across labels (PET v1.1).")

_ONLY_FOR = {"kshot": (_TASK, _K, _SEEDS, _DEV_MULTIPLIER),
             "pet": (_SEED, _NUM_LABELED, _NUM_UNLABELED, _NUM_TEST, _BALANCED)}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for name in ("protocol", "input", "out"):
    if flags.FLAGS[name].value is None:
      raise app.UsageError(f"--{name} is required")
  # A flag of the other protocol would be silently ignored: say so instead.
  stray = [f"--{h.name}" for protocol, holders in _ONLY_FOR.items() if protocol != _PROTOCOL.value
           for h in holders if h.present]
  if stray:
    raise app.UsageError(f"not flags of --protocol={_PROTOCOL.value}: {', '.join(stray)}")
  common = {"label_column": _LABEL_COLUMN.value, "threshold": _THRESHOLD.value, "columns": _COLUMNS.value}
  if _PROTOCOL.value == "kshot":
    try:
      seeds = [int(s) for s in _SEEDS.value]
    except ValueError:
      raise app.UsageError(f"--seeds takes whole numbers, got {_SEEDS.value}") from None
    folders = splits.write_kshot(_INPUT.value, _OUT.value, k=_K.value, seeds=seeds,
                                 dev_multiplier=_DEV_MULTIPLIER.value, task=_TASK.value, **common)
  else:
    if _NUM_LABELED.value is None:
      raise app.UsageError("--num_labeled is required for --protocol=pet (0 means no labeled examples)")
    folders = [splits.write_pet(_INPUT.value, _OUT.value, seed=_SEED.value, num_labeled=_NUM_LABELED.value,
                                num_unlabeled=_NUM_UNLABELED.value, num_test=_NUM_TEST.value, balanced=_BALANCED.value,
                                **common)]
  for folder in folders:
    print(folder / "split.json")


if __name__ == "__main__":
  app.run(main)
