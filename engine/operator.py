"""Who runs a command: the operator's name written to the audit log and the journal."""

from __future__ import annotations

import getpass


def os_user() -> str:
    """The operating system user running the command, as evidence of an operator's change."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER variable and no passwd entry (some containers)
        return "unknown"
