"""CoNLL token files read into one record per sentence that knows the file:line of its first token."""

import pytest

from jaxprompt.tasks.readers import read_records
from jaxprompt.tasks.records import DataError
from jaxprompt.tasks.task_spec import DataSource

# CoNLL-2003's layout: token, POS, chunk, NER tag; documents start with -DOCSTART-.
CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def write(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_sentences_with_first_token_lines(tmp_path):
  path = write(tmp_path / "train.txt", CONLL2003)
  records = read_records(DataSource("conll", (path,)))
  assert [r.fields for r in records] == [
      {"tokens": ["EU", "rejects", "German", "lamb", "."], "tags": ["B-ORG", "O", "B-MISC", "O", "O"]},
      {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]},
      {"tokens": ["BRUSSELS"], "tags": ["B-LOC"]},
  ]
  assert [r.where for r in records] == [f"{path}:3", f"{path}:9", f"{path}:14"]


def test_tabs_extra_blank_lines_crlf_and_files_concatenate(tmp_path):
  # Two columns, tab-separated (WNUT-style), Windows line ends, runs of blank (or blank-looking) lines,
  # no final newline, and a -DOCSTART- that ends a sentence without a blank line.
  a = write(
      tmp_path / "a.conll", "\n\nNew\tB-LOC\r\nYork\tI-LOC\r\n \t\r\n\r\nno-break\u00a0space\tO\n-DOCSTART-\tO\nx\tO"
  )
  b = write(tmp_path / "b.conll", "only  O\n")
  records = read_records(DataSource("conll", (a, b)))
  assert [r.fields["tokens"] for r in records] == [["New", "York"], ["no-break\u00a0space"], ["x"], ["only"]]
  assert [r.fields["tags"] for r in records] == [["B-LOC", "I-LOC"], ["O"], ["O"], ["O"]]
  assert [r.where for r in records] == [f"{a}:3", f"{a}:7", f"{a}:9", f"{b}:1"]


def test_untagged_sentences_and_mixed_columns(tmp_path):
  path = write(tmp_path / "test.txt", "EU\nrejects\n\nPeter B-PER\n")
  records = read_records(DataSource("conll", (path,)))
  assert [r.fields for r in records] == [{"tokens": ["EU", "rejects"]}, {"tokens": ["Peter"], "tags": ["B-PER"]}]
  path = write(tmp_path / "bad.txt", "EU B-ORG\n\nPeter B-PER\nBlackburn\nsaid O\n")
  with pytest.raises(DataError, match=f"{path}:4: the token 'Blackburn' has no tag column"):
    read_records(DataSource("conll", (path,)))
