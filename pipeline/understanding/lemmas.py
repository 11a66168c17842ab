"""Lemmas for the rules: spaCy lookup tables (spacy-lookups-data, cut to what the rules use) and typo mending.

`models/<lang>/lemmas.json` holds the lemma table cut down to the lemmas the rules use, plus the real words of the
language that must never be "corrected" into a rule word. `python scripts/build_lemma_tables.py` writes it from
spaCy's own lookups; when it does not cover the rules any more, the whole table is loaded from spaCy's lookups
(slower to load, same matches but no typo protection) and a warning names the script.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy
from spacy.attrs import LEMMA, NORM, ORTH
from spacy.language import Language
from spacy.tokens import Doc

from pipeline.understanding.language import fold_accents

log = logging.getLogger(__name__)


@Language.factory("pipeline_lemmatizer")
def _make_lemmatizer(nlp: Language, name: str) -> LookupLemmatizer:
    return LookupLemmatizer(nlp)


class LookupLemmatizer:
    """Lookup lemmatizer that also mends typos of the rules' own words (a spaCy pipeline component).

    A token is looked up as written, in lower case and capitalized (German nouns); a token the table does not
    know keeps its NORM as lemma. A longer unknown token one deletion, insertion or swap of two neighbouring
    letters away from a word the rules use ("recieved", "parcle", "antarg") is read as that word, unless it is
    a real word of the language. With `compound_heads` (German) an unknown compound takes the lemma of the
    rule word it ends with ("Garantieantrag" -> "antrag"). The mended spelling becomes the token's NORM.
    """

    MIN_TYPO_LENGTH = 5
    CACHE_LIMIT = 200_000

    def __init__(self, nlp: Language) -> None:
        self.vocab = nlp.vocab
        self.strings = nlp.vocab.strings
        self.forms: dict[int, int] = {}
        self.keywords: frozenset[str] = frozenset()
        self.all_keywords: frozenset[str] = frozenset()
        self.folded: dict[str, str] = {}
        self.deletes: dict[str, str] = {}
        self.protected: frozenset[str] = frozenset()
        self.heads: tuple[str, ...] = ()
        self.compound_heads = False
        self.table: Any = None  # spaCy's whole lookup table, when the cut one does not cover the rules
        self._cache: dict[tuple[int, int], tuple[int, int]] = {}

    def configure(
        self,
        forms: dict[str, str],
        keywords: Iterable[str],
        protected: Iterable[str],
        compound_heads: bool,
        table: Any = None,
    ) -> None:
        """Install the lemma table and the vocabulary typos are mended towards."""
        add = self.strings.add
        self.table = table
        self.forms = {add(form): add(lemma) for form, lemma in forms.items()}
        words = {w for w in keywords if w.isalpha()}
        self.keywords = frozenset(w for w in words if len(w) >= self.MIN_TYPO_LENGTH)
        self.all_keywords = frozenset(words)
        self.folded = {}
        for word in sorted(words):
            if len(word) >= 3 and fold_accents(word) != word:
                self.folded.setdefault(fold_accents(word), word)
        deletes: dict[str, str] = {}
        for word in sorted(self.keywords):
            for i in range(len(word)):
                deletes.setdefault(word[:i] + word[i + 1 :], word)
        self.deletes = deletes
        self.protected = frozenset(protected)
        self.compound_heads = compound_heads
        self.heads = tuple(sorted(self.keywords, key=len))  # shortest first: "antrag", not "garantieantrag"
        self._cache = {}

    def __call__(self, doc: Doc) -> Doc:
        if not len(doc):
            return doc
        orths, norms = doc.to_array([ORTH, NORM]).T.tolist()
        cache = self._cache
        if len(cache) > self.CACHE_LIMIT:
            cache.clear()
        rows = []
        for orth, norm in zip(orths, norms, strict=True):
            row = cache.get((orth, norm))
            if row is None:
                row = cache[orth, norm] = self.resolve(orth, norm)
            rows.append(row)
        doc.from_array([NORM, LEMMA], numpy.array(rows, dtype="uint64").reshape(len(rows), 2))  # type: ignore[arg-type]
        return doc

    def resolve(self, orth: int, norm: int) -> tuple[int, int]:
        """(norm, lemma) hashes of a word type: from the table, mended from a typo, or the norm itself."""
        strings = self.strings
        text = strings[orth]
        lower = strings.add(text.lower())
        lemma = self.forms.get(orth) or self.forms.get(lower)
        if lemma is None and self.table is not None:
            found = _first(self.table.get(orth) or self.table.get(lower))
            lemma = strings.add(found.lower()) if found else None
        if lemma is not None:
            return norm, lemma
        fixed = self._correct(text)
        if fixed is None:
            return norm, norm
        return strings.add(fixed[0]), fixed[1]

    def _correct(self, text: str) -> tuple[str, int] | None:
        """(norm, lemma) of a known spelling for an unknown token, or None."""
        lower = text.lower()
        by_case = self.forms.get(self.strings[text.capitalize()]) if text[:1].islower() else None
        if by_case is not None:
            return lower, by_case
        if lower in self.all_keywords or lower in self.protected:
            return None
        if lower.isalpha():
            fixed = self.folded.get(fold_accents(lower))  # accents left out: "reclamation", "recu"
            if fixed is None and len(lower) >= self.MIN_TYPO_LENGTH:
                fixed = self._typo(lower)
            if fixed:
                return fixed, self._lemma_of(fixed)
        if self.compound_heads and len(lower) >= self.MIN_TYPO_LENGTH:
            for head in self.heads:
                if len(lower) > len(head) + 2 and lower.endswith(head):
                    return lower, self._lemma_of(head)
        return None

    def _typo(self, word: str) -> str | None:
        keywords = self.keywords
        if word in self.deletes:  # a letter left out
            return self.deletes[word]
        for i in range(len(word)):  # a letter too many
            candidate = word[:i] + word[i + 1 :]
            if candidate in keywords:
                return candidate
        for i in range(len(word) - 1):  # two neighbours swapped
            candidate = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
            if candidate in keywords:
                return candidate
        return None

    def _lemma_of(self, word: str) -> int:
        key = self.strings.add(word)
        return self.forms.get(key) or self.forms.get(self.strings.add(word.capitalize())) or key


def lemma_table(
    lang: str, needed: set[str], listed: set[str], folders: list[Path]
) -> tuple[dict[str, str], dict[str, str], set[str], Any]:
    """(form -> lemma, listed word -> the table's own lemma for it, protected real words, whole table or None).

    From models/<lang>/lemmas.json when it covers the rules' lemmas; else spaCy's whole lookup table (a
    spacy.lookups.Table), which the lemmatizer then consults for every word it does not know.
    """
    for folder in folders:
        path = folder / lang / "lemmas.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if needed <= set(data.get("lemmas", [])) and listed <= set(data.get("listed", [])):
                return data["forms"], data.get("table_lemmas", {}), set(data.get("protected", [])), None
            log.warning(
                "%s does not cover every lemma the rules use; loading spaCy's whole lookup table "
                "(run `python scripts/build_lemma_tables.py`)",
                path,
            )
            break
    from spacy.lookups import load_lookups

    table = load_lookups(lang, ["lemma_lookup"]).get_table("lemma_lookup")
    forms = {word: _first(table.get(word)) or word for word in needed | listed}
    table_lemmas = {word: lemma for word in listed if (lemma := _first(table.get(word))) and lemma != word}
    forms = {form: lemma.lower() for form, lemma in forms.items()}
    forms.update({word: word for word in listed})
    return forms, table_lemmas, set(), table


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        return str(value[0]) if value else None
    return str(value) if value else None


def widen_lemmas(pattern: list[dict[str, Any]], table_lemmas: dict[str, str]) -> list[dict[str, Any]]:
    """LEMMA v also matches the table's lemma of v, and the listed words whose table lemma is v.

    A word listed as a LEMMA is its own lemma (the noun "reclamo", not the verb "reclamare"), so LEMMA
    "zurückziehen" must also match the listed "zurückgezogen"; and spacy-lookups-data has its slips
    ("gewährt" -> "währen") that a listed surface form works around.
    """
    by_lemma: dict[str, set[str]] = {}
    for word, lemma in table_lemmas.items():
        by_lemma.setdefault(lemma, set()).add(word)

    def widen(value: str) -> set[str]:
        found = {value} | by_lemma.get(value, set())
        lemma = table_lemmas.get(value)
        if lemma:
            found |= {lemma} | by_lemma.get(lemma, set())
        return found

    out = []
    for spec in pattern:
        value = spec.get("LEMMA")
        if isinstance(value, str):
            spec = {**spec, "LEMMA": {"IN": sorted(widen(value))}}
        elif isinstance(value, dict) and "IN" in value:
            spec = {**spec, "LEMMA": {"IN": sorted({w for v in value["IN"] for w in widen(v)})}}
        out.append(spec)
    return out
