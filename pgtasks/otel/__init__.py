"""Built-in OpenTelemetry tracing (`pip install 'pgtasks[otel]'`): `pgtasks.otel.instrument(app)`.

See "Tracing with OpenTelemetry" in docs/operations.md.
"""

from __future__ import annotations

from pgtasks.core.errors import ConfigurationError

try:
    import opentelemetry.trace  # noqa: F401 - only to tell a missing extra from other errors
except ImportError as exc:  # pragma: no cover - the dev install has the extra
    raise ConfigurationError(
        "pgtasks.otel needs OpenTelemetry: pip install 'pgtasks[otel]' (opentelemetry-api), and an SDK "
        "with an exporter to see the spans"
    ) from exc

from pgtasks.otel.tracing import SYSTEM, JobTracer, TracingEnqueuer, instrument

__all__ = ["SYSTEM", "JobTracer", "TracingEnqueuer", "instrument"]
