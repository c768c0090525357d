"""Serving many trained prompts from one frozen backbone, mixed in one batch.

    bank.py         load_bank(config, sources): the backbone, the prompts, the jitted step
    loading.py      one prompt from its run (workdir, checkpoint or export), checked against the backbone
    parts.py        a prompt in its batch-independent form (reparameterisations collapsed)
    bank_prompt.py  the prompts' device tables as one prompt method, gathered by batch["prompt_id"]
    soft_slots.py   each request's soft tokens as slots of its own input, so a row is its own prompt's length
    label_space.py  the union of the prompts' label sets the step scores, and each prompt's columns
    requests.py     requests -> rendered, length-bucketed mixed batches -> labels, scores, generations
    ensemble.py     prompt ensembling in one pass: each example once per member prompt, votes or mean scores
    bank_file.py    a bank described by a JSON file (the backbone's config, each prompt's run)
    file_inference.py  a jsonl file of requests -> a jsonl file of answers (python -m jaxprompt.infer --bank)
    http_inputs.py  an HTTP body checked alone before queueing: fields, prompt, rendering, length
    batcher.py      dynamic batching: queued requests of any prompts, one serve() per batch, in a thread
    warmup.py       one batch per input bucket at start-up, so no request waits for XLA
    http_app.py     the Starlette app (python -m jaxprompt.serve): completions, classify, models, runtime
                    prompts, health; graceful SIGTERM
"""
