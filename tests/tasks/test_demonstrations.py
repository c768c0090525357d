"""LM-BFF's demonstrations: the template rewritten as LM-BFF's run.py rewrites it and tokenized as
its tokenize_multipart_input does, one demonstration per class, drawn anew per draw (never the
query), several sets per eval example, and truncation that cuts demonstrations before the query."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jaxprompt.backbones import FAMILIES
from jaxprompt.tasks import cloze
from jaxprompt.tasks.cloze_presets import LM_BFF_PRESETS
from jaxprompt.tasks.demonstrations import Demonstrations
from jaxprompt.tasks.records import Record
from tests.tasks.test_patterns import lm_bff_reference


def lm_bff_demo_template(template: str, num_labels: int) -> str:
  """LM-BFF's run.py (auto_demo, one template): the template, then per class a copy without *cls*,
  its sentences renumbered after the query's and its mask replaced by the class's label word."""
  body = template.replace("*cls*", "")
  sent_num = 2 if "_1" in body else 1
  out = template
  for label_id in range(num_labels):
    sub = body
    for sent_id in range(sent_num):
      sub = sub.replace(f"_{sent_id}", f"_{sent_num + sent_num * label_id + sent_id}")
    out += sub.replace("*mask*", f"*label_{label_id}*")
  return out


@pytest.fixture(scope="module")
def codec(bert):
  model = type("Model", (), {"add_bos": False})()
  return FAMILIES["bert"].codec(bert[0], model)


def _sst2(shared_data, n=12):
  lines = (shared_data / "sst2" / "dev.tsv").read_text().splitlines()[1 : n + 1]
  return [Record({"sentence": s, "label": label}, f"dev.tsv:{i + 2}") for i, (s, label) in
          enumerate(line.split("\t") for line in lines)]


def _rte(shared_data, n=8):
  """SuperGLUE's RTE records in GLUE's fields, which LM-BFF's preset reads."""
  lines = (shared_data / "superglue" / "RTE" / "val.jsonl").read_text().splitlines()[:n]
  return [Record({"sentence1": e["premise"], "sentence2": e["hypothesis"], "label": e["label"]}, f"val.jsonl:{i + 1}")
          for i, e in enumerate(map(json.loads, lines))]


@pytest.mark.parametrize("task", ["sst2", "rte"])
def test_an_input_with_demonstrations_is_lm_bffs(task, codec, bert, shared_data):
  preset = LM_BFF_PRESETS[task]
  spec = preset.task_spec(task)
  pool = _sst2(shared_data) if task == "sst2" else _rte(shared_data)
  demos = Demonstrations(spec, pool, codec, 1000, False, seed=3, eval_sets=2)
  feature = demos.train_feature(0, draw=5)
  # Which demonstration each class got: find them by their sentences in our ids.
  ref = bert[1]
  words = [ref.encode(w[0], add_special_tokens=False)[0] for w in spec.label_words]
  template = lm_bff_demo_template(spec.pattern, len(spec.label_names))
  fields = spec.pattern_fields
  limits = tuple(spec.sentence_limits) + (0, 0)
  first, other = (n or None for n in limits[:2])
  for combo in _class_combinations(demos, exclude=0):
    texts = [pool[0].fields[f] for f in fields] + [pool[i].fields[f] for i in combo for f in fields]
    ids, types = lm_bff_reference(template, texts, ref, first, other, words)
    if list(feature.inputs) == ids:
      assert list(feature.token_types) == [min(t, 1) for t in types]  # BERT's two types (LM-BFF grows to 10)
      assert feature.inputs[feature.mask_positions[0]] == ref.mask_token_id
      assert feature.label == demos._class_of(pool[0])
      return
  pytest.fail("no choice of demonstrations gives LM-BFF's ids")


def _class_combinations(demos, exclude):
  """Every choice of one record per class other than `exclude`."""
  import itertools  # noqa: PLC0415

  pools = [[i for i in np.flatnonzero(demos.classes_N == c) if i != exclude] for c in range(len(demos.spec.label_names))]
  return itertools.product(*pools)


def test_draws_differ_are_repeatable_and_never_hold_the_query(codec, shared_data):
  spec = LM_BFF_PRESETS["sst2"].task_spec("sst2")
  pool = _sst2(shared_data)
  demos = Demonstrations(spec, pool, codec, 256, False, seed=0)
  seen = set()
  for draw in range(20):
    a, b = demos.train_feature(1, draw), demos.train_feature(1, draw)
    assert (a.inputs, a.token_types) == (b.inputs, b.token_types)  # a resumed run draws the same
    seen.add(tuple(a.inputs))
    chosen = demos._draw(np.random.default_rng((0, 0, 1, draw)), demos._of_class, exclude=1)
    assert pool[1] not in chosen
    assert [demos._class_of(r) for r in chosen] == [0, 1]  # one per class, in class order
  assert len(seen) > 5


def test_eval_sets_are_groups_of_one_record(codec, shared_data):
  spec = LM_BFF_PRESETS["sst2"].task_spec("sst2")
  pool = _sst2(shared_data)
  demos = Demonstrations(spec, pool, codec, 256, False, seed=0, eval_sets=4)
  feats = demos.eval_features(pool[:3])
  assert [f.group for f in feats] == [0] * 4 + [1] * 4 + [2] * 4
  assert len({tuple(f.inputs) for f in feats[:4]}) > 1


def test_truncation_cuts_the_last_demonstration_first_never_the_query(codec, shared_data):
  spec = LM_BFF_PRESETS["sst2"].task_spec("sst2")
  pool = _sst2(shared_data)
  demos = Demonstrations(spec, pool, codec, 1000, False, seed=0)
  full = demos.train_feature(2, 0)
  short = dataclasses.replace(demos, max_input_len=len(full.inputs) - 3)
  cut = short.train_feature(2, 0)
  assert len(cut.inputs) == len(full.inputs) - 3
  query_end = full.inputs.index(codec.cloze.end_ids[0]) + 1  # the query ends with its *sep+*
  assert cut.inputs[:query_end] == full.inputs[:query_end] and cut.mask_positions == full.mask_positions
  assert cut.inputs[-2:] == full.inputs[-2:]  # the last copy keeps its "." and *sep+*: only its sentence lost tokens


def test_demonstrations_need_a_cloze_pattern_with_words_and_every_class(codec, shared_data):
  spec = LM_BFF_PRESETS["sst2"].task_spec("sst2")
  only_negative = [r for r in _sst2(shared_data) if r.fields["label"] == "0"]
  with pytest.raises(ValueError, match=r"no training record of class \[1\]"):
    Demonstrations(spec, only_negative, codec, 256, False, seed=0)
  assert cloze.pattern_of(spec).with_specials


def _demo_run_config(**overrides):
  from tests.method_runs import CLOZE_CASES  # noqa: PLC0415 - the run tests' configs

  return CLOZE_CASES["prompt_tuning-bert-cloze"](**{
      "prompt.method": "none", "model.trainable": "bias$", "optimizer.learning_rate": 1e-3, "num_steps": 4,
      "eval_every": 4, "checkpoint_every": 2, "data.max_input_len": 256, "data.bucket_lengths": (128, 256),
      "demonstrations.enabled": True, "demonstrations.eval_sets": 2, **overrides})


def test_a_run_with_demonstrations_redraws_them_resumes_bitwise_and_averages_its_sets(tmp_path):
  import jax  # noqa: PLC0415

  from jaxprompt import experiment, training  # noqa: PLC0415
  from jaxprompt.evaluation import load_prompt_params  # noqa: PLC0415

  config = _demo_run_config()
  straight = training.train_and_evaluate(config, str(tmp_path / "straight"))
  assert straight["eval"]["eval/examples"] == config.data.max_eval_examples  # sets averaged: one row per example
  original = training.PreemptionWatcher.requested
  training.PreemptionWatcher.requested = lambda self, step: step == 2
  try:
    assert training.train_and_evaluate(config, str(tmp_path / "resumed"))["step"] == 2
  finally:
    training.PreemptionWatcher.requested = original
  resumed = training.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed["eval"] == straight["eval"]
  exp = experiment.build(config)
  _, _, a, _ = load_prompt_params(exp, str(tmp_path / "straight" / "checkpoints" / "4"))
  _, _, b, _ = load_prompt_params(exp, str(tmp_path / "resumed" / "checkpoints" / "4"))
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_the_train_stream_renders_every_draw_with_its_own_demonstrations(codec, shared_data):
  from jaxprompt.tasks import features as features_lib, pipeline  # noqa: PLC0415

  spec = LM_BFF_PRESETS["sst2"].task_spec("sst2")
  pool = _sst2(shared_data, 8)
  demos = Demonstrations(spec, pool, codec, 256, False, seed=0)
  plain, _ = features_lib.featurize(pool, spec, codec, 256, 1)
  stream = pipeline.train_iterator(plain, 4, 0, 256, 1, (128, 256), render=demos.train_feature)
  for k in range(4):  # two epochs: every example is drawn twice, with other demonstrations
    batch = next(stream)
    for r in range(4):
      j, n = k * 4 + r, int(batch["input_mask"][r].sum())
      rendered = [demos.train_feature(i, j).inputs for i in range(len(pool))]
      assert list(batch["inputs"][r, :n]) in rendered, (k, r)


def test_on_a_decoder_the_demonstrations_come_first_as_text(smollm_tokenizer, shared_data):
  model = type("Model", (), {"add_bos": False})()
  codec = FAMILIES["llama"].codec(smollm_tokenizer, model)
  spec = LM_BFF_PRESETS["sst2"].task_spec("sst2")
  pool = _sst2(shared_data)
  demos = Demonstrations(spec, pool, codec, 512, False, seed=0, max_target_len=4, separator="\n\n")
  feature = demos.train_feature(0, draw=1)
  chosen = demos._draw(np.random.default_rng((0, 0, 0, 1)), demos._of_class, exclude=0)
  # The sentences as a reader writes them: SST-2's rows end with a space, which the text drops.
  text = lambda r: r.fields["sentence"].strip()
  expected = "".join(f"{text(d)} It was {w}.\n\n" for d, w in zip(chosen, ("terrible", "great"))) + f"{text(pool[0])} It was"
  assert feature.inputs == codec.encode_input(expected)
  assert feature.label == int(pool[0].fields["label"])
  assert feature.targets == codec.encode_label(" " + ("terrible", "great")[feature.label])


def test_the_demo_filter_draws_from_each_querys_most_similar_half(shared_data):
  from jaxprompt import experiment  # noqa: PLC0415
  from jaxprompt.sentence_embeddings import SentenceEncoder  # noqa: PLC0415
  from tests.assets import minilm_dir  # noqa: PLC0415

  config = _demo_run_config(**{"demonstrations.filter_rate": 0.5, "demonstrations.encoder": str(minilm_dir())})
  exp = experiment.build(config)
  demos = experiment.demonstrations(exp)
  emb = SentenceEncoder(minilm_dir()).embed([r.fields["sentence"] for r in demos.pool])
  similarity = emb @ emb.T
  for query in (0, 5):
    for c in (0, 1):
      kept = demos.similar(query, c)
      others = [i for i in np.flatnonzero(demos.classes_N == c) if i != query]
      assert set(kept) <= set(others) and query not in kept
      assert len(kept) == int((len(demos.pool) - 1) // 2 * 0.5)
      best = sorted(others, key=lambda i: -similarity[query, i])[: len(kept)]
      assert sorted(kept) == sorted(best)
