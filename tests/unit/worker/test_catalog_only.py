"""A worker told to keep some segments only keeps those and the segments they compose."""

from __future__ import annotations

from pathlib import Path

from engine.audience.segment_catalog import CatalogWatcher

EXAMPLES = Path(__file__).resolve().parents[3] / "scenarios"


def test_only_keeps_the_named_segments_and_those_they_compose() -> None:
    watcher = CatalogWatcher(EXAMPLES)
    everything = set(watcher.current().definitions)
    assert {"premium", "repeat-buyers", "prospects"} <= everything
    kept = CatalogWatcher(EXAMPLES)
    kept.only = frozenset({"premium"})
    assert set(kept.current().definitions) == {"premium", "repeat-buyers"}
    kept_none = CatalogWatcher(EXAMPLES)
    kept_none.only = frozenset()
    assert set(kept_none.current().definitions) == set()
