"""`python -m jaxprompt.serve --bank=bank.json`: an HTTP server over a prompt bank.

    python -m jaxprompt.serve --bank=bank.json --port=8000
    curl localhost:8000/v1/completions -d '{"model": "sst2-seed0", "prompt": "a gripping film"}'

OpenAI-style /v1/completions and /v1/models, our /v1/classify, and /health (serving/http_app.py);
the bank file names the backbone config, the prompts and any prompt ensembles (serving/bank_file.py). Requests for any
of the prompts are batched together: a batch is served when it holds --max_batch requests or its
first has waited --max_wait_ms. SIGTERM stops taking requests, finishes those in flight and exits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from absl import app, flags

from jaxprompt.serving.bank_file import load_bank_file, read_ensembles
from jaxprompt.serving.http_app import create_app, server

_BANK = flags.DEFINE_string("bank", None, "The bank file (JSON): the backbone config and the prompts.", required=True)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free one, logged).")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 32, "Most requests served in one batch (the step pads each to "
                                  "the smallest of config.serving.batch_sizes and eval_batch_size that holds it; more"
                                  " than eval_batch_size make several).")
_MAX_WAIT_MS = flags.DEFINE_float("max_wait_ms", 5.0, "Longest a batch's first request waits for others.")
_MAX_QUEUE = flags.DEFINE_integer("max_queue", 1024, "Most requests waiting; more are refused with 429.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.WARNING)  # Orbax and grain are chatty at INFO
  for name in ("jaxprompt", "uvicorn"):
    logging.getLogger(name).setLevel(logging.INFO)
  bank = load_bank_file(_BANK.value)
  web = create_app(bank, _MAX_BATCH.value, _MAX_WAIT_MS.value, _MAX_QUEUE.value, ensembles=read_ensembles(_BANK.value))
  server(web, _HOST.value, _PORT.value).run()


if __name__ == "__main__":
  app.run(main)
