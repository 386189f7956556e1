"""Loading what the gate needs for a batch, under a per-contact lock, in one query per kind."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from engine.config import Settings
from engine.policy.gate import ContactPolicy, PastSend, PolicyGate, lookback, withdrawal
from engine.policy.loader import load_policy_file
from engine.policy.locks import lock_contacts
from engine.policy.model import Policy
from engine.policy.programs import BudgetBook, ProgramRules, ProgramWatcher
from engine.runtime.state import ContactView
from engine.store.bulk import one_list
from engine.store.models import Contact, Send


def past_sends(
    conn: Connection, contact_ids: list[int], since: datetime
) -> dict[int, list[PastSend]]:
    rows = conn.execute(
        select(Send.contact_id, Send.created_at, Send.channel, Send.scenario_id, Send.kind).where(
            one_list(Send.contact_id, contact_ids, conn.dialect.name), Send.created_at >= since
        )
    )
    out: dict[int, list[PastSend]] = defaultdict(list)
    for r in rows:
        out[r.contact_id].append(PastSend(r.created_at, r.channel, r.scenario_id, r.kind))
    return out


def consent_readers(
    conn: Connection, policy: Policy, contacts: Mapping[int, ContactView], now: datetime,
    channels: Collection[str] | None = None,
) -> dict[int, ContactPolicy]:  # fmt: skip
    """The gate's consent and suppression checks for these contacts, read in one query each
    (`channels`: only the suppressions that can block these channels)."""
    from engine.policy.consent import (
        consent_snapshot,
        effective_consent,
        is_suppressed,
        suppressed_addresses,
    )

    snapshot = consent_snapshot(conn, list(contacts))
    suppressed = suppressed_addresses(conn, contacts, channels)
    data: dict[int, ContactPolicy] = {}
    for cid, contact in contacts.items():
        mine = snapshot.get(cid, {})

        def consent(channel: str, topic: str, mine: Any = mine) -> tuple[bool, str]:
            return effective_consent(mine, channel, topic, now, policy)

        def suppression(channel: str, contact: ContactView = contact) -> str | None:
            return is_suppressed(suppressed, channel, contact)

        data[cid] = ContactPolicy(consent=consent, suppressed=suppression)
    return data


def withdrawals(
    conn: Connection, policy: Policy, sends: Iterable[tuple[int, int, str, str | None]],
    now: datetime,
) -> dict[int, str]:  # fmt: skip
    """Queued marketing sends, as (key, contact id, channel, topic), that the gate's withdrawal
    checks would now block: key → rule id. Contacts, consents and suppressions are read once
    for all of them (three queries, whatever their number)."""
    wanted = list(sends)
    if not wanted:
        return {}
    ids = sorted({contact_id for _, contact_id, _, _ in wanted})
    rows = conn.execute(
        select(Contact.id, Contact.external_id, Contact.email, Contact.phone, Contact.opted_out)
        .where(one_list(Contact.id, ids, conn.dialect.name))
    )  # fmt: skip
    contacts = {r.id: ContactView(r.id, r.external_id, r.email, r.phone, opted_out=r.opted_out)
                for r in rows}  # fmt: skip
    readers = consent_readers(conn, policy, contacts, now, {c for _, _, c, _ in wanted})
    blocked: dict[int, str] = {}
    for key, contact_id, channel, topic in wanted:
        if contact_id not in contacts:
            continue  # no longer on file: nothing left to judge
        block = withdrawal(contacts[contact_id], readers[contact_id], channel, topic)
        if block is not None:
            blocked[key] = block.reason
    return blocked


def build_gate(
    conn: Connection, policy: Policy, default_zone: str, contacts: dict[int, ContactView],
    now: datetime, watch: Any = None, programs: ProgramRules | None = None,
) -> PolicyGate:  # fmt: skip
    """Lock the batch's contacts, then load their sends, consents, suppressions and barometers
    (`watch`: an engine.policy.health.HealthWatch giving the channels whose caps tighten;
    `programs`: the programs whose caps and budgets the gate enforces)."""
    from engine.policy.pressure import caps_factor, load_barometers, send_state

    tightened = watch.tightened(conn, now) if watch is not None else frozenset()
    ids = sorted(contacts)
    lock_contacts(conn, ids)
    since = now - lookback(policy)
    if programs is not None:  # one read covers the workspace's and the programs' caps
        since = min(since, now - programs.lookback())
    sends = past_sends(conn, ids, since)
    data = consent_readers(conn, policy, contacts, now)
    barometers = load_barometers(conn, ids, now, policy.pressure)
    for cid, mine in data.items():
        barometer = barometers.get(cid)

        def state(channel: str, barometer: Any = barometer) -> str:
            return send_state(barometer, channel)

        def factor(channel: str, barometer: Any = barometer) -> tuple[float, float]:
            return caps_factor(barometer, channel, policy.pressure)

        mine.sends, mine.caps_factor, mine.pressure_state = sends.get(cid, []), factor, state
    gate = PolicyGate(policy, default_zone, data)
    gate.barometers = barometers  # the runner records this batch's sends on them
    gate.tightened = tightened
    if programs is not None and programs.by_scenario:
        gate.programs = programs.by_scenario
        gate.budgets = BudgetBook(conn, programs, now, default_zone)
    return gate


def policy_path(settings: Settings) -> Path:
    return settings.scenarios_dir / "policy.yaml"


def full_gate_factory(settings: Settings, policy: Policy | None = None) -> Any:
    """The runner's gate factory with the workspace policy (read once) and the programs (read
    again when their files change)."""
    from zoneinfo import ZoneInfo

    from engine.policy.health import HealthWatch

    chosen = policy or load_policy_file(policy_path(settings))
    watch = HealthWatch(chosen, ZoneInfo(settings.timezone))  # one per worker: read every 5 min
    programs = ProgramWatcher(settings.scenarios_dir)  # one per worker: a listing per batch

    def factory(conn: Connection, contacts: dict[int, ContactView], now: datetime) -> PolicyGate:
        rules = programs.current()
        return build_gate(conn, chosen, settings.timezone, contacts, now, watch, rules)

    factory.policy = chosen  # type: ignore[attr-defined]
    return factory
