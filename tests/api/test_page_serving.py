"""The admin page is served at /admin/ under a strict CSP, and never shadows the API."""

import re

import pytest

from app import admin_page
from tests.api.conftest import BASE

PAGE_FILES = ["/admin/", "/admin/assets/app.js", "/admin/assets/admin.css"]


@pytest.mark.parametrize("path", PAGE_FILES)
async def test_page_and_assets_carry_the_security_headers(client, path):
    response = await client.get(path, headers={"Authorization": ""})
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_the_page_has_no_inline_script_or_style_and_loads_only_its_own_assets(client):
    html = (await client.get("/admin/")).text
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    assert re.findall(r'<script[^>]*src="([^"]+)"', html) == ["assets/app.js"]
    assert not re.search(r'(src|href)="(https?:)?//', html)
    for name in admin_page.PAGE_DIR.joinpath("assets").glob("*.js"):
        source = name.read_text()
        assert "innerHTML" not in source and "insertAdjacentHTML" not in source, name
        assert "eval(" not in source and "document.write" not in source, name
    js = await client.get("/admin/assets/app.js")
    assert js.headers["content-type"].startswith("text/javascript")


async def test_the_page_does_not_shadow_the_api(client):
    assert (
        (await client.get("/admin", follow_redirects=False)).headers["location"].endswith("/admin/")
    )
    anonymous = {"Authorization": ""}
    assert (await client.get(BASE, headers=anonymous)).status_code == 401
    assert (await client.get(BASE)).status_code == 200
    unknown = await client.get(f"{BASE}/not-a-uuid/nothing")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Not Found"}
    assert (await client.delete(BASE)).status_code == 405
    assert (await client.get("/admin/assets/../main.py")).status_code == 404
    assert (await client.get("/admin/ui/")).status_code == 404
