"""Few-shot pipelines: PET / iPET and LM-BFF's data, ensembles and searches.

Each module does one job of a few-shot experiment around ordinary runs: writing the data splits
(splits.py: LM-BFF's K-shot protocol, PET's labeled / unlabeled / test), merging an ensemble's
scores, labelling iPET's next generation, and the loops over runs that make a pipeline.
"""
