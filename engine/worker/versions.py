"""Publishing scenarios as immutable versions, and reading them back (cached) for the worker."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from engine.errors import NotFound, ScenarioInvalid
from engine.spec.loader import content_hash, load_bundle, scenario_bundle
from engine.spec.model import Scenario
from engine.spec.problems import Problem
from engine.store.db import utcnow
from engine.store.models import ScenarioRecord, ScenarioVersion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishResult:
    scenario_id: str
    version_number: int
    version_id: int
    created: bool  # False when the same content was already the current version


def publish_bundle(
    session: Session,
    bundle: dict[str, Any],
    source_path: str | None = None,
    by: str | None = None,
    status: str = "live",
    now: datetime | None = None,
) -> PublishResult:
    """Store a new version if the content changed; running enrollments stay on theirs."""
    scenario = load_bundle(bundle, source_path)  # raises ScenarioInvalid: nothing is stored
    digest = content_hash(bundle)
    record = session.get(ScenarioRecord, scenario.id)
    if record is None:
        record = ScenarioRecord(
            id=scenario.id, name=scenario.name, status=status, source_path=source_path
        )
        session.add(record)
        session.flush()
    existing = session.scalar(
        select(ScenarioVersion).where(
            ScenarioVersion.scenario_id == scenario.id, ScenarioVersion.content_hash == digest
        )
    )
    if existing is not None:
        created = record.current_version_id != existing.id
        record.current_version_id = existing.id
        record.name = scenario.name
        return PublishResult(scenario.id, existing.number, existing.id, created)
    number = (
        session.scalar(
            select(func.max(ScenarioVersion.number)).where(
                ScenarioVersion.scenario_id == scenario.id
            )
        )
        or 0
    ) + 1
    version = ScenarioVersion(
        scenario_id=scenario.id,
        number=number,
        content_hash=digest,
        bundle=bundle,
        published_at=now or utcnow(),
        published_by=by,
    )
    session.add(version)
    session.flush()
    record.current_version_id = version.id
    record.name = scenario.name
    if source_path:
        record.source_path = source_path
    logger.info(
        "published scenario %s version %d",
        scenario.id,
        number,
        extra={"action": "publish", "scenario_id": scenario.id},
    )
    return PublishResult(scenario.id, number, version.id, True)


def publish_dir(
    session: Session, folder: Path, by: str | None = None
) -> tuple[list[PublishResult], list[Problem]]:
    """Publish every valid scenario of a folder; invalid files are reported and left out."""
    results, problems = [], []
    from engine.spec.lint import scenario_files

    for path in scenario_files([folder]):
        try:
            bundle = scenario_bundle(path)
            results.append(publish_bundle(session, bundle, str(path), by=by))
        except ScenarioInvalid as exc:
            problems.extend(exc.problems)
    return results, problems


def set_status(session: Session, scenario_id: str, status: str) -> None:
    """Pause or resume a scenario; a paused scenario takes no new entries."""
    record = session.get(ScenarioRecord, scenario_id)
    if record is None:
        raise NotFound(f"no scenario '{scenario_id}'")
    record.status = status


class VersionCache:
    """Compiled scenarios by version id. Versions never change, so entries never go stale."""

    def __init__(self) -> None:
        self._compiled: dict[int, Scenario] = {}

    def get(self, conn: Connection | Session, version_id: int) -> Scenario:
        scenario = self._compiled.get(version_id)
        if scenario is None:
            bundle = conn.execute(
                select(ScenarioVersion.bundle).where(ScenarioVersion.id == version_id)
            ).scalar_one()
            scenario = load_bundle(bundle, stored=True)
            self._compiled[version_id] = scenario
        return scenario

    def live(self, conn: Connection | Session) -> list[tuple[int, Scenario]]:
        """(version id, scenario) of every live scenario's current version."""
        rows = conn.execute(
            select(ScenarioRecord.current_version_id).where(
                ScenarioRecord.status == "live", ScenarioRecord.current_version_id.is_not(None)
            )
        ).all()
        return [(int(r[0] or 0), self.get(conn, int(r[0] or 0))) for r in rows]
