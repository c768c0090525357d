"""Serving many trained prompts from one frozen backbone, mixed in one batch.

    bank.py         load_bank(config, sources): the backbone, the prompts, the jitted step
    loading.py      one prompt from its run (workdir, checkpoint or export), checked against the backbone
    parts.py        a prompt in its batch-independent form (reparameterisations collapsed)
    bank_prompt.py  the prompts' device tables as one prompt method, gathered by batch["prompt_id"]
    label_space.py  the union of the prompts' label sets the step scores, and each prompt's columns
    requests.py     requests -> rendered, length-bucketed mixed batches -> labels, scores, generations
"""
