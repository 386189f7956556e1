"""Scenario list, detail, publish / pause / resume, versions and the audit log."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from designer.auth import requires

scenarios = Blueprint("scenarios", __name__)


@scenarios.get("/scenarios")
@requires("viewer")
def index() -> Any:
    return "scenarios"


@scenarios.get("/audit")
@requires("viewer")
def audit() -> Any:
    return "audit"
