"""An App whose autodiscovered package has a tasks module that fails to import."""

from __future__ import annotations

import pgtasks

app = pgtasks.App()
app.autodiscover(["tests.apps.discovery.billing", "tests.apps.discovery.broken"])
