"""A token whose subject is empty or blank is refused: jobs and the audit must name someone."""

import time

import jwt
import pytest
from sqlalchemy import text

from tests.api.conftest import BASE
from tests.conftest import SECRET


@pytest.mark.parametrize("sub", ["", " ", "\t\n"])
async def test_blank_subject_gets_401_and_starts_nothing(client, db, sub):
    token = jwt.encode({"sub": sub, "role": "admin", "exp": int(time.time()) + 600}, SECRET)
    response = await client.post(BASE, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    async with db.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM migration_jobs"))).scalar_one() == 0
