"""What the condition builder (designer/static/editor/conditions.js) offers beyond the editor's
own choices, for the Segments pages and the journey editor alike."""

from __future__ import annotations

from typing import Any

from designer import parcours
from designer.i18n import gettext as _
from designer.segment_files import folder
from engine.errors import ScenarioInvalid
from engine.spec.conditions import CONSENT_STATES, PRESSURE_STATES
from engine.spec.metric_names import LIFECYCLE_STAGES, RFM_CLASSES, RFM_FIELDS
from engine.spec.segments import segment_ids

COMPUTED = ["lifecycle", "customer_value", "lead_score", *(f"rfm.{f}" for f in RFM_FIELDS)]


def condition_choices(segment_id: str | None = None) -> dict[str, Any]:
    """What the condition builder offers beyond the editor's own choices: computed attributes and
    their values, the workspace's segments (the edited one left out), consent topics and states,
    pressure states. The scenario editor's bootstrap can take these as they are."""
    try:
        topics = dict(parcours().policy().topics)
    except ScenarioInvalid:  # a broken policy file: topics are typed in
        topics = {}
    return {
        "computed": COMPUTED,
        "computedValues": {
            "lifecycle": list(LIFECYCLE_STAGES),
            "rfm.class": [c[0] for c in RFM_CLASSES],
        },
        "segments": [s for s in segment_ids(folder()) if s != segment_id],
        "conditionTopics": [["*", _("every topic")], *([k, v] for k, v in topics.items())],
        "consentStates": list(CONSENT_STATES),
        "pressureStates": list(PRESSURE_STATES),
    }
