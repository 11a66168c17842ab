"""Each language's data from models/<lang>/language.json, telling languages apart, and reading dates.

A language is a folder: `models/<lang>/language.json` holds its function words, number words, month names, date
format, negation-scope words and settings, the buyer-message markers and quote headers, and the words Amazon's
mail and our drafts use in it; `models/<lang>/claims.jsonl` its rules (see rules.py). Nothing about a language
is written in code.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LanguageData:
    """One language's data (models/<lang>/language.json)."""

    lang: str
    data: dict[str, Any] = field(repr=False)

    @property
    def settings(self) -> dict[str, Any]:
        """lowercase (rule values are lower case), lemmatizer ("lookup" or "tokenizer"), compound_heads."""
        return {"lowercase": True, "lemmatizer": "lookup", "compound_heads": False, **self.data.get("settings", {})}

    @property
    def function_words(self) -> list[str]:
        return [w.lower() for w in self.data.get("function_words", [])]

    @property
    def number_words(self) -> dict[str, int]:
        return {w.lower(): int(n) for w, n in self.data.get("number_words", {}).items()}

    @property
    def months(self) -> list[str]:
        return list(self.data.get("months", []))

    @property
    def scope(self) -> dict[str, Any]:
        return dict(self.data.get("scope", {}))

    def get(self, key: str, default: Any = None) -> Any:
        """Any other key of language.json."""
        return self.data.get(key, default)


def load_languages(folders: list[Path]) -> dict[str, LanguageData]:
    """Every language with a language.json in the folders; a file in an earlier folder (the user's) wins."""
    found: dict[str, Path] = {}
    for folder in reversed(folders):
        for path in sorted(folder.glob("*/language.json")):
            found[path.parent.name] = path
    return {
        lang: LanguageData(lang, json.loads(path.read_text(encoding="utf-8"))) for lang, path in sorted(found.items())
    }


def function_word_languages(languages: dict[str, LanguageData]) -> dict[str, str]:
    """Function word -> its language; words two languages share tell nothing and are left out."""
    words = {lang: set(data.function_words) for lang, data in languages.items()}
    shared = {w for s in words.values() for w in s if sum(w in other for other in words.values()) > 1}
    return {word: lang for lang, s in words.items() for word in sorted(s - shared)}


def decide_language(found: list[str], default: str) -> str:
    """The language of a text from the languages of its function words, in text order; `default` when unclear
    (fewer than 3 words, or not clearly more than the default language's)."""
    if found.count(default) == len(found):
        return default
    counts = Counter(found)
    best = max(counts, key=lambda lang: (counts[lang], lang == default))
    if counts[best] < 3 or counts[best] < counts.get(default, 0) * 1.3:
        return default
    return best


def fold_accents(word: str) -> str:
    """The word without diacritics ("réclamation" -> "reclamation")."""
    if word.isascii():
        return word
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def month_names(languages: dict[str, LanguageData]) -> dict[str, int]:
    """Month names of every language, lower case, with accent-free and short forms ("févr", "mär")."""
    names: dict[str, int] = {}
    for data in languages.values():
        for number, name in enumerate(data.months, 1):
            name = name.lower()
            for form in (name, fold_accents(name), name[:3], fold_accents(name)[:3], name[:4]):
                names.setdefault(form, number)
    return names


_DATE_PATTERNS = (
    # 2026-02-12
    re.compile(r"(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b"),
    # 12.02.2026 (German)
    re.compile(r"\b(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})\b"),
    # February 12, 2026 / Feb. 12th 2026
    re.compile(r"\b(?P<name>[^\W\d_]{3,10})\.?\s+(?P<d>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<y>\d{4})\b"),
    # 12 February 2026 / 3. März 2026 / 3 de febrero de 2026 / 3 févr. 2026
    re.compile(r"\b(?P<d>\d{1,2})(?:\.|er|º)?\s+(?:de\s+)?(?P<name>[^\W\d_]{3,10})\.?\s+(?:de\s+)?(?P<y>\d{4})\b"),
)


def find_date(text: str, months: dict[str, int]) -> tuple[date, str] | None:
    """The first calendar date written in the text (ISO, German numeric, or with a month name), and its text."""
    best: tuple[int, date, str] | None = None
    for pattern in _DATE_PATTERNS:
        for match in pattern.finditer(text):
            groups = match.groupdict()
            if groups.get("name"):
                month = months.get(groups["name"].lower())
                if month is None:
                    continue
            else:
                month = int(groups["m"])
            try:
                when = date(int(groups["y"]), month, int(groups["d"]))
            except ValueError:
                continue
            if best is None or match.start() < best[0]:
                best = (match.start(), when, match.group(0))
            break
    return (best[1], best[2]) if best else None


def format_date(value: date, language: LanguageData) -> str:
    """A date as the language writes it in a letter (its "date_format" and "months")."""
    months = language.months or [str(n) for n in range(1, 13)]
    template = language.get("date_format", "{year}-{month_number:02d}-{day:02d}")
    return str(template.format(day=value.day, month=months[value.month - 1], month_number=value.month, year=value.year))


def reply_prefix(languages: dict[str, LanguageData]) -> re.Pattern[str]:
    """What mail clients put before a replied or forwarded subject in any of the languages ("Re:", "AW:",
    "RIF:", "Re[2]:", "Fwd:"), repeated: one regex, matched at the start."""
    words = sorted(
        {w.lower() for data in languages.values() for w in data.get("reply_prefixes", [])}, key=len, reverse=True
    )
    alternatives = "|".join(re.escape(w) for w in words) or "re"
    return re.compile(rf"^\s*(?:(?:{alternatives})\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)


@cache
def bundled_reply_prefix() -> re.Pattern[str]:
    """reply_prefix() of the bundled languages (for code that has no Understander at hand)."""
    return reply_prefix(bundled_languages())


@cache
def bundled_languages() -> dict[str, LanguageData]:
    """The languages of the bundled models folder (for code that has no Understander at hand)."""
    from pipeline.resources import bundled_dir

    return load_languages([bundled_dir("models")])
