"""The contact page in a real browser: an admin opens a contact that absorbed another, reads its
identifiers and the merge (also in the timeline), downloads its data, then erases it through the
confirmation page and lands on the list, where it no longer is."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engine.store.models import AuditEntry, Contact
from tests.browser.conftest import Site
from tests.web.test_contact_page_identity import seed_merge

pytestmark = pytest.mark.browser

PageFor = Callable[[str], Any]


def test_admin_reads_the_merge_exports_and_erases(
    page_for: PageFor, site: Site, tmp_path: Path
) -> None:
    ids = seed_merge(site.state.engine)
    page = page_for("admin")
    page.goto(site.url + "/contacts/web-9")  # the absorbed id leads to the survivor
    page.wait_for_url("**/contacts/crm-1?merged_from=web-9")
    assert "web-9 was merged into crm-1." in page.inner_text(".flashes")
    identifiers = page.inner_text('[data-testid="identifiers"]')
    assert "Loyalty card" in identifiers and "LC-4417" in identifiers
    assert "Absorbed web-9" in page.inner_text('[data-testid="merges"]')
    merge = page.inner_text('[data-testid="timeline-merge"]')
    assert merge == "Merged contact web-9 into this one (identified by an event)"
    page.screenshot(path="/tmp/contact-page.png", full_page=True)

    with page.expect_download() as info:
        page.click('[data-testid="export-contact"]')
    download = info.value
    assert download.suggested_filename == "crm-1.json"
    saved = tmp_path / "export.json"
    download.save_as(saved)
    exported = json.loads(saved.read_text(encoding="utf-8"))
    assert exported["contact"]["email"] == "marie@example.com"
    assert exported["merged_contacts"] == [ids["web-9"]]

    page.click('[data-testid="erase-contact"]')
    page.wait_for_url("**/erase")
    # (a wrong id is refused with a 400, which the console check would count: see tests/web)
    assert "salted hash" in page.inner_text('[data-testid="erase-kept"]')
    page.fill('[data-testid="erase-confirm"]', "crm-1")
    page.fill('[data-testid="erase-reason"]', "asked by email")
    page.screenshot(path="/tmp/contact-erase.png", full_page=True)
    page.click('[data-testid="erase-submit"]')
    page.wait_for_url("**/contacts")
    assert "Contact erased." in page.inner_text(".flashes")
    listed = page.inner_text('[data-testid="contact-list"]')
    assert "crm-2" in listed and "crm-1" not in listed and "marie@" not in listed
    page.screenshot(path="/tmp/contact-list-after.png", full_page=True)

    with site.state.engine.connect() as conn:
        email = conn.execute(select(Contact.email).where(Contact.id == ids["crm-1"])).scalar()
        actions = conn.execute(select(AuditEntry.action, AuditEntry.username)).all()
    assert email is None
    assert ("export", "admin") in actions and ("erase", "admin") in actions
