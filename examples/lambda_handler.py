"""An AWS Lambda function receiving Reader's signed webhooks, with no server.

Ship a ``jobwatch.toml`` with the function, its secret and a store that every instance of
the function shares (docs/serverless.md)::

    [jobwatch]
    store = "redis"

    [jobwatch.webhook]
    secrets = ["${READER_WEBHOOK_SECRET}"]

    [jobwatch.redis]
    url = "${REDIS_URL}"

Set the function's handler to ``lambda_handler.handler`` behind an API Gateway HTTP API or a
function URL, and register that URL with Reader.
"""

from __future__ import annotations

import json

import jobwatch
import jobwatch.serverless


def on_event(event: jobwatch.JobEvent) -> None:
    # Once per new event, after the delivery was verified and recorded. Keep it short:
    # Reader gives up on a delivery after 10 seconds.
    print(json.dumps({"job_id": event.job_id, "kind": event.kind.value}))


# Built at import: a wrong configuration fails the first cold start, not every request.
handler = jobwatch.serverless.lambda_handler(jobwatch.load_config(), on_event=on_event)
