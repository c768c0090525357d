"""What a pipeline keeps of a sub-run once its results are written.

A full fine-tune's checkpoints hold the float32 weights and both Adam moments at every kept step
(SmolLM2-135M: 4.7 GB a run; RoBERTa-large: ~20 GB), and a pipeline runs dozens of them: PET a
model per pattern × repetition × generation, LM-BFF one per label-word or template candidate and
split. Once a run's scores are saved nothing reads them again, so a finished run that trained
backbone weights loses its checkpoints/ and backbone_best/ (LM-BFF's run_experiment.sh deletes each
run's output the same way); a prompt on the frozen backbone is kilobytes and stays.
`keep_run_checkpoints=True` (config.pet, config.lm_bff) keeps everything.
"""

from __future__ import annotations

from etils import epath

_HEAVY = ("checkpoints", "backbone_best")


def prune(directory: epath.Path, trainable: str, keep: bool) -> None:
  """Removes the finished run's checkpoints when they hold trained backbone weights
  (`trainable`: its config.model.trainable)."""
  if keep or trainable == "none":
    return
  for name in _HEAVY:
    heavy = epath.Path(directory) / name  # a local folder or a bucket
    if heavy.exists():
      heavy.rmtree()
