"""Few-shot splits: LM-BFF's K-shot sets byte for byte as its script writes them, PET's labeled / unlabeled / test."""

import collections
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxprompt.fewshot.splits import (
    LMBFF_SEEDS, kshot_split, legacy_shuffle_order, pet_split, read_table, row_labels, write_kshot, write_pet,
)
from jaxprompt.tasks.catalog import TASKS
from jaxprompt.tasks.codec import t5_codec
from jaxprompt.tasks.features import featurize
from jaxprompt.tasks.readers import read_records
from jaxprompt.tasks.records import DataError
from jaxprompt.tasks.task_spec import DataSource
from jaxprompt.weights.tokenizer import load_t5_tokenizer

REPO = Path(__file__).resolve().parents[2]


def global_shuffle(items: list, seed: int) -> list:
  """`np.random.seed(seed); np.random.shuffle(items)` as LM-BFF calls it, leaving numpy's global state as it was."""
  state = np.random.get_state()
  try:
    np.random.seed(seed)
    np.random.shuffle(items)
  finally:
    np.random.set_state(state)
  return items


def lmbff_kshot(path: Path, k: int, seed: int, dev_rate: int = 2, label=lambda line: line.strip().split("\t")[-1]):
  """(train, dev) text as BFF:tools/generate_k_shot_data.py writes a GLUE-style tsv with a header row."""
  with open(path) as f:
    lines = f.readlines()
  header, body = lines[:1], global_shuffle(lines[1:], seed)
  groups = {}
  for line in body:
    groups.setdefault(label(line), []).append(line)
  train = "".join(header + [line for rows in groups.values() for line in rows[:k]])
  dev = "".join(header + [line for rows in groups.values() for line in rows[k:k * dev_rate]])
  return train, dev


def write(path: Path, text: str, newline: str | None = None) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", encoding="utf-8", newline=newline) as f:
    f.write(text)
  return path


def tsv_labels(text: str) -> collections.Counter:
  return collections.Counter(line.rsplit("\t", 1)[1] for line in text.splitlines())


def test_legacy_shuffle_order_is_numpy_global_shuffle():
  for n in (1, 2, 17, 1000):
    for seed in LMBFF_SEEDS + (0,):
      assert list(legacy_shuffle_order(n, seed)) == global_shuffle(list(range(n)), seed)


def test_kshot_is_lmbff_script_byte_for_byte_on_sst2(shared_data, tmp_path):
  source = shared_data / "sst2" / "train.tsv"
  folders = write_kshot(str(source), str(tmp_path), "label", k=16, task="SST-2")
  assert [f.relative_to(tmp_path).as_posix() for f in folders] == [f"SST-2/16-{s}" for s in LMBFF_SEEDS]
  trains = set()
  for seed, folder in zip(LMBFF_SEEDS, folders):
    train, dev = (folder / "train.tsv").read_text(), (folder / "dev.tsv").read_text()
    assert (train, dev) == lmbff_kshot(source, 16, seed)
    train_rows, dev_rows = train.splitlines()[1:], dev.splitlines()[1:]
    assert tsv_labels("\n".join(train_rows)) == tsv_labels("\n".join(dev_rows)) == {"0": 16, "1": 16}
    assert not set(train_rows) & set(dev_rows)
    summary = json.loads((folder / "split.json").read_text())
    assert summary["seed"] == seed and summary["source_rows"] == 67349
    assert summary["files"]["dev"] == {"file": "dev.tsv", "rows": 32, "labels": {"0": 16, "1": 16}, "labeled": True,
                                       "columns": ["sentence", "label"]}
    trains.add(train)
  assert len(trains) == len(LMBFF_SEEDS)  # every seed draws another set


def test_kshot_is_deterministic(shared_data, tmp_path):
  source = str(shared_data / "sst2" / "dev.tsv")
  (a,), (b,) = (write_kshot(source, str(tmp_path / run), "label", k=8, seeds=(21,)) for run in ("a", "b"))
  for name in ("train.tsv", "dev.tsv", "split.json"):
    assert (a / name).read_bytes() == (b / name).read_bytes()
  assert a.relative_to(tmp_path / "a").as_posix() == "sst2/8-21"  # the task folder defaults to the input's


def test_kshot_10x_dev(shared_data, tmp_path):
  source = shared_data / "sst2" / "dev.tsv"
  (folder,) = write_kshot(str(source), str(tmp_path), "label", k=4, seeds=(87,), dev_multiplier=10)
  assert (folder / "dev.tsv").read_text() == lmbff_kshot(source, 4, 87, dev_rate=11)[1]
  assert tsv_labels((folder / "dev.tsv").read_text().split("\n", 1)[1]) == {"0": 40, "1": 40}


def test_kshot_regression_scores_are_binned(tmp_path):
  rows = [f"{i}\tpair {i} a\tpair {i} b\t{score:.3f}" for i, score in enumerate(np.linspace(0, 5, 40))]
  source = write(tmp_path / "STS-B" / "train.tsv", "index\tsentence1\tsentence2\tscore\n" + "\n".join(rows) + "\n")
  (folder,) = write_kshot(str(source), str(tmp_path / "out"), "score", k=5, seeds=(13,), threshold=2.5)
  assert ((folder / "train.tsv").read_text(), (folder / "dev.tsv").read_text()) == lmbff_kshot(
      source, 5, 13, label=lambda line: 0 if float(line.strip().split("\t")[-1]) < 2.5 else 1)
  assert json.loads((folder / "split.json").read_text())["files"]["train"]["labels"] == {"<2.5": 5, ">=2.5": 5}


def test_rows_keep_their_bytes(tmp_path):
  """jsonl spacing, CRLF endings, a quoted line break; a last row without a line ending gets the file's."""
  rows = ['{"text": "a",  "label": 1}', '{"label": 0, "text": "b\\u00e9"}', '{"text":"c","label":1}',
          '{"text": "d", "label": 0}']
  jsonl = write(tmp_path / "t" / "train.jsonl", "\n".join(rows))
  (folder,) = write_kshot(str(jsonl), str(tmp_path / "out"), "label", k=1, seeds=(42,))
  written = [(folder / name).read_text() for name in ("train.jsonl", "dev.jsonl")]
  assert all(text.endswith("\n") for text in written) and sorted("".join(written).splitlines()) == sorted(rows)

  tsv = write(tmp_path / "t" / "raw.tsv", 'x\t1\r\n"two\r\nlines"\t0\r\n\r\ny\t1\r\nz\t0', newline="")
  table = read_table(str(tsv), columns=("text", "label"))
  assert [r.text for r in table.rows] == ["x\t1\r\n", '"two\r\nlines"\t0\r\n', "y\t1\r\n", "z\t0"]
  assert table.rows[1].record.fields == {"text": "two\r\nlines", "label": "0"}
  (folder,) = write_kshot(str(tsv), str(tmp_path / "out"), "label", k=1, seeds=(42,), columns=("text", "label"))
  texts = [r.text for r in table.rows[:3]] + ["z\t0\r\n"]
  groups = {}
  for i in global_shuffle(list(range(4)), 42):
    groups.setdefault(row_labels(table, "label")[i], []).append(texts[i])
  for name, position in (("train.tsv", 0), ("dev.tsv", 1)):
    with open(folder / name, encoding="utf-8", newline="") as f:
      assert f.read() == "".join(rows[position] for rows in groups.values())


def test_errors_name_the_line_and_the_label(tmp_path):
  jsonl = write(tmp_path / "a.jsonl", '{"text": "a", "label": 0}\n\n{"text": "b"}\n')
  with pytest.raises(DataError, match=f"{jsonl}:3: no 'label' label"):
    write_kshot(str(jsonl), str(tmp_path / "out"), "label", k=1)
  tsv = write(tmp_path / "b.tsv", "text\tlabel\n" + "a\t0\n" * 9 + "b\t1\n" * 3)
  with pytest.raises(ValueError, match=r"K=2 train \+ 2 dev: label '1' has 3, needs 4"):
    write_kshot(str(tsv), str(tmp_path / "out"), "label", k=2)
  with pytest.raises(DataError, match=f"{tsv}:2: the score 'a' in 'text' is not a number"):
    write_kshot(str(tsv), str(tmp_path / "out"), "text", k=1, threshold=2.5)
  with pytest.raises(ValueError, match="reads .tsv, .csv or .jsonl"):
    read_table(str(write(tmp_path / "c.txt", "a\n")))
  own = write(tmp_path / "test.tsv", tsv.read_text())
  with pytest.raises(ValueError, match="overwrite its own source"):
    write_pet(str(own), str(tmp_path), "label", seed=1, num_labeled=2, num_unlabeled=0)
  with pytest.raises(ValueError, match=r"label '1' has 3, needs 4"):
    write_pet(str(tsv), str(tmp_path / "p"), "label", seed=1, num_labeled=8, num_unlabeled=0)
  with pytest.raises(ValueError, match=r"has 12 rows; 4 labeled \+ 5 unlabeled \+ 4 test need 13"):
    write_pet(str(tsv), str(tmp_path / "p"), "label", seed=1, num_labeled=4, num_unlabeled=5, num_test=4)


@pytest.fixture(scope="module")
def agnews_split(shared_data, tmp_path_factory):
  source = shared_data / "agnews" / "test.tsv"
  out = write_pet(str(source), str(tmp_path_factory.mktemp("pet")), "label", seed=42, num_labeled=10,
                  num_unlabeled=1000, columns=("text", "label"))
  return source, out


def test_pet_split_of_agnews(agnews_split):
  source, out = agnews_split
  lines = source.read_text(encoding="utf-8").splitlines()
  labeled, unlabeled, test = ((out / f"{n}.tsv").read_text(encoding="utf-8").splitlines()
                              for n in ("labeled", "unlabeled", "test"))
  assert (len(labeled), len(unlabeled), len(test)) == (10, 1000, 6590)
  # eq_div(10, 4): the labels seen first in the file (Business, then Sci/Tech) get the extra ones.
  assert tsv_labels("\n".join(labeled)) == {"Business": 3, "Sci/Tech": 3, "World": 2, "Sports": 2}
  assert "\t" not in "".join(unlabeled)
  assert collections.Counter(labeled + test) <= collections.Counter(lines)
  # Each unlabeled row is a source row without its "\t<label>": together the three are the whole file.
  assert collections.Counter([r.rsplit("\t", 1)[0] for r in labeled + test] + unlabeled) == collections.Counter(
      r.rsplit("\t", 1)[0] for r in lines)
  summary = json.loads((out / "split.json").read_text())
  assert summary["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
  assert (summary["seed"], summary["source_rows"], summary["num_test"]) == (42, 7600, None)
  files = summary["files"]
  assert files["unlabeled"]["columns"] == ["text"] and not files["unlabeled"]["labeled"]
  assert files["labeled"]["labels"] == dict(tsv_labels("\n".join(labeled)))
  assert files["test"]["labels"] == dict(tsv_labels("\n".join(test)))
  hidden = tsv_labels("\n".join(lines)) - tsv_labels("\n".join(labeled + test))
  assert files["unlabeled"]["labels"] == dict(hidden) and hidden.total() == 1000


def test_pet_unlabeled_rows_featurize_as_unlabeled(agnews_split, shared_data):
  _, out = agnews_split
  records = read_records(DataSource("tsv", (str(out / "unlabeled.tsv"),), columns=("text",)))
  codec = t5_codec(load_t5_tokenizer(shared_data / "t5_vocab" / "spiece.model"))
  features, stats = featurize(records[:50], TASKS["agnews"], codec, max_input_len=64, max_target_len=8)
  assert stats.unlabeled == stats.kept == 50 and {f.label for f in features} == {-1}


def test_pet_zero_labeled_means_none(shared_data, tmp_path):
  out = write_pet(str(shared_data / "agnews" / "test.tsv"), str(tmp_path), "label", seed=1, num_labeled=0,
                  num_unlabeled=100, num_test=200, columns=("text", "label"))
  assert (out / "labeled.tsv").read_text() == ""
  files = json.loads((out / "split.json").read_text())["files"]
  assert files["labeled"]["labels"] == {"Business": 0, "Sci/Tech": 0, "Sports": 0, "World": 0}
  assert [files[n]["rows"] for n in ("labeled", "unlabeled", "test")] == [0, 100, 200]


def test_pet_unbalanced_takes_the_first_rows_of_the_shuffle(tmp_path):
  rows = [json.dumps({"idx": i, "label": "yes" if i % 5 else "no"}) for i in range(30)]
  source = write(tmp_path / "train.jsonl", "\n".join(rows) + "\n")
  out = write_pet(str(source), str(tmp_path / "out"), "label", seed=7, num_labeled=6, num_unlabeled=4, num_test=5,
                  balanced=False)
  order = global_shuffle(list(range(30)), 7)
  assert (out / "labeled.jsonl").read_text().splitlines() == [rows[i] for i in order[:6]]
  assert [json.loads(r) for r in (out / "unlabeled.jsonl").read_text().splitlines()] == [
      {"idx": i} for i in order[6:10]]
  assert (out / "test.jsonl").read_text().splitlines() == [rows[i] for i in order[10:15]]


def test_pet_split_is_deterministic_per_seed(shared_data):
  table = read_table(str(shared_data / "agnews" / "test.tsv"), columns=("text", "label"))
  labels = row_labels(table, "label")
  a, b, c = (pet_split(labels, seed, 12, 100, 100) for seed in (3, 3, 4))
  assert a == b and a["labeled"] != c["labeled"]
  assert kshot_split(labels, 4, 3) == kshot_split(labels, 4, 3) != kshot_split(labels, 4, 4)


def test_cli(tmp_path):
  source = write(tmp_path / "data" / "train.tsv", "text\tlabel\n" + "".join(f"r{i}\t{i % 2}\n" for i in range(20)))
  run = lambda *flags: subprocess.run([sys.executable, "-m", "jaxprompt.split", f"--input={source}", *flags],
                                      cwd=REPO, capture_output=True, text=True, timeout=120)
  done = run("--protocol=kshot", f"--out={tmp_path / 'k'}", "--k=2", "--seeds=1,2")
  assert done.returncode == 0, done.stderr
  assert done.stdout.split() == [str(tmp_path / "k" / "data" / f"2-{s}" / "split.json") for s in (1, 2)]
  done = run("--protocol=pet", f"--out={tmp_path / 'p'}", "--num_labeled=4", "--num_unlabeled=6", "--nobalanced")
  assert done.returncode == 0, done.stderr
  assert len((tmp_path / "p" / "test.tsv").read_text().splitlines()) == 1 + 10  # the header and the rest
  done = run("--protocol=pet", f"--out={tmp_path / 'q'}", "--k=4")
  assert done.returncode != 0 and "not flags of --protocol=pet: --k" in done.stderr
