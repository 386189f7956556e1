"""`parcours keys create|list|revoke` (keys of the JSON API) and `parcours push keys` (a VAPID
key pair for web push). Registered on the `parcours` group by engine.cli.

An API key is printed once, when it is created; listings show its prefix only. Creating and
revoking are audited with the operating system user's name.
"""

from __future__ import annotations

import json
from datetime import datetime

import click

from engine import api_keys
from engine.cli_common import database, os_user, root_settings
from engine.store.models import API_KEY_SCOPES


@click.group(name="keys")
def keys() -> None:
    """Keys of the JSON API: read, write or admin."""


@keys.command(name="create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(API_KEY_SCOPES),
    default="read",
    show_default=True,
    help="read: GET routes; write: changes too; admin: erasure and export too.",
)
@click.pass_context
def keys_create(ctx: click.Context, name: str, scope: str) -> None:
    """Create the API key NAME and print it, once."""
    with database(root_settings(ctx)) as engine, engine.begin() as conn:
        secret = api_keys.create(conn, name, scope, os_user())
    click.echo(f"API key {name} ({scope}) created:")
    click.echo(secret)
    click.echo("Keep it now: it is stored hashed and will not be shown again.", err=True)


@keys.command(name="list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """Every API key with its scope, prefix, creation, last use and revocation."""
    with database(root_settings(ctx)) as engine, engine.connect() as conn:
        found = api_keys.list_keys(conn)
    if as_json:
        click.echo(json.dumps([k.to_dict() for k in found], indent=2))
        return
    if not found:
        click.echo("no API key (parcours keys create NAME --scope read|write|admin)")
        return
    click.echo(f"{'name':<20} {'scope':<6} {'key':<14} {'created':<17} {'by':<12} "
               f"{'last used':<17} revoked")  # fmt: skip
    for k in found:
        revoked = f"{_when(k.revoked_at)} by {k.revoked_by}" if k.revoked_at else "-"
        click.echo(f"{k.name:<20} {k.scope:<6} {k.shown:<14} {_when(k.created_at):<17} "
                   f"{k.created_by:<12} {_when(k.last_used_at):<17} {revoked}")  # fmt: skip


@keys.command(name="revoke")
@click.argument("name")
@click.pass_context
def keys_revoke(ctx: click.Context, name: str) -> None:
    """Revoke the API key NAME: it answers 401 from now on (the row stays, for the record)."""
    with database(root_settings(ctx)) as engine, engine.begin() as conn:
        info = api_keys.revoke(conn, name, os_user())
    click.echo(f"API key {info.name} ({info.shown}) revoked")


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at is not None else "never"


@click.group(name="push")
def push() -> None:
    """Web push: the VAPID key pair."""


@push.command(name="keys")
@click.option("--subject", default="mailto:push@example.com", show_default=True,
              help="Contact push services may write to (mailto: or https:).")  # fmt: skip
def push_keys(subject: str) -> None:
    """Make a VAPID key pair and print the lines to paste: the private key for the environment,
    the `push:` block of channels.yaml, and the public key browsers subscribe with."""
    from py_vapid import Vapid02  # type: ignore[import-untyped]

    from channels.webpush import b64url, public_key_b64

    if not subject.startswith(("mailto:", "https://")) or len(subject) < 10:
        raise click.BadParameter(
            "a mailto: address or an https:// URL, e.g. mailto:push@shop.example",
            param_hint="--subject",
        )
    vapid = Vapid02()
    vapid.generate_keys()
    private = b64url(vapid.private_key.private_numbers().private_value.to_bytes(32, "big"))
    click.echo("# the private key: keep it secret, in the environment of every Parcours process")
    click.echo(f"PARCOURS_VAPID_KEY={private}")
    click.echo("# scenarios/channels.yaml")
    click.echo("push:")
    click.echo("  provider: webpush")
    click.echo("  vapid_private_key: ${PARCOURS_VAPID_KEY}")
    click.echo(f"  vapid_subject: {subject}")
    click.echo("# the public key (GET /push/vapid-public-key serves it to your site's script)")
    click.echo(f"# {public_key_b64(vapid.private_key)}")
