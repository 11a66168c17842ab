"""Text as the rules read it: one apostrophe and hyphen, wrapped lines and IDs joined, "A-to-z" one token."""

from __future__ import annotations

import re

# Characters that mean the same to the rules: typographic apostrophes and hyphens, soft hyphens, zero widths.
_CHAR_MAP = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u2010": "-", "\u2011": "-", "\u00ad": None, "\u200b": None, "\ufeff": None}
)
_MAPPED_CHARS = ("\u2019", "\u2018", "\u2010", "\u2011", "\u00ad", "\u200b", "\ufeff")
# A line break inside a sentence (hard-wrapped plain text): the next line goes on in lower case.
_SOFT_BREAK = re.compile(r"\n[ \t]*(?=[a-zà-öø-ÿ])")
_LINE_END = frozenset(" \t\n.!?:;")
_WRAP_HINT = re.compile(r"-[ \t]*\n")
ORDER_ID = re.compile(r"(?<![\w-])((?:\d{3}|D01)-\d{7}-\d{7})(?![\w-])")
# An order ID hard-wrapped across a line break: "111-2233445-\n5566778", "111-\n2233445-5566778"
WRAPPED_ORDER_ID = re.compile(r"((?:\d{3}|D01)-[\d-]{0,15})[ \t]*\r?\n[ \t>]*([\d-]{1,16})(?![\w-])")
_DIGIT_LINE_START = re.compile(r"\n[ \t>]*[\d-]")
# "A-to-z" (any case, spaces around the hyphens allowed), from its first hyphen on: searching for "-" is fast
_A_TO_Z_TAIL = re.compile(r"-\s?[Tt][Oo]\s?-\s?[Zz]\b")
A_TO_Z_WORDS = re.compile(r"\bA\s?-\s?to\s?-\s?Z\b", re.IGNORECASE)
# "A-to-z" with non-breaking hyphens: one token for every tokenizer, so rules can say "A-to-z claim"
A_TO_Z = "A\u2011to\u2011z"


def normalize_chars(text: str) -> str:
    """Typographic apostrophes and hyphens as plain ones; soft hyphens and zero-width characters removed."""
    for char in filter(text.__contains__, _MAPPED_CHARS):  # (str.replace is much faster than str.translate)
        text = text.replace(char, _CHAR_MAP[ord(char)] or "")
    return text


def prepare_text(text: str) -> str:
    """Text as the rules read it: one kind of apostrophe and hyphen, wrapped lines and order IDs joined."""
    text = normalize_chars(text)
    if _WRAP_HINT.search(text):
        text = join_wrapped_ids(text)
    if "-to" in text or "-To" in text or "- to" in text:
        text = mark_a_to_z(text)

    def soft_break(match: re.Match[str]) -> str:
        whole, i = match.string, match.start() - 1
        while i >= 0 and whole[i] in " \t":
            i -= 1
        return match.group(0) if i < 0 or whole[i] in _LINE_END else " "

    return _SOFT_BREAK.sub(soft_break, text)


def mark_a_to_z(text: str) -> str:
    """Every "A-to-z" (any case, a space around a hyphen allowed) written as the one token A_TO_Z."""
    pieces, done = [], 0
    for tail in _A_TO_Z_TAIL.finditer(text):
        start = tail.start() - 1
        if start >= 0 and text[start].isspace():
            start -= 1
        if start < done or text[start] not in "Aa" or (start and (text[start - 1].isalnum() or text[start - 1] == "_")):
            continue
        pieces += [text[done:start], A_TO_Z]
        done = tail.end()
    return "".join(pieces) + text[done:] if pieces else text


def join_wrapped_ids(text: str) -> str:
    """Order IDs broken across a line end written whole again."""

    def join(match: re.Match[str]) -> str:
        before = match.string[match.start() - 1] if match.start() else " "
        joined = match.group(1) + match.group(2)
        if before.isalnum() or before in "-_" or not ORDER_ID.fullmatch(joined):
            return match.group(0)
        return joined

    return WRAPPED_ORDER_ID.sub(join, text) if "\n" in text and _may_hold_wrapped_id(text) else text


def _may_hold_wrapped_id(text: str) -> bool:
    """Whether a line ending in a digit or hyphen is followed by one starting with one: what every wrapped ID
    needs (a search that starts at a newline is fast; WRAPPED_ORDER_ID's own search tries every character)."""
    for line_start in _DIGIT_LINE_START.finditer(text):
        i = line_start.start() - 1
        if i >= 0 and text[i] == "\r":
            i -= 1
        while i >= 0 and text[i] in " \t":
            i -= 1
        if i >= 0 and (text[i].isdecimal() or text[i] == "-"):
            return True
    return False


def order_ids(text: str) -> list[str]:
    """Order IDs in the text, in order."""
    return [match.group(1) for match in ORDER_ID.finditer(text)]


_QUOTE_MARK = re.compile('["„«”»“]')


def inside_quotes(text: str, position: int) -> bool:
    """Whether `position` lies inside quotation marks opened earlier on its line ("…", “…”, „…“, «…»)."""
    quoted = False
    for char in _QUOTE_MARK.findall(text, text.rfind("\n", 0, position) + 1, position):
        if char == '"':
            quoted = not quoted
        elif char in "„«":
            quoted = True
        elif char in "”»":
            quoted = False
        elif char == "“":  # English opens with it, German closes with it
            quoted = not quoted
    return quoted
