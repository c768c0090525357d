"""P-tuning templates on real SuperGLUE rows: pseudo tokens get one slot each and survive truncation, or fail loudly."""

import pytest

from jaxprompt.tasks.codec import decoder_codec
from jaxprompt.tasks.features import featurize
from jaxprompt.tasks.icl import Demonstrations
from jaxprompt.tasks.readers import read_records
from jaxprompt.tasks.records import DataError
from jaxprompt.tasks.task_spec import DataSource, TaskSpec

# P-tuning's RTE / CB templates (Liu et al. 2021, in the style of its SuperGLUE experiments).
RTE_PT = TaskSpec("rte_pt", "[P0][P1] {premise} ? [P2] {hypothesis}", ("entailment", "not_entailment"), ("yes", "no"))
CB_PT = TaskSpec(
    "cb_pt", "{premise} [P0] Question: {hypothesis}? [P1][P2] Answer:", ("entailment", "contradiction", "neutral"),
    ("yes", "no", "maybe"), metric="f1_macro",
)


def superglue(shared_data, task: str, split: str = "val"):
  path = shared_data / "superglue" / task / f"{split}.jsonl"
  return str(path), read_records(DataSource("jsonl", (str(path),)))


def test_rte_pseudo_tokens_t5(shared_data, tokenizer, codec):
  path, records = superglue(shared_data, "RTE")
  features, stats = featurize(records, RTE_PT, codec, 512, 4)
  assert stats.kept == len(records) == 277 and stats.truncated_inputs == 0
  first = records[0].fields
  premise = tokenizer.encode(first["premise"] + " ?", add_eos=False)
  assert premise[:5] == [2744, 9, 419, 15, 162]  # "Dana Reeve"
  hypothesis = tokenizer.encode(first["hypothesis"])
  assert features[0].inputs == [0, 0] + premise + [0] + hypothesis
  assert features[0].soft_positions == [0, 1] + [-1] * len(premise) + [2] + [-1] * len(hypothesis)
  assert features[0].targets == tokenizer.encode("no") and features[0].label == 1
  assert tokenizer.decode(features[0].inputs) == f"{first['premise']} ? {first['hypothesis']}"  # pads decode to nothing
  for feature in features:
    assert len(feature.soft_positions) == len(feature.inputs) and feature.inputs[-1] == tokenizer.eos_id
    assert [s for s in feature.soft_positions if s >= 0] == [0, 1, 2]
    assert all(feature.inputs[j] == codec.pad_id for j, s in enumerate(feature.soft_positions) if s >= 0)
  # A template without pseudo tokens has no soft positions.
  plain_spec = TaskSpec("rte", "{premise} ? {hypothesis}", RTE_PT.label_names, ("yes", "no"))
  plain, _ = featurize(records[:3], plain_spec, codec, 512, 4)
  assert [f.soft_positions for f in plain] == [[], [], []]


def test_cb_pseudo_tokens_cut_or_rejected(shared_data, tokenizer, codec):
  path, records = superglue(shared_data, "CB")
  features, _ = featurize(records[:2], CB_PT, codec, 512, 4)
  second = records[1].fields
  body = tokenizer.encode(second["premise"], add_eos=False)
  question = tokenizer.encode(f"Question: {second['hypothesis']}?", add_eos=False)
  answer = tokenizer.encode("Answer:")
  assert features[1].inputs == body + [0] + question + [0, 0] + answer
  assert features[1].soft_positions == [-1] * len(body) + [0] + [-1] * len(question) + [1, 2] + [-1] * len(answer)
  # T5 cuts the end. The first example is 59 tokens with [P0], [P1], [P2] at 46, 54, 55; the second fits in 42.
  assert len(features[0].inputs) == 59 and features[0].soft_positions.index(0) == 46
  dropped = rf"{path}:1: .* max_input_len={{}} would drop the pseudo tokens {{}}"
  with pytest.raises(DataError, match=dropped.format(50, r"\['\[P1\]', '\[P2\]'\]")):
    featurize(records[:2], CB_PT, codec, 50, 4)
  with pytest.raises(DataError, match=dropped.format(45, r"\['\[P0\]', '\[P1\]', '\[P2\]'\]")):
    featurize(records[:2], CB_PT, codec, 45, 4)
  kept, stats = featurize(records[:2], CB_PT, codec, 45, 4, skip_bad_examples=True)
  assert (stats.kept, stats.skipped, kept[0].group) == (1, 1, 1) and "drop the pseudo tokens" in stats.errors[0]
  assert kept[0] == features[1]


def test_truncation_keeps_pseudo_tokens_that_fit(shared_data, tokenizer, codec):
  path, records = superglue(shared_data, "RTE")
  full, _ = featurize(records[:1], RTE_PT, codec, 512, 4)
  (cut,), stats = featurize(records[:1], RTE_PT, codec, 40, 4)
  assert stats.truncated_inputs == 1 and len(cut.inputs) == 40
  assert cut.inputs == full[0].inputs[:39] + [tokenizer.eos_id]
  assert cut.soft_positions == full[0].soft_positions[:39] + [-1]
  with pytest.raises(DataError, match=r"drop the pseudo tokens \['\[P2\]'\]"):
    featurize(records[:1], RTE_PT, codec, 38, 4)  # [P2] is the 39th token


def test_decoder_pseudo_tokens_and_prefix(shared_data, smollm_tokenizer):
  codec = decoder_codec(smollm_tokenizer, add_bos=True)
  path, records = superglue(shared_data, "RTE")
  (feature,), _ = featurize(records[:1], RTE_PT, codec, 512, 4)
  first, pad, bos = records[0].fields, codec.pad_id, smollm_tokenizer.bos_id
  premise = smollm_tokenizer.encode(f" {first['premise']} ? ")
  assert feature.inputs == [bos, pad, pad] + premise + [pad] + smollm_tokenizer.encode(f" {first['hypothesis']}")
  assert feature.soft_positions[:3] == [-1, 0, 1] and feature.soft_positions[3 + len(premise)] == 2
  # Decoders cut the start, where this template's pseudo tokens are.
  with pytest.raises(DataError, match=rf"{path}:1: .*\['\[P0\]', '\[P1\]'\]"):
    featurize(records[:1], RTE_PT, codec, 30, 4)
  # In-context text goes before the template: its own piece ahead of a leading pseudo token ...
  (shot,), _ = featurize(records[:1], RTE_PT, codec, 512, 4, input_prefix=lambda i: "Example.")
  prefix = smollm_tokenizer.encode("Example.")
  assert shot.inputs == [bos] + prefix + feature.inputs[1:]
  assert shot.soft_positions == [-1] * (1 + len(prefix)) + feature.soft_positions[1:]
  # ... and read on into the template's first text.
  _, cb = superglue(shared_data, "CB")
  (shot,), _ = featurize(cb[:1], CB_PT, codec, 512, 4, input_prefix=lambda i: "Example: ")
  text = smollm_tokenizer.encode(f"Example: {cb[0].fields['premise']} ")
  assert shot.inputs[: len(text) + 2] == [bos] + text + [pad] and shot.soft_positions[len(text) + 1] == 0


def test_demonstrations_leave_pseudo_tokens_out(shared_data):
  _, pool = superglue(shared_data, "RTE", "train32")
  demos = Demonstrations(pool, RTE_PT, 1, seed=0)
  fields = pool[demos.draw(0)[0]].fields
  answer = "yes" if fields["label"] == "entailment" else "no"
  assert demos.text_before(0) == f"{fields['premise'].strip()} ? {fields['hypothesis'].strip()}{answer}\n\n"
