"""Local jsonl / tsv / csv files read into records that know their file:line; bad files fail loudly."""

import json

import pytest

from jaxprompt.tasks.readers import flatten_multirc, read_records
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import DataSource


def write(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_jsonl_files_concatenate_with_1_based_lines(tmp_path):
  rows = [json.dumps({"x": "é", "n": 1}), "", json.dumps({"x": "b", "t": {"s": True}}), ""]
  a = write(tmp_path / "a.jsonl", "\n".join(rows))
  b = write(tmp_path / "b.jsonl", json.dumps({"x": "c"}))  # no final newline
  records = read_records(DataSource("jsonl", (a, b)))
  assert [r.fields for r in records] == [{"x": "é", "n": 1}, {"x": "b", "t": {"s": True}}, {"x": "c"}]
  assert [r.where for r in records] == [f"{a}:1", f"{a}:3", f"{b}:1"]


def test_malformed_json_names_file_and_line(tmp_path):
  path = write(tmp_path / "bad.jsonl", '{"x": 1}\n{"x": 2,}\n')
  with pytest.raises(DataError, match=f"{path}:2: malformed JSON"):
    read_records(DataSource("jsonl", (path,)))
  path = write(tmp_path / "list.jsonl", '{"x": 1}\n[1, 2]\n')
  with pytest.raises(DataError, match=f"{path}:2: expected a JSON object"):
    read_records(DataSource("jsonl", (path,)))


def test_missing_file_is_named(tmp_path):
  present = write(tmp_path / "a.jsonl", "{}\n")
  missing = str(tmp_path / "nope.jsonl")
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    read_records(DataSource("jsonl", (present, missing)))


def test_tsv_with_header_and_quoted_fields(tmp_path):
  path = write(tmp_path / "d.tsv", 'sentence\tlabel\nit \'s fine . \t1\n"say ""hi""\tthere"\t0\n\nlast\t1\n')
  records = read_records(DataSource("tsv", (path,)))
  assert [r.fields for r in records] == [
      {"sentence": "it 's fine . ", "label": "1"},
      {"sentence": 'say "hi"\tthere', "label": "0"},
      {"sentence": "last", "label": "1"},
  ]
  assert [r.where for r in records] == [f"{path}:2", f"{path}:3", f"{path}:5"]


def test_csv_with_columns_and_multiline_field(tmp_path):
  path = write(tmp_path / "d.csv", 'a,"two\nlines"\nb,c\n')
  records = read_records(DataSource("csv", (path,), columns=("text", "label")))
  assert [r.fields for r in records] == [{"text": "a", "label": "two\nlines"}, {"text": "b", "label": "c"}]
  assert [r.where for r in records] == [f"{path}:1", f"{path}:3"]  # the second row starts on line 3


def test_wrong_column_count_names_file_and_line(tmp_path):
  path = write(tmp_path / "d.tsv", "sentence\tlabel\ngood\t1\nno label here\n")
  with pytest.raises(DataError, match=f"{path}:3: expected 2 columns"):
    read_records(DataSource("tsv", (path,)))
  path = write(tmp_path / "e.tsv", "text\tlabel\textra\n")
  with pytest.raises(DataError, match=f"{path}:1: expected 2 columns"):
    read_records(DataSource("tsv", (path,), columns=("text", "label")))


def test_duplicate_header_is_an_error(tmp_path):
  path = write(tmp_path / "d.csv", "a,a\n1,2\n")
  with pytest.raises(DataError, match=f"{path}:1: duplicate column names"):
    read_records(DataSource("csv", (path,)))


def test_flatten_multirc_groups_questions_across_files(tmp_path):
  passage = {"text": "Tom ran.", "questions": [
      {"question": "Who?", "idx": 0, "answers": [{"text": "Tom", "idx": 0, "label": 1}, {"text": "Ann", "idx": 1}]},
      {"question": "What?", "idx": 1, "answers": [{"text": "ran", "idx": 2, "label": 1}]},
  ]}
  # Two files that reuse the same ids: their questions are still different groups.
  paths = [write(tmp_path / f"{name}.jsonl", json.dumps({"idx": 0, "passage": passage}) + "\n") for name in "ab"]
  flat = flatten_multirc(read_records(DataSource("jsonl", tuple(paths))))
  assert [(r.fields["answer"], r.fields["group"], r.fields.get("label")) for r in flat] == [
      ("Tom", 0, 1), ("Ann", 0, None), ("ran", 1, 1), ("Tom", 2, 1), ("Ann", 2, None), ("ran", 3, 1)
  ]
  assert flat[1].where == f"{paths[0]}:1 (question 0, answer 1)"
  assert flatten_multirc(flat) == flat


def test_flatten_multirc_rejects_other_records():
  with pytest.raises(DataError, match="x:3: not a MultiRC record"):
    flatten_multirc([Record({"premise": "p"}, "x:3")])
  with pytest.raises(DataError, match=r"x:4 \(question 0\): a question must be an object with an 'answers' list"):
    flatten_multirc([Record({"passage": {"text": "t", "questions": [{"question": "q"}]}}, "x:4")])
