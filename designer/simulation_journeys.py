"""The journeys a designer simulation runs with: the workspace's other live journeys.

A journey the database knows runs as it is live (its current published version) when it is
live, and is left out when paused or a draft: it would compete with nothing. A journey the
database does not know runs from its file, as `parcours simulate scenarios/` runs every file of
the folder; so on a workspace that was never published the designer and the command agree.
The open journey itself always runs from its file, as edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from designer.workspace import Workspace
from engine.errors import ParcoursError
from engine.store.db import SQLITE_BEGIN
from engine.store.models import ScenarioRecord, ScenarioVersion


@dataclass(frozen=True)
class Rival:
    """Another journey of the run: where its content comes from, and the content itself."""

    id: str
    name: str
    source: str  # published | file
    bundle: dict[str, Any]

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "source": self.source}


@dataclass(frozen=True)
class LeftOut:
    """A journey of the workspace that does not run, and why (its status)."""

    id: str
    name: str
    status: str  # paused | draft | invalid (a file with errors, never published)

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "status": self.status}


@dataclass(frozen=True)
class Lineup:
    """Every journey of the run but the open one, and the order of all of them (the order the
    command line reads the folder in, which decides the generated events)."""

    rivals: list[Rival]
    left_out: list[LeftOut]
    order: list[str]


def lineup(engine: Engine, workspace: Workspace, open_id: str) -> Lineup:
    """The other journeys of `workspace` for a simulation of `open_id`. Only reads."""
    with engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        records = {r.id: r for r in conn.execute(select(ScenarioRecord))}
        live = [r.current_version_id for r in records.values() if r.status == "live"]
        versions = select(ScenarioVersion.id, ScenarioVersion.bundle)
        bundles = {v: b for v, b in conn.execute(versions.where(ScenarioVersion.id.in_(live)))}
    rivals: list[Rival] = []
    left_out: list[LeftOut] = []
    order: list[str] = []
    files = workspace.ids()
    for scenario_id in [*files, *sorted(set(records) - set(files))]:
        record = records.get(scenario_id)
        if scenario_id == open_id:
            order.append(scenario_id)
        elif record is not None:
            bundle = bundles.get(record.current_version_id)
            if bundle is None:  # paused, or never published
                status = "draft" if record.status == "live" else record.status
                left_out.append(LeftOut(scenario_id, record.name, status))
            else:
                rivals.append(Rival(scenario_id, record.name, "published", bundle))
                order.append(scenario_id)
        else:
            found = _file(workspace, scenario_id)
            if isinstance(found, Rival):
                rivals.append(found)
                order.append(scenario_id)
            else:
                left_out.append(found)
    return Lineup(rivals, left_out, order)


def _file(workspace: Workspace, scenario_id: str) -> Rival | LeftOut:
    """A never-published file runs as the command line would run it; one with errors (which
    the command line refuses) is left out rather than failing the whole run."""
    try:
        found = workspace.load(scenario_id)
        if found.result.scenario is not None:
            return Rival(scenario_id, found.name, "file", workspace.bundle(scenario_id))
        name = found.name
    except ParcoursError:  # unreadable, or a template that cannot be read
        name = scenario_id
    return LeftOut(scenario_id, name, "invalid")
