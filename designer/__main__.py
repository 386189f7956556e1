"""`python -m designer ARGS`: the `parcours` command (how `parcours up` starts its children)."""

from __future__ import annotations

from designer.cli import main

main()
