"""Preset tasks in T5's text-to-text formats (Raffel et al. 2020; the t5 library's glue preprocessors).

T5 writes an example as "<task> <field>: <text> <field>: <text> ..." and the target as the class
name. Verbalizers are TFDS's class names (what T5 was trained to emit) in TFDS's class order, so
that TFDS ClassLabel ints and local files agree. `label_names` are the labels as the local files
(GLUE tsv, SuperGLUE / FewGLUE jsonl, AG News tsv) write them; ints and booleans map to class
indices directly (see features.label_index). TAGGING_TASKS are token-labelling tasks (P-tuning v2's
sequence labelling), read from CoNLL files.
"""

from __future__ import annotations

from jaxprompt.tasks.task_spec import TaskSpec

_FALSE_TRUE = ("False", "True")

TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(
        name="sst2",
        template="sst2 sentence: {sentence}",
        label_names=("0", "1"),
        verbalizer=("negative", "positive"),
    ),
    "boolq": TaskSpec(
        name="boolq",
        template="boolq passage: {passage} question: {question}",
        label_names=_FALSE_TRUE,
        verbalizer=_FALSE_TRUE,
    ),
    "cb": TaskSpec(
        name="cb",
        template="cb hypothesis: {hypothesis} premise: {premise}",
        label_names=("entailment", "contradiction", "neutral"),
        verbalizer=("entailment", "contradiction", "neutral"),
        metric="f1_macro",
    ),
    "copa": TaskSpec(
        name="copa",
        template="copa choice1: {choice1} choice2: {choice2} premise: {premise} question: {question}",
        label_names=("0", "1"),
        verbalizer=("choice1", "choice2"),
    ),
    # SuperGLUE RTE: T5's preprocessor writes the fields in sorted order (GLUE's RTE, with fields
    # sentence1/sentence2, reads "rte sentence1: ... sentence2: ...").
    "rte": TaskSpec(
        name="rte",
        template="rte hypothesis: {hypothesis} premise: {premise}",
        label_names=("entailment", "not_entailment"),
        verbalizer=("entailment", "not_entailment"),
    ),
    "wic": TaskSpec(
        name="wic",
        template="wic sentence1: {sentence1} sentence2: {sentence2} word: {word}",
        label_names=_FALSE_TRUE,
        verbalizer=_FALSE_TRUE,
    ),
    # T5 marks the two spans inside the text ("*anyone* ... #him#"); a template cannot insert marks
    # at word offsets, so the spans follow the text as fields instead.
    "wsc": TaskSpec(
        name="wsc",
        template="wsc text: {text} span1: {target.span1_text} span2: {target.span2_text}",
        label_names=_FALSE_TRUE,
        verbalizer=_FALSE_TRUE,
    ),
    "multirc": TaskSpec(
        name="multirc",
        template="multirc question: {question} answer: {answer} paragraph: {paragraph}",
        label_names=("0", "1"),
        verbalizer=_FALSE_TRUE,
        metric="multirc",
        flatten="multirc",
    ),
    # Not a T5 task: same style, AG News's own class names as targets.
    "agnews": TaskSpec(
        name="agnews",
        template="agnews text: {text}",
        label_names=("World", "Sports", "Business", "Sci/Tech"),
        verbalizer=("World", "Sports", "Business", "Sci/Tech"),
    ),
}

# CoNLL-2003 NER in the tag order of Hugging Face's conll2003 dataset, so that its integer ner_tags
# and the text files' tags agree. Original CoNLL-2003 files are IOB1 (an entity starts with I- unless
# it follows one of its type); the same tag set reads both, and span_f1 reads IOB1 spans as conlleval does.
CONLL2003_NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")

TAGGING_TASKS: dict[str, TaskSpec] = {
    "conll2003": TaskSpec(
        name="conll2003",
        template="{tokens}",
        label_names=(),
        verbalizer=(),
        label_field="tags",
        metric="span_f1",
        token_label_names=CONLL2003_NER_TAGS,
    ),
}
