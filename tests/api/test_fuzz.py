"""The whole API fuzzed from its own OpenAPI schema: no 5xx, and every response as documented.

Schemathesis draws valid and invalid requests for every operation, as an admin, against the
app in-process (its lifespan included) on a database with demo data; job ids are random or
one of a real finished job, so the state-dependent answers (409s, previews) come up too. A
fixed seed makes a run repeatable; the example count keeps it to seconds.
"""

import asyncio

import schemathesis
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app import demo
from app.db import create_engine
from app.main import create_app
from tests import helpers
from tests.api.conftest import auth

EXAMPLES_PER_OPERATION = 60
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]


async def _finished_job(settings, database_url) -> str:
    db = create_engine(settings)
    try:
        await demo.write(database_url, sessions=200)
        return str((await helpers.run(db, settings, dry_run=True))["id"])
    finally:
        await db.dispose()


def test_no_5xx_and_every_response_as_documented(settings, database_url):
    job_id = asyncio.run(_finished_job(settings, database_url))
    app = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # We send a valid admin token ourselves (test_auth covers the rest): no generated ones.
    schema.config.generation.update(with_security_parameters=False)
    headers = auth()
    try:
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 13
        for operation in operations:
            strategies = [
                operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            ]
            if "{job_id}" in operation.path:
                strategies.append(operation.as_strategy(path_parameters={"job_id": job_id}))

            @seed(20261126)
            @hsettings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=st.one_of(strategies))
            def check(case):
                case.call_and_validate(headers=headers, checks=CHECKS)

            check()
    finally:
        schemathesis_asgi.shutdown_lifespans()
