"""Every key a run reads, declared once with what it is for. Recipes (t5_prompt.py,
smollm_sst2_prompt.py, ...) start from `base_config()` and set their own values."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from jaxprompt.models import layer_scan
from jaxprompt.sharding import DEFAULT_RULES


def data_source(kind: str, files: tuple[str, ...] = (), columns: tuple[str, ...] = (), tfds_name: str = "",
                split: str = "") -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      kind=kind,  # tfds | jsonl | tsv | csv
      files=files,  # local files, read in order (jsonl / tsv / csv)
      columns=columns,  # column names of header-less tsv/csv files; empty: the first row is the header
      tfds_name=tfds_name,  # e.g. super_glue/rte (kind=tfds)
      split=split,  # TFDS split, e.g. train, validation, train[:1000]
      data_dir="",  # TFDS data_dir; empty: TFDS's default (~/tensorflow_datasets)
  ))


def parse_args(arg: str | None, **defaults: str) -> dict[str, str]:
  """The `:key=value,...` argument of a config file, over `defaults`; unknown keys are errors."""
  args = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in defaults:
      raise ValueError(f"config argument {item!r}: expected key=value with key in {sorted(defaults)}")
    args[key] = value
  return args


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      family="t5",  # t5 (encoder-decoder) | llama (decoder-only) | bert, albert (encoders)
      # Hub id, local HF directory/file, T5X checkpoint or (llama) .gguf file of the frozen
      # backbone; empty: random init of the `size` preset (only sensible for tests and demos).
      checkpoint="",
      size="tiny",  # preset used when checkpoint is empty
      tokenizer="",  # spiece.model / tokenizer dir / Hub id / .gguf; empty: the checkpoint's own
      add_bos=False,  # decoders: start every input with the BOS token
      dtype="bfloat16",  # compute dtype of the backbone
      param_dtype="bfloat16",  # frozen weights are stored in this dtype
      # True: nn.scan over the layers (compile time independent of depth); False: unrolled (faster
      # steps at small sizes); auto: unrolled below 0.5B weights in the layers, scanned from there
      # (jaxprompt/models/layer_scan.py). Either Python type may be assigned: True/False or "auto".
      scan_layers=config_dict.FieldReference(layer_scan.AUTO, field_type=object),
      remat_policy="none",  # none | full | dots | dots_no_batch | qkv_out: trade compute for memory
      dropout_rate=0.0,  # dropout inside the frozen model (T5)
      init_seed=0,  # seed of the random backbone when checkpoint is empty
      # Backbone weights that train beside the prompt (prompt-based fine-tuning: PET, LM-BFF):
      # none | all | a regular expression searched in each weight's path, e.g. "bias$" (biases
      # only), "mlm_head/" (the LM head). They train as float32 copies, sharded like the weights.
      trainable="none",
      # Frozen weights kept quantised on the device, dequantised inside each matmul (weight-only):
      # none | int8 (a scale per output channel) | int4 | nf4 (QLoRA's NormalFloat; blocks of
      # quantization_block weights, a float16 scale each) | gguf (a .gguf file's own Q8_0 / Q4_0 /
      # Q4_1 blocks). Projection kernels only: embeddings, norms and the vocabulary projection stay
      # float. Not with trainable weights.
      quantization="none",
      quantization_block=64,
  ))
  config.prompt = ml_collections.ConfigDict(dict(
      # prompt_tuning (Lester et al.) | prefix_tuning (Li & Liang) | p_tuning (Liu et al. v1: pseudo
      # tokens at the template's [Pi] markers) | p_tuning_v2 (deep prompts + a head) | multi_task
      # (shared + per-task prompts over config.mixture) | classifier (a linear head alone: with
      # config.model.trainable=all a standard sequence classifier) | none (the frozen model alone)
      method="prompt_tuning",
      # P: soft tokens (prompt_tuning), prefix slots per layer (prefix_tuning, p_tuning_v2), or each
      # task's own prompt (multi_task). p_tuning takes its length from the template's [Pi] markers.
      length=100,
      init="class_labels",  # uniform | vocab | class_labels | file (Lester et al.'s best: class_labels)
      init_file="",  # a [P, D] .npy for init=file
      uniform_scale=0.5,  # init=uniform draws from [-scale, scale]
      vocab_population=5000,  # init=vocab/class_labels sample from this many most frequent tokens
      placement="prefix",  # prefix | after_bos | suffix
      # prefix_tuning / p_tuning_v2: which attention kinds get prefixes; empty: all the backbone has
      # (T5: encoder_self, decoder_self, decoder_cross; decoders and encoders: encoder_self).
      prefix_attention=(),
      reparam_hidden=0,  # prefix_tuning: hidden width of the Linear-Tanh-Linear reparameterisation; 0: none
      encoder="lstm",  # p_tuning: lstm (BiLSTM + MLP, the paper's) | mlp
      encoder_hidden=0,  # p_tuning: the prompt encoder's MLP width; 0: the model's width
      shared_length=0,  # multi_task: length of the prompt shared by all tasks
      combine="concat",  # multi_task: concat (shared, then the task's) | add (equal lengths)
  ))
  config.task = ml_collections.ConfigDict()  # a TaskSpec: template, label_names, verbalizer, metric, ...
  config.data = ml_collections.ConfigDict(dict(
      train=data_source("tfds"),
      eval=data_source("tfds"),
      # Unlabeled records for config.cloze.mlm_alpha (read only then), rendered with the task's pattern.
      unlabeled=data_source("jsonl"),
      unlabeled_batch_size=0,  # unlabeled rows beside each labelled batch; 0: config.batch_size
      max_input_len=512,  # longer inputs are truncated (and counted)
      max_target_len=8,  # verbalizer targets are a few tokens
      bucket_lengths=(128, 256, 512),  # pad each batch's inputs to the smallest that fits
      # K >= 2: sort each K batches' examples by input length before batching, so batches need
      # smaller buckets (fewer padded tokens; batches are less random). 0: random batches.
      length_window=0,
      skip_bad_examples=False,  # True: count and skip bad records instead of failing with file:line
      max_eval_examples=0,  # evaluate on the first N eval examples (0: all)
      # A mixture: each task keeps at most this many training examples (T5's examples-proportional
      # mixing limit K); 0: all of them.
      examples_per_task_limit=0,
  ))
  # Several tasks trained together, {name: {task: <TaskSpec fields>, train: data_source(...), eval:
  # data_source(...)}}; task ids follow the names' sorted order. Empty: config.task and config.data.
  config.mixture = ml_collections.ConfigDict()
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adafactor",  # adafactor | adam
      learning_rate=0.3,  # Lester et al.: 0.3 constant
      schedule="constant",  # constant | linear | cosine | rsqrt
      warmup_steps=0,  # linear warm-up steps before the schedule
      decay_rate=0.8,  # Adafactor second-moment decay exponent (Lester et al.: 0.8)
      multiply_by_parameter_scale=False,  # Adafactor relative step size (off for prompts)
      update_clipping=1.0,  # Adafactor's clipping of the update RMS
      weight_decay=1e-5,  # Lester et al.: 1e-5 (decoupled, scaled by the learning rate)
      decay_biases_and_norms=True,  # Adam only; False: no decay on biases and norms (PET, LM-BFF)
      clip_norm=0.0,  # clip gradients by global norm first; 0: off
      b1=0.9,  # Adam only
      b2=0.999,  # Adam only
      eps=1e-8,  # Adam only
  ))
  config.loss_over = "vocabulary"  # vocabulary | label_words (PET: softmax over the label words only)
  # A distillation set (config.task.teacher_field; PET's final classifier): the head trains on
  # KL(softmax(teacher / T) || softmax(logits / T)) · T², PET's T = 2.
  config.distill_temperature = 2.0
  config.cloze = ml_collections.ConfigDict(dict(  # masked LMs scoring a pattern's [MASK] (PET, LM-BFF)
      # True: label words of several tokens are scored with as many masks (PET with multiple
      # masks; k = the longest word); False: every label word must be one token.
      multi_token=False,
      decoding="max_first",  # several masks at inference: max_first (PET's default) | ltr | parallel
      # PET's auxiliary MLM loss on unlabeled text (config.data.unlabeled), the weight α of its
      # term: (1 - α) task + α MLM; the paper's 1e-4 (PET's code's --alpha is 1 - α). 0: off.
      mlm_alpha=0.0,
  ))
  config.icl = ml_collections.ConfigDict(dict(
      num_shots=0,  # GPT-3-style demonstrations from the training data before each eval input
      seed=0,  # which demonstrations each eval example gets
      separator="\n\n",  # between demonstrations, and before the input
  ))
  # LM-BFF's demonstrations of a cloze task: one filled-in training example per class, after the
  # query on a masked LM (before it, as text, on T5 and decoders), drawn anew at every training
  # draw; at evaluation `eval_sets` draws per example, their class scores averaged (demonstrations.py).
  config.demonstrations = ml_collections.ConfigDict(dict(
      enabled=False,
      eval_sets=16,  # LM-BFF: 16; 4 for MNLI, SNLI and QQP
      # LM-BFF's demo_filter: each query draws only from this share of each class's training
      # examples, the most similar to it by the sentence encoder's cosine (LM-BFF: 0.5); 0: off.
      filter_rate=0.0,
      encoder="",  # a local sentence-transformers BERT directory (all-MiniLM-L6-v2) for the filter
      encoder_batch_size=64,
      separator="\n\n",  # T5 and decoders: the demonstrations come first as text, each followed by this
  ))
  # Contextual calibration (Zhao et al. 2021) of a classification's class probabilities, zero-/k-shot
  # or of any run: each is divided by their mean on content-free inputs formatted like the example
  # (with its demonstrations) and renormalised. eval/<metric> is then the calibrated one, beside
  # eval/uncalibrated/<metric>; the loss stays the model's own.
  config.calibration = ml_collections.ConfigDict(dict(
      enabled=False,
      # Each fills every field of the template (or cloze pattern); "[MASK]" is literal text, read as
      # the backbone's tokenizer reads that text in any record (calibration.py says why).
      content_free=("N/A", "", "[MASK]"),
  ))

  config.seed = 0  # prompt init, data order and dropout
  config.batch_size = 32  # global batch (Lester et al.: 32)
  config.num_microbatches = 1  # gradient accumulation: batch_size / num_microbatches per pass
  config.num_steps = 30_000  # Lester et al.: 30,000
  config.log_every = 50  # steps between training-metric writes

  config.eval_every = 1000  # steps between evaluations (and best-prompt checks)
  config.eval_batch_size = 32
  config.max_decode_len = 8  # greedy decoding length for exact match
  config.best_metric = "eval/accuracy"  # selects the best prompt
  config.early_stopping_patience = 0  # stop after this many evals without a new best; 0: never

  # A prompt bank (jaxprompt.serve, jaxprompt.infer --bank): its tables get this many spare rows
  # (prompts) and spare label rows or head columns, so that prompts added at runtime which fit run
  # the step already compiled; a prompt longer than the bank's longest, or with new placements or
  # attention kinds, compiles a new one. `backbone_name`: the bank also serves the backbone without
  # a prompt under this name (a request's text as it is, in its "text" field); "": it does not.
  # `batch_sizes`: the smaller row counts a batch may run at besides eval_batch_size (a lone request
  # runs 1 row, not eval_batch_size); each is another compiled step per input bucket.
  config.serving = ml_collections.ConfigDict(dict(spare_rows=8, spare_labels=0, backbone_name="",
                                                  batch_sizes=(1, 8)))

  config.checkpoint_every = 1000  # steps between checkpoints (also at every eval)
  config.keep_checkpoints = 3  # the last N are kept, plus the best
  config.async_checkpointing = True  # save in the background while training goes on

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # one may be -1: the rest
  config.rules = DEFAULT_RULES  # logical axis -> mesh axes; prompts map to no axis (replicated)
  return config
