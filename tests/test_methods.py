"""Every prompt method on every backbone it applies to (tests/method_runs.py): a step moves only the
trainable pytree, the loss on real examples falls within a few dozen steps, a preempted run resumes
bitwise, and the collapsed export of a reparameterised prompt serves the same outputs."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from jaxprompt import experiment, training
from jaxprompt.checkpoint import load_export
from jaxprompt.evaluation import evaluate_prompt, load_prompt_params
from jaxprompt.training import train_and_evaluate
from tests.method_runs import CASES, CLOZE_CASES, conll_config, host, train_and_check

STEPS = 16


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_moves_only_the_prompt_and_lowers_the_loss(case):
  before, after = train_and_check(CASES[case](), STEPS)
  assert after < 0.95 * before, (before, after)


def test_p_tuning_v2_token_head_learns_tags(tmp_path):
  before, after = train_and_check(conll_config(tmp_path), STEPS)
  assert after < 0.5 * before, (before, after)


def _resumed_run(tmp_path: Path, config, monkeypatch) -> tuple[Path, Path, dict]:
  """The same 4 steps straight (and its final eval metrics), and preempted after step 2 (saved,
  stopped) then resumed."""
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  metrics = train_and_evaluate(config, str(straight))["eval"]
  with monkeypatch.context() as patch:
    patch.setattr(training.PreemptionWatcher, "requested", lambda self, step: step == 2)
    assert train_and_evaluate(config, str(resumed))["step"] == 2
  assert train_and_evaluate(config, str(resumed))["step"] == 4
  return straight, resumed, metrics


# One backbone per method, where it is most its own: the LSTM encoder on a decoder, the head on an
# encoder, and the mixture on T5; and a cloze pattern's prompt on an MLM, one mask and several.
# (Prefix tuning's export, the reparameterisation collapsed, is tests/prompts/test_collapse.py's;
# T5 runs resume bitwise in tests/test_train.py and tests/test_train_cli.py.)
RESUME_CASES = ("p_tuning-llama", "p_tuning_v2-bert", "multi_task-t5", "prompt_tuning-bert-cloze",
                "prompt_tuning-albert-copa")


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_is_bitwise_and_the_export_serves_the_same_prompt(case, tmp_path, monkeypatch):
  config = {**CASES, **CLOZE_CASES}[case]()
  straight, resumed, straight_metrics = _resumed_run(tmp_path, config, monkeypatch)
  exp = experiment.build(config)
  _, a, _, _ = load_prompt_params(exp, str(straight / "checkpoints" / "4"))
  _, b, _, _ = load_prompt_params(exp, str(resumed / "checkpoints" / "4"))
  jax.tree.map(np.testing.assert_array_equal, host(a), host(b))
  # The checkpoint keeps the full trainable state (the MLP, the LSTM), the export what it produces;
  # served from the export, the prompt scores as the training run's own evaluation did.
  export = next((straight / "prompts").glob("step_4.np*"))
  assert set(load_export(export)) == set(exp.method.export(a))
  from_export = evaluate_prompt(config, str(export))
  assert from_export.keys() == straight_metrics.keys()
  for key, value in straight_metrics.items():
    assert from_export[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
