"""The project's App: it imports no tasks module. `pgtasks --app tests.apps.discovery.app worker` finds
them all: shipping's through include=, billing's through autodiscover() (notasks has none)."""

from __future__ import annotations

import pgtasks

app = pgtasks.App(include=["tests.apps.discovery.shipping.tasks"])
app.autodiscover(["tests.apps.discovery.billing", "tests.apps.discovery.notasks"])
