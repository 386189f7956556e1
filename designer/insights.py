"""Contacts and the pressure dashboard (placeholder until they land)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from designer.auth import requires

insights = Blueprint("insights", __name__)


@insights.get("/contacts")
@requires("viewer")
def contacts() -> Any:
    return "contacts"


@insights.get("/pressure")
@requires("viewer")
def pressure() -> Any:
    return "pressure"
