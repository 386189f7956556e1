"""The API keys page in a real browser: an admin reaches it from the menu, creates a key, copies
it from the page that shows it once, calls the API with it over HTTP, then revokes it after
confirming, and the API refuses it."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import Site

pytestmark = pytest.mark.browser

PageFor = Callable[[str], Any]


def _api_status(site: Site, key: str) -> int:
    request = urllib.request.Request(f"{site.url}/api/contacts/nobody", headers={"X-Api-Key": key})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_create_copy_use_and_revoke_a_key(page_for: PageFor, site: Site) -> None:
    page = page_for("admin")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    page.click('[data-testid="nav-keys"]')
    page.wait_for_url("**/admin/keys")
    assert "No key yet." in page.inner_text('[data-testid="keys"]')

    page.fill('[data-testid="new-key"] input[name=name]', "shop")
    page.select_option('[data-testid="new-key"] select[name=scope]', "write")
    page.click('[data-testid="create-key"]')
    page.wait_for_selector('[data-testid="new-secret"]')
    secret = page.input_value('[data-testid="secret"]')
    assert secret.startswith("pk_")
    page.click('[data-testid="copy"]')
    page.wait_for_function(
        "() => document.querySelector('[data-testid=copy]').textContent.trim() === 'Copied'"
    )
    assert page.evaluate("navigator.clipboard.readText()") == secret
    site.shot(page, "api-key-created")
    assert _api_status(site, secret) == 404  # past the key check: no such contact

    page.click("text=Done")
    page.wait_for_url("**/admin/keys")
    row = page.inner_text('[data-testid="key-shop"]')
    assert "write" in row and secret not in page.content() and "never" not in row

    page.once("dialog", lambda dialog: dialog.dismiss())  # asked, and cancelled: nothing happens
    page.click('[data-testid="revoke-shop"]')
    assert page.is_visible('[data-testid="revoke-shop"]')
    assert _api_status(site, secret) == 404
    messages: list[str] = []
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.accept()))
    page.click('[data-testid="revoke-shop"]')
    page.wait_for_selector("text=Key shop revoked")
    assert messages and messages[0].startswith("Revoke the key shop?")
    assert "revoked" in page.inner_text('[data-testid="key-shop"]')
    assert not page.is_visible('[data-testid="revoke-shop"]')
    site.shot(page, "api-keys")
    assert _api_status(site, secret) == 401

    page.goto(site.url + "/admin/keys?lang=fr")
    assert page.inner_text("h1") == "Clés d'API"
    assert "révoquée le" in page.inner_text('[data-testid="key-shop"]')
