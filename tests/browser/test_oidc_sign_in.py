"""The admin page behind the identity provider: its access token signs in as the service's own does.

The app runs with AUTH_MODE=oidc against a real JWKS server (tests/identity_provider.py); the
token is Keycloak-shaped: an opaque sub, preferred_username, the role in realm_access.roles.
"""

import re

import pytest
from playwright.sync_api import expect

from app.config import load_settings
from tests.browser.conftest import API, LiveServer, sign_in
from tests.identity_provider import AUDIENCE, ISSUER, Provider, claims, rsa_key, sign


@pytest.fixture
def provider():
    provider = Provider(rsa_key("rsa-1"))
    provider.start()
    yield provider
    provider.stop()


def test_a_providers_token_signs_in_names_the_person_and_starts_jobs(page, database_url, provider):
    settings = load_settings(
        database_url=database_url,
        auth_mode="oidc",
        oidc_jwks_url=provider.url,
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_roles_claim="realm_access.roles",
        oidc_subject_claim="preferred_username",
        heartbeat_seconds=0.1,
        _env_file=None,
    )
    [key] = provider.keys.values()
    admin = sign(key, claims(roles=None, realm_access={"roles": ["offline_access", "admin"]}))
    with LiveServer(settings) as server:
        sign_in(page, server, admin)
        expect(page.locator("#who-sub")).to_have_text("dana")
        page.get_by_role("button", name="Start dry run").click()
        expect(page.locator(".job .job-status").first).to_have_text(re.compile("Dry run finished"))
        with server.api(admin) as api:
            [job] = api.get(API).json()["items"]
        assert job["requested_by"] == "dana"

        page.get_by_role("button", name="Sign out").click()
        viewer = sign(key, claims(roles=None, realm_access={"roles": ["offline_access"]}))
        page.get_by_label("Admin token").fill(viewer)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#signin-message")).to_contain_text(
            "This token is not an admin's (admin role required: "
            "the token's realm_access.roles claim does not hold 'admin')"
        )
        assert page.evaluate("sessionStorage.length") == 0
