"""`parcours up`: the HTTP server and the worker in one process, on top of the engine commands."""

from __future__ import annotations

import secrets

import click
from sqlalchemy.orm import Session

from engine.cli import cli
from engine.config import Settings


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default PARCOURS_HOST).")
@click.option("--port", type=int, default=None, help="Port (default PARCOURS_PORT).")
@click.pass_context
def up(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run everything: migrate, publish the scenarios folder, start the worker and the server."""
    from werkzeug.serving import run_simple

    from designer import create_app
    from engine.scheduler import Service
    from engine.spec.lint import format_problems
    from engine.store.db import make_engine, upgrade
    from engine.versions import publish_dir

    settings: Settings = ctx.obj
    if not settings.api_key:
        settings = settings.evolve(api_key=secrets.token_urlsafe(24))
        click.echo(f"API key for this run (set PARCOURS_API_KEY to keep one): {settings.api_key}")
    engine = make_engine(settings.db_url)
    upgrade(engine)
    if settings.scenarios_dir.is_dir():
        with Session(engine) as session, session.begin():
            results, problems = publish_dir(session, settings.scenarios_dir, by="parcours up")
        for r in results:
            click.echo(
                f"scenario {r.scenario_id}: version {r.version_number}"
                + (" published" if r.created else "")
            )
        if problems:
            click.echo(format_problems(problems), err=True)
    from engine.policy.loading import full_gate_factory

    gate_factory = full_gate_factory(settings)  # a broken policy.yaml stops here, with its lines
    service = Service(engine, settings, gate_factory=gate_factory)
    app = create_app(settings)
    app.extensions["parcours"].wake = service.wake
    service.start()
    where = f"http://{host or settings.host}:{port or settings.port}/"
    click.echo(
        f"Parcours is running: {where} (database {engine.url.render_as_string(hide_password=True)})"
    )
    try:
        run_simple(
            host or settings.host, port or settings.port, app, threaded=True, use_reloader=False
        )
    finally:
        service.shutdown()


def main() -> None:
    """Entry point of the `parcours` command."""
    cli(prog_name="parcours")
