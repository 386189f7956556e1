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

# Normalised keyword or phrase (see _words, spaces removed) → the canonical keyword returned.
# Only whole messages match, so a phrase belongs here when saying nothing else it means "no more
# messages": "stop by the store" or "cancel my order" are not on the list and stay free text.
STOP_KEYWORDS = {
    "stop": "STOP",
    "stopsms": "STOP SMS",
    "stopall": "STOPALL",
    "stoppub": "STOP PUB",
    "stopmessages": "STOP MESSAGES",
    "stopit": "STOP IT",
    "stoptextingme": "STOP TEXTING ME",
    "stopp": "STOPP",
    "stoppen": "STOPPEN",
    "arret": "ARRET",
    "arretsms": "ARRET SMS",
    "arreter": "ARRETER",
    "unsubscribe": "UNSUBSCRIBE",
    "unsubscribeme": "UNSUBSCRIBE ME",
    "remove": "REMOVE",
    "removeme": "REMOVE ME",
    "desabonner": "DESABONNER",
    "sedesabonner": "SE DESABONNER",
    "desabonnement": "DESABONNEMENT",
    "desinscrire": "DESINSCRIRE",
    "desinscription": "DESINSCRIPTION",
    "jeveuxmedesinscrire": "JE VEUX ME DESINSCRIRE",
    "jeveuxmedesabonner": "JE VEUX ME DESABONNER",
    "end": "END",
    "cancel": "CANCEL",
    "quit": "QUIT",
    "revoke": "REVOKE",
    "optout": "OPTOUT",
}
# Courtesy words that may surround the keyword without changing its meaning.
COURTESY_WORDS = frozenset({"merci", "svp", "stp", "please", "pls", "thanks", "thx"})
# Cyrillic and Greek letters drawn like Latin ones (lower case: looked up after casefold), so
# STOP typed with a Cyrillic TE, O and ER is read as STOP. A short explicit table rather than the
# Unicode confusables data: that maps thousands of symbols, some to several letters ("rn" → "m"),
# and only these letters occur in keyboard mix-ups of our keywords.
LOOKALIKES = str.maketrans(
    "авсдеԁһіјкӏмнорԛѕтхуԝ" + "αβεηικμνορτυχζ",
    "abcdedhijklmhopqstxyw" + "abehikmnoptyxz",
)
# The operator's short code or any number after the keyword ("STOP 36180", "STOP123456789"); up
# to 15 digits, the longest phone number.
_TRAILING_CODE = re.compile(r"\d{1,15}$")


def _words(text: str) -> list[str]:
    """Lower-case ASCII words: width, accents and look-alike letters folded; punctuation,
    symbols and emoji become spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(LOOKALIKES)
    bare = "".join(c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c))
    return re.sub(r"[\W_]+", " ", bare, flags=re.ASCII).split()


def is_stop_reply(text: str) -> str | None:
    """The canonical opt-out keyword if this inbound SMS is an opt-out reply, else None.

    The rule: after normalisation (width, case, accents, look-alike Cyrillic and Greek letters,
    punctuation, emoji and extra spaces ignored; a word repeated in a row counted once) the whole
    message must be one keyword or phrase of STOP_KEYWORDS, spaces inside it optional ("STOP SMS",
    "stop-sms", "STOPSMS"), optionally followed by a number ("STOP 36180", "STOP123456789") and
    surrounded by courtesy words ("Stop merci", "Please stop texting me"). Any other word makes
    it free text, which is not an opt-out: "don't stop", "stop by the store tomorrow".
    """
    found = _words(text)
    words = [w for i, w in enumerate(found) if i == 0 or w != found[i - 1]]
    while words and words[0] in COURTESY_WORDS:
        words.pop(0)
    while words and words[-1] in COURTESY_WORDS:
        words.pop()
    compact = "".join(words)
    code = _TRAILING_CODE.search(compact)
    if code and code.start() > 0:
        compact = compact[: code.start()]
    return STOP_KEYWORDS.get(compact)
