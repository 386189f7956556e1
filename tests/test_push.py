"""Push subscriptions in the store, on SQLite and PostgreSQL: one row per browser, a cap per
contact, the recipient the push channels read, and deletion of gone subscriptions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, select

from engine.delivery.push import (
    MAX_PER_CONTACT,
    forget_gone,
    push_recipient,
    subscribe,
    unsubscribe,
)
from engine.store import db
from engine.store.models import Contact, PushSubscription

T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
P256DH = "B" + "A" * 86
AUTH = "A" * 22


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    found = db.make_engine(engine_url)
    yield found
    found.dispose()


def contact(engine: Engine, external_id: str, **attributes: object) -> int:
    with engine.begin() as conn:
        return int(conn.execute(insert(Contact).values(
            external_id=external_id, attributes=attributes, tags=[], created_at=T0, updated_at=T0,
        ).returning(Contact.id)).scalar_one())  # fmt: skip


def endpoints(engine: Engine, contact_id: int) -> list[str]:
    with engine.connect() as conn:
        return [s["endpoint"] for s in push_recipient(conn, contact_id)["subscriptions"]]


def test_a_browser_has_one_row_whoever_subscribes_it(engine: Engine) -> None:
    ann, bob = contact(engine, "ann"), contact(engine, "bob")
    with engine.begin() as conn:
        assert subscribe(conn, ann, "https://push.example/1", P256DH, AUTH, T0, "Firefox") is True
        assert (
            subscribe(conn, bob, "https://push.example/1", P256DH, AUTH, T0 + timedelta(days=1))
            is False
        )
        rows = conn.execute(select(PushSubscription.contact_id, PushSubscription.created_at,
                                   PushSubscription.last_seen_at)).all()  # fmt: skip
    assert rows == [(bob, T0, T0 + timedelta(days=1))]
    assert endpoints(engine, ann) == [] and endpoints(engine, bob) == ["https://push.example/1"]


def test_a_contact_keeps_the_most_recently_seen_browsers(engine: Engine) -> None:
    ann = contact(engine, "ann")
    with engine.begin() as conn:
        for i in range(MAX_PER_CONTACT + 3):
            subscribe(
                conn, ann, f"https://push.example/{i}", P256DH, AUTH, T0 + timedelta(minutes=i)
            )
    kept = endpoints(engine, ann)
    assert len(kept) == MAX_PER_CONTACT
    assert kept[0] == f"https://push.example/{MAX_PER_CONTACT + 2}"  # most recent first
    assert "https://push.example/0" not in kept


def test_the_recipient_carries_subscriptions_and_device_tokens(engine: Engine) -> None:
    ann = contact(engine, "ann", push_devices=["tok-1", "tok-2"])
    solo = contact(engine, "solo", push_devices="tok-3")
    with engine.begin() as conn:
        subscribe(conn, ann, "https://push.example/1", P256DH, AUTH, T0)
    with engine.connect() as conn:
        assert push_recipient(conn, ann) == {
            "subscriptions": [
                {"endpoint": "https://push.example/1", "keys": {"p256dh": P256DH, "auth": AUTH}}
            ],
            "devices": ["tok-1", "tok-2"],
        }
        assert push_recipient(conn, solo) == {"subscriptions": [], "devices": ["tok-3"]}


def test_gone_subscriptions_are_deleted_by_the_channels_callback(engine: Engine) -> None:
    ann = contact(engine, "ann")
    with engine.begin() as conn:
        subscribe(conn, ann, "https://push.example/1", P256DH, AUTH, T0)
        subscribe(conn, ann, "https://push.example/2", P256DH, AUTH, T0)
    forget_gone(engine)("https://push.example/1")
    forget_gone(engine)("https://push.example/unknown")  # nothing to delete: no error
    assert endpoints(engine, ann) == ["https://push.example/2"]
    with engine.begin() as conn:
        assert unsubscribe(conn, "https://push.example/2") is True
        assert unsubscribe(conn, "https://push.example/2") is False
