"""Few-shot pipelines: PET / iPET and LM-BFF's data, ensembles and searches, around ordinary runs.

    splits.py          the data: LM-BFF's K-shot splits, PET's labeled / unlabeled / test split
    merge.py           an ensemble's scores merged (PET's mean / accuracy-weighted mean)
    ipet.py            iPET's next-generation training sets
    pet_pipeline.py    PET / iPET whole: members, merge, distillation (python -m jaxprompt.pet)
    report.py          the PET pipeline's report
    label_search.py    LM-BFF's automatic label words (zero-shot, on device)
    template_search.py LM-BFF's automatic templates (T5 beam search over the training set)
    lm_bff_pipeline.py LM-BFF's variants over its K-shot splits (python -m jaxprompt.lm_bff)
"""
