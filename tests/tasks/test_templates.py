"""Templates fill slots from nested records and fail loudly, naming field, template and place."""

import pytest

from jaxprompt.tasks.records import DataError
from jaxprompt.tasks.templates import Template


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
