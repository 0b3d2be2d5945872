"""Where the person and the admin role are read from in a provider's access token."""

import pytest

from app.oidc import claim, roles

CLAIMS = {
    "sub": "3f1c",
    "preferred_username": "dana",
    "realm_access": {"roles": ["offline_access", "admin"]},
    "https://clinic.example/roles": ["admin"],
    "scope": "openid profile admin",
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("preferred_username", "dana"),
        ("realm_access.roles", ["offline_access", "admin"]),
        ("https://clinic.example/roles", ["admin"]),  # a namespaced name, dots and all
        ("realm_access.roles.admin", None),  # a list has no members by name
        ("resource_access.goal-migration.roles", None),
        ("sub.id", None),
    ],
)
def test_claim_by_name_or_dot_path(path, value):
    assert claim(CLAIMS, path) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["admin", "therapist", 3, None], {"admin", "therapist"}),
        ("openid profile admin", {"openid", "profile", "admin"}),
        ({"admin": True}, set()),
        (None, set()),
    ],
)
def test_roles_from_a_list_or_a_string_of_names(value, expected):
    assert roles(value) == expected
