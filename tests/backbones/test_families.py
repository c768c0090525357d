"""The family table: every family behind one interface, and ALBERT's factorised widths in a run."""

from __future__ import annotations

import jax
import numpy as np

from configs import p_tuning_v2
from jaxprompt import experiment, objectives, sharding
from jaxprompt.backbones import FAMILIES, base
from jaxprompt.backbones.base import random_params
from jaxprompt.models.t5_config import T5Config
from jaxprompt.tasks import pipeline
from tests.method_runs import small, tiny_albert
from tests.run_configs import small_sst2_files


def test_every_family_names_methods_and_an_objective_the_table_has():
  assert set(FAMILIES) == {"t5", "llama", "bert", "albert"}
  for name, family in FAMILIES.items():
    assert family.name == name and family.methods
    assert family.text_objective in objectives.OBJECTIVES


def test_a_p_tuning_v2_step_on_albert_uses_its_embedding_width_for_prompts_and_hidden_width_for_the_head():
  config = small(tiny_albert(small_sst2_files(p_tuning_v2.get_config("task=sst2,data=local"))), **{"prompt.length": 4})
  exp = experiment.build(config)
  albert = exp.backbone.config
  assert (exp.backbone.embed_dim, exp.backbone.hidden_dim) == (albert.embedding_size, albert.hidden_size) == (16, 32)
  params = exp.init_params(jax.random.key(0))
  # One shared layer applied twice: two prefixes; the head reads the H-wide pooled output.
  assert params["prompts"]["encoder_self"]["keys"].shape[0] == albert.num_attention_layers == 2
  assert params["classifier"]["kernel"].shape == (32, 2)
  state = exp.init_state(params)
  feats = experiment.train_features(exp)[:8]
  batch = next(pipeline.eval_batches(feats, 8, config.data.max_input_len, config.data.max_target_len,
                                     tuple(config.data.bucket_lengths)))
  frozen = jax.tree.map(np.asarray, exp.frozen)
  with sharding.activate(exp.mesh, exp.rules):
    new, metrics = exp.train_step()(state, exp.frozen, pipeline.to_global(batch, exp.batch_sharding), jax.random.key(1))
  assert np.isfinite(float(metrics["train/loss"]))
  jax.tree.map(np.testing.assert_array_equal, frozen, jax.tree.map(np.asarray, exp.frozen))
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), jax.tree.map(np.asarray, params), new.params)
  assert all(jax.tree.leaves(moved))


def test_random_backbones_reuse_one_traced_init_and_draw_fresh_arrays():
  """A second build of the same backbone skips tracing its init, yet never shares the first's buffers
  (a fine-tuning run donates its backbone)."""
  config = T5Config.preset("tiny", vocab_size=64)
  mesh = sharding.make_mesh({"data": -1})
  rules = [(name, list(axes) if isinstance(axes, tuple) else axes) for name, axes in sharding.DEFAULT_RULES]
  first = random_params(FAMILIES["t5"], config, mesh, rules, seed=0)
  hits = base._sharded_init.cache_info().hits
  again = random_params(FAMILIES["t5"], config, mesh, tuple(sharding.DEFAULT_RULES), seed=0)
  other = random_params(FAMILIES["t5"], config, mesh, rules, seed=1)
  assert base._sharded_init.cache_info().hits == hits + 2  # list or tuple rules: one entry
  jax.tree.map(np.testing.assert_array_equal, first, again)
  embedding = lambda p: p["params"]["token_embedder"]["embedding"]
  assert not np.array_equal(embedding(first), embedding(other))
  jax.tree.map(lambda a: a.delete(), first)
  np.asarray(embedding(again))  # still readable
