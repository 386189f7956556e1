"""Signed contact links and the rewriting of an email's HTML: pure functions, no database."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.delivery.links import ExpiredLink, InvalidLink, sign
from engine.delivery.tracking import (
    CLICK_SALT,
    PIXEL_HTML,
    ContactLink,
    click_url,
    open_pixel_url,
    preferences_token,
    read_click_token,
    read_open_token,
    read_preferences_token,
    read_unsubscribe_token,
    render_tracking,
    rewrite_html,
    unsubscribe_token,
    unsubscribe_url,
)

SECRET = "test-secret-key"
BASE = "https://mail.example"
T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
TRACKED = re.compile(r'"https://mail\.example/t/c/([^"]+)"')

LETTER = """<!DOCTYPE html>
<html><head><style>a { color: red }</style></head>
<body>
<p>Hello <b>Ana</b>, see <a class=cta href='https://shop.example/sale?a=1&amp;b=2'>the sale</a>.</p>
<p><A HREF=http://blog.example/post title="href=https://evil.example">Blog</A></p>
<p><a href="mailto:help@shop.example">mail</a> <a href="tel:+33100000000">call</a>
<a href="#top">top</a> <a href="/relative">rel</a> <a href="javascript:alert(1)">js</a>
<a href="https://keep.example/" data-parcours-notrack>kept</a>
<a href="https://mail.example/u/abc">unsubscribe</a></p>
<!-- <a href="https://comment.example/">not a link</a> -->
<script>var s = '<a href="https://script.example/">';</script>
</body>
</html>
"""


def _targets(document: str) -> list[str]:
    return [read_click_token(SECRET, token, T0).url for token in TRACKED.findall(document)]


def _rewrite(document: str, pixel: str | None = None) -> str:
    return rewrite_html(
        document,
        lambda target: click_url(BASE, SECRET, "send-1", target, T0),
        pixel,
        untracked=(f"{BASE}/u/", f"{BASE}/p/"),
    )


# --- rewriting ---------------------------------------------------------------------------------


def test_rewriting_tracks_web_links_and_keeps_everything_else() -> None:
    out = _rewrite(LETTER)
    # The entity is decoded before signing: the redirect goes where the browser would have gone.
    assert _targets(out) == ["https://shop.example/sale?a=1&b=2", "http://blog.example/post"]
    # Put the original values back: the rest of the document is byte for byte the same.
    tokens = iter(["'https://shop.example/sale?a=1&amp;b=2'", "http://blog.example/post"])
    restored = TRACKED.sub(lambda _: next(tokens), out)
    assert restored == LETTER
    assert 'title="href=https://evil.example"' in out  # an attribute value is not an href


def test_rewriting_skips_what_is_not_a_tracked_web_link() -> None:
    out = _rewrite(LETTER)
    for kept in (
        'href="mailto:help@shop.example"', 'href="tel:+33100000000"', 'href="#top"',
        'href="/relative"', 'href="javascript:alert(1)"', 'href="https://keep.example/"',
        'href="https://mail.example/u/abc"', 'href="https://comment.example/"',
        'href="https://script.example/"',
    ):  # fmt: skip
        assert kept in out, kept
    assert len(TRACKED.findall(out)) == 2


def test_pixel_goes_before_the_closing_body_tag_or_at_the_end() -> None:
    pixel = open_pixel_url(BASE, SECRET, "send-1", T0)
    out = _rewrite(LETTER, pixel)
    assert out.index("/t/o/") < out.index("</body>") and out.endswith("</html>\n")
    assert out.count("<img") == 1 and 'width="1" height="1" alt=""' in out
    fragment = _rewrite("<p>No body tag <a href='https://a.example'>a</a>", pixel)
    assert fragment.startswith("<p>No body tag <a href=") and fragment.rstrip().endswith(">")
    assert fragment.index("/t/c/") < fragment.index("/t/o/")
    token = re.search(r"/t/o/([^\"]+)", out)
    assert token and read_open_token(SECRET, token.group(1), T0) == "send-1"


@pytest.mark.parametrize(
    "document",
    [
        "<a href='https://a.example'>unclosed",
        '<a href="https://a.example',  # cut in the middle of the tag
        "<p><a href='https://a.example' <b>broken</b></p></body>",
        "</body></body><a href=https://a.example/x>after</a>",
        "<a href='https://a.example' href='https://b.example'>twice</a>",
        "<a\nhref\n=\n'https://a.example/\u00e9t\u00e9'>accents, newlines</a>",
        "",
    ],
)
def test_odd_html_never_breaks(document: str) -> None:
    out = _rewrite(document, "https://mail.example/t/o/x")
    assert PIXEL_HTML.format(src="https://mail.example/t/o/x") in out
    # Whatever was tracked, only href values changed and only the pixel was added.
    values = re.compile(
        r"""'https?://[ab]\.example[^']*'|"https?://[ab]\.example[^"]*"|"""
        r"""(?<=[=\s])https?://[ab]\.example[^\s>'"]*"""
    )
    left = out.replace(PIXEL_HTML.format(src="https://mail.example/t/o/x"), "", 1)
    assert values.sub('"V"', TRACKED.sub('"V"', left)) == values.sub('"V"', document)
    for target in _targets(out):
        assert target.startswith(("https://a.example", "https://b.example"))


@given(st.text(alphabet="<>a/=\"' bhref:x.-!", max_size=80))
def test_rewriting_arbitrary_text_only_adds_the_pixel(document: str) -> None:
    out = rewrite_html(document, None, "P")
    assert out.replace('<img src="P"', "", 1).count("<img") == document.count("<img")
    assert len(out) > len(document)


def test_the_result_parses_like_the_original() -> None:
    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append(tag)

    before, after = Tags(), Tags()
    before.feed(LETTER)
    after.feed(_rewrite(LETTER, "https://mail.example/t/o/x"))
    assert after.tags == [*before.tags, "img"]


# --- click tokens ------------------------------------------------------------------------------


def test_a_click_token_gives_back_only_what_was_signed() -> None:
    url = click_url(BASE, SECRET, "send-1", "https://shop.example/a?x=1", T0)
    token = url.rsplit("/", 1)[1]
    assert read_click_token(SECRET, token, T0).url == "https://shop.example/a?x=1"
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(InvalidLink):
        read_click_token(SECRET, tampered, T0)
    with pytest.raises(InvalidLink):  # another workspace's key
        read_click_token("another-secret", token, T0)
    _, stamp, mac = token.split(".")
    forged = sign(SECRET, CLICK_SALT, {"k": "send-1", "u": "https://evil.example"}, T0)
    with pytest.raises(InvalidLink):  # a genuine signature cannot be moved to another payload
        read_click_token(SECRET, f"{forged.split('.')[0]}.{stamp}.{mac}", T0)


@pytest.mark.parametrize("target", ["javascript:alert(1)", "/path", "//evil.example", "data:,x"])
def test_only_web_addresses_can_be_tracked(target: str) -> None:
    with pytest.raises(ValueError):
        click_url(BASE, SECRET, "send-1", target, T0)
    # Even a token signed with our key (an older version, a bug) never yields such a target.
    token = sign(SECRET, CLICK_SALT, {"k": "send-1", "u": target}, T0)
    with pytest.raises(InvalidLink):
        read_click_token(SECRET, token, T0)


def test_click_tokens_expire_but_an_expired_one_still_names_its_target() -> None:
    token = click_url(BASE, SECRET, "s", "https://a.example/", T0).rsplit("/", 1)[1]
    with pytest.raises(ExpiredLink):
        read_click_token(SECRET, token, T0 + timedelta(days=181))
    assert read_click_token(SECRET, token, T0 + timedelta(days=181), None).url.endswith(
        "a.example/"
    )


# --- unsubscribe and preference tokens -----------------------------------------------------------


def test_an_unsubscribe_token_binds_contact_channel_topic_and_send() -> None:
    token = unsubscribe_token(SECRET, 42, "email", "newsletter", "send-9", T0)
    assert read_unsubscribe_token(SECRET, token, T0) == ContactLink(
        42, "email", "newsletter", "send-9"
    )
    other = unsubscribe_token(SECRET, 42, "email", "promotions", "send-9", T0)
    assert token != other
    # The payload cannot be swapped under the signature of another token.
    swapped = other.split(".")[0] + "." + ".".join(token.split(".")[1:])
    with pytest.raises(InvalidLink):
        read_unsubscribe_token(SECRET, swapped, T0)
    # No topic: the whole channel.
    assert (
        read_unsubscribe_token(
            SECRET, unsubscribe_token(SECRET, 42, "email", None, "s", T0), T0
        ).topic
        == "*"
    )


def test_each_purpose_refuses_the_other_tokens() -> None:
    unsubscribe = unsubscribe_token(SECRET, 42, "email", "newsletter", "send-9", T0)
    preferences = preferences_token(SECRET, 42, "email", "send-9", T0)
    click = click_url(BASE, SECRET, "send-9", "https://a.example/", T0).rsplit("/", 1)[1]
    with pytest.raises(InvalidLink):
        read_unsubscribe_token(SECRET, preferences, T0)
    with pytest.raises(InvalidLink):
        read_preferences_token(SECRET, unsubscribe, T0)
    with pytest.raises(InvalidLink):
        read_unsubscribe_token(SECRET, click, T0)
    with pytest.raises(InvalidLink):
        read_click_token(SECRET, unsubscribe, T0)
    assert read_preferences_token(SECRET, preferences, T0).contact_id == 42


def test_unsubscribe_links_last_sixty_days() -> None:
    token = unsubscribe_token(SECRET, 42, "email", "newsletter", "send-9", T0)
    assert read_unsubscribe_token(SECRET, token, T0 + timedelta(days=31)).contact_id == 42
    assert read_unsubscribe_token(SECRET, token, T0 + timedelta(days=60)).contact_id == 42
    with pytest.raises(ExpiredLink):
        read_unsubscribe_token(SECRET, token, T0 + timedelta(days=61))


# --- a whole message ---------------------------------------------------------------------------


def test_render_tracking_adds_footer_links_pixel_and_the_one_click_address() -> None:
    parts = {"subject": "June news", "text": "Hello Ana\n", "html": LETTER}
    out, meta = render_tracking(parts, 42, "email", "newsletter", "send-9", BASE + "/", SECRET, T0)
    assert out["subject"] == "June news"
    url = meta["unsubscribe_url"]
    assert url.startswith("https://mail.example/u/")
    link = read_unsubscribe_token(SECRET, url.rsplit("/", 1)[1], T0)
    assert (link.contact_id, link.channel, link.topic, link.send_key) == (
        42, "email", "newsletter", "send-9",
    )  # fmt: skip
    assert out["text"].startswith("Hello Ana\n\n-- \n")
    assert url in out["text"] and meta["preferences_url"] in out["text"]
    assert "Se désinscrire" in out["text"] and "Se désinscrire" in out["html"]
    # The footer's own links are not tracked; the letter's are; one pixel.
    assert f'href="{url}"' in out["html"] and len(_targets(out["html"])) == 2
    assert out["html"].count("/t/o/") == 1
    assert out["html"].index("Se désinscrire") < out["html"].index("</body>")
    assert parts["html"] == LETTER  # the input is not changed


def test_render_tracking_without_tracking_keeps_links_and_adds_no_pixel() -> None:
    out, meta = render_tracking(
        {"html": LETTER}, 42, "email", None, "send-9", BASE, SECRET, T0, track=False
    )
    assert "/t/c/" not in out["html"] and "/t/o/" not in out["html"]
    assert "https://shop.example/sale?a=1&amp;b=2" in out["html"]
    assert meta["unsubscribe_url"] in out["html"] and "text" not in out


def test_the_unsubscribe_address_follows_the_public_address() -> None:
    token = unsubscribe_token(SECRET, 1, "email", "newsletter", "s", T0)
    assert unsubscribe_url("https://mail.example/", token) == f"https://mail.example/u/{token}"
    _, meta = render_tracking(
        {"text": "x"}, 1, "email", "n", "s", "http://localhost:8080", SECRET, T0
    )
    assert meta["unsubscribe_url"].startswith("http://localhost:8080/u/")
