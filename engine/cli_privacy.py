"""`parcours contact export|erase` and `parcours purge`: a person's data out (access,
portability), a person's data gone (erasure), old events and journal entries gone (retention).
Registered on the `parcours` groups by engine.cli.

Nothing here prints personal data but the export itself: erase and purge print counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from engine.audience.identity import find_contact
from engine.audience.privacy import MAX_REASON, erase_contact, export_contact
from engine.audience.retention import purge as purge_old
from engine.cli_common import database, os_user, root_settings
from engine.errors import NotFound
from engine.store.db import checkpoint, utcnow

# The tables an erasure changes: VACUUM reclaims their dead row versions on PostgreSQL.
ERASED_TABLES = (
    "contacts", "contact_identifiers", "contact_merges", "events", "event_inbox", "sends",
    "journal", "enrollments", "consent_records", "suppressions", "pressure",
    "push_subscriptions", "contact_metrics", "contact_lead_scores", "segment_members",
    "segment_due", "contact_changes",
)  # fmt: skip


def _person(conn: Any, external_id: str) -> Any:
    row = find_contact(conn, external_id)
    if row is None:
        raise NotFound(f"no contact with external id '{external_id}'")
    return row


@click.command(name="export")
@click.argument("external_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON to this file instead of the standard output.")  # fmt: skip
@click.pass_context
def contact_export(ctx: click.Context, external_id: str, output: Path | None) -> None:
    """Everything held on the contact EXTERNAL_ID (and contacts merged into it) as one JSON
    document: profile, identifiers, events, consents with evidence, segments, enrollments,
    messages, journal... (GDPR art. 15 and 20). Audited."""
    with database(root_settings(ctx)) as engine, engine.begin() as conn:
        document = export_contact(conn, _person(conn, external_id).id, actor=os_user())
    text = json.dumps(document, indent=2, ensure_ascii=False)
    if output is None:
        click.echo(text)
        return
    output.write_text(text + "\n", encoding="utf-8")
    rows = sum(len(v) for v in document["tables"].values())
    click.echo(f"contact {external_id}: {rows} rows from {len(document['tables'])} tables "
               f"written to {output}", err=True)  # fmt: skip


@click.command(name="erase")
@click.argument("external_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--reason", help=f"Why (kept in the audit log; {MAX_REASON} characters at most).")
@click.option("--vacuum", is_flag=True,
              help="PostgreSQL: VACUUM the changed tables afterwards, so old row versions go now "
                   "rather than at the next autovacuum.")  # fmt: skip
@click.pass_context
def contact_erase(
    ctx: click.Context, external_id: str, yes: bool, reason: str | None, vacuum: bool
) -> None:
    """Erase the contact EXTERNAL_ID (GDPR art. 17): its personal data leaves every table, its
    journeys end, its addresses stay only as salted hashes on the suppression list (a later
    import of them is never reached by marketing); aggregates and the consent proof stay."""
    if reason is not None and len(reason) > MAX_REASON:
        raise click.BadParameter(f"{MAX_REASON} characters at most", param_hint="--reason")
    settings = root_settings(ctx)
    with database(settings) as engine:
        with engine.connect() as conn:
            contact_id = _person(conn, external_id).id
        if not yes:
            click.confirm(f"Erase contact {external_id} (id {contact_id}) for good?", abort=True)
        with engine.begin() as conn:
            contact = _person(conn, external_id)
            report = erase_contact(conn, contact.id, utcnow(), os_user(), reason)
        checkpoint(engine)
        if vacuum and engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM " + ", ".join(ERASED_TABLES))
    click.echo(f"contact {external_id} erased (id {report.contact_id}"
               + (f", with merged {report.contacts[1:]}" if len(report.contacts) > 1 else "")
               + ")")  # fmt: skip
    for table, count in sorted(report.counts.items()):
        if count:
            click.echo(f"  {table:<22} {count}")


@click.command(name="purge")
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@click.pass_context
def purge(ctx: click.Context, dry_run: bool) -> None:
    """Delete the events and journal entries older than PARCOURS_RETENTION_EVENTS_DAYS and
    PARCOURS_RETENTION_JOURNAL_DAYS (0: kept). Audited."""
    settings = root_settings(ctx)
    events, journal = settings.retention_events_days, settings.retention_journal_days
    if not events and not journal:
        click.echo("no retention set (PARCOURS_RETENTION_EVENTS_DAYS, "
                   "PARCOURS_RETENTION_JOURNAL_DAYS): nothing to purge")  # fmt: skip
        return
    with database(settings) as engine:
        report = purge_old(engine, utcnow(), events, journal, dry_run=dry_run, actor=os_user())
    verb = "would be purged" if dry_run else "purged"
    for kind, count, days in (("events", report.events, events),
                              ("journal entries", report.journal, journal)):  # fmt: skip
        if days:
            click.echo(f"{count} {kind} older than {days} days {verb}")
