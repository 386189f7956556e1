"""SMS text facts: GSM 03.38 encoding, length and segments, and STOP-family opt-out replies.

Segments are counted the way handsets and SMS centres split a long text: a GSM-7 escape sequence
(an extension character such as "€") and a UTF-16 surrogate pair (an emoji) are never cut across
two segments, so a segment can hold one unit less than its nominal size.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

# GSM 03.38 default alphabet (one septet each). Upper-case Ç is in the table; lower-case ç is not.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: escape septet + character, so two septets each.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_MULTI = 160, 153  # septets: one segment; each part of a concatenated text
UCS2_SINGLE, UCS2_MULTI = 70, 67  # UTF-16 code units, likewise


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM 03.38 default alphabet or its extension table."""
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def non_gsm7_characters(text: str) -> list[str]:
    """The distinct characters that force UCS-2, in order of appearance (a fix-it hint)."""
    seen = (c for c in text if c not in GSM7_BASIC and c not in GSM7_EXTENSION)
    return list(dict.fromkeys(seen))


def sms_encoding(text: str) -> str:
    """ "GSM-7" when the text fits the GSM alphabet, otherwise "UCS-2"."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def _units(text: str, gsm: bool) -> list[int]:
    """Size of each character: septets for GSM-7, UTF-16 code units for UCS-2."""
    if gsm:
        return [2 if c in GSM7_EXTENSION else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def _pack(units: list[int], capacity: int) -> int:
    """Segments needed when a character never straddles two segments."""
    segments, free = 1, capacity
    for size in units:
        if size > free:
            segments, free = segments + 1, capacity
        free -= size
    return segments


def sms_length(text: str) -> dict[str, Any]:
    """Encoding, length in units and segments of an SMS text (GSM-7 160/153, UCS-2 70/67).

    Returns {"encoding", "length", "segments", "per_segment"}; `length` is in septets (GSM-7) or
    UTF-16 code units (UCS-2), `per_segment` the capacity of each segment for this text.
    """
    gsm = is_gsm7(text)
    single, multi = (GSM7_SINGLE, GSM7_MULTI) if gsm else (UCS2_SINGLE, UCS2_MULTI)
    units = _units(text, gsm)
    length = sum(units)
    if length == 0:
        segments = 0
    elif length <= single:
        segments = 1
    else:
        segments = _pack(units, multi)
    return {
        "encoding": "GSM-7" if gsm else "UCS-2",
        "length": length,
        "segments": segments,
        "per_segment": single if segments <= 1 else multi,
    }


# ------------------------------------------------------------------ STOP replies

# Normalised keyword (see _normalise, spaces removed) → the canonical keyword returned.
STOP_KEYWORDS = {
    "stop": "STOP",
    "stopsms": "STOP SMS",
    "stopall": "STOPALL",
    "arret": "ARRET",
    "arretsms": "ARRET SMS",
    "unsubscribe": "UNSUBSCRIBE",
    "desabonner": "DESABONNER",
    "desabonnement": "DESABONNEMENT",
    "desinscription": "DESINSCRIPTION",
    "end": "END",
    "cancel": "CANCEL",
    "quit": "QUIT",
    "revoke": "REVOKE",
    "optout": "OPTOUT",
}
# Courtesy words that may surround the keyword without changing its meaning.
COURTESY_WORDS = frozenset({"merci", "svp", "stp", "please", "pls", "thanks", "thx"})
_SHORT_CODE = re.compile(r"\d{1,8}")


def _normalise(text: str) -> list[str]:
    """Lower-case ASCII words: accents dropped, punctuation, symbols and emoji become spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return re.sub(r"[\W_]+", " ", bare, flags=re.ASCII).split()


def is_stop_reply(text: str) -> str | None:
    """The canonical opt-out keyword if this inbound SMS is an opt-out reply, else None.

    The rule: after normalisation (case, accents, punctuation, emoji and extra spaces ignored) the
    whole message must be one keyword of STOP_KEYWORDS, spaces inside it optional ("STOP SMS",
    "stop-sms", "STOPSMS"), optionally followed by a short code of up to 8 digits ("STOP 36180",
    "STOP36180") and surrounded by courtesy words ("Stop merci", "STOP svp"). Any other word makes
    it free text, which is not an opt-out: "don't stop sending", "stop sending me offers please".
    """
    words = _normalise(text)
    while words and words[0] in COURTESY_WORDS:
        words.pop(0)
    while words and words[-1] in COURTESY_WORDS:
        words.pop()
    compact = "".join(words)
    code = re.search(r"\d+$", compact)
    if code and _SHORT_CODE.fullmatch(code.group()):
        compact = compact[: code.start()]
    return STOP_KEYWORDS.get(compact)
