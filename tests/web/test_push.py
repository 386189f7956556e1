"""Sites subscribing browsers to Web Push: the site key, the origin allow list, the endpoint
checks (https, public address), storage, the application server key and the service worker."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from designer.push import contact_signature
from engine.delivery.push import push_recipient
from engine.store.models import Contact, PushSubscription
from tests.problems import field_of, legacy

SITE_KEY = "site-key-42"
ORIGIN = "https://shop.example"
PUBLIC_ENDPOINT = "https://8.8.8.8/push/abc123"  # an address literal: no DNS in tests
VAPID = ec.generate_private_key(ec.SECP256R1())
VAPID_PEM = VAPID.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def keys() -> dict[str, str]:
    browser = ec.generate_private_key(ec.SECP256R1())
    point = browser.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {"p256dh": b64url(point), "auth": b64url(os.urandom(16))}


def write_channels(workspace: Path, extra: str = "") -> None:
    (workspace / "channels.yaml").write_text(
        "push:\n"
        "  provider: webpush\n"
        "  vapid_private_key: ${TEST_VAPID_KEY}\n"
        "  vapid_subject: mailto:push@shop.example\n"
        f"  site_key: {SITE_KEY}\n"
        f"  origins: [{ORIGIN}]\n" + extra,
        encoding="utf-8",
    )


@pytest.fixture
def app(designer_app: Flask, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.setenv("TEST_VAPID_KEY", VAPID_PEM)
    write_channels(workspace)
    return designer_app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def subscribe(client: FlaskClient, endpoint: str = PUBLIC_ENDPOINT, **body: Any) -> Any:
    payload = {
        "key": SITE_KEY,
        "contact": "c-1",
        "subscription": {"endpoint": endpoint, "keys": keys()},
    }
    return client.post("/push/subscribe", json={**payload, **body}, headers={"Origin": ORIGIN})


def stored(app: Flask) -> list[Any]:
    with app.extensions["parcours"].engine.connect() as conn:
        return list(conn.execute(select(PushSubscription.endpoint, Contact.external_id).join(
            Contact, Contact.id == PushSubscription.contact_id)))  # fmt: skip


def test_a_browser_subscribes_then_renews_then_unsubscribes(
    app: Flask, client: FlaskClient
) -> None:
    first = subscribe(client)
    assert first.status_code == 201, first.get_json()
    assert first.get_json() == {"subscribed": True, "created": True}
    assert first.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert stored(app) == [(PUBLIC_ENDPOINT, "c-1")]  # the unknown contact was created

    again = subscribe(client, contact="c-2")  # the same browser, now another contact's
    assert again.status_code == 200
    assert stored(app) == [(PUBLIC_ENDPOINT, "c-2")]

    with app.extensions["parcours"].engine.connect() as conn:
        contact_id = conn.execute(
            select(Contact.id).where(Contact.external_id == "c-2")
        ).scalar_one()
        recipient = push_recipient(conn, contact_id)
    assert [s["endpoint"] for s in recipient["subscriptions"]] == [PUBLIC_ENDPOINT]
    assert set(recipient["subscriptions"][0]["keys"]) == {"p256dh", "auth"}
    assert recipient["devices"] == []

    gone = client.post("/push/unsubscribe", json={"key": SITE_KEY, "endpoint": PUBLIC_ENDPOINT})
    assert gone.get_json() == {"unsubscribed": True}
    assert stored(app) == []
    twice = client.post("/push/unsubscribe", json={"key": SITE_KEY, "endpoint": PUBLIC_ENDPOINT})
    assert twice.get_json() == {"unsubscribed": False}


@pytest.mark.parametrize("key", ["wrong", "", None, SITE_KEY + "x"])
def test_a_bad_site_key_is_401(app: Flask, client: FlaskClient, key: Any) -> None:
    response = subscribe(client, key=key)
    assert response.status_code == 401
    assert response.get_json()["code"] == "bad_site_key"
    assert stored(app) == []
    assert client.post("/push/unsubscribe", json={"key": key, "endpoint": "x"}).status_code == 401


def test_another_origin_is_refused(app: Flask, client: FlaskClient) -> None:
    payload = {
        "key": SITE_KEY,
        "contact": "c-1",
        "subscription": {"endpoint": PUBLIC_ENDPOINT, "keys": keys()},
    }
    response = client.post(
        "/push/subscribe", json=payload, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert stored(app) == []


def test_the_preflight_answers_listed_origins_only(client: FlaskClient) -> None:
    ok = client.options("/push/subscribe", headers={"Origin": ORIGIN})
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    other = client.options("/push/subscribe", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("http://8.8.8.8/push/abc", "https only"),
        ("https://127.0.0.1/push/abc", "loopback"),
        ("https://10.1.2.3/push/abc", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::ffff:10.0.0.1]/push", "private"),
        ("ftp://8.8.8.8/push", "https only"),
    ],
)
def test_endpoints_outside_the_public_https_internet_are_refused(
    app: Flask, client: FlaskClient, endpoint: str, reason: str
) -> None:
    response = subscribe(client, endpoint=endpoint)
    assert response.status_code == 400
    error = legacy(response)
    assert error["code"] == "endpoint_refused"
    assert error["field"] == "subscription.endpoint"
    assert reason in error["message"]
    assert stored(app) == []


def test_malformed_keys_are_refused_with_the_field(client: FlaskClient) -> None:
    response = client.post("/push/subscribe", json={
        "key": SITE_KEY, "contact": "c-1",
        "subscription": {"endpoint": PUBLIC_ENDPOINT, "keys": {"p256dh": "AAAA", "auth": "AAAA"}},
    })  # fmt: skip
    assert response.status_code == 400
    assert field_of(response) == "subscription.keys.p256dh"


def test_a_contact_signature_is_required_when_configured(
    app: Flask, client: FlaskClient, workspace: Path
) -> None:
    write_channels(workspace, "  contact_secret: s3cret-for-contacts\n")
    unsigned = subscribe(client)
    assert unsigned.status_code == 403
    assert unsigned.get_json()["code"] == "bad_signature"
    forged = subscribe(client, signature=contact_signature("s3cret-for-contacts", "c-2"))
    assert forged.status_code == 403
    signed = subscribe(client, signature=contact_signature("s3cret-for-contacts", "c-1"))
    assert signed.status_code == 201
    assert stored(app) == [(PUBLIC_ENDPOINT, "c-1")]


def test_the_application_server_key_is_the_vapid_public_key(client: FlaskClient) -> None:
    response = client.get("/push/vapid-public-key")
    assert response.status_code == 200
    expected = VAPID.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert response.get_json() == {"public_key": b64url(expected)}


def test_the_service_worker_is_served_as_javascript(client: FlaskClient) -> None:
    response = client.get("/push/sw.js")
    assert response.status_code == 200
    assert response.mimetype == "application/javascript"
    script = response.get_data(as_text=True)
    for needed in (
        'addEventListener("push"',
        "showNotification",
        'addEventListener("notificationclick"',
        "openWindow",
    ):
        assert needed in script


def test_without_web_push_configured_the_endpoints_say_so(
    app: Flask, client: FlaskClient, workspace: Path
) -> None:
    (workspace / "channels.yaml").unlink()
    response = subscribe(client)
    assert response.status_code == 404
    assert response.get_json()["code"] == "push_not_configured"
    assert client.get("/push/vapid-public-key").status_code == 404


def test_a_broken_key_is_a_503_that_does_not_show_it(
    client: FlaskClient, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_VAPID_KEY", "bm90LWEta2V5")
    write_channels(workspace, "  ttl: 60\n")  # a changed file is read again
    response = client.get("/push/vapid-public-key")
    assert response.status_code == 503
    assert response.get_json()["code"] == "push_misconfigured"
    assert "bm90LWEta2V5" not in response.get_data(as_text=True)
