"""The names of the computed attributes as the scenario language reads them (`rfm.class`,
`lifecycle`, `customer_value`), their fields and their values: so lint can say "did you mean"
for a mistyped one. engine/spec/attributes.py declares how they are computed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.spec.problems import did_you_mean

METRIC_ROOTS = ("rfm", "lifecycle", "customer_value", "lead_score")
RFM_FIELDS = ("recency", "frequency", "monetary", "r", "f", "m", "class", "last_purchase_at",
              "orders")  # fmt: skip
# The usual RFM segment map, read on the R (recency) and F (frequency) scores, first match wins:
# (class, lowest R, highest R, lowest F, highest F).
RFM_CLASSES: tuple[tuple[str, int, int, int, int], ...] = (
    ("champions", 5, 5, 4, 5),
    ("loyal", 3, 4, 4, 5),
    ("potential_loyalists", 4, 5, 2, 3),
    ("new_customers", 5, 5, 1, 1),
    ("promising", 4, 4, 1, 1),
    ("need_attention", 3, 3, 3, 3),
    ("about_to_sleep", 3, 3, 1, 2),
    ("cant_lose_them", 1, 2, 5, 5),
    ("at_risk", 1, 2, 3, 4),
    ("lost", 1, 1, 1, 1),
    ("hibernating", 1, 2, 1, 2),
)
# Along the funnel; engine/audience/attributes.py gives the first that applies, in the order
# prospect, lost, dormant, at_risk, premium, loyal, repeat, first_purchase.
LIFECYCLE_STAGES = (
    "prospect", "first_purchase", "repeat", "loyal", "premium", "at_risk", "dormant", "lost",
)  # fmt: skip
_VALUES = {"lifecycle": LIFECYCLE_STAGES, "rfm.class": tuple(c[0] for c in RFM_CLASSES)}
_NAMES = ("lifecycle", "customer_value", "lead_score", *(f"rfm.{f}" for f in RFM_FIELDS))


def is_metric(name: str) -> bool:
    """Whether an attribute name reads the computed attributes rather than the contact's own."""
    return name.split(".", 1)[0] in METRIC_ROOTS


def metric_problem(name: str, op: str, value: Any) -> tuple[str, str] | None:
    """(field, message) when a condition on a computed attribute names an unknown one or compares
    it to a value it never takes; None when it is fine."""
    if name not in _NAMES:
        hint = did_you_mean(name, _NAMES) or f"use one of {', '.join(_NAMES)}"
        return "attribute", f"Unknown computed attribute '{name}'. {hint}"
    known = _VALUES.get(name)
    if known is None or op not in ("eq", "ne", "in", "not_in"):
        return None
    values: Sequence[Any] = value if isinstance(value, (list, tuple)) else [value]
    for wanted in values:
        if wanted not in known:
            hint = did_you_mean(str(wanted), known) or f"use one of {', '.join(known)}"
            return "value", f"'{name}' is never '{wanted}'. {hint}"
    return None
