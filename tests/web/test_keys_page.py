"""The API keys page (/admin/keys): admins only, a new key shown once, revocation, audited."""

from __future__ import annotations

import re
from collections.abc import Callable

from flask.testing import FlaskClient
from sqlalchemy import select

from designer import Parcours
from engine.store.models import ApiKey, AuditEntry

SECRET = re.compile(r'value="(pk_[0-9a-f]{8}_[^"]+)"')


def _create(client: FlaskClient, name: str, scope: str = "write") -> tuple[int, str]:
    response = client.post(
        "/admin/keys",
        data={"name": name, "scope": scope, "csrf_token": client.csrf},  # type: ignore[attr-defined]
    )
    return response.status_code, response.get_data(as_text=True)


def _audit(state: Parcours) -> list[tuple[str, str, str, str | None]]:
    with state.engine.connect() as conn:
        rows = conn.execute(
            select(AuditEntry).where(AuditEntry.target_kind == "api_key").order_by(AuditEntry.id)
        ).all()
    return [(r.username, r.action, r.target_kind, r.target_id) for r in rows]


def test_only_admins_see_and_use_the_page(login: Callable[[str], FlaskClient]) -> None:
    for role in ("viewer", "marketer"):
        client = login(role)
        assert client.get("/admin/keys").status_code == 403
        assert _create(client, "shop")[0] == 403
        assert 'data-testid="nav-keys"' not in client.get("/scenarios").get_data(as_text=True)
    admin = login("admin")
    assert 'data-testid="nav-keys"' in admin.get("/scenarios").get_data(as_text=True)
    assert admin.get("/admin/keys").status_code == 200


def test_a_new_key_is_shown_once_and_opens_the_api(
    login: Callable[[str], FlaskClient], state: Parcours
) -> None:
    admin = login("admin")
    status, page = _create(admin, "shop", "write")
    assert status == 200
    (secret,) = SECRET.findall(page)
    assert 'data-copy="#new-key"' in page and "shown this once" in page
    with state.engine.connect() as conn:
        row = conn.execute(select(ApiKey.scope, ApiKey.created_by, ApiKey.prefix)).one()
    assert tuple(row) == ("write", "admin", secret.split("_")[1])
    listing = admin.get("/admin/keys").get_data(as_text=True)
    assert secret not in listing and f"pk_{row.prefix}_…" in listing
    assert secret.split("_", 2)[2] not in listing
    assert _audit(state) == [("admin", "create", "api_key", "shop")]


def test_wrong_fields_are_named_in_the_marketer_language(
    login: Callable[[str], FlaskClient], state: Parcours
) -> None:
    admin = login("admin")
    status, page = _create(admin, "has space")
    assert status == 400 and 'data-testid="error-name"' in page and "1 to 64 letters" in page
    status, page = _create(admin, "shop", "root")
    assert status == 400 and 'data-testid="error-scope"' in page
    status, page = _create(admin, "")
    assert status == 400 and "This field is required." in page
    assert _create(admin, "shop")[0] == 200
    status, page = _create(admin, "shop", "read")
    assert status == 400 and "A key of that name exists" in page
    admin.get("/admin/keys?lang=fr")
    status, page = _create(admin, "shop", "read")
    assert status == 400 and "Une clé de ce nom existe déjà" in page
    assert _audit(state) == [("admin", "create", "api_key", "shop")]
    assert "Traceback" not in page


def test_revoke(login: Callable[[str], FlaskClient], state: Parcours) -> None:
    admin = login("admin")
    _status, page = _create(admin, "shop")
    (secret,) = SECRET.findall(page)
    api = state.engine
    client = admin.application.test_client()  # an API client: no session, the key only
    assert client.get("/api/contacts/x", headers={"X-Api-Key": secret}).status_code == 404
    listing = admin.get("/admin/keys").get_data(as_text=True)
    assert 'data-confirm="Revoke the key shop?' in listing
    no_token = admin.post("/admin/keys/shop/revoke")
    assert no_token.status_code == 400  # CSRF
    done = admin.post("/admin/keys/shop/revoke", data={"csrf_token": admin.csrf})  # type: ignore[attr-defined]
    assert done.status_code == 302
    page = admin.get("/admin/keys").get_data(as_text=True)
    assert (
        "Key shop revoked" in page and "revoked" in page and 'data-testid="revoke-shop"' not in page
    )
    assert client.get("/api/contacts/x", headers={"X-Api-Key": secret}).status_code == 401
    with api.connect() as conn:
        assert conn.scalar(select(ApiKey.revoked_by)) == "admin"
    again = admin.post("/admin/keys/shop/revoke", data={"csrf_token": admin.csrf})  # type: ignore[attr-defined]
    assert "already revoked" in admin.get(again.headers["Location"]).get_data(as_text=True)
    unknown = admin.post("/admin/keys/nope/revoke", data={"csrf_token": admin.csrf})  # type: ignore[attr-defined]
    assert unknown.status_code == 404
    assert _audit(state) == [
        ("admin", "create", "api_key", "shop"),
        ("admin", "revoke", "api_key", "shop"),
    ]
