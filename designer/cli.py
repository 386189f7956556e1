"""`parcours up` (the worker and the web server, two processes) and `parcours web` (the server
alone), on top of the engine commands."""

from __future__ import annotations

import os
import sys

import click
from sqlalchemy.orm import Session

from engine.audit import record
from engine.cli import cli
from engine.cli_common import os_user
from engine.config import Settings


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default PARCOURS_HOST).")
@click.option("--port", type=int, default=None, help="Port (default PARCOURS_PORT).")
@click.pass_context
def up(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run everything: migrate, publish the scenarios folder, start the worker and the server."""
    from engine.spec.lint import format_problems
    from engine.store.db import make_engine, upgrade
    from engine.worker.versions import publish_dir

    settings: Settings = ctx.obj
    engine = make_engine(settings.db_url)
    upgrade(engine)
    if not settings.api_key:
        from engine.api_keys import ensure_bootstrap

        bootstrap = ensure_bootstrap(engine, os_user())  # only while no key exists at all
        if bootstrap:
            click.echo(f"API key 'bootstrap' (admin), shown this once: {bootstrap}")
            click.echo("  it is stored hashed; `parcours keys` makes and revokes others")
    if settings.scenarios_dir.is_dir():
        with Session(engine) as session, session.begin():
            results, problems = publish_dir(session, settings.scenarios_dir, by="parcours up")
            for r in results:
                if r.created:
                    record(session.connection(), os_user(), "publish", "scenario",
                           r.scenario_id, version=r.version_number)  # fmt: skip
        for r in results:
            click.echo(
                f"scenario {r.scenario_id}: version {r.version_number}"
                + (" published" if r.created else "")
            )
        if problems:
            click.echo(format_problems(problems), err=True)
    from engine.cli_segments import import_changed_lists

    import_changed_lists(engine, settings)  # each manual list whose file changed, once
    from designer.auth import ensure_first_admin
    from engine.policy.loading import full_gate_factory

    first = ensure_first_admin(engine)
    if first:
        click.echo(
            f"First sign-in: user 'admin', one-time password {first} (you will choose your own)."
        )
    full_gate_factory(settings)  # a broken policy.yaml stops here, with its lines
    from engine.delivery.loop import workspace_dispatcher

    dispatcher = workspace_dispatcher(engine, settings)  # a broken channels.yaml stops here
    if dispatcher is not None:  # (the worker process builds its own from the same files)
        dispatcher.close()
    where = f"http://{host or settings.host}:{port or settings.port}/"
    click.echo(
        f"Parcours is running: {where} (database {engine.url.render_as_string(hide_password=True)})"
    )
    engine.dispose()  # before the children start: they open their own connections
    sys.exit(_serve_both(settings, host, port))


def _serve_both(settings: Settings, host: str | None, port: int | None) -> int:
    """`parcours worker` and `parcours web` as two processes; SIGTERM or Ctrl+C stops both
    gracefully (the worker writes its batch, the server answers its requests in flight)."""
    from designer.server import child_command, child_env, supervise

    web = ["web", "--host", host or settings.host, "--port", str(port or settings.port)]
    children = {"worker": child_command("worker"), "web": child_command(*web)}
    return supervise(children, child_env(settings))


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default PARCOURS_HOST).")
@click.option("--port", type=int, default=None, help="Port (default PARCOURS_PORT).")
@click.option(
    "--workers", type=int, default=None, help="Server processes (default PARCOURS_WEB_WORKERS)."
)
@click.option(
    "--threads", type=int, default=None, help="Threads per process (default PARCOURS_WEB_THREADS)."
)
@click.pass_context
def web(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    workers: int | None,
    threads: int | None,
) -> None:
    """Serve the designer, the API and the public pages with gunicorn (no worker inside)."""
    from designer.server import WebServer
    from engine.store.db import make_engine, upgrade

    settings: Settings = ctx.obj
    for name, value in (("--workers", workers), ("--threads", threads)):
        if value is not None and value < 1:
            raise click.BadParameter("must be 1 or more", param_hint=name)
    engine = make_engine(settings.db_url)
    upgrade(engine)  # a no-op once `parcours db upgrade` (or `up`) ran
    engine.dispose()
    server = WebServer(
        settings,
        host or settings.host,
        port or settings.port,
        workers or settings.web_workers,
        threads or settings.web_threads,
    )
    server.run()


@cli.group()
def users() -> None:
    """Designer accounts: admin, marketer or viewer."""


@users.command("create")
@click.argument("username")
@click.option(
    "--role",
    type=click.Choice(["admin", "marketer", "viewer"]),
    default="marketer",
    show_default=True,
)
@click.option("--name", default=None, help="Full name shown in the designer.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (else generated)."
)
@click.pass_context
def users_create(
    ctx: click.Context, username: str, role: str, name: str | None, password_stdin: bool
) -> None:
    """Create a designer account; without --password-stdin a one-time password is printed."""
    from designer.auth import create_user, password_problem
    from engine.store.db import make_engine, upgrade

    settings: Settings = ctx.obj
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        problem = password_problem(password)
        if problem:
            raise click.UsageError(problem)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    try:
        _user, chosen = create_user(engine, username, role, password, name=name)
        with engine.begin() as conn:
            record(conn, os_user(), "create", "user", username, role=role)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(f"user {username} ({role}) created")
    if password is None:
        click.echo(f"one-time password (to change at first sign-in): {chosen}")


@users.command("list")
@click.pass_context
def users_list(ctx: click.Context) -> None:
    """List designer accounts."""
    from sqlalchemy import select

    from engine.store.db import make_engine, upgrade
    from engine.store.models import User

    settings: Settings = ctx.obj
    engine = make_engine(settings.db_url)
    upgrade(engine)
    with Session(engine) as db:
        for user in db.scalars(select(User).order_by(User.username)):
            state = " (disabled)" if user.disabled else ""
            click.echo(f"{user.username}\t{user.role}{state}")
    engine.dispose()


@users.command("reset-password")
@click.argument("username")
@click.pass_context
def users_reset_password(ctx: click.Context, username: str) -> None:
    """Give USERNAME a one-time password, to change at the next sign-in (audited); the user's
    open sessions end."""
    from sqlalchemy import select

    from designer.auth import new_one_time_password
    from engine.store.db import make_engine, upgrade
    from engine.store.models import User

    settings: Settings = ctx.obj
    engine = make_engine(settings.db_url)
    upgrade(engine)
    try:
        with Session(engine) as db, db.begin():
            user = db.scalar(select(User).where(User.username == username))
            if user is None:
                click.echo(f"error: no user named '{username}' (parcours users list)", err=True)
                sys.exit(1)
            password = new_one_time_password(user)
            record(db.connection(), os_user(), "reset_password", "user", username)
            disabled = user.disabled
    finally:
        engine.dispose()
    click.echo(f"one-time password for {username} (to change at the next sign-in): {password}")
    if disabled:
        click.echo(f"note: {username} is disabled; an admin enables the account on /users")


def main() -> None:
    """Entry point of the `parcours` command."""
    try:
        try:
            cli(prog_name="parcours")
        finally:
            sys.stdout.flush()  # here, not at exit, where a closed pipe would print a trace
    except BrokenPipeError:
        # The reader stopped early (`parcours outbox | head -1`): stop quietly as `cat` does.
        # Standard output points at /dev/null so that nothing else tries to write to the pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
