"""The admin page: one static page and its assets at /admin/, under a strict CSP.

The page is plain HTML, CSS and JavaScript modules that call the admin API with the admin's
token; it holds no logic of its own. It is served from two routes only (`/admin/` and
`/admin/assets/…`), so nothing here can shadow the API under /admin/migrations/goals.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

PAGE_DIR = Path(__file__).parent / "static"
PAGE_PATH = "/admin/"

# Scripts and styles only from the app itself, nothing inline, no framing; the page talks only
# to its own origin, so even injected markup could neither load nor send anything.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _Assets(StaticFiles):
    """Static files with the page's security headers."""

    async def get_response(self, path: str, scope: Scope):
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount(app: FastAPI) -> None:
    """Serve the page at /admin/ and its assets at /admin/assets/, if the page is installed."""
    if not (PAGE_DIR / "index.html").is_file():
        return

    @app.get(PAGE_PATH, include_in_schema=False)
    async def admin_page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html", headers=SECURITY_HEADERS)

    app.mount("/admin/assets", _Assets(directory=PAGE_DIR / "assets"), name="admin-assets")
