"""Parcours engine: scenarios, the interpreter, storage and the scheduler.

The public surface lives here; everything else is internal to the package.
"""

from __future__ import annotations
