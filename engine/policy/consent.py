"""The consent ledger and the suppression list: what marketing may reach whom, and the proof.

Consent is kept per contact, channel and topic. Every change appends a `consent_records` row with
its evidence (when, source, wording and version, IP) and updates `consent_states`, the current
value used for lookups, in the same transaction. Stored states are `pending` (double opt-in not
yet confirmed), `opted_in` and `opted_out`; `expired` (an opt-in past its `expires_at`) and
`unknown` (no record) are derived. Topic ``*`` stands for every topic of the channel.

Suppressions block every marketing send to an address on a channel (``*``: on all channels),
whatever the consent says: hard bounces, spam complaints, global unsubscribes, erasures.
"""

from __future__ import annotations

import html
import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from channels import channel_names
from engine.audience.changes import CONSENT, mark_changed
from engine.audience.contacts import EMAIL, MAX_EMAIL_LENGTH, PHONE, RowInvalid, check_json
from engine.audience.privacy import address_hashes
from engine.delivery.links import InvalidLink, sign, verify
from engine.errors import IngestError, NotFound
from engine.policy.locks import lock_contacts
from engine.policy.model import Policy
from engine.store.bulk import one_list
from engine.store.models import ConsentRecord, ConsentState, Contact, Send, Suppression

ALL = "*"  # topic: every topic of the channel; suppression channel: every channel
PENDING = "pending"
OPTED_IN = "opted_in"
OPTED_OUT = "opted_out"
EXPIRED = "expired"  # derived: opted_in past expires_at
UNKNOWN = "unknown"  # derived: no record
STATES = (PENDING, OPTED_IN, OPTED_OUT)
SOURCES = (
    "form",
    "api",
    "import",
    "unsubscribe_link",
    "sms_stop",
    "operator",
    "double_opt_in",
    "preference_center",
    "complaint",  # the provider reported a spam complaint
)
# A subscription from these sources on a double opt-in channel must be confirmed by the contact.
UNCONFIRMED_SOURCES = frozenset({"form", "api"})
# Sources that can only mean one thing, so the evidence cannot say the opposite of the state.
# (sms_stop is any SMS keyword: STOP opts out, START opts back in with a new record.)
SOURCE_STATES = {"unsubscribe_link": OPTED_OUT, "double_opt_in": OPTED_IN, "complaint": OPTED_OUT}
SUPPRESSION_REASONS = ("hard_bounce", "spam_complaint", "unsubscribe", "erasure", "operator")
# Which profile field is the address on each channel; other channels only know "contact:<id>".
ADDRESS_FIELDS = {"email": "email", "sms": "phone", "call": "phone"}
CONTACT_ADDRESS = "contact:"

DOI_SALT = "parcours-double-opt-in"
DOI_MAX_AGE = timedelta(days=30)
DOI_SCENARIO = "system:double-opt-in"
DOI_STEP = "confirm"
DOI_CHANNELS = ("email", "sms")  # channels that can carry a confirmation link
CONFIRM_PATH = "/consent/confirm"

MAX_WORDING = 10_000
MAX_SHORT = 64  # wording_version and ip columns
MAX_SOURCE = 32

# (channel, topic) → (stored state, expires_at)
ContactConsents = dict[tuple[str, str], tuple[str, datetime | None]]
# (channel, address) → suppression reason
Suppressed = dict[tuple[str, str], str]


class Addressed(Protocol):
    """What the suppression check reads of a contact (a ContactView, a Contact row...)."""

    @property
    def id(self) -> int: ...

    @property
    def email(self) -> str | None: ...

    @property
    def phone(self) -> str | None: ...


@dataclass(frozen=True)
class Confirmation:
    """A double opt-in request: the pending record and the message that carries the link."""

    record_id: int
    send_id: int
    send_key: str
    url: str
    status: str  # queued: the delivery loop hands it to the provider; sent: kept by the outbox


@dataclass(frozen=True)
class Subscription:
    """What `subscribe` did: `state` is opted_in (effective now) or pending (awaiting the click)."""

    state: str
    record_id: int
    confirmation: Confirmation | None = None
    already: bool = False  # the contact was already opted in: nothing was recorded


# --- validation --------------------------------------------------------------------------------


class ConsentInvalid(IngestError):
    """A consent or suppression was refused; `field` names the argument at fault, if one is."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _fail(message: str, field: str | None = None) -> ConsentInvalid:
    return ConsentInvalid(message, field)


def _check_choice(value: str, allowed: Iterable[str], what: str, field: str) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise _fail(f"unknown {what} '{shown}'; expected one of: {', '.join(allowed)}", field)


def _check_channel(channel: str, allow_all: bool = False) -> None:
    known = channel_names()
    _check_choice(channel, (*known, ALL) if allow_all else known, "channel", "channel")


def _check_topic(topic: str, policy: Policy) -> None:
    if topic != ALL and topic not in policy.topics:
        known = ", ".join([*policy.topics, ALL])
        shown = topic if len(topic) <= 40 else topic[:40] + "…"
        raise _fail(
            f"unknown topic '{shown}' (declare it under topics: in policy.yaml); known: {known}",
            "topic",
        )


def _check_text(value: str | None, field: str, limit: int) -> None:
    if value is None:
        return
    if len(value) > limit:
        raise _fail(f"{field} is longer than {limit} characters", field)
    if "\x00" in value:
        raise _fail(f"{field} contains a NUL character", field)


def _check_ip(ip: str | None) -> str | None:
    if ip is None or ip == "":
        return None
    try:
        return str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        raise _fail(f"'{ip[:80]}' is not an IP address", "ip") from None


def check_consent(channel: str, topic: str, state: str, source: str, policy: Policy | None) -> None:
    """Refuse an unknown channel, topic, state or source, or a source that contradicts the state.

    Topics are checked against the policy's list when there is a policy to check them against.
    """
    _check_channel(channel)
    if policy is not None:
        _check_topic(topic, policy)
    _check_choice(state, STATES, "consent state", "state")
    _check_choice(source, SOURCES, "consent source", "source")
    required = SOURCE_STATES.get(source)
    if required and state != required:
        raise _fail(f"source '{source}' can only record {required}, not {state}", "source")


def _contact_row(conn: Connection, contact_id: int) -> Any:
    row = conn.execute(
        select(Contact.id, Contact.email, Contact.phone, Contact.locale).where(
            Contact.id == contact_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no contact with id {contact_id}")
    return row


# --- the ledger --------------------------------------------------------------------------------


def record_consent(
    conn: Connection,
    contact_id: int,
    channel: str,
    topic: str,
    state: str,
    source: str,
    now: datetime,
    *,
    wording: str | None = None,
    wording_version: str | None = None,
    ip: str | None = None,
    evidence: Mapping[str, Any] | None = None,
    expires_at: datetime | None = None,
    policy: Policy | None = None,
) -> int:
    """Append a consent record and make it the current state; returns the record id.

    An opt-in with no `expires_at` expires after the policy's `consent.expiry`, if set. A
    form or API opt-in on a double opt-in channel is refused: call `subscribe` instead.
    """
    given = policy
    policy = policy or Policy()
    check_consent(channel, topic, state, source, given)
    if state == OPTED_IN and source in UNCONFIRMED_SOURCES and channel in policy.double_opt_in:
        raise _fail(
            f"{channel} needs double opt-in: an opt-in from '{source}' must be confirmed by the "
            "contact (use subscribe(), which records pending and sends the confirmation link)",
            "state",
        )
    _check_text(wording, "wording", MAX_WORDING)
    _check_text(wording_version, "wording_version", MAX_SHORT)
    ip = _check_ip(ip)
    if evidence is not None:
        try:
            check_json(dict(evidence), "evidence", max_depth=8)
        except RowInvalid as exc:
            raise _fail(f"{exc.field}: {exc.message}", "evidence") from None
    if expires_at is not None:
        if state != OPTED_IN:
            raise _fail(f"only an opt-in can expire, not {state}", "expires_at")
        if expires_at <= now:
            raise _fail(
                f"expires_at {expires_at.isoformat()} is not after {now.isoformat()}", "expires_at"
            )
    elif state == OPTED_IN and policy.consent_expiry is not None:
        expires_at = now + policy.consent_expiry
    _contact_row(conn, contact_id)
    # The gate decides under this lock: a consent written now waits for a batch deciding about
    # this contact to commit, and the next batch reads it (no send after an opt-out).
    lock_contacts(conn, [contact_id])
    record_id = int(
        conn.execute(
            insert(ConsentRecord)
            .values(
                contact_id=contact_id,
                channel=channel,
                topic=topic,
                state=state,
                source=source,
                wording=wording,
                wording_version=wording_version,
                ip=ip,
                at=now,
                expires_at=expires_at,
                evidence=dict(evidence) if evidence is not None else None,
            )
            .returning(ConsentRecord.id)
        ).scalar_one()
    )
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(ConsentState).values(
        contact_id=contact_id,
        channel=channel,
        topic=topic,
        state=state,
        since=now,
        expires_at=expires_at,
        record_id=record_id,
    )
    # The latest record by time wins, so a back-dated import never overrides a newer choice.
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["contact_id", "channel", "topic"],
            set_={
                "state": stmt.excluded.state,
                "since": stmt.excluded.since,
                "expires_at": stmt.excluded.expires_at,
                "record_id": stmt.excluded.record_id,
            },
            where=ConsentState.since <= stmt.excluded.since,
        )
    )
    mark_changed(conn, [(contact_id, CONSENT)], now)  # for the segments reading consent
    return record_id


def consent_snapshot(conn: Connection, contact_ids: Iterable[int]) -> dict[int, ContactConsents]:
    """Current (state, expires_at) per (channel, topic) for each contact, in one query."""
    ids = list(dict.fromkeys(contact_ids))
    snapshot: dict[int, ContactConsents] = {cid: {} for cid in ids}
    if not ids:
        return snapshot
    rows = conn.execute(
        select(
            ConsentState.contact_id,
            ConsentState.channel,
            ConsentState.topic,
            ConsentState.state,
            ConsentState.expires_at,
        ).where(one_list(ConsentState.contact_id, ids, conn.dialect.name))
    )
    for cid, channel, topic, state, expires_at in rows:
        snapshot[cid][(channel, topic)] = (state, expires_at)
    return snapshot


def derived_state(state: str, expires_at: datetime | None, now: datetime) -> str:
    """The stored state, or `expired` for an opt-in whose expiry has passed."""
    if state == OPTED_IN and expires_at is not None and expires_at <= now:
        return EXPIRED
    return state


def effective_consent(
    snapshot_for_contact: Mapping[tuple[str, str], tuple[str, datetime | None]],
    channel: str,
    topic: str | None,
    now: datetime,
    policy: Policy,
) -> tuple[bool, str]:
    """May marketing on (channel, topic) reach this contact? (allowed, rule id).

    An opt-out on ``*`` wins over everything; otherwise the topic's own record, if any, wins
    over the ``*`` record. With neither, the channel's consent mode decides: opt_in blocks
    (unknown), opt_out allows. Pending and expired always block.
    """
    topic = topic or ALL  # a marketing send with no topic needs consent for the whole channel
    rule = f"consent:{topic}:"
    every = snapshot_for_contact.get((channel, ALL))
    if every is not None and every[0] == OPTED_OUT:
        return False, rule + OPTED_OUT
    own = snapshot_for_contact.get((channel, topic)) if topic != ALL else None
    current = own or every
    if current is None:
        if policy.consent_mode(channel) == "opt_out":
            return True, rule + "opt_out_mode"
        return False, rule + UNKNOWN
    state = derived_state(current[0], current[1], now)
    return state == OPTED_IN, rule + state


def subscribe(
    conn: Connection,
    contact_id: int,
    channel: str,
    topic: str,
    source: str,
    now: datetime,
    *,
    secret: str,
    base_url: str,
    wording: str | None = None,
    wording_version: str | None = None,
    ip: str | None = None,
    evidence: Mapping[str, Any] | None = None,
    expires_at: datetime | None = None,
    policy: Policy | None = None,
    delivering: Collection[str] = (),
) -> Subscription:
    """Record an opt-in, or, when the channel needs double opt-in and the source cannot prove
    the address (form, API), record `pending` and send the confirmation link instead.

    `delivering` names the channels a provider delivers (`channel_config.delivering_channels`):
    the confirmation is queued for them, and kept by the outbox on any other."""
    policy = policy or Policy()
    if channel not in policy.double_opt_in or source not in UNCONFIRMED_SOURCES:
        record_id = record_consent(
            conn, contact_id, channel, topic, OPTED_IN, source, now,
            wording=wording, wording_version=wording_version, ip=ip, evidence=evidence,
            expires_at=expires_at, policy=policy,
        )  # fmt: skip
        return Subscription(OPTED_IN, record_id)
    _check_channel(channel)
    _check_topic(topic, policy)
    if expires_at is not None:
        raise _fail(
            f"{channel} needs double opt-in: the policy's expiry counts from the confirmation, "
            "expires_at cannot be given",
            "expires_at",
        )
    current = _current_opt_in(conn, contact_id, channel, topic, now, policy)
    if current is not None:
        # Signing up again must not demote a confirmed opt-in to pending.
        return Subscription(OPTED_IN, current, already=True)
    confirmation = request_double_opt_in(
        conn, contact_id, channel, topic, now, secret, base_url,
        source=source, wording=wording, wording_version=wording_version, ip=ip,
        evidence=evidence, policy=policy, delivering=delivering,
    )  # fmt: skip
    return Subscription(PENDING, confirmation.record_id, confirmation)


def _current_opt_in(
    conn: Connection, contact_id: int, channel: str, topic: str, now: datetime, policy: Policy
) -> int | None:
    """The record id of the opt-in that already lets marketing through, if there is one."""
    snapshot = consent_snapshot(conn, [contact_id])[contact_id]
    allowed, reason = effective_consent(snapshot, channel, topic, now, policy)
    if not (allowed and reason.endswith(":" + OPTED_IN)):
        return None
    key = (channel, topic) if (channel, topic) in snapshot else (channel, ALL)
    record_id = conn.execute(
        select(ConsentState.record_id).where(
            ConsentState.contact_id == contact_id,
            ConsentState.channel == key[0],
            ConsentState.topic == key[1],
        )
    ).scalar_one()
    return int(record_id)


# --- double opt-in -----------------------------------------------------------------------------

_MESSAGES = {
    "en": {
        "subject": "Please confirm your subscription",
        "intro": "Hello,",
        "ask": "Please confirm that you want to receive {what} from us ({channel}):",
        "button": "Confirm my subscription",
        "ignore": "If you did not ask for this, ignore this message: you will not be subscribed.",
        "sms": "Confirm your subscription to {what}: {url} (ignore this message if it was not you)",
        "all": "all our messages",
    },
    "fr": {
        "subject": "Confirmez votre inscription",
        "intro": "Bonjour,",
        "ask": "Merci de confirmer que vous souhaitez recevoir {what} de notre part ({channel}) :",
        "button": "Confirmer mon inscription",
        "ignore": "Si vous n'avez rien demandé, ignorez ce message : vous ne serez pas inscrit.",
        "sms": "Confirmez votre inscription à {what} : {url} (ignorez ce message si ce n'est pas "
        "vous)",
        "all": "tous nos messages",
    },
}


def confirmation_url(base_url: str, token: str) -> str:
    """The public confirmation page's address for `token`."""
    return f"{base_url.rstrip('/')}{CONFIRM_PATH}?token={token}"


def _confirmation_parts(
    channel: str, topic: str, url: str, locale: str | None, policy: Policy
) -> dict[str, str]:
    words = _MESSAGES["fr" if (locale or "").lower().startswith("fr") else "en"]
    what = words["all"] if topic == ALL else str(policy.topics.get(topic, topic))
    if channel == "sms":
        return {"text": words["sms"].format(what=what, url=url)}
    ask = words["ask"].format(what=what, channel=channel)
    text = f"{words['intro']}\n\n{ask}\n{url}\n\n{words['ignore']}\n"
    page = (
        f"<p>{html.escape(words['intro'])}</p>"
        f"<p>{html.escape(ask)}</p>"
        f'<p><a href="{html.escape(url)}">{html.escape(words["button"])}</a></p>'
        f"<p>{html.escape(words['ignore'])}</p>"
    )
    return {"subject": words["subject"], "text": text, "html": page}


def request_double_opt_in(
    conn: Connection,
    contact_id: int,
    channel: str,
    topic: str,
    now: datetime,
    secret: str,
    base_url: str,
    *,
    source: str = "form",
    wording: str | None = None,
    wording_version: str | None = None,
    ip: str | None = None,
    evidence: Mapping[str, Any] | None = None,
    policy: Policy | None = None,
    delivering: Collection[str] = (),
) -> Confirmation:
    """Record `pending` and the confirmation message with its signed link, a transactional send.

    On a channel of `delivering` the send is `queued`: the delivery loop hands it to the
    provider like a journey's message (retries, bounces, delivery reports). On any other the
    outbox keeps it. Marketing stays blocked until the contact follows the link
    (`confirm_double_opt_in`).
    """
    policy = policy or Policy()
    _check_choice(channel, DOI_CHANNELS, "double opt-in channel", "channel")
    contact = _contact_row(conn, contact_id)
    address = getattr(contact, ADDRESS_FIELDS[channel])
    if not address:
        field = ADDRESS_FIELDS[channel]
        raise _fail(
            f"contact {contact_id} has no {field} to send the {channel} confirmation to", field
        )
    record_id = record_consent(
        conn, contact_id, channel, topic, PENDING, source, now,
        wording=wording, wording_version=wording_version, ip=ip, evidence=evidence,
        policy=policy,
    )  # fmt: skip
    token = sign(
        secret, DOI_SALT, {"r": record_id, "c": contact_id, "ch": channel, "t": topic}, now
    )
    url = confirmation_url(base_url, token)
    send_key = f"doi:{record_id}"
    if channel in delivering:
        status, provider_id, attempts, sent_at = "queued", None, 0, None
    else:  # "sent" means accepted by the outbox, as for a journey's message
        status, provider_id, attempts, sent_at = "sent", f"outbox:{send_key}", 1, now
    send_id = conn.execute(
        insert(Send)
        .values(
            send_key=send_key,
            enrollment_id=None,
            contact_id=contact_id,
            scenario_id=DOI_SCENARIO,
            version_id=None,
            step_id=DOI_STEP,
            channel=channel,
            topic=topic,
            kind="transactional",
            status=status,
            payload={"parts": _confirmation_parts(channel, topic, url, contact.locale, policy)},
            provider_id=provider_id,
            attempts=attempts,
            created_at=now,
            sent_at=sent_at,
        )
        .returning(Send.id)
    ).scalar_one()
    return Confirmation(record_id, int(send_id), send_key, url, status)


def confirm_double_opt_in(
    conn: Connection,
    token: str,
    secret: str,
    now: datetime,
    ip: str | None,
    *,
    policy: Policy | None = None,
    max_age: timedelta = DOI_MAX_AGE,
) -> tuple[int, str, str]:
    """Check the signed link and record the opt-in (source double_opt_in, the IP as evidence).

    Returns (contact_id, channel, topic). Following the same link again changes nothing.
    Raises InvalidLink (forged, or withdrawn since) or ExpiredLink (older than `max_age`).
    """
    payload = verify(secret, DOI_SALT, token, max_age, now)
    try:
        record_id, contact_id = int(payload["r"]), int(payload["c"])
        channel, topic = str(payload["ch"]), str(payload["t"])
    except (KeyError, TypeError, ValueError):
        raise InvalidLink("This link is not valid (altered, truncated or not ours).") from None
    request = conn.execute(
        select(ConsentRecord).where(
            ConsentRecord.id == record_id,
            ConsentRecord.contact_id == contact_id,
            ConsentRecord.channel == channel,
            ConsentRecord.topic == topic,
            ConsentRecord.state == PENDING,
        )
    ).first()
    if request is None:
        raise InvalidLink("This link does not match any subscription request.")
    # Locked (PostgreSQL) so that two clicks at once record one confirmation.
    current = conn.execute(
        select(ConsentState.state)
        .where(
            ConsentState.contact_id == contact_id,
            ConsentState.channel == channel,
            ConsentState.topic == topic,
        )
        .with_for_update()
    ).first()
    if current is not None and current.state == OPTED_IN:
        return contact_id, channel, topic  # already confirmed (a second click, a link scanner)
    if current is None or current.state != PENDING:
        # The contact opted out after asking: an old link must not undo a withdrawal.
        raise InvalidLink("This subscription request was withdrawn since; sign up again.")
    record_consent(
        conn, contact_id, channel, topic, OPTED_IN, "double_opt_in", now,
        wording=request.wording, wording_version=request.wording_version, ip=ip,
        evidence={
            "confirms_record": record_id,
            "requested_at": request.at.isoformat(),
            "send_key": f"doi:{record_id}",
        },
        policy=policy,
    )  # fmt: skip
    return contact_id, channel, topic


# --- suppression -------------------------------------------------------------------------------


def normalize_address(channel: str, address: str) -> tuple[str, int | None]:
    """The address as contacts store it (lower-case email, compact phone, ``contact:<id>``) and
    the contact id it names, if any. IngestError if it cannot be used on `channel`."""
    _check_channel(channel, allow_all=True)
    text = address.strip()
    if text.startswith(CONTACT_ADDRESS):
        digits = text[len(CONTACT_ADDRESS) :]
        if not digits.isdigit() or len(digits) > 18:
            raise _fail(f"'{text[:80]}' is not contact:<id>", "address")
        return f"{CONTACT_ADDRESS}{int(digits)}", int(digits)
    if "@" in text:
        if len(text) > MAX_EMAIL_LENGTH or not EMAIL.fullmatch(text):
            raise _fail(f"'{text[:80]}' is not an email address", "address")
        kind, value = "email", text.lower()
    elif PHONE.fullmatch(text):
        kind, value = "phone", "".join(c for c in text if c not in " .-")
    else:
        raise _fail(
            f"'{text[:80]}' is not an email address, a phone number or contact:<id>", "address"
        )
    if channel != ALL and ADDRESS_FIELDS.get(channel) != kind:
        raise _fail(f"an {kind} address cannot be suppressed on channel {channel}", "address")
    return value, None


def suppress(
    conn: Connection,
    channel: str,
    address: str,
    reason: str,
    source: str,
    now: datetime,
    contact_id: int | None = None,
) -> bool:
    """Put an address on the suppression list; True if new (the first reason stays)."""
    _check_choice(reason, SUPPRESSION_REASONS, "suppression reason", "reason")
    if not source or len(source) > MAX_SOURCE:
        raise _fail(f"a suppression source is 1 to {MAX_SOURCE} characters", "source")
    value, named = normalize_address(channel, address)
    owner = contact_id if contact_id is not None else named
    if owner is not None:  # same per-contact lock as the gate (see record_consent)
        lock_contacts(conn, [owner])
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(Suppression)
        .values(
            channel=channel,
            address=value,
            contact_id=contact_id if contact_id is not None else named,
            reason=reason,
            source=source,
            at=now,
        )
        .on_conflict_do_nothing(index_elements=["channel", "address"])
        .returning(Suppression.id)
    )
    return conn.execute(stmt).first() is not None


def _addresses(contact: Addressed) -> list[str]:
    found = [f"{CONTACT_ADDRESS}{contact.id}"]
    found.extend(a for a in (contact.email, contact.phone) if a)
    return found


def suppressed_addresses(
    conn: Connection,
    contacts: Iterable[Addressed] | Mapping[int, Addressed],
    channels: Collection[str] | None = None,
) -> Suppressed:
    """Every suppression touching these contacts (a list, or a map id → contact), as
    (channel, address) → reason, in one query; with `channels`, only those that can block them
    (which lets the (channel, address) index find them). An erased address is on the list as
    its salted hash: the candidates are hashed here once, and a hash found is reported under
    the plain address it matched, so `is_suppressed` blocks a later contact holding it."""
    found = contacts.values() if isinstance(contacts, Mapping) else contacts
    wanted = {a for contact in found for a in _addresses(contact)}
    if not wanted:
        return {}
    hashed = {h: a for a, h in address_hashes(conn, wanted, create=False).items()}
    query = select(Suppression.channel, Suppression.address, Suppression.reason).where(
        one_list(Suppression.address, sorted(wanted | set(hashed)), conn.dialect.name)
    )
    if channels is not None:
        query = query.where(Suppression.channel.in_(sorted({*channels, ALL})))
    out: dict[tuple[str, str], str] = {}
    for channel, address, reason in conn.execute(query):
        plain = hashed.get(address, address)
        # a plain entry and a hashed one for the same address: either reason blocks
        out.setdefault((channel, plain), reason)
    return out


def is_suppressed(
    suppressed: Mapping[tuple[str, str], str], channel: str, contact: Addressed
) -> str | None:
    """The rule id (``suppression:<reason>``) blocking `channel` for this contact, or None."""
    if not suppressed:
        return None
    addresses = [f"{CONTACT_ADDRESS}{contact.id}"]
    field = ADDRESS_FIELDS.get(channel)
    value = getattr(contact, field) if field else None
    if value:
        addresses.append(value)
    for address in addresses:
        for scope in (channel, ALL):
            reason = suppressed.get((scope, address))
            if reason is not None:
                return f"suppression:{reason}"
    return None


# --- views (API, CLI) --------------------------------------------------------------------------


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant is not None else None


def consent_states(conn: Connection, contact_id: int, now: datetime) -> list[dict[str, Any]]:
    """The contact's current consents, `state` derived (expired shows as such)."""
    rows = conn.execute(
        select(ConsentState)
        .where(ConsentState.contact_id == contact_id)
        .order_by(ConsentState.channel, ConsentState.topic)
    ).all()
    return [
        {
            "channel": s.channel,
            "topic": s.topic,
            "state": derived_state(s.state, s.expires_at, now),
            "since": _iso(s.since),
            "expires_at": _iso(s.expires_at),
            "record_id": s.record_id,
        }
        for s in rows
    ]


def consent_history(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    """Every consent record of the contact, oldest first, with its evidence."""
    rows = conn.execute(
        select(ConsentRecord)
        .where(ConsentRecord.contact_id == contact_id)
        .order_by(ConsentRecord.at, ConsentRecord.id)
    ).all()
    return [
        {
            "id": r.id,
            "at": _iso(r.at),
            "channel": r.channel,
            "topic": r.topic,
            "state": r.state,
            "source": r.source,
            "wording": r.wording,
            "wording_version": r.wording_version,
            "ip": r.ip,
            "expires_at": _iso(r.expires_at),
            "evidence": r.evidence,
        }
        for r in rows
    ]


def contact_suppressions(conn: Connection, contact: Addressed) -> list[dict[str, Any]]:
    """Suppressions of the contact's addresses (and of the contact itself), oldest first; an
    erased address's salted hash that one of them matches shows as that address."""
    addresses = _addresses(contact)
    hashed = {h: a for a, h in address_hashes(conn, addresses, create=False).items()}
    rows = conn.execute(
        select(Suppression)
        .where(
            Suppression.address.in_([*addresses, *sorted(hashed)])
            | (Suppression.contact_id == contact.id)
        )
        .order_by(Suppression.at, Suppression.id)
    ).all()
    return [
        {
            "channel": s.channel,
            "address": hashed.get(s.address, s.address),
            "reason": s.reason,
            "source": s.source,
            "at": _iso(s.at),
        }
        for s in rows
    ]
