"""`parcours segments` and `parcours segment show|import`: the workspace's segments from the
command line, registered on the `parcours` group by engine.cli.

Figures come from stored membership; definitions from the segment files, so a file with errors
is listed with its problems (file:line) rather than stopping the list.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine

from engine.audience.segment_import import (
    MODES,
    ImportResult,
    Rejected,
    RejectsFile,
    changed_sources,
    check_importable,
    import_file,
    rejects_path,
    source_path,
)
from engine.audience.segment_overview import (
    details,
    find_segment,
    segments_folder,
    summaries,
    workspace_segments,
)
from engine.cli_common import database, root_settings
from engine.config import Settings
from engine.spec.segments import Segment
from engine.store.db import utcnow

SHOWN_REJECTS = 20


def _signed(change: int | None) -> str:
    return "-" if change is None else f"{change:+d}"


@click.command(name="segments")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
def segments(ctx: click.Context, as_json: bool) -> None:
    """List the segments with their kind, members now and change since the last recorded day."""
    settings = root_settings(ctx)
    folder = workspace_segments(settings.scenarios_dir)
    with database(settings) as engine, engine.connect() as conn:
        found = summaries(conn, folder, utcnow())
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in found], indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo(f"no segments in {segments_folder(settings.scenarios_dir)}")
        return
    click.echo(f"{'segment':<28} {'kind':<10} {'members':>9} {'change':>8}  name")
    for s in found:
        click.echo(f"{s.id:<28} {s.kind or '-':<10} {s.count:>9} {_signed(s.change):>8}  {s.name}")
        for problem in s.problems:
            click.echo(f"    {problem}")


@click.group(name="segment")
def segment() -> None:
    """One segment: its details, or the import of a manual list."""


@segment.command(name="show")
@click.argument("segment_id")
@click.option(
    "--sample",
    "sample_size",
    type=click.IntRange(0, 1000),
    default=10,
    show_default=True,
    help="How many members to name.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the details as JSON.")
@click.pass_context
def segment_show(ctx: click.Context, segment_id: str, sample_size: int, as_json: bool) -> None:
    """Count, definition, a sample of members and the count's trend of one segment."""
    settings = root_settings(ctx)
    folder = workspace_segments(settings.scenarios_dir)
    find_segment(folder, segment_id)  # an unknown id stops here, with "did you mean"
    with database(settings) as engine, engine.connect() as conn:
        found = details(conn, folder, segment_id, utcnow(), sample_size)
    if as_json:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False, default=str))
        return
    _echo_details(found)


def _echo_details(d: dict[str, Any]) -> None:
    click.echo(f"segment {d['id']}: {d['name']} ({d['kind']})")
    if d["description"]:
        click.echo(f"  {d['description']}")
    change = d["change"]
    since = "no earlier day recorded" if change is None else f"{change:+d} since the last day"
    click.echo(f"members      {d['count']} ({since})")
    changed = d["last_change"]
    when = f"{changed['at'][:19].replace('T', ' ')} ({changed['reason']})" if changed else "never"
    click.echo(f"last change  {when}")
    click.echo("definition")
    click.echo(f"  {d['definition']['text']}")
    click.echo(f"yaml ({d['file']})")
    for line in d["definition"]["yaml"].rstrip("\n").splitlines():
        click.echo(f"  {line}")
    click.echo(f"sample ({len(d['sample'])} of {d['count']})")
    click.echo("  " + (" ".join(d["sample"]) or "none"))
    click.echo("trend")
    if not d["trend"]:
        click.echo("  no count recorded yet")
    for point in d["trend"][-30:]:
        click.echo(f"  {point['day']}  {point['members']:>9}")


@segment.command(name="import")
@click.argument("segment_id")
@click.argument(
    "file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="replace",
    show_default=True,
    help="replace: the list becomes the members; add / remove: its contacts join or leave.",
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where rejected lines go (default: FILE.rejects.csv next to the input).",
)
@click.pass_context
def segment_import(
    ctx: click.Context, segment_id: str, file: Path | None, mode: str, rejects: Path | None
) -> None:
    """Import a manual segment's members from a CSV with an external_id column (default: the
    file its `manual: {source: ...}` names)."""
    settings = root_settings(ctx)
    folder = workspace_segments(settings.scenarios_dir)
    found = find_segment(folder, segment_id)
    check_importable(found)
    path = file or source_path(segments_folder(settings.scenarios_dir), found)
    if not path.is_file():
        raise click.ClickException(f"no file {path}")
    own = file is None or _same_file(path, found, settings)
    with database(settings) as engine:
        result, written = _import(engine, found, path, mode, rejects, from_source=own)
    _say_imported(found.id, path, result, written)
    sys.exit(1 if result.rejected else 0)


def _same_file(path: Path, found: Segment, settings: Settings) -> bool:
    if found.manual_source is None:
        return False
    source = segments_folder(settings.scenarios_dir) / found.manual_source
    return source.exists() and source.resolve() == path.resolve()


def _import(
    engine: Engine,
    found: Segment,
    path: Path,
    mode: str,
    rejects: Path | None,
    *,
    from_source: bool,
) -> tuple[ImportResult, Path]:
    out = RejectsFile(rejects or rejects_path(path))
    shown = 0

    def reject(r: Rejected) -> None:
        nonlocal shown
        out(r)
        if shown < SHOWN_REJECTS:
            shown += 1
            click.echo(f"{path}:{r.line}: {r.external_id!r}: {r.message}", err=True)

    try:
        result = import_file(
            engine, found, path, mode, utcnow(), on_reject=reject, from_source=from_source
        )
    finally:
        out.close()
    return result, out.path


def _say_imported(segment_id: str, path: Path, result: ImportResult, rejects: Path) -> None:
    if result.rejected > SHOWN_REJECTS:
        click.echo(f"... and {result.rejected - SHOWN_REJECTS} more", err=True)
    if result.rejected:
        click.echo(f"{result.rejected} rejected lines written to {rejects}", err=True)
    click.echo(
        f"{segment_id}: {result.read} lines read from {path.name}, {result.matched} contacts "
        f"matched; {result.entered} entered, {result.exited} left, {result.rejected} rejected; "
        f"{result.members} members now"
    )


def import_changed_lists(engine: Engine, settings: Settings) -> None:
    """At start-up: import each manual segment's list file once, when it changed since the last
    import from it. A list that cannot be imported is reported and the others go on."""
    from engine.errors import ParcoursError

    folder = workspace_segments(settings.scenarios_dir)
    lists = segments_folder(settings.scenarios_dir)
    for found, path in changed_sources(engine, lists, folder.segments.values()):
        try:
            result, written = _import(engine, found, path, "replace", None, from_source=True)
        except ParcoursError as exc:
            click.echo(f"segment {found.id}: not imported: {exc}", err=True)
            continue
        _say_imported(found.id, path, result, written)
