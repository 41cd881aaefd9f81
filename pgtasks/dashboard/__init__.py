"""The pgtasks web dashboard (`pip install 'pgtasks[dashboard]'`).

Serve it alone with `pgtasks dashboard`, or mount `asgi_app(app)` in a FastAPI, Starlette or
Django (ASGI) project. See docs/dashboard.md.
"""

from __future__ import annotations

from pgtasks.dashboard.asgi import asgi_app
from pgtasks.dashboard.auth import Access, Credential, basic_auth

__all__ = ["Access", "Credential", "asgi_app", "basic_auth"]
