"""The request rate per API key (PARCOURS_API_RATE): 429 with Retry-After over it, per key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from designer import create_app
from engine import api_keys
from engine.config import load_settings
from engine.errors import ConfigError
from tests.problems import assert_problem

KEY = "bootstrap-key"


@pytest.fixture
def app(engine_url: str, tmp_path: Path) -> Iterator[Flask]:
    settings = load_settings(
        {"PARCOURS_API_RATE": "3/minute"}, database_url=engine_url, api_key=KEY, data_dir=tmp_path
    )
    app = create_app(settings, {"TESTING": True})
    yield app
    app.extensions["parcours"].engine.dispose()


def test_over_the_rate_a_key_gets_429_with_retry_after_and_other_keys_do_not(app: Flask) -> None:
    client = app.test_client()
    with app.extensions["parcours"].engine.begin() as conn:
        other = api_keys.create(conn, "crm", "read", by="ops")
    answers = [client.get("/api/segments", headers={"X-Api-Key": KEY}) for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    refused = assert_problem(answers[3], 429, "rate_limited")
    assert "3 per 1 minute" in refused["detail"] or "3/minute" in refused["detail"]
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 60
    assert client.get("/api/segments", headers={"X-Api-Key": other}).status_code == 200
    assert client.get("/api/health").status_code in (200, 503)  # health is never limited
    assert client.get("/api/health").status_code != 429


def test_no_limit_with_zero_and_a_wrong_rate_is_refused_at_start(
    engine_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        {"PARCOURS_API_RATE": "0"}, database_url=engine_url, api_key=KEY, data_dir=tmp_path
    )
    app = create_app(settings, {"TESTING": True})
    try:
        client = app.test_client()
        codes = {client.get("/api/segments", headers={"X-Api-Key": KEY}).status_code
                 for _ in range(30)}  # fmt: skip
        assert codes == {200}
    finally:
        app.extensions["parcours"].engine.dispose()
    with pytest.raises(ConfigError, match="PARCOURS_API_RATE='lots' is not a rate"):
        load_settings({"PARCOURS_API_RATE": "lots"})
