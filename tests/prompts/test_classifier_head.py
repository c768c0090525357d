"""The `classifier` method (a head alone) is Hugging Face's BertForSequenceClassification on the same
weights: logits to float tolerance on real MiniLM; and a distillation set's teacher scores reach
the batch as PET's soft labels."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import transformers

from configs import p_tuning_v2
from jaxprompt import experiment
from jaxprompt import sharding as sharding_lib
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks import pipeline
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import TaskSpec
from tests.assets import minilm_dir
from tests.run_configs import apply_overrides, localized, small_sst2_files


def test_the_classifier_head_is_transformers_sequence_classifier_on_minilm():
  config = small_sst2_files(localized(p_tuning_v2.get_config("task=sst2,data=local")))
  config = apply_overrides(config, **{"model.checkpoint": str(minilm_dir()), "prompt.method": "classifier",
                                      "model.trainable": "all", "model.dtype": "float32",
                                      "model.param_dtype": "float32", "eval_batch_size": 8,
                                      "mesh.data": 2, "mesh.fsdp": 4})
  exp = experiment.build(config)
  feats = experiment.task_features(exp, exp.tasks[0], "eval")[:8]
  params = exp.init_params(jax.random.key(3))
  batch = next(pipeline.eval_batches(feats, 8, config.data.max_input_len, config.data.max_target_len))
  with sharding_lib.activate(exp.mesh, exp.rules):
    ours = exp.eval_step_of(exp.method)(params, exp.merged(exp.pretrained),
                                        pipeline.to_global(batch, exp.batch_sharding), None, None)["class_logits"]
  reference = transformers.BertForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2).eval()
  kernel, bias = (np.array(params["classifier"][k]) for k in ("kernel", "bias"))
  with torch.no_grad():
    reference.classifier.weight.copy_(torch.from_numpy(kernel.T))
    reference.classifier.bias.copy_(torch.from_numpy(bias))
    theirs = reference(input_ids=torch.from_numpy(batch["inputs"]).long(),
                       attention_mask=torch.from_numpy(batch["input_mask"]).long()).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4)
  assert np.abs(theirs[:, 0] - theirs[:, 1]).max() > 1e-3  # the head is not trivially zero


class _Codec:
  """Just enough of a TextCodec for text features."""

  pad_inputs_left, cloze, cloze_sentinels = False, None, ()

  def encode_input(self, text):
    return [len(word) for word in text.split()] or [1]

  encode_label = encode_input

  def kept_input_positions(self, ids, max_len):
    return list(range(min(len(ids), max_len)))

  def truncate_target(self, ids, max_len):
    return ids[:max_len], len(ids) > max_len


SPEC = TaskSpec(name="t", template="{text}", label_names=("a", "b", "c"), verbalizer=("a", "b", "c"),
                teacher_field="teacher")


def test_teacher_scores_become_features_and_batch_rows():
  records = [Record({"text": "one two", "teacher": [0.5, -1.0, 2.0]}, "f:1"), Record({"text": "three"}, "f:2")]
  feats, _ = features_lib.featurize(records, SPEC, _Codec(), 8, 2)
  assert [f.teacher_logits for f in feats] == [[0.5, -1.0, 2.0], []]
  batch = next(pipeline.eval_batches(feats, 4, 8, 2))
  np.testing.assert_array_equal(batch["teacher_logits"][0], [0.5, -1.0, 2.0])
  assert np.isnan(batch["teacher_logits"][1:]).all()


@pytest.mark.parametrize("bad", [[1.0, 2.0], [1.0, "x", 2.0], [1.0, float("nan"), 2.0], "1 2 3"])
def test_a_bad_teacher_score_names_the_record(bad):
  with pytest.raises(DataError, match=r"f:7: 'teacher' must be 3 finite numbers"):
    features_lib.featurize([Record({"text": "one", "teacher": bad}, "f:7")], SPEC, _Codec(), 8, 2)


def test_a_teacher_field_needs_classes():
  with pytest.raises(ValueError, match="teacher_field holds scores per class"):
    TaskSpec(name="g", template="{text}", label_names=(), verbalizer=(), target_template="{summary}",
             teacher_field="teacher")
