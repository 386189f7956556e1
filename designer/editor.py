"""The canvas editor (placeholder until the editor lands)."""

from __future__ import annotations

from flask import Blueprint

editor = Blueprint("editor", __name__)
