"""`parcours contact merge A B`: merge contact B into contact A (both named by external id),
registered on the `parcours contact` group by engine.cli.

Asks before merging unless `--yes`; prints what moved, or the merge as JSON with `--json`.
"""

from __future__ import annotations

import json
from typing import Any

import click

from engine.cli_common import database, os_user, root_settings
from engine.errors import NotFound
from engine.store.db import utcnow


@click.command(name="merge")
@click.argument("survivor")
@click.argument("absorbed")
@click.option("--yes", is_flag=True, help="Merge without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print the merge as JSON.")
@click.pass_context
def merge(ctx: click.Context, survivor: str, absorbed: str, yes: bool, as_json: bool) -> None:
    """Merge contact ABSORBED into contact SURVIVOR (external ids): events, sends, enrollments,
    identifiers, consents (the most restrictive wins, every record kept), pressure and profile
    move to SURVIVOR; ABSORBED stays as a tombstone whose external id names SURVIVOR."""
    from engine.audience.identity import find_contact
    from engine.audience.merge import merge_contacts
    from engine.policy.loader import load_policy_file
    from engine.policy.loading import policy_path
    from engine.spec.identity_settings import workspace_identity

    settings = root_settings(ctx)
    policy = load_policy_file(policy_path(settings))
    identity = workspace_identity(settings.scenarios_dir)
    if not yes and not as_json:
        click.confirm(
            f"Merge contact {absorbed} into {survivor}? This cannot be undone", abort=True
        )
    with database(settings) as engine, engine.begin() as conn:
        rows = [find_contact(conn, ext) for ext in (survivor, absorbed)]
        for ext, row in zip((survivor, absorbed), rows, strict=True):
            if row is None:
                raise NotFound(f"no contact with external id '{ext}'")
        assert rows[0] is not None and rows[1] is not None
        report = merge_contacts(
            conn, rows[0].id, rows[1].id, utcnow(), os_user(), "cli",
            policy=policy, settings=identity,
        )  # fmt: skip
    details: dict[str, Any] = {
        "merge_id": report.merge_id,
        "survivor": {"id": report.survivor_id, "external_id": rows[0].external_id},
        "absorbed": {"id": report.absorbed_id, "external_id": report.absorbed_external_id},
        "moved": report.moved,
    }
    if as_json:
        click.echo(json.dumps(details, indent=2))
        return
    moved = ", ".join(f"{k} {v}" for k, v in report.moved.items() if v)
    click.echo(
        f"merged {report.absorbed_external_id} into {rows[0].external_id} "
        f"(merge {report.merge_id}): {moved or 'nothing to move'}"
    )
