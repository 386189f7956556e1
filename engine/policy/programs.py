"""What the gate enforces of the programs (`scenarios/programs/`): their caps and their budget.

A program's caps judge the sends of its scenarios like the workspace caps judge every send, but
count only the past sends of the program's scenarios (rule `cap:program:<program>:<cap>`). Its
budget stops the program's marketing sends once the period's spend (its scenarios' sends in the
current day, week, month or quarter of the workspace zone, times each channel's cost per message,
the prices the KPI rollups use) would pass the amount (rule `budget:<program>`).

The worker reads the programs folder once and again only when its files change
(`ProgramWatcher`); a batch reads the spend of every program with a budget in one aggregate
query, under a lock on those programs, the first time one of its marketing sends needs it, then
counts the batch's own sends in memory (`BudgetBook`), so neither one batch nor two racing
workers overshoot a budget.
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from engine.insights.kpis import period_bounds
from engine.insights.rollups import channel_cost
from engine.runtime.timing import local_to_utc
from engine.spec.programs import PROGRAMS_FOLDER, Program, lint_program_folder
from engine.spec.settings_files import Signature, folder_signature
from engine.store.models import Send

logger = logging.getLogger(__name__)

# (class, object) of a two-key advisory lock per program: that key space never meets the
# per-contact single-key locks of the gate (and 7201 is the computed attributes' class).
LOCK_CLASS = 7202
EPSILON = 1e-9


@dataclass(frozen=True)
class ProgramRules:
    """The programs the gate enforces, by scenario."""

    by_scenario: dict[str, Program] = field(default_factory=dict)
    # Spend of each budgeted program before the last full hour, kept across batches (see
    # program_spend); a new ProgramRules (a program file changed) starts it again.
    closed: dict[str, tuple[datetime, datetime, float]] = field(default_factory=dict)

    @property
    def budgeted(self) -> list[Program]:
        """The programs with a budget, by id."""
        found = {p.id: p for p in self.by_scenario.values() if p.budget is not None}
        return [found[k] for k in sorted(found)]

    def lookback(self) -> timedelta:
        """How far back the program caps need the ledger (a calendar week at least)."""
        spans = [timedelta(days=8)]
        spans += [c.window for p in self.by_scenario.values() for c in p.caps if c.window]
        return max(spans)


def program_rules(programs: dict[str, Program]) -> ProgramRules:
    """The rules of these programs, each scenario to its program."""
    return ProgramRules({s: p for p in programs.values() for s in p.scenarios})


class ProgramWatcher:
    """Reads `<scenarios_dir>/programs/` again when its files change; logs each problem once.
    A file with an error is left out (its program is not enforced) until it lints again."""

    def __init__(self, scenarios_dir: Path) -> None:
        self.folder = Path(scenarios_dir) / PROGRAMS_FOLDER
        self.rules = ProgramRules()
        self._signature: Signature | None = None
        self._logged: set[str] = set()

    def signature(self) -> Signature:
        return folder_signature(self.folder)

    def current(self) -> ProgramRules:
        """The rules as the folder now says (one directory listing when nothing changed)."""
        signature = self.signature()
        if signature == self._signature:
            return self.rules
        self._signature = signature
        linted = lint_program_folder(self.folder)
        for problem in linted.problems:
            line = f"{problem.file}:{problem.line}: {problem.message}"
            if problem.severity == "error" and line not in self._logged:
                self._logged.add(line)
                logger.error("program skipped: %s", line, extra={"action": "programs"})
        self.rules = program_rules(linted.programs)
        return self.rules


def period_start(period: str, now: datetime, zone: str) -> datetime:
    """The instant the current budget period began in the workspace zone."""
    first, _ = period_bounds(period, now, zone)
    return local_to_utc(first, time(0), ZoneInfo(zone))


def program_spend(
    conn: Connection,
    programs: list[Program],
    now: datetime,
    zone: str,
    closed: dict[str, tuple[datetime, datetime, float]] | None = None,
) -> dict[str, float]:
    """Each program's spend in its current budget period: its scenarios' sends (less those the
    delivery loop cancelled) times each channel's cost.

    With `closed` (kept by the caller across batches: program → period start, cut-off, spend
    before the cut-off) the hours before the last full hour are counted once and only the sends
    since are read again, so a batch's read stays small however long the period. A send later
    cancelled in a counted hour still counts: the budget errs on the side of spending less."""
    cutoff = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    starts = {p.id: period_start(p.budget.period, now, zone) for p in programs if p.budget}
    cuts = {pid: max(start, cutoff) for pid, start in starts.items()}
    cache = closed if closed is not None else {}
    stale = [
        p for p in programs if cache.get(p.id, (None, None, 0.0))[:2] != (starts[p.id], cuts[p.id])
    ]
    if stale:
        before = _spend(conn, [(p, starts[p.id], cuts[p.id]) for p in stale])
        for p in stale:
            cache[p.id] = (starts[p.id], cuts[p.id], before[p.id])
    recent = _spend(conn, [(p, cuts[p.id], None) for p in programs])
    return {p.id: cache[p.id][2] + recent[p.id] for p in programs}


def _spend(
    conn: Connection, spans: list[tuple[Program, datetime, datetime | None]]
) -> dict[str, float]:
    """Each program's spend over its span [from, to), in one query for all of them."""
    owner: dict[str, str] = {}
    clauses = []
    for program, low, high in spans:
        owner.update(dict.fromkeys(program.scenarios, program.id))
        clause = and_(Send.scenario_id.in_(program.scenarios), Send.created_at >= low)
        clauses.append(clause if high is None else and_(clause, Send.created_at < high))
    spend: dict[str, float] = dict.fromkeys((p.id for p, _, _ in spans), 0.0)
    if not clauses:
        return spend
    rows = conn.execute(
        select(Send.scenario_id, Send.channel, func.count().label("n"))
        .where(or_(*clauses), Send.status != "cancelled")
        .group_by(Send.scenario_id, Send.channel)
    )
    for r in rows:
        spend[owner[r.scenario_id]] += r.n * channel_cost(r.channel)
    return spend


def lock_programs(conn: Connection, programs: list[Program]) -> None:
    """Serialise budget decisions per program until commit (PostgreSQL: two-key advisory locks
    in key order, always taken after the batch's contact locks; SQLite: the write transaction
    already excludes every other writer)."""
    if conn.dialect.name != "postgresql" or not programs:
        return
    for key in sorted({program_lock_key(p.id) for p in programs}):
        conn.execute(select(func.pg_advisory_xact_lock(LOCK_CLASS, key)))


def program_lock_key(program_id: str) -> int:
    """A stable signed 32-bit key for a program id."""
    value = zlib.crc32(program_id.encode())
    return value - (1 << 32) if value >= 1 << 31 else value


class BudgetBook:
    """One batch's budget accounting: the spend read once, plus the sends the batch allowed."""

    def __init__(self, conn: Connection, rules: ProgramRules, now: datetime, zone: str) -> None:
        self.conn, self.rules, self.now, self.zone = conn, rules, now, zone
        self.read: dict[str, float] | None = None  # None until a marketing send needs it
        self.added: dict[str, float] = defaultdict(float)

    def spent(self, program: Program) -> float:
        """The program's spend so far in its period, this batch's sends included."""
        if self.read is None:
            budgeted = self.rules.budgeted
            lock_programs(self.conn, budgeted)  # all at once: no lock-order deadlock
            self.read = program_spend(self.conn, budgeted, self.now, self.zone, self.rules.closed)
        return self.read.get(program.id, 0.0) + self.added[program.id]

    def blocks(self, program: Program, channel: str) -> bool:
        """Whether a send on `channel` would take the program past its budget."""
        if program.budget is None:
            return False
        cost = channel_cost(channel)
        return self.spent(program) + cost > program.budget.amount + EPSILON

    def record(self, program: Program, channel: str) -> None:
        """Count a send the gate allowed (marketing or transactional)."""
        if program.budget is not None:
            self.added[program.id] += channel_cost(channel)
