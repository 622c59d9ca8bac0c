"""OpenTelemetry helpers for code that runs agentrun inside a job (batch, Ray, a queue worker).

agentrun publishes GenAI spans and metrics by itself once OpenTelemetry providers exist (the
global ones, or `AsyncClient(tracer_provider=..., meter_provider=...)`); see
docs/observability.md. These helpers put a job's invocations in one trace:

```python
from agentrun import otel

with otel.job_span("nightly-eval", {"job.id": "42"}):
    carrier = otel.inject()          # W3C traceparent, to send along with the work

# in the worker (another process):
with otel.extracted(carrier):
    result = await client.run("asst_abc123", "Hi")   # a child of the job's span
```

All three do nothing (and cost nothing) without opentelemetry-api or without a tracer provider.
"""

from __future__ import annotations

from agentrun._otel import extracted, inject, job_span

__all__ = ["extracted", "inject", "job_span"]
