"""LM-BFF (Gao, Fisch & Chen 2021) over its five K-shot splits: zero-shot, prompt-based fine-tuning,
demonstrations, automatic label words and templates, each reported as mean (std) over the splits.

    python -m jaxprompt.split --protocol=kshot --input=glue/SST-2/train.tsv --out=data/k-shot --task=SST-2 --k=16
    python -m jaxprompt.lm_bff --config=configs/lm_bff.py:task=sst2,kshot=data/k-shot/SST-2,test=glue/SST-2/dev.tsv \\
        --workdir=/tmp/lmbff-sst2

Arguments after the colon (comma-separated key=value):
  task      LM-BFF's tasks (configs/cloze.py recipe=lm_bff): sst2 sst5 mr cr mpqa subj trec cola mnli snli
            qnli rte mrpc qqp stsb
  kshot     the task's folder of <K>-<seed>/train and dev files (python -m jaxprompt.split --protocol=kshot)
  test      the test file (LM-BFF: the original dev set for GLUE tasks), same format as the splits
  k         16 (LM-BFF)
  seeds     '+'-separated split seeds (13+21+42+87+100)
  variants  '+'-separated, of zero_shot prompt_ft prompt_ft_demo auto_labels auto_labels_demo
            auto_template auto_template_demo (jaxprompt/fewshot/lm_bff_pipeline.py)
  train     what fine-tuning trains: all (LM-BFF) | bias | prompt (configs/cloze.py)
The backbone is RoBERTa-large; LM-BFF's recipe: batch 8, lr 1e-5, 1000 steps evaluated on the
split's dev set every 100 and the best kept. LM-BFF also grids lr {1e-5, 2e-5, 5e-5} x batch
{2, 4, 8} per split; one point of it runs here (override --config.optimizer.learning_rate).
"""

from __future__ import annotations

import ml_collections

from configs import cloze
from configs.base import base_config, data_source, parse_args

_FOUR_SETS = ("mnli", "snli", "qqp")  # LM-BFF evaluates these with 4 sets of demonstrations, not 16
_SINGLE_SENTENCE = ("sst2", "sst5", "mr", "cr", "mpqa", "subj", "trec", "cola")  # --double_demo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_args(arg, task="sst2", kshot="", test="", k="16", seeds="13+21+42+87+100",
                    variants="zero_shot+prompt_ft+prompt_ft_demo+auto_labels", train="all")
  task = args["task"]
  config = cloze.get_config(f"recipe=lm_bff,task={task},train={args['train']},data=local" if task == "sst2" else
                            f"recipe=lm_bff,task={task},train={args['train']}")
  test = args["test"]
  kind = test.rsplit(".", 1)[-1] if "." in test else "tsv"
  template_model = base_config().model
  template_model.family, template_model.checkpoint = "t5", "t5-3b"  # LM-BFF's template generator
  template_model.dtype = template_model.param_dtype = "float32"
  config.lm_bff = ml_collections.ConfigDict(dict(
      kshot_dir=args["kshot"],
      k=int(args["k"]),
      seeds=tuple(int(s) for s in args["seeds"].split("+")),
      variants=tuple(args["variants"].split("+")),
      test=data_source(kind, (test,) if test else ()) if test else config.data.eval,
      label_k=100,  # candidate label words per class (LM-BFF; TREC 1000)
      label_candidates=100,  # mappings fine-tuned and ranked on dev (LM-BFF's N_PAIRS)
      template_model=template_model,
      template_beam=100,
      template_chunk=32,  # training examples scored together per beam step (LM-BFF's batch)
      template_candidates=100,  # templates fine-tuned and ranked on dev
      # Inputs with demonstrations: twice the plain length for single sentences (LM-BFF's --double_demo).
      demo_max_input_len=2 * config.data.max_input_len if task in _SINGLE_SENTENCE else 0,
      # False: a finished run's checkpoints and exported backbone are removed when backbone weights
      # trained (GBs a run, one run per candidate and split; LM-BFF's script deletes them too).
      keep_run_checkpoints=False,
  ))
  config.demonstrations.eval_sets = 4 if task in _FOUR_SETS else 16
  return config
