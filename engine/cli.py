"""The `parcours` command (engine part): lint, schema, db, publish, import, simulate, outbox.

`designer.cli` adds `up` (HTTP server + worker) on top of this group.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from channels.errors import ChannelConfigError
from engine.audience.ingest import (
    ImportReport,
    RowError,
    clean_contact,
    clean_event,
    import_rows,
    parse_instant,
    record_events,
    upsert_contacts,
)
from engine.cli_common import database, os_user
from engine.config import SETTINGS, Settings, load_settings
from engine.errors import ParcoursError, ScenarioInvalid
from engine.policy.consent import SOURCES, STATES, SUPPRESSION_REASONS
from engine.store.db import make_engine, upgrade, utcnow


def _settings(ctx: click.Context) -> Settings:
    obj: Settings = ctx.obj
    return obj


class ParcoursGroup(click.Group):
    """Turns engine errors into a one-line message and exit status 1: never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ScenarioInvalid as exc:
            from engine.spec.lint import format_problems

            click.echo(format_problems(exc.problems), err=True)
            sys.exit(1)
        except (ParcoursError, ChannelConfigError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except (
            click.ClickException,
            click.exceptions.Exit,
            click.Abort,
            SystemExit,
            KeyboardInterrupt,
            BrokenPipeError,  # the reader went away (`| head`): designer.cli.main says nothing
        ):
            raise
        except Exception as exc:
            logging.getLogger("parcours").debug("unexpected error", exc_info=True)
            click.echo(
                f"error: unexpected {type(exc).__name__}: {exc}\n"
                "run again with PARCOURS_LOG_LEVEL=DEBUG for the full trace",
                err=True,
            )
            sys.exit(2)


@click.group(
    cls=ParcoursGroup, help="Parcours: customer journeys with consent and pressure built in."
)
@click.version_option(package_name="parcours", prog_name="parcours")
@click.option(
    "--database",
    "database",
    envvar="PARCOURS_DATABASE_URL",
    default="",
    help="Database URL (default: SQLite in PARCOURS_DATA_DIR).",
)
@click.pass_context
def cli(ctx: click.Context, database: str) -> None:
    settings = load_settings()
    if database:
        settings = settings.evolve(database_url=database)
    ctx.obj = settings
    from engine.logs import configure_logging

    # One-shot commands print their own results; library chatter would only hide them.
    configure_logging(settings, quiet=ctx.invoked_subcommand not in ("up", "worker", "web"))


# ---------------------------------------------------------------- scenarios


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print problems as JSON.")
def lint(paths: tuple[Path, ...], as_json: bool) -> None:
    """Check scenario files (or folders of them); every problem at once, with its line."""
    from engine.spec.lint import format_problems, lint_paths, linted_files

    problems = lint_paths(list(paths))
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in problems], indent=2))
    else:
        # the policy and channels files count once they have something to say
        files = {str(f) for f in linted_files(list(paths))} | {p.file for p in problems if p.file}
        click.echo(format_problems(problems, color=sys.stdout.isatty(), files=len(files)))
    if any(p.severity == "error" for p in problems):
        sys.exit(1)


@cli.command()
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file."
)
@click.option("--segment", is_flag=True, help="The schema of segment files instead.")
def schema(output: Path | None, segment: bool) -> None:
    """Print the JSON Schema of scenario files (for editor completion and checks)."""
    from engine.spec.jsonschema import scenario_json_schema, segment_json_schema

    document = segment_json_schema() if segment else scenario_json_schema()
    text = json.dumps(document, indent=2, sort_keys=False)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote {output}")
    else:
        click.echo(text)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.pass_context
def publish(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Publish scenarios as new versions (default: the scenarios folder); unchanged ones stay."""
    from engine.spec.lint import format_problems
    from engine.worker.versions import publish_dir

    settings = _settings(ctx)
    engine = _ready_engine(settings)
    problems: list[Any] = []
    with Session(engine) as session, session.begin():
        for path in paths or (settings.scenarios_dir,):
            folder = path if path.is_dir() else None
            if folder is None:
                from engine.spec.loader import scenario_bundle
                from engine.worker.versions import publish_bundle

                try:
                    r = publish_bundle(session, scenario_bundle(path), str(path))
                    _say_published(r)
                except ParcoursError as exc:
                    problems.extend(getattr(exc, "problems", []))
                continue
            results, found = publish_dir(session, folder)
            problems.extend(found)
            for r in results:
                _say_published(r)
    if problems:
        click.echo(format_problems(problems), err=True)
        sys.exit(1)


def _say_published(r: Any) -> None:
    state = (
        f"version {r.version_number} published"
        if r.created
        else f"version {r.version_number} unchanged"
    )
    click.echo(f"{r.scenario_id}: {state}")


@cli.command(name="scenarios")
@click.pass_context
def list_scenarios(ctx: click.Context) -> None:
    """List scenarios with their status, version and enrollments."""
    from engine.store.models import Enrollment, ScenarioRecord, ScenarioVersion

    engine = _ready_engine(_settings(ctx))
    with engine.connect() as conn:
        counts = dict(
            conn.execute(
                select(Enrollment.scenario_id, func.count())
                .where(Enrollment.status == "active")
                .group_by(Enrollment.scenario_id)
            ).all()
        )
        rows = conn.execute(
            select(ScenarioRecord.id, ScenarioRecord.status, ScenarioVersion.number)
            .join(
                ScenarioVersion,
                ScenarioVersion.id == ScenarioRecord.current_version_id,
                isouter=True,
            )
            .order_by(ScenarioRecord.id)
        ).all()
    click.echo(f"{'scenario':<32}{'status':<9}{'version':>8}{'active':>9}")
    for sid, status, number in rows:
        click.echo(f"{sid:<32}{status:<9}{number or '-':>8}{counts.get(sid, 0):>9}")


@cli.command()
@click.argument("scenario_id")
@click.pass_context
def pause(ctx: click.Context, scenario_id: str) -> None:
    """Pause a scenario: no new entries; contacts inside stay where they are."""
    _set_status(ctx, scenario_id, "paused")


@cli.command()
@click.argument("scenario_id")
@click.pass_context
def resume(ctx: click.Context, scenario_id: str) -> None:
    """Resume a paused scenario."""
    _set_status(ctx, scenario_id, "live")


def _set_status(ctx: click.Context, scenario_id: str, status: str) -> None:
    from engine.worker.versions import set_status

    engine = _ready_engine(_settings(ctx))
    with Session(engine) as session, session.begin():
        set_status(session, scenario_id, status)
    click.echo(f"{scenario_id}: {status}")


# ---------------------------------------------------------------- database


@cli.group()
def db() -> None:
    """Database schema."""


@db.command(name="upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or migrate the database schema to the latest version."""
    settings = _settings(ctx.find_root())
    upgrade(make_engine(settings.db_url))
    click.echo("database is up to date")


def _ready_engine(settings: Settings) -> Any:
    engine = make_engine(settings.db_url)
    upgrade(engine)
    return engine


# ---------------------------------------------------------------- contacts and events


@cli.group(name="import")
def import_() -> None:
    """Import contacts (CSV) or events (JSON lines)."""


# Columns a rejects file adds; ignored on import, so a fixed rejects file imports as it is.
REJECT_COLUMNS = ("_rejected_row", "_rejected_field", "_rejected_because")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for number, row in enumerate(csv.DictReader(fh), start=2):
            yield number, {k.strip(): v for k, v in row.items() if k and k not in REJECT_COLUMNS}


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield (
                    number,
                    {"__invalid__": f"not JSON: {exc.msg} at column {exc.colno}", "__line__": line},
                )
                continue
            yield number, data if isinstance(data, dict) else {"__invalid__": "not a JSON object"}


def _run_import(
    path: Path,
    rows: Iterator[tuple[int, dict[str, Any]]],
    clean: Any,
    write: Any,
    rejects: Path | None,
    label: str,
) -> ImportReport:
    reject_path = rejects or path.with_name(path.stem + ".rejects" + path.suffix)
    errors: list[RowError] = []
    with path.open("rb") as fh:
        total = max(sum(1 for _ in fh) - (1 if path.suffix == ".csv" else 0), 0)
    with click.progressbar(length=total, label=f"importing {label}", file=sys.stderr) as bar:

        def counted() -> Iterator[tuple[int, dict[str, Any]]]:
            for number, row in rows:
                bar.update(1)
                yield number, row

        report = import_rows(counted(), clean, write, errors.append)
    if errors:
        _write_rejects(reject_path, errors, csv_input=path.suffix == ".csv")
        for e in errors[:20]:
            click.echo(f"{path}:{e.format()}", err=True)
        if len(errors) > 20:
            click.echo(f"... and {len(errors) - 20} more", err=True)
        click.echo(f"{len(errors)} rejected rows written to {reject_path}", err=True)
    return report


def _write_rejects(path: Path, errors: list[RowError], csv_input: bool) -> None:
    """Rejected rows in the input's own format, with the reason, ready to fix and import again."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        if csv_input:
            columns = list(dict.fromkeys(k for e in errors for k in e.raw))
            writer = csv.DictWriter(fh, [*columns, *REJECT_COLUMNS])
            writer.writeheader()
            for e in errors:
                reason = dict(zip(REJECT_COLUMNS, (e.row, e.field, e.message), strict=True))
                writer.writerow({**e.raw, **reason})
            return
        for e in errors:
            record = {"row": e.row, "field": e.field, "error": e.message, "data": e.raw}
            fh.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")


@import_.command(name="contacts")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where rejected rows go (default: FILE.rejects.csv next to the input).",
)
@click.pass_context
def import_contacts(ctx: click.Context, path: Path, rejects: Path | None) -> None:
    """Upsert contacts from CSV (external_id, email, phone, timezone, locale, score, tags, ...)."""
    engine = _ready_engine(_settings(ctx.find_root()))

    from engine.audience.ingest import record_imported_consents
    from engine.policy.loader import load_policy_file
    from engine.policy.loading import policy_path

    policy = load_policy_file(policy_path(_settings(ctx.find_root())))

    def write(rows: list[dict[str, Any]]) -> tuple[int, int]:
        with engine.begin() as conn:
            counts = upsert_contacts(conn, rows, utcnow())
            record_imported_consents(conn, rows, utcnow(), policy)
            return counts

    report = _run_import(path, _csv_rows(path), clean_contact, write, rejects, "contacts")
    click.echo(
        f"{report.accepted} contacts imported ({report.created} new, {report.updated} updated), "
        f"{len(report.errors)} rejected"
    )
    sys.exit(1 if report.errors else 0)


@import_.command(name="events")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where rejected rows go (default: FILE.rejects.jsonl next to the input).",
)
@click.pass_context
def import_events(ctx: click.Context, path: Path, rejects: Path | None) -> None:
    """Append events from a JSON-lines file ({"contact", "name", "properties", "occurred_at"})."""
    from engine.audience.contacts import RowInvalid

    engine = _ready_engine(_settings(ctx.find_root()))
    now = utcnow()

    def clean(raw: dict[str, Any]) -> dict[str, Any]:
        if "__invalid__" in raw:
            raise RowInvalid("line", raw["__invalid__"])
        return clean_event(raw, now)

    def write(rows: list[dict[str, Any]]) -> tuple[int, int]:
        with engine.begin() as conn:
            return record_events(conn, rows, utcnow())

    report = _run_import(path, _jsonl_rows(path), clean, write, rejects, "events")
    click.echo(
        f"{report.created} events recorded, {report.updated} duplicates ignored, "
        f"{len(report.errors)} rejected"
    )
    sys.exit(1 if report.errors else 0)


@cli.command()
@click.argument("scenario_id")
@click.argument("contacts", nargs=-1, required=True)
@click.pass_context
def enroll(ctx: click.Context, scenario_id: str, contacts: tuple[str, ...]) -> None:
    """Enter contacts (external ids) into a live scenario now."""
    from engine.store.models import Contact
    from engine.worker.enroll import Candidate
    from engine.worker.enroll import enroll as do_enroll
    from engine.worker.versions import VersionCache

    engine = _ready_engine(_settings(ctx))
    now = utcnow()
    with engine.begin() as conn:
        live = {sc.id: (vid, sc) for vid, sc in VersionCache().live(conn)}
        if scenario_id not in live:
            raise click.ClickException(
                f"scenario '{scenario_id}' is not live (see `parcours scenarios`)"
            )
        vid, scenario = live[scenario_id]
        ids = dict(
            conn.execute(
                select(Contact.external_id, Contact.id).where(Contact.external_id.in_(contacts))
            ).all()
        )
        unknown = sorted(set(contacts) - set(ids))
        if unknown:
            raise click.ClickException(f"unknown contacts: {', '.join(unknown[:20])}")
        # Each run is a new intent (the scenario's re-entry rules still apply).
        key = f"manual:{now.isoformat()}"
        candidates = [Candidate(vid, scenario, ids[c], key, now, None, "manual") for c in contacts]
        counts = do_enroll(conn, candidates, now)
    click.echo(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "nothing to do")


# ---------------------------------------------------------------- consent and suppression


def _workspace_policy(settings: Settings) -> Any:
    from engine.policy.loader import load_policy_file
    from engine.policy.loading import policy_path

    return load_policy_file(policy_path(settings))


def _find_contact(conn: Any, external_id: str) -> Any:
    """The live contact the external id names (an id a merge absorbed names the survivor)."""
    from engine.audience.identity import find_contact
    from engine.errors import NotFound

    row = find_contact(conn, external_id)
    if row is None:
        raise NotFound(f"no contact with external id '{external_id}'")
    return row


def _when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


@cli.group()
def consent() -> None:
    """Consent per contact, channel and topic, with its evidence."""


@consent.command(name="set")
@click.argument("contact")
@click.argument("channel")
@click.argument("topic")
@click.argument("state", type=click.Choice(STATES))
@click.option(
    "--source",
    default="operator",
    show_default=True,
    type=click.Choice(SOURCES),
    help="Where the consent comes from (recorded as evidence).",
)
@click.option("--wording", help="The exact text the contact agreed to.")
@click.option("--wording-version", help="The version id of that text.")
@click.option(
    "--expires", default="", help="Expiry of an opt-in (ISO 8601); default: the policy's."
)
@click.pass_context
def consent_set(
    ctx: click.Context,
    contact: str,
    channel: str,
    topic: str,
    state: str,
    source: str,
    wording: str | None,
    wording_version: str | None,
    expires: str,
) -> None:
    """Record a consent change for a contact (external id); TOPIC * means the whole channel."""
    from engine.policy.consent import record_consent

    settings = _settings(ctx.find_root())
    policy = _workspace_policy(settings)
    expires_at = parse_instant(expires, "--expires") if expires else None
    with database(settings) as engine, engine.begin() as conn:
        row = _find_contact(conn, contact)
        record_id = record_consent(
            conn, row.id, channel, topic, state, source, utcnow(),
            wording=wording, wording_version=wording_version, expires_at=expires_at,
            evidence={"cli_user": os_user()}, policy=policy,
        )  # fmt: skip
    click.echo(f"{contact}: {channel}/{topic} {state} (record {record_id}, source {source})")


@consent.command(name="history")
@click.argument("contact")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def consent_history_command(ctx: click.Context, contact: str, as_json: bool) -> None:
    """Every consent change of a contact, oldest first, with its evidence."""
    from engine.policy.consent import consent_history

    with database(_settings(ctx.find_root())) as engine, engine.connect() as conn:
        history = consent_history(conn, _find_contact(conn, contact).id)
    if as_json:
        click.echo(json.dumps(history, indent=2, ensure_ascii=False))
        return
    _echo_history(history)


def _echo_history(history: list[dict[str, Any]]) -> None:
    if not history:
        click.echo("  no consent recorded")
    for r in history:
        click.echo(
            f"  {_when(r['at'])}  {r['channel']}/{r['topic']:<14} {r['state']:<10} "
            f"{r['source']:<17} version {r['wording_version'] or '-'}  ip {r['ip'] or '-'}"
        )
        if r["expires_at"]:
            click.echo(f"      expires {_when(r['expires_at'])}")
        if r["wording"]:
            click.echo(f"      wording: {r['wording']}")
        if r["evidence"]:
            click.echo(f"      evidence: {json.dumps(r['evidence'], ensure_ascii=False)}")


@cli.command()
@click.argument("channel")
@click.argument("address")
@click.option(
    "--reason",
    required=True,
    type=click.Choice(SUPPRESSION_REASONS),
)
@click.pass_context
def suppress(ctx: click.Context, channel: str, address: str, reason: str) -> None:
    """Block every marketing send to ADDRESS (email, phone or contact:<id>) on CHANNEL (* = all)."""
    from engine.policy.consent import suppress as add_suppression

    with database(_settings(ctx)) as engine, engine.begin() as conn:
        created = add_suppression(conn, channel, address, reason, "operator", utcnow())
    click.echo(f"{channel} {address}: " + ("suppressed" if created else "already suppressed"))


@cli.group()
def contact() -> None:
    """Contacts."""


@contact.command(name="show")
@click.argument("external_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def contact_show(ctx: click.Context, external_id: str, as_json: bool) -> None:
    """A contact's profile, consents with their history, suppressions, pressure barometer and
    computed attributes (RFM, lifecycle stage, customer value) with the purchases behind them."""
    from engine.audience.attributes import contact_metrics, workspace_spec
    from engine.audience.identity import identifiers_of, merges_of
    from engine.audience.ingest import contact_profile
    from engine.policy.consent import consent_history, consent_states, contact_suppressions
    from engine.policy.loader import load_policy_file
    from engine.policy.loading import policy_path
    from engine.policy.pressure import explain, load_barometers
    from engine.spec.attributes import AttributesSpec

    now = utcnow()
    # a broken declaration (lint says why) still shows the purchases, as the defaults read them
    spec = workspace_spec(_settings(ctx.find_root()).scenarios_dir) or AttributesSpec()
    with database(_settings(ctx.find_root())) as engine, engine.connect() as conn:
        row = _find_contact(conn, external_id)
        # The barometer as of now (scores decay), explained with the workspace thresholds.
        policy = load_policy_file(policy_path(_settings(ctx.find_root())))
        barometer = load_barometers(conn, [row.id], now, policy.pressure)[row.id]
        details: dict[str, Any] = {
            "contact": {"id": row.id, **contact_profile(row)},
            "consents": consent_states(conn, row.id, now),
            "history": consent_history(conn, row.id),
            "suppressions": contact_suppressions(conn, row),
            "pressure": explain(barometer, policy),
            "quiet_days": _quiet_days(policy, row, _settings(ctx.find_root()).timezone, now),
            "computed": contact_metrics(conn, row.id, spec, now),
            "identifiers": identifiers_of(conn, row.id),
            "merges": merges_of(conn, row.id),
        }
    if as_json:
        click.echo(json.dumps(details, indent=2, ensure_ascii=False, default=str))
        return
    _echo_contact(details)


def _echo_contact(details: dict[str, Any]) -> None:
    c = details["contact"]
    click.echo(f"contact {c['external_id']} (id {c['id']})")
    for name in ("email", "phone", "timezone", "locale", "score", "tags", "opted_out"):
        value = c[name]
        click.echo(f"  {name:<10} {', '.join(value) if isinstance(value, list) else value}")
    if c["attributes"]:
        click.echo(f"  {'attributes':<10} {json.dumps(c['attributes'], ensure_ascii=False)}")
    _echo_identity(details)
    click.echo("consents")
    if not details["consents"]:
        click.echo("  none (unknown everywhere: the policy's default per channel applies)")
    for s in details["consents"]:
        click.echo(
            f"  {s['channel']}/{s['topic']:<14} {s['state']:<10} since {_when(s['since'])}"
            f"  expires {_when(s['expires_at'])}"
        )
    click.echo("consent history")
    _echo_history(details["history"])
    click.echo("suppressions")
    if not details["suppressions"]:
        click.echo("  none")
    for s in details["suppressions"]:
        click.echo(
            f"  {s['channel']:<8} {s['address']:<32} {s['reason']:<15} "
            f"{s['source']:<10} {_when(s['at'])}"
        )
    pressure = details["pressure"]
    t = pressure["thresholds"]
    click.echo(f"pressure (under < {t['under']}, over > {t['over']}, half-life {t['half_life']})")
    if t["block_over"]:
        click.echo(
            f"  over-pressure blocks channels of weight >= {t['block_over_min_weight']:g}"
            f" ({pressure['rule']})"
        )
    rows = {"overall": pressure["overall"], **pressure["channels"]}
    for name, p in rows.items():
        caps = p["caps"]
        effect = f"blocks {', '.join(p['blocks'])}" if p["blocks"] else (
            f"caps x{caps['factor']} +{caps['extra']}")  # fmt: skip
        click.echo(f"  {name:<8} {p['state']:<12} score {p['score']:.2f}  ({effect})")
        for signal in p["signals"][:10]:
            click.echo(f"      {json.dumps(signal, ensure_ascii=False, default=str)}")
    _echo_quiet_days(details["quiet_days"])
    _echo_computed(details["computed"])


def _quiet_days(policy: Any, row: Any, workspace_zone: str, now: datetime) -> dict[str, Any]:
    """The contact's public holidays and blackout dates in the next 30 local days."""
    from engine.policy.blackouts import upcoming
    from engine.runtime.timing import zone_for

    today = now.astimezone(zone_for(row.timezone, workspace_zone)).date()
    return upcoming(policy, (row.attributes or {}).get("country"), today)


def _echo_quiet_days(quiet: dict[str, Any]) -> None:
    calendar = quiet["calendar"] or "none"
    source = "the contact's country" if quiet["from_contact"] else "the workspace's country"
    click.echo(f"quiet days in the next 30 days (calendar {calendar}: {source})")
    if not quiet["days"]:
        click.echo("  none")
    for d in quiet["days"]:
        why = f"  {d['why']}" if d["why"] else ""
        click.echo(f"  {d['date']}  {d['rule']:<24} {', '.join(d['channels'])}{why}")


def _echo_identity(details: dict[str, Any]) -> None:
    click.echo("identifiers")
    if not details["identifiers"]:
        click.echo("  none beyond the external id")
    for i in details["identifiers"]:
        click.echo(f"  {i['kind']:<14} {i['value']:<32} {i['source']:<9} {_when(_iso(i))}")
    click.echo("merges")
    if not details["merges"]:
        click.echo("  none")
    for m in details["merges"]:
        role = "merged into" if m["absorbed"] else "absorbed"
        other = m["other_external_id"] or f"id {m['other_id']}"
        click.echo(
            f"  {_when(m['at'].isoformat())}  {role} {other}  by {m['actor']} "
            f"({m['source']}, merge {m['id']})"
        )


def _iso(item: dict[str, Any]) -> str | None:
    at = item.get("created_at")
    return at.isoformat() if at is not None else None


def _echo_computed(computed: dict[str, Any]) -> None:
    rfm = computed["rfm"]

    def at(instant: datetime | None) -> str:
        return _when(instant.isoformat() if instant else None)

    click.echo(f"computed attributes (as of {at(computed['computed_at'])})")
    click.echo(f"  lifecycle      {computed['lifecycle']}")
    click.echo(f"  customer value {computed['customer_value']:g} ({rfm['orders']} purchases)")
    if rfm["r"] is not None:
        click.echo(f"  rfm            {rfm['class']} (R{rfm['r']} F{rfm['f']} M{rfm['m']})")
    elif rfm["orders"]:
        click.echo("  rfm            not scored yet (the next full recompute scores it)")
    else:
        click.echo("  rfm            none (never purchased)")
    if computed["lead_half_life_days"] is not None:
        half = computed["lead_half_life_days"]
        click.echo(f"  lead score     {computed['lead_score']:.1f} (halves every {half} days)")
    click.echo(
        f"  recency {rfm['recency']} days, frequency {rfm['frequency']} and monetary "
        f"{rfm['monetary']:g} in {computed['window_days']} days"
    )
    for p in computed["purchases"]:
        window = "" if p["in_window"] else "  (outside the window)"
        click.echo(f"      {at(p['at'])}  {p['name']}  {p['value']}{window}")


# ---------------------------------------------------------------- watching


@cli.command()
@click.option("--limit", default=20, show_default=True)
@click.option("--channel")
@click.option("--scenario")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def outbox(
    ctx: click.Context, limit: int, channel: str | None, scenario: str | None, as_json: bool
) -> None:
    """Show the latest messages accepted by the outbox (newest first)."""
    from engine.store.models import Contact, Send

    engine = _ready_engine(_settings(ctx))
    query = (
        select(Send, Contact.external_id)
        .join(Contact, Contact.id == Send.contact_id)
        .order_by(Send.id.desc())
        .limit(limit)
    )
    if channel:
        query = query.where(Send.channel == channel)
    if scenario:
        query = query.where(Send.scenario_id == scenario)
    with Session(engine) as session:
        rows = session.execute(query).all()
    items = [
        {
            "at": s.created_at.isoformat(),
            "contact": ext,
            "scenario": s.scenario_id,
            "step": s.step_id,
            "channel": s.channel,
            "status": s.status,
            # why a message was not sent: a provider's refusal, or the rule that cancelled it
            "error": s.error,
            "send_key": s.send_key,
            "parts": s.payload.get("parts", {}),
        }
        for s, ext in rows
    ]
    if as_json:
        click.echo(json.dumps(items, indent=2, ensure_ascii=False))
        return
    if not items:
        click.echo("the outbox is empty")
    for item in items:
        parts = item["parts"]
        headline = (
            parts.get("subject")
            or parts.get("title")
            or parts.get("text")
            or parts.get("body")
            or ""
        )
        status = item["status"]
        if status == "cancelled":  # the rule id, as the gate journals it
            status = f"{status} ({item['error']})"
        click.echo(
            f"{item['at'][:19]}  {item['channel']:<6} {status:<10} {item['contact']:<12} "
            f"{item['scenario']}/{item['step']}  {headline[:60]}"
        )


@cli.command()
@click.option("--once", is_flag=True, help="Run one pass and stop.")
@click.pass_context
def worker(ctx: click.Context, once: bool) -> None:
    """Run the scheduler and the delivery loop (no HTTP server); SIGTERM stops it gracefully."""
    from engine.worker.scheduler import Service

    settings = _settings(ctx)
    engine = _ready_engine(settings)
    from engine.delivery.loop import workspace_dispatcher
    from engine.policy.loading import full_gate_factory

    dispatcher = workspace_dispatcher(engine, settings)
    service = Service(
        engine, settings, gate_factory=full_gate_factory(settings), dispatcher=dispatcher
    )
    if once:
        report = service.worker.run_once()
        click.echo(
            f"{report.claimed} enrollments advanced, {report.steps} steps, {report.sends} sends"
        )
        if dispatcher is not None:
            done = dispatcher.run_once()
            click.echo(
                f"delivery: {done.sent} sent, {done.retried} to retry, {done.failed} failed, "
                f"{done.bounced} bounced, {done.ambiguous} ambiguous, "
                f"{done.cancelled} cancelled"
            )
            dispatcher.close()
        return
    from engine.worker.process import run_worker

    logging.getLogger("engine.worker").info(
        "worker running; Ctrl+C or SIGTERM stops it once its batch is written"
    )
    run_worker(service)
    engine.dispose()


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--contacts",
    "contacts_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Contacts CSV (same columns as `import contacts`).",
)
@click.option("--generate", type=int, default=0, help="Generate this many contacts instead.")
@click.option(
    "--events",
    "events_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Events JSON lines; without it, events are generated for event triggers.",
)
@click.option("--start", default="", help="Virtual start time (ISO 8601, UTC); default: now.")
@click.option("--days", type=int, default=30, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy file (default: policy.yaml beside the scenarios).",
)
@click.option("--no-policy", is_flag=True, help="Only the opt-out flag and addresses are checked.")
@click.option(
    "--resolution",
    default="1m",
    show_default=True,
    help="Smallest step of the virtual clock; coarser (e.g. 10m) is faster for large populations.",
)
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every entry, send, decision and exit to this file as JSON lines.",
)
@click.pass_context
def simulate(
    ctx: click.Context,
    paths: tuple[Path, ...],
    contacts_file: Path | None,
    generate: int,
    events_file: Path | None,
    start: str,
    days: int,
    seed: int,
    policy_file: Path | None,
    no_policy: bool,
    resolution: str,
    as_json: bool,
    trace_file: Path | None,
) -> None:
    """Run scenarios on a virtual clock over a throw-away database and report what would happen."""
    from engine.insights.simulate import format_report, generate_contacts, generate_events
    from engine.insights.simulate import simulate as run
    from engine.spec.durations import parse_duration
    from engine.spec.lint import scenario_files
    from engine.spec.loader import load_scenario_file

    files = scenario_files(paths)
    scenarios = [load_scenario_file(f) for f in files]
    begin = parse_instant(start, "--start") if start else datetime.now(UTC).replace(microsecond=0)
    if contacts_file:
        from engine.insights.simulate import file_contacts

        contacts = file_contacts(row for _, row in _csv_rows(contacts_file))
    else:
        contacts = generate_contacts(generate or 100, seed)
    from engine.insights.segment_simulation import (
        generate_memberships,
        generate_segment_events,
        simulation_segments,
    )

    first = paths[0] if paths[0].is_dir() else paths[0].parent
    segments = simulation_segments(first)  # the worker keeps those of the scenarios' folder
    if events_file:
        events = [row for _, row in _jsonl_rows(events_file)]
    else:
        events = generate_events(scenarios, contacts, begin, days, seed)
        events += generate_segment_events(scenarios, contacts, begin, days, segments, seed)
    memberships = generate_memberships(scenarios, contacts, begin, days, segments, seed)
    try:
        step = parse_duration(resolution)
        if step.total_seconds() < 1:
            raise ValueError("the resolution must be at least 1s, e.g. 1m or 10m")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--resolution") from None
    from engine.policy.loader import load_policy_file

    policy = None if no_policy else load_policy_file(policy_file or first / "policy.yaml")
    with ExitStack() as stack:
        trace = stack.enter_context(trace_file.open("w", encoding="utf-8")) if trace_file else None
        report = run(
            files,
            contacts,
            events,
            begin,
            days,
            settings=_settings(ctx).evolve(database_url="", scenarios_dir=first),
            resolution=step,
            policy=policy,
            memberships=memberships,
            trace=trace,
        )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))


@cli.command(name="settings")
def show_settings() -> None:
    """List every setting with its default and help."""
    for s in SETTINGS:
        click.echo(f"PARCOURS_{s.name:<28} default {s.default!r}\n    {s.help}")


def main() -> None:
    cli(prog_name="parcours")


from engine.cli_report import programs_command, report_command  # noqa: E402
from engine.cli_segments import segment, segments  # noqa: E402

cli.add_command(segments)
cli.add_command(report_command)
cli.add_command(programs_command)
cli.add_command(segment)

from engine.cli_privacy import contact_erase, contact_export, purge  # noqa: E402

contact.add_command(contact_export)
contact.add_command(contact_erase)
cli.add_command(purge)
from engine.cli_identity import merge as contact_merge  # noqa: E402

contact.add_command(contact_merge)
from engine.cli_health import pressure  # noqa: E402

cli.add_command(pressure)

from engine.cli_experiments import experiment, experiments  # noqa: E402

cli.add_command(experiments)
cli.add_command(experiment)


@cli.command("channels")
@click.pass_context
def channels_cmd(ctx: click.Context) -> None:
    """Each channel, the provider that delivers it (from channels.yaml) and its pressure weight."""
    from channels import channel_info, channel_names
    from engine.delivery.channel_config import channels_path, load_channels

    settings = _settings(ctx)
    configured = load_channels(settings.scenarios_dir)  # checks the file and its secrets
    path = channels_path(settings.scenarios_dir)
    click.echo(f"{'channel':<9} {'provider':<12} {'weight':>6} {'cost':>6}")
    for name in channel_names():
        info = channel_info(name)
        provider = type(configured[name]).__name__ if name in configured else "outbox"
        click.echo(f"{name:<9} {provider:<12} {info.weight:>6.1f} {info.cost:>6.2f}")
    if not path.exists():
        click.echo(f"(no {path}: every channel goes to the outbox)")


from engine.cli_keys import keys, push  # noqa: E402

cli.add_command(keys)
cli.add_command(push)
