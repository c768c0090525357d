"""Templates fill slots from nested records and fail loudly, naming field, template and place."""

import pytest

from jaxprompt.tasks.records import DataError
from jaxprompt.tasks.templates import Template, text_without_pseudo_tokens


def test_render_fields_and_dotted_paths():
  template = Template("wsc text: {text} span1: {target.span1_text} n={n}")
  record = {"text": "He left.", "target": {"span1_text": "He"}, "n": 3}
  assert template.render(record, "x.jsonl:1") == "wsc text: He left. span1: He n=3"
  assert template.fields == ("text", "target.span1_text", "n")


def test_literal_braces():
  template = Template("{{literal}} {a} }}{{")
  assert template.render({"a": "x"}, "w") == "{literal} x }{"
  assert template.fields == ("a",)


@pytest.mark.parametrize("text", ["a {b", "a } b", "{a}}", "{{a}", "{}", "{a b}", "{a:>10}", "{a!r}", "{a..b}"])
def test_bad_templates_fail_at_construction(text):
  with pytest.raises(ValueError, match="template"):
    Template(text)


def test_missing_field_names_field_template_and_where():
  template = Template("rte sentence1: {premise} sentence2: {hypothesis}")
  with pytest.raises(DataError) as e:
    template.render({"premise": "p"}, "dev.jsonl:17")
  message = str(e.value)
  assert "dev.jsonl:17" in message and "'hypothesis'" in message and template.text in message
  assert "['premise']" in message  # what the record does have


def test_missing_nested_field_and_null_and_non_text():
  template = Template("{target.span1_text}")
  with pytest.raises(DataError, match=r"f:2: missing field 'target.span1_text'.*target has fields \['span2_text'\]"):
    template.render({"target": {"span2_text": "x"}}, "f:2")
  with pytest.raises(DataError, match=r"f:3: missing field 'target.span1_text'.*target has str"):
    template.render({"target": "flat"}, "f:3")
  with pytest.raises(DataError, match="f:4: field 'target.span1_text'.*is null"):
    template.render({"target": {"span1_text": None}}, "f:4")
  with pytest.raises(DataError, match="f:5: field 'a'.*is a list, not text"):
    Template("{a}").render({"a": [1, 2]}, "f:5")


def test_values_are_trimmed_so_template_spacing_is_not_doubled():
  # GLUE SST-2 sentences end with a space; the rendered prompt must not read "journey .  Sentiment".
  template = Template("Review: {sentence} Sentiment:")
  assert template.render({"sentence": " it 's a journey . "}, "dev.tsv:2") == "Review: it 's a journey . Sentiment:"


def test_pseudo_tokens_split_the_filled_template():
  template = Template("[P0][P1] {premise} ? [P2] {hypothesis}")
  assert template.pseudo_tokens == (0, 1, 2) and template.fields == ("premise", "hypothesis")
  assert template.fill_pieces(["It rained.", "It was wet."]) == [0, 1, " It rained. ? ", 2, " It was wet."]
  # The markers stay literal text where a whole string is rendered.
  assert template.fill(["a", "b"]) == "[P0][P1] a ? [P2] b"
  # Pseudo tokens come from the template only: a field cannot inject one.
  assert Template("{a} [P0]").fill_pieces(["see [P0] or [P1]"]) == ["see [P0] or [P1] ", 0]
  # Numbered in any order of appearance; adjacent text (a slot between literals) stays one piece.
  assert Template("{x}[P1]{y}:[P0]").fill_pieces(["x", "y"]) == ["x", 1, "y:", 0]
  assert Template("plain {x}").pseudo_tokens == () and Template("plain {x}").fill_pieces(["x"]) == ["plain x"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("[P1] {a}", r"1 pseudo tokens, so they must be \[P0\] to \[P0\].*missing: \['\[P0\]'\]"),
        ("[P0] {a} [P0]", r"repeated: \['\[P0\]'\], missing: \['\[P1\]'\]"),
        ("[P0][P2] {a}", r"missing: \['\[P1\]'\]"),
        ("[P0][P1][P1] {a} [P3]", r"repeated: \['\[P1\]'\], missing: \['\[P2\]'\]"),
        ("[P01] {a}", r"write it \[P1\]"),
    ],
)
def test_bad_pseudo_tokens_fail_at_construction(text, match):
  with pytest.raises(ValueError, match=match):
    Template(text)


def test_text_without_pseudo_tokens_keeps_single_spaces():
  pieces = Template("[P0][P1] {premise} ? [P2] {hypothesis}").fill_pieces(["It rained.", "It was wet."])
  assert text_without_pseudo_tokens(pieces) == "It rained. ? It was wet."
  assert text_without_pseudo_tokens(["a", 0, "b"]) == "ab"
  assert text_without_pseudo_tokens([" lead ", 0, " b"]) == " lead b"  # only the marker's space goes


def test_raw_values_keep_lists():
  assert Template("{tokens}").raw_values({"tokens": ["EU", "rejects"]}, "f:1") == [["EU", "rejects"]]
  with pytest.raises(DataError, match="f:2: missing field 'tokens'"):
    Template("{tokens}").raw_values({"words": []}, "f:2")
