"""Reads a parsed message with spaCy rule models (models/<lang>/) and returns its facts, each with evidence.

The models are data, one folder per language (see models/en/claims.jsonl for the rule format):

- ``models/xx/*.jsonl``: language-independent rules (tracking-number formats, carrier names);
- ``models/<lang>/*.jsonl``: that language's rules (message kind, complaint, intent, deadline, negation words ...);
- ``models/<lang>/lemmas.json``: the lookup lemmatizer's table (spacy-lookups-data), cut down to the lemmas the
  rules use, plus the real words that must never be "corrected" into a rule word. Rebuild it after adding a rule
  with a new LEMMA: ``python -m pipeline.understand --refresh-lemmas``; until then the full table is loaded;
- ``models/<lang>/language.json``: function words that tell the languages apart.

Each language gets one blank spaCy pipeline (tokenizer + lookup lemmatizer with typo tolerance), its patterns
(spaCy Matcher format) and phrases (matched on lemmas, as spaCy's PhraseMatcher does) compiled by
AnchoredMatcher, and text regexes, built once per process on first use. Tests check the compiled matcher
against spaCy's own Matcher and PhraseMatcher on the whole corpus.
"""

from __future__ import annotations

import bisect
import gzip
import json
import logging
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import compress, islice, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy
import spacy
from spacy.attrs import IDX, IS_PUNCT, IS_SPACE, LEMMA, LENGTH, LIKE_NUM, LOWER, NORM, ORTH
from spacy.language import Language
from spacy.matcher import Matcher
from spacy.strings import hash_string
from spacy.tokens import Doc

from pipeline.errors import ConfigError
from pipeline.message import (
    ParsedMessage,
    is_amazon_domain,
    language_of_marketplace,
    marketplace_of,
)
from pipeline.resources import search_path

log = logging.getLogger(__name__)

LANGUAGES = ("en", "de", "fr", "it", "es", "ja")
KINDS = ("claim_filed", "claim_info_request", "claim_granted", "claim_denied", "claim_withdrawn",
         "buyer_message", "other")
COMPLAINTS = ("not_received", "size", "damaged_on_arrival", "damaged_after_use", "not_as_described", "other")
INTENTS = ("wants_refund", "wants_resend", "resolved", "will_withdraw", "other")
# Decisions outrank requests, requests outrank the filing notice: a decision mail restates the claim.
KIND_PRIORITY = ("claim_withdrawn", "claim_granted", "claim_denied", "claim_info_request", "claim_filed")
# "arrived" (the parcel came) only resolves a non-receipt; an explicit "all sorted" resolves anything.
INTENT_PRIORITY = ("will_withdraw", "resolved", "arrived", "wants_resend", "wants_refund")
_INTENT_PRIORITY_NOT_ARRIVED = tuple(value for value in INTENT_PRIORITY if value != "arrived")
# The more specific complaint wins when a message voices several ("two glasses broken, send the missing ones").
COMPLAINT_PRIORITY = ("damaged", "size", "not_as_described", "not_received", "other")
CLAIM_KINDS = ("claim_filed", "claim_info_request", "claim_granted", "claim_denied", "claim_withdrawn")
CARRIERS = ("UPS", "USPS", "FedEx", "DHL", "Amazon Logistics", "Royal Mail", "China Post", "Yanwen",
            "YunExpress", "4PX")
CURRENCY_SYMBOLS = {"$": "USD", "US$": "USD", "£": "GBP", "€": "EUR", "¥": "JPY", "￥": "JPY", "円": "JPY",
                    "CA$": "CAD", "C$": "CAD"}
ORDER_ID = re.compile(r"(?<![\w-])((?:\d{3}|D01)-\d{7}-\d{7})(?![\w-])")
# an order ID from its first hyphen on: a search for "-" is fast, one for a digit tries every character
_ORDER_ID_TAIL = re.compile(r"-\d{7}-\d{7}(?![\w-])")
# An order ID hard-wrapped across a line break: "111-2233445-\n5566778", "111-\n2233445-5566778"
WRAPPED_ORDER_ID = re.compile(r"((?:\d{3}|D01)-[\d-]{0,15})[ \t]*\r?\n[ \t>]*([\d-]{1,16})(?![\w-])")
MONEY = re.compile(
    r"(?P<pre>US\$|CA\$|C\$|EUR|GBP|USD|JPY|[$£€¥￥])\s?(?P<num>\d{1,3}(?:[.,\s]\d{3})*(?:[.,]\d{2})?|\d+(?:[.,]\d{2})?)"
    r"|(?P<num2>\d{1,3}(?:[.,\s]\d{3})*(?:[.,]\d{2})?|\d+(?:[.,]\d{2})?)\s?(?P<post>€|EUR|円|GBP|USD)"
)
REPLY_SUBJECT = re.compile(r"^\s*(?:(?:re|aw|antw|wg|fw|fwd|tr|rif|r|rv|res)\s?:\s*)+", re.IGNORECASE)
# Characters that mean the same to the rules: typographic apostrophes and hyphens, full-width forms.
_CHAR_MAP = str.maketrans({"\u2019": "'", "\u2018": "'", "\u2010": "-", "\u2011": "-", "\u00ad": None,
                           "\u200b": None, "\ufeff": None})
# A line break inside a sentence (hard-wrapped plain text): the next line goes on in lower case.
_SOFT_BREAK = re.compile(r"\n[ \t]*(?=[a-zà-öø-ÿ])")
_WRAP_HINT = re.compile(r"-[ \t]*\n")
_A_TO_Z = re.compile(r"\bA\s?-\s?to\s?-\s?Z\b", re.IGNORECASE)
# the same from its hyphen on: a search for "-" is fast, one that may start at any letter is not
_A_TO_Z_TAIL = re.compile(r"-\s?[Tt][Oo]\s?-\s?[Zz]\b")
# "A-to-z" is written with non-breaking hyphens (as Amazon does): one token, so rules can say "A-to-z claim".
# (A tokenizer special case would do the same but doubles spaCy's tokenizing time.)
A_TO_Z = "A\u2011to\u2011z"
_LINE_END = frozenset(" \t\n.!?:;")
_PREDICATE_LABELS = frozenset({"KIND", "COMPLAINT", "REASON", "INTENT", "DELIVERED"})
# labels whose matches are checked for negation / condition (the others are names, numbers and cues)
_SCOPED_LABELS = _PREDICATE_LABELS | {"USE_PERIOD", "ARRIVAL", "DEADLINE"}
_MAPPED_CHARS = ("\u2019", "\u2018", "\u2010", "\u2011", "\u00ad", "\u200b", "\ufeff")
_QUOTES = frozenset("\"'«»“”„‘’‚‹›「」『』")


class Evidence(NamedTuple):
    """Why a fact was found: the rule that fired and the text it matched."""

    rule: str
    text: str


@dataclass
class Facts:
    """Everything the pipeline understood of one message. A fact that was not found is None."""

    kind: str
    order_id: str | None
    complaint_type: str | None
    buyer_intent: str | None
    tracking_number: str | None
    carrier: str | None
    delivered: bool
    deadline_hours: int | None
    deadline_at: datetime | None
    amount: str | None
    currency: str | None
    marketplace: str | None
    language: str
    trusted: bool
    sent_at: datetime | None
    sender: str
    reply_to: str | None
    buyer_address: str | None
    buyer_name: str | None
    subject: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    evidence: dict[str, Evidence] = field(default_factory=dict)
    delivered_on: date | None = None  # the delivery date the text gives with "tracking shows delivered"

    def to_json(self) -> dict[str, Any]:
        """The facts as JSON-ready values (dates in ISO 8601 UTC); the keys of DESIGN.md's inspect output."""
        data = asdict(self)
        for key in ("deadline_at", "sent_at"):
            data[key] = _iso(data[key])
        data["delivered_on"] = self.delivered_on.isoformat() if self.delivered_on else None
        data["references"] = list(self.references)
        data["evidence"] = {k: {"rule": v.rule, "text": v.text} for k, v in self.evidence.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Facts:
        """Rebuild Facts from to_json output (as stored with each message)."""
        values = dict(data)
        for key in ("deadline_at", "sent_at"):
            values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
        values["delivered_on"] = date.fromisoformat(values["delivered_on"]) if values.get("delivered_on") else None
        values["references"] = tuple(values.get("references") or ())
        values["evidence"] = {k: Evidence(**v) for k, v in (values.get("evidence") or {}).items()}
        return cls(**values)


class Hit(NamedTuple):
    """One rule match in the text."""

    label: str
    value: str
    rule: str
    text: str
    start: int
    end: int
    negated: bool = False
    hypothetical: bool = False
    in_subject: bool = False


# --- the spaCy side --------------------------------------------------------------------------------


@Language.factory("pipeline_lemmatizer")
def _make_lemmatizer(nlp: Language, name: str) -> LookupLemmatizer:
    return LookupLemmatizer(nlp)


class LookupLemmatizer:
    """Lookup lemmatizer (spacy-lookups-data table) that also mends typos of the rules' own words.

    A token is looked up as written, in lower case and capitalized (German nouns); a token the table does not
    know keeps its NORM as lemma. A longer unknown token one deletion, insertion or swap of two neighbouring
    letters away from a word the rules use ("recieved", "parcle", "antarg") is read as that word, unless it is
    a real word of the language. With ``compound_heads`` (German) an unknown compound takes the lemma of the
    rule word it ends with ("Garantieantrag" -> "antrag").
    """

    MIN_TYPO_LENGTH = 5

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

    def configure(self, forms: dict[str, str], keywords: Iterable[str], protected: Iterable[str],
                  compound_heads: bool) -> None:
        """Install the lemma table and the vocabulary typos are mended towards."""
        add = self.strings.add
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
                deletes.setdefault(word[:i] + word[i + 1:], word)
        self.deletes = deletes
        self.protected = frozenset(protected)
        self.compound_heads = compound_heads
        self.heads = tuple(sorted(self.keywords, key=len))  # shortest first: "antrag", not "garantieantrag"

    def __call__(self, doc: Doc) -> Doc:
        self.annotate(doc)
        return doc

    def annotate(self, doc: Doc) -> None:
        """Set the tokens' lemmas and mended norms on the doc (the rules read them through RuleModel.token_data,
        which caches them per word type)."""
        if not len(doc):
            return
        orths, norms = doc.to_array([ORTH, NORM]).T.tolist()
        rows = [self.resolve(orth, norm) for orth, norm in zip(orths, norms, strict=True)]
        lemmas = [row[1] for row in rows]
        norms = [row[2] or norm for row, norm in zip(rows, norms, strict=True)]
        doc.from_array([NORM, LEMMA], numpy.array([norms, lemmas], dtype="uint64").T)

    def resolve(self, orth: int, norm: int) -> tuple[int, int, int, int, int, int, int]:
        """A token's (lower, lemma, mended norm or 0, is_punct, is_space, like_num, length) from its ORTH and NORM."""
        fixed_norm, lemma = self._resolve(orth, norm)
        lexeme = self.vocab[orth]
        return (lexeme.lower, lemma, fixed_norm if fixed_norm != norm else 0, int(lexeme.is_punct),
                int(lexeme.is_space), int(lexeme.like_num), len(lexeme.orth_))

    def _resolve(self, orth: int, norm: int) -> tuple[int, int]:
        """(norm, lemma) hashes of a word type: from the table, mended from a typo, or the norm itself."""
        strings = self.strings
        text = strings[orth]
        lemma = self.forms.get(orth) or self.forms.get(strings.add(text.lower()))
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
            candidate = word[:i] + word[i + 1:]
            if candidate in keywords:
                return candidate
        for i in range(len(word) - 1):  # two neighbours swapped
            candidate = word[:i] + word[i + 1] + word[i] + word[i + 2:]
            if candidate in keywords:
                return candidate
        return None

    def _lemma_of(self, word: str) -> int:
        key = self.strings.add(word)
        return self.forms.get(key) or self.forms.get(self.strings.add(word.capitalize())) or key


def fold_accents(word: str) -> str:
    """The word without diacritics ("réclamation" -> "reclamation")."""
    if word.isascii():
        return word
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))



# A token's row: what the rules look at, all of it following from the token's ORTH and NORM (see token_data).
ROW_ORTH, ROW_LOWER, ROW_LEMMA, ROW_NORM, ROW_IS_PUNCT, ROW_IS_SPACE, ROW_LIKE_NUM, ROW_LENGTH = range(8)
ROW_ANCHORS = 8  # the matcher's functions anchored on the token (see AnchoredMatcher.anchors_of)
ROW_LONG_WITH_DIGIT = 9  # 10 or more characters, a digit among them (a tracking number can be)
ROW_ROLE = 10  # what the token is to negation scope: ROLE_* bits
ROW_LANGUAGE = 11  # the language the word is a function word of, or None
# token roles for RuleModel._scope, worked out once per word type
ROLE_OWN_NEGATION, ROLE_BOUNDARY, ROLE_NEWLINE, ROLE_CONTRAST, ROLE_HYPOTHETICAL, ROLE_NEGATION, ROLE_CUE_START = (
    1, 2, 4, 8, 16, 32, 64)
ROLE_SPACE = 128
_ROW_ATTRIBUTES = {"orth": ROW_ORTH, "lower": ROW_LOWER, "lemma": ROW_LEMMA, "norm": ROW_NORM,
                   "is_punct": ROW_IS_PUNCT, "is_space": ROW_IS_SPACE, "like_num": ROW_LIKE_NUM}


class TokenData:
    """A doc's tokens as the rules read them: one row per token (see the ROW_* positions) and where each starts.

    Rows are shared between the tokens of a word type, and read in place: no table of columns is built per doc.
    """

    __slots__ = ("idx", "rows")

    def __init__(self, rows: Sequence[tuple[Any, ...]], idx: Sequence[int]) -> None:
        self.rows = rows
        self.idx = idx

    def column(self, position: int) -> list[Any]:
        """One attribute of every token (a ROW_* position)."""
        return list(map(itemgetter(position), self.rows))

    @property
    def norm(self) -> list[int]:
        return self.column(ROW_NORM)

    @property
    def lemma(self) -> list[int]:
        return self.column(ROW_LEMMA)


_ATTR_FIELDS = {"ORTH": "orth", "TEXT": "orth", "LOWER": "lower", "NORM": "norm", "LEMMA": "lemma"}
_FLAG_FIELDS = {"IS_PUNCT": "is_punct", "IS_SPACE": "is_space", "LIKE_NUM": "like_num"}
_INFINITE = 10 ** 6
_ANCHORS_OF = itemgetter(ROW_ANCHORS)
_TRACKING_COMPANIONS = frozenset({"CARRIER", "TRACKING_CUE"})  # labels _tracking reads only beside a TRACKING hit
_new_tuple = tuple.__new__
_LONG_WITH_DIGIT_OF = itemgetter(ROW_LONG_WITH_DIGIT)
_LANGUAGE_OF = itemgetter(ROW_LANGUAGE)


@dataclass(frozen=True)
class _TokenSpec:
    """One token of a Matcher pattern: attribute tests, flag tests, and how many tokens it takes."""

    equal: tuple[tuple[str, frozenset[int]], ...]
    excluded: tuple[tuple[str, frozenset[int]], ...]
    regexes: tuple[tuple[str, re.Pattern[str]], ...]
    flags: tuple[tuple[str, bool], ...]
    low: int
    high: int


class AnchoredMatcher:
    """Runs spaCy Matcher patterns, looking only where a pattern's rarest fixed word occurs.

    spaCy's Matcher tries every pattern at every token, calling a Python predicate for each IN set; with a few
    hundred rules that costs ten times the tokenizer. Here each pattern is indexed by one token that must be one
    of a fixed set of words (its anchor). The patterns of an anchor word are compiled into one function (their
    token tests written out, no interpretation per token); each word type's row carries the functions it
    anchors (anchors_of), so a doc's anchor tokens are found with one C-level scan.
    Supported: ORTH/TEXT/LOWER/NORM/LEMMA with a value, IN, NOT_IN or REGEX; IS_PUNCT/IS_SPACE/LIKE_NUM;
    OP ?, *, +, {n}, {m,n}. Patterns without an anchor go to spaCy's own Matcher.
    """

    def __init__(self, vocab: Any, common: Iterable[str] = (), lowercase: bool = True) -> None:
        self.vocab = vocab
        self.lowercase = lowercase  # LOWER/NORM/LEMMA values are lower case (not for Japanese lemmas)
        self.common = frozenset(vocab.strings.add(w) for w in common)
        self.patterns: list[tuple[str, tuple[_TokenSpec, ...], int]] = []
        self.index: dict[str, dict[int, list[int]]] = {}
        self.compiler = _PatternCompiler()
        self.sources: list[list[str]] = []  # per pattern: its source lines (see _PatternCompiler.pattern)
        # per attribute and anchor word: the compiled function of every pattern anchored there (built on first use)
        self.functions: dict[str, dict[int, Callable[..., None]]] | None = None
        self.fallback = Matcher(vocab)
        self.has_fallback = False

    def add(self, key: str, pattern: list[dict[str, Any]]) -> None:
        """Add a spaCy Matcher pattern under the rule name `key`."""
        self._add(key, tuple(self._spec(token) for token in pattern), pattern)

    def add_lemmas(self, key: str, lemmas: Sequence[int]) -> None:
        """Add a phrase as the sequence of its tokens' lemma hashes (what PhraseMatcher(attr="LEMMA") matches)."""
        specs = tuple(_TokenSpec((("lemma", frozenset({lemma})),), (), (), (), 1, 1) for lemma in lemmas)
        self._add(key, specs, [{"LEMMA": self.vocab.strings[lemma]} for lemma in lemmas])

    def _add(self, key: str, specs: tuple[_TokenSpec, ...], pattern: list[dict[str, Any]]) -> None:
        anchor = self._anchor(specs)
        if anchor is None:
            self.fallback.add(key, [pattern])
            self.has_fallback = True
            return
        number = len(self.patterns)
        self.patterns.append((key, specs, anchor))
        spec = specs[anchor]
        name, values = min(spec.equal, key=lambda t: len(t[1]))
        # the index lookup alone proves an anchor with one word test; anything more is tested again
        test_anchor = len(spec.equal) > 1 or bool(spec.excluded or spec.flags or spec.regexes)
        self.sources.append(self.compiler.pattern(key, specs, anchor, test_anchor))
        self.functions = None
        index = self.index.setdefault(name, {})
        for value in values:
            index.setdefault(value, []).append(number)

    def _spec(self, token: dict[str, Any]) -> _TokenSpec:
        strings = self.vocab.strings
        equal, excluded, regexes, flags = [], [], [], []
        for attr, value in token.items():
            if attr == "OP":
                continue
            if attr in _FLAG_FIELDS:
                flags.append((_FLAG_FIELDS[attr], bool(value)))
                continue
            if attr not in _ATTR_FIELDS:
                raise ValueError(f"unsupported pattern attribute {attr!r}")
            name = _ATTR_FIELDS[attr]
            lower = attr == "LOWER" or (self.lowercase and attr in ("NORM", "LEMMA"))
            if isinstance(value, str):
                equal.append((name, _ids(strings, [value], lower)))
            elif isinstance(value, dict):
                for op, arg in value.items():
                    if op == "IN":
                        equal.append((name, _ids(strings, arg, lower)))
                    elif op == "NOT_IN":
                        excluded.append((name, _ids(strings, arg, lower)))
                    elif op == "REGEX":
                        regexes.append((name, re.compile(arg)))
                    else:
                        raise ValueError(f"unsupported pattern operator {op!r}")
        low, high = _quantifier(token.get("OP"))
        return _TokenSpec(tuple(equal), tuple(excluded), tuple(regexes), tuple(flags), low, high)

    def _anchor(self, specs: tuple[_TokenSpec, ...]) -> int | None:
        """The token to index a pattern by: the one whose words are rarest (no function words, longest)."""
        candidates = [i for i, spec in enumerate(specs) if spec.equal and spec.low == spec.high == 1]
        if not candidates:
            return None
        strings = self.vocab.strings

        def rarity(i: int) -> tuple[int, int, int]:
            values = min((v for _, v in specs[i].equal), key=len)
            common = sum(v in self.common for v in values)
            return common, -min(len(strings[v]) for v in values), len(values)

        return min(candidates, key=rarity)

    def __call__(self, doc: Doc, data: TokenData) -> list[tuple[str, int, int]]:
        """Every (rule, start, end) match in the doc, in no particular order (as a set would hold them)."""
        if not self.patterns:
            return list(self._fallback_matches(doc))
        if self.functions is None:
            self.compile()
        found: list[tuple[str, int, int]] = []
        rows = data.rows
        size = len(rows)
        strings = self.vocab.strings
        # only where an anchor word stands (a C-level scan)
        for position in compress(range(size), map(_ANCHORS_OF, rows)):
            for match in rows[position][ROW_ANCHORS]:
                match(position, rows, size, strings, found)
        found.extend(self._fallback_matches(doc))
        return found

    def _fallback_matches(self, doc: Doc) -> Iterator[tuple[str, int, int]]:
        if self.has_fallback:
            strings = self.vocab.strings
            yield from ((strings[m], s, e) for m, s, e in self.fallback(doc))

    def anchors_of(self, orth: int, lower: int, norm: int, lemma: int) -> tuple[Callable[..., None], ...]:
        """The compiled functions a token with these attribute values anchors (most tokens: none)."""
        if self.functions is None:
            self.compile()
        assert self.functions is not None
        values = {"orth": orth, "lower": lower, "norm": norm, "lemma": lemma}
        return tuple(by_value[values[name]] for name, by_value in self.functions.items() if values[name] in by_value)

    def compile(self) -> None:
        """Compile the patterns added so far (done on first use otherwise)."""
        self.functions = {name: {value: self.compiler.function([self.sources[number] for number in numbers])
                                 for value, numbers in index.items()}
                          for name, index in self.index.items()}


class _PatternCompiler:
    """Writes Python source for patterns around an anchor token and compiles it: one function per anchor word.

    The function of an anchor word, ``match(position, rows, size, strings, found)``, tries every pattern
    indexed by that word at `position` and appends (rule, start, end) to `found`. Each pattern token becomes one
    nested block (an ``if`` for a single token, a ``while`` for a quantifier), reaching every end and start a
    quantifier allows, as spaCy's Matcher does, without interpreting the pattern per token.
    """

    def __init__(self) -> None:
        self.constants: dict[str, Any] = {}
        self.values: dict[Any, str] = {}

    def constant(self, value: Any) -> str:
        """The name of a global of the compiled code holding `value` (a hash, a set of hashes, a regex)."""
        name = self.values.get(value)
        if name is None:
            name = self.values[value] = f"c{len(self.constants)}"
            self.constants[name] = value
        return name

    def test(self, spec: _TokenSpec, at: str) -> str:
        """A Python expression: does the token at index `at` satisfy `spec`?"""
        parts = []
        def value(name: str) -> str:
            return f"rows[{at}][{_ROW_ATTRIBUTES[name]}]"

        for name, values in spec.equal:
            if len(values) == 1:
                parts.append(f"{value(name)} == {self.constant(next(iter(values)))}")
            else:
                parts.append(f"{value(name)} in {self.constant(values)}")
        for name, values in spec.excluded:
            parts.append(f"{value(name)} not in {self.constant(values)}")
        for name, flag in spec.flags:
            parts.append(f"{'' if flag else 'not '}{value(name)}")
        for name, regex in spec.regexes:
            parts.append(f"{self.constant(regex)}.search(strings[{value(name)}])")
        return " and ".join(parts) or "True"

    def pattern(self, key: str, specs: tuple[_TokenSpec, ...], anchor: int, test_anchor: bool) -> list[str]:
        """Source lines (indented for a function body) appending the pattern's matches at `position` to found."""
        after, before = specs[anchor + 1:], specs[:anchor][::-1]
        rule = self.constant(key)
        lines: list[str] = []
        indent = "    "
        if test_anchor:
            lines.append(f"{indent}if {self.test(specs[anchor], 'position')}:")
            indent += "    "
        if all(spec.low == spec.high == 1 for spec in specs):  # one start, one end: nested tests
            checks = [f"position + {i} < size and {self.test(spec, f'position + {i}')}"
                      for i, spec in enumerate(after, 1)]
            checks += [f"position - {i} >= 0 and {self.test(spec, f'position - {i}')}"
                       for i, spec in enumerate(before, 1)]
            if checks:
                lines.append(f"{indent}if {' and '.join(checks)}:")
                indent += "    "
            lines.append(f"{indent}found.append(({rule}, position - {len(before)}, position + {len(after) + 1}))")
            return lines
        if after:
            lines += [f"{indent}ends = set()", f"{indent}q0 = position + 1"]
            lines += self._walk(after, 1, "ends", 0, indent)
        else:
            lines.append(f"{indent}ends = (position + 1,)")
        lines.append(f"{indent}if ends:")
        indent += "    "
        if before:
            lines += [f"{indent}starts = set()", f"{indent}q0 = position - 1"]
            lines += self._walk(before, -1, "starts", 1, indent)
        else:
            lines.append(f"{indent}starts = (position,)")
        lines.append(f"{indent}found.extend(({rule}, start, end) for start in starts for end in ends)")
        return lines

    def _walk(self, tokens: tuple[_TokenSpec, ...], step: int, target: str, shift: int, indent: str) -> list[str]:
        """Source lines adding to the set `target` every position (+ shift) reached after matching tokens from
        q0 on, by `step`."""
        lines: list[str] = []
        sign = "+" if step > 0 else "-"

        def emit(depth: int, indent: str) -> None:
            if depth == len(tokens):
                lines.append(f"{indent}{target}.add(q{depth}{f' + {shift}' if shift else ''})")
                return
            spec = tokens[depth]
            bounded = f"q{depth} < size" if step > 0 else f"q{depth} >= 0"
            test = self.test(spec, f"q{depth}")
            if spec.low == spec.high == 1:
                lines.append(f"{indent}if {bounded} and {test}:")
                lines.append(f"{indent}    q{depth + 1} = q{depth} {sign} 1")
                emit(depth + 1, indent + "    ")
                return
            lines.extend([f"{indent}t{depth} = 0", f"{indent}while True:"])
            if spec.low:
                lines.extend([f"{indent}    if t{depth} >= {spec.low}:", f"{indent}        q{depth + 1} = q{depth}"])
                emit(depth + 1, indent + "        ")
            else:
                lines.append(f"{indent}    q{depth + 1} = q{depth}")
                emit(depth + 1, indent + "    ")
            lines.extend([f"{indent}    if t{depth} < {spec.high} and {bounded} and {test}:",
                          f"{indent}        q{depth} {sign}= 1", f"{indent}        t{depth} += 1",
                          f"{indent}    else:", f"{indent}        break"])

        emit(0, indent)
        return lines

    def function(self, bodies: list[list[str]]) -> Callable[..., None]:
        """Compile the patterns' source lines into one match(position, rows, size, strings, found)."""
        body = [line for lines in bodies for line in lines]
        source = ["def match(position, rows, size, strings, found):", *body]
        namespace = dict(self.constants)
        exec(compile("\n".join(source), "<patterns>", "exec"), namespace)  # our own generated source, no input
        return namespace["match"]


class _WordList:
    """Literal strings to look for in a text: which of them occur?

    A substring test per string is fast for a few dozen; for long lists (the Japanese rules' phrases) only the
    strings whose first character the text has are tested.
    """

    MANY = 64

    def __init__(self, words: Iterable[str]) -> None:
        self.words = tuple(words)
        self.by_first: dict[str, list[str]] = {}
        for word in self.words:
            self.by_first.setdefault(word[0], []).append(word)

    def present_in(self, text: str) -> Iterable[str]:
        """The strings that occur in `text`."""
        if len(self.words) < self.MANY:
            return filter(text.__contains__, self.words)
        return [word for first in self.by_first.keys() & set(text) for word in self.by_first[first] if word in text]


def _token_span(starts: Sequence[int], match: re.Match[str]) -> tuple[int, int]:
    """The tokens (start, end) a regex match covers, from the tokens' character offsets."""
    first = bisect.bisect_right(starts, match.start()) - 1
    last = bisect.bisect_left(starts, match.end())
    return max(first, 0), max(last, first + 1)


def matches_near_anchors(regex: re.Pattern[str], text: str, haystack: str,
                         anchors: dict[str, tuple[int, int | None]],
                         present: Iterable[str] | None = None) -> list[re.Match[str]] | None:
    """What regex.finditer(text) finds, tried only where a match can start: at the offsets literal_anchors
    gives before each occurrence of its strings in `haystack` (the text, or the text lower-cased with the same
    positions; `present`: those of the strings known to occur in it). None when that is no cheaper than
    finditer (an unbounded offset, or very many places)."""
    starts: set[int] = set()
    limit = len(text) // 8
    for word in anchors if present is None else present:
        low, high = anchors[word]
        if high is None:
            return None
        at = haystack.find(word)
        while at >= 0:
            starts.update(range(max(0, at - high), at - low + 1))
            at = haystack.find(word, at + 1)
        if len(starts) > limit:
            return None
    found = []
    done = 0
    for start in sorted(starts):
        if start < done:
            continue  # inside the previous match: finditer does not overlap
        match = regex.match(text, start)
        if match:
            found.append(match)
            done = match.end()
    return found


def _canonical_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A rule's words written as the text will be: "A-to-z" with the non-breaking hyphens of A_TO_Z."""
    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return _A_TO_Z.sub(A_TO_Z, value) if "to" in value.lower() else value
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: (v if k == "REGEX" else fix(v)) for k, v in value.items()}
        return value

    return {k: (v if k in ("regex", "label", "id") else fix(v)) for k, v in entry.items()}


def _ids(strings: Any, words: list[str], lower: bool) -> frozenset[int]:
    return frozenset(strings.add(w.lower() if lower else w) for w in words)


def literal_anchors(pattern: str, case: bool) -> dict[str, tuple[int, int | None]] | None:
    """Literal strings one of which every match of the regex contains, each with the range of its offset from
    the match's start (None: unbounded); None if no such strings can be told.

    Read off the regex's parse tree: a run of literal characters must occur; a group, or a repetition of at
    least once, needs what its content needs; an alternation needs one of what its branches need. The widths
    of what comes before give the offsets. Lets a rule be skipped with a few substring tests, and tried only
    where it can match ("\\bFed ?Ex\\b": "Fed" at offset 0; "(ri|re)?(mand|sped)...": "mand" at 0 to 2).
    Case-insensitive rules get lower-case strings.
    """
    try:  # (the regex parser is CPython's own; without it every rule simply runs: slower, same results)
        from re import _constants as sre
        from re import _parser

        parsed = _parser.parse(pattern, 0 if case else re.IGNORECASE)
        parsed.getwidth()
    except (ImportError, AttributeError, re.error, ValueError, TypeError, OverflowError):
        return None
    repeats = (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", None))

    def width(item: tuple[Any, Any]) -> tuple[int, int | None]:
        low, high = _parser.SubPattern(parsed.state, [item]).getwidth()
        return low, None if high >= sre.MAXREPEAT else high

    def plus(a: tuple[int, int | None], b: tuple[int, int | None]) -> tuple[int, int | None]:
        return a[0] + b[0], None if a[1] is None or b[1] is None else a[1] + b[1]

    def needs(items: Any) -> dict[str, tuple[int, int | None]] | None:
        options: list[dict[str, tuple[int, int | None]]] = []
        run: list[str] = []
        at: tuple[int, int | None] = (0, 0)  # the width of what comes before the current item
        run_at = at
        for op, value in [*items, (None, None)]:
            if op is sre.LITERAL:
                if not run:
                    run_at = at
                run.append(chr(value))
                at = plus(at, (1, 1))
                continue
            if run:
                options.append({"".join(run): run_at})
                run = []
            if op is None:
                break
            found: dict[str, tuple[int, int | None]] | None = None
            if op is sre.SUBPATTERN:
                _, add_flags, del_flags, content = value
                found = needs(content) if not (add_flags or del_flags) else None
            elif op is sre.BRANCH:
                branches = [needs(branch) for branch in value[1]]
                if all(branches):
                    found = {}
                    for branch in branches:
                        for word, (low, high) in branch.items():  # type: ignore[union-attr]
                            if word in found:
                                old_low, old_high = found[word]
                                high = None if high is None or old_high is None else max(high, old_high)
                                low = min(low, old_low)
                            found[word] = (low, high)
            elif op in repeats and value[0] >= 1:
                found = needs(value[2])  # the first repetition has it
            elif op is sre.IN and value and all(kind is sre.LITERAL for kind, _ in value):
                found = {chr(char): (0, 0) for _, char in value}
            if found:
                options.append({word: plus(at, offset) for word, offset in found.items()})
            at = plus(at, width((op, value)))
        if not options:
            return None
        return max(options, key=lambda option: (min(map(len, option)), -len(option)))

    try:
        found = needs(parsed)
    except (AttributeError, TypeError, ValueError):  # a parse tree of another shape: run the rule always
        return None
    if not found:
        return None
    return {word if case else word.lower(): offset for word, offset in sorted(found.items())}


def _quantifier(op: str | None) -> tuple[int, int]:
    if op is None:
        return 1, 1
    simple = {"?": (0, 1), "*": (0, _INFINITE), "+": (1, _INFINITE)}
    if op in simple:
        return simple[op]
    found = re.fullmatch(r"\{(\d*)(,?)(\d*)\}", op)
    if not found:
        raise ValueError(f"unsupported OP {op!r}")
    low = int(found.group(1) or 0)
    high = low if not found.group(2) else (int(found.group(3)) if found.group(3) else _INFINITE)
    return low, high


class RuleModel:
    """One language's blank spaCy pipeline with its lookup lemmatizer and its rules."""

    def __init__(self, lang: str, folders: list[Path], language_of_word: dict[int, str] | None = None) -> None:
        self.lang = lang
        self.language_of_word = language_of_word or {}  # function word (LOWER hash) -> its language
        self.nlp = blank(lang)
        self.words: dict[str, list[tuple[str, ...]]] = {"NEGATION": [], "NEGATION_AFTER": [], "CONTRAST": [],
                                                        "HYPOTHETICAL": []}
        self.settings: dict[str, Any] = {"window": 6, "window_after": 4, "compound_heads": False,
                                         "clause_punct": [".", ",", ";", ":", "!", "?", "(", ")", "…", "—", "–",
                                                          "¿", "¡", "。", "、", "！", "？", "：", "，"]}
        self.rules: dict[str, tuple[str, str]] = {}
        # (rule, regex, its literal anchors (see literal_anchors), case-sensitive, tried only at token starts)
        self.regexes: list[tuple[str, re.Pattern[str], dict[str, tuple[int, int | None]] | None, bool, bool]] = []
        patterns: list[tuple[str, list[dict[str, Any]]]] = []
        phrases: list[tuple[str, list[str]]] = []
        for rule, entry in _entries(folders, lang):
            label = entry["label"]
            if label in self.words:
                self.words[label].extend(tuple(w.lower().split()) for w in entry["words"])
                continue
            if label == "SETTINGS":
                self.settings.update({k: v for k, v in entry.items() if k != "label"})
                continue
            self.rules[rule] = (label, entry.get("id", ""))
            if "regex" in entry:
                case = bool(entry.get("case"))
                compiled = re.compile(entry["regex"], 0 if case else re.IGNORECASE)
                self.regexes.append((rule, compiled, literal_anchors(entry["regex"], case), case,
                                     entry.get("scope") == "token"))
            elif "phrases" in entry or "phrase" in entry:
                phrases.append((rule, entry.get("phrases") or [entry["phrase"]]))
            else:
                patterns.append((rule, self._lowercase_values(entry["pattern"])))
        # regex rules by the literal words they need: a doc's rules are found with two C-level passes
        # Rules whose label only a tracking number gives a use (carrier names, "tracking" cues) run only when
        # a tracking number was found: most mail has none.
        self._rules_by_word: dict[tuple[bool, str], list[int]] = {}
        words: dict[bool, dict[bool, list[str]]] = {False: {True: [], False: []}, True: {True: [], False: []}}
        unconditional: dict[bool, list[int]] = {False: [], True: []}
        for number, (rule, _, anchors, case, token_scope) in enumerate(self.regexes):
            if token_scope:
                continue  # gated by the tokens instead
            with_tracking = self.rules[rule][0] in _TRACKING_COMPANIONS
            if anchors is None:
                unconditional[with_tracking].append(number)
            for word in anchors or ():
                if (case, word) not in self._rules_by_word:
                    words[with_tracking][case].append(word)
                self._rules_by_word.setdefault((case, word), []).append(number)
        # (with a tracking number?) -> ((case-sensitive words, lower-case words), rules without words)
        self._words = {with_tracking: ((_WordList(by_case[True]), _WordList(by_case[False])),
                                       unconditional[with_tracking]) for with_tracking, by_case in words.items()}
        self._token_rules = [number for number, rule in enumerate(self.regexes) if rule[4]]  # tried at tokens
        if lang != "ja":  # Japanese is tokenized by Sudachi, which gives lemmas itself
            lemmatizer = self.nlp.add_pipe("pipeline_lemmatizer")
            needed = _pattern_lemmas(p for _, p in patterns) | {w for _, ps in phrases for p in ps
                                                                  for w in p.lower().split()}
            keywords = _pattern_words(p for _, p in patterns) | needed
            keywords |= {" ".join(w) for ws in self.words.values() for w in ws if len(w) == 1}
            listed = _pattern_lemmas(p for _, p in patterns)
            forms, table_lemmas, protected = lemma_table(lang, needed, listed, folders, keywords)
            keywords |= {f.lower() for f in forms}
            lemmatizer.configure(forms, keywords, protected, bool(self.settings["compound_heads"]))
            patterns = [(rule, _widen_lemmas(pattern, table_lemmas)) for rule, pattern in patterns]
        self.lemmatizer = self.nlp.get_pipe("pipeline_lemmatizer") if lang != "ja" else None
        common = set(_function_words_of(folders, lang)) | _COMMON_WORDS.get(lang, set()) | _MAIL_WORDS.get(lang, set())
        common |= {" ".join(w) for ws in self.words.values() for w in ws}
        self.matcher = AnchoredMatcher(self.nlp.vocab, common, lowercase=lang != "ja")
        self.patterns = patterns  # as given to the matcher; tests check it against spaCy's own Matcher
        for rule, pattern in patterns:
            self.matcher.add(rule, pattern)
        # phrases match on their tokens' lemmas, as PhraseMatcher(attr="LEMMA") would, through the same index
        self.phrases = phrases  # as given; tests check them against spaCy's own PhraseMatcher
        for rule, texts in phrases:
            for phrase in self.nlp.pipe(texts):
                self.matcher.add_lemmas(rule, [token.lemma for token in phrase])
        add = self.nlp.vocab.strings.add
        # word lists as string hashes: the scope checks compare token attribute hashes, not strings
        self._neg1 = {add(w[0]) for w in self.words["NEGATION"] if len(w) == 1}
        self._neg2 = {(add(w[0]), add(w[1])) for w in self.words["NEGATION"] if len(w) == 2}
        self._neg_after = {add(w[0]) for w in self.words["NEGATION_AFTER"]}
        self._contrast = {add(w[0]) for w in self.words["CONTRAST"]}
        self._hyp1 = {add(w[0]) for w in self.words["HYPOTHETICAL"] if len(w) == 1}
        self._hyp2 = {(add(w[0]), add(w[1])) for w in self.words["HYPOTHETICAL"] if len(w) == 2}
        self._after_boundary = {add(w) for w in self.settings.get("after_boundary", ())}
        self._continuing = {add(w) for w in self.settings.get("after_continue", ())}
        self._questions = {add(w) for w in self.settings.get("question_particles", ())}
        self.boundaries = frozenset(add(p) for p in self.settings["clause_punct"])
        self._negation_words = self._neg1 | self._neg_after
        self._window = int(self.settings["window"])
        self._cue_starts = {first for first, _ in self._neg2 | self._hyp2}
        self._roles: dict[tuple[int, int, int], int] = {}  # (ORTH, NORM, LEMMA) -> ROLE_* bits, in context
        self._digits: dict[int, bool] = {}  # ORTH -> 10 or more characters with a digit
        self._types: dict[bytes, tuple[Any, ...]] = {}  # (ORTH, NORM) as 16 bytes -> row (see token_data)
        self.matcher.compile()  # now, not on first use: part of the load time

    def _lowercase_values(self, pattern: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.lang == "ja":
            return pattern
        out = []
        for spec in pattern:
            spec = dict(spec)
            for attr in ("LOWER", "NORM", "LEMMA"):  # these attributes hold lower case on our tokens
                if isinstance(spec.get(attr), str):
                    spec[attr] = spec[attr].lower()
                elif isinstance(spec.get(attr), dict):
                    spec[attr] = {op: [v.lower() for v in values] if op in ("IN", "NOT_IN") else values
                                  for op, values in spec[attr].items()}
            out.append(spec)
        return out

    def hits(self, text: str, subject_end: int = 0, tokens: tuple[Doc, TokenData] | None = None) -> list[Hit]:
        """Every rule match in the text (characters before subject_end are the subject), negation marked.
        `tokens`: the text's doc and its token_data, when the caller has them already."""
        if tokens is None:
            doc = self.nlp.make_doc(text)
            data = self.token_data(doc)
        else:
            doc, data = tokens
        if self.matcher.has_fallback and len(doc):  # spaCy's Matcher (patterns without an anchor) reads the doc
            doc.from_array([NORM, LEMMA], numpy.array([data.norm, data.lemma], dtype="uint64").T)
        spans = self.matcher(doc, data)
        if self.regexes:
            spans += self._regex_spans(text, data)
        hits: list[Hit] = []
        blocks: list[tuple[str, int, int]] = []
        idx, rows = data.idx, data.rows
        for start, after_end, rule in sorted({(start, -end, rule) for rule, start, end in spans}):
            end = -after_end
            label, value = self.rules[rule]
            a, b = idx[start], idx[end - 1] + rows[end - 1][ROW_LENGTH]
            if label == "BLOCK":
                blocks.append((value, a, b))
                continue
            if label in _SCOPED_LABELS:
                negated, hypothetical = self._scope(data, start, end, label in _PREDICATE_LABELS)
            else:
                negated = hypothetical = False
            # (tuple.__new__ skips the namedtuple's Python-level __new__: one call less per hit)
            hits.append(_new_tuple(Hit, (label, value, rule, text[a:b], a, b, negated, hypothetical, a < subject_end)))
        if blocks:  # a BLOCK's id is a label ("INTENT") or a label and value ("COMPLAINT:not_as_described")
            targets = {target for target, _, _ in blocks}
            hits = [h for h in hits if not ((h.label in targets or f"{h.label}:{h.value}" in targets) and any(
                target in (h.label, f"{h.label}:{h.value}") and a < h.end and h.start < b for target, a, b in blocks))]
        return hits

    def token_data(self, doc: Doc) -> TokenData:
        """The doc's token attributes, lemmas, mended typos and matcher anchors (see TokenData).

        Everything but IDX follows from a token's ORTH and NORM (a tokenizer exception can set NORM per token),
        so it is worked out once per (ORTH, NORM) and cached: per doc, one C-level lookup per token, no Python
        step per token. The cache key is the pair's 16 bytes, made by numpy in one go: much cheaper than a tuple
        of two 64-bit Python ints per token.
        """
        if self.lemmatizer is None:  # Sudachi's lemmas depend on context: nothing to cache per word type
            return self._token_data_in_context(doc)
        if not len(doc):
            return TokenData((), ())
        array = doc.to_array([ORTH, NORM, IDX])
        keys = numpy.ascontiguousarray(array[:, :2]).view("S16").ravel().tolist()
        types = self._types
        try:
            rows = list(map(types.__getitem__, keys))
        except KeyError:  # a word type seen for the first time
            if len(types) > 200_000:
                types.clear()
            pairs = zip(array[:, 0].tolist(), array[:, 1].tolist(), strict=True)
            rows = [types[key] if key in types else self._type(key, *pair)
                    for key, pair in zip(keys, pairs, strict=True)]
        return TokenData(rows, array[:, 2].tolist())

    def _token_data_in_context(self, doc: Doc) -> TokenData:
        """token_data for a tokenizer whose lemmas depend on the context (Sudachi): rows built per token."""
        if not len(doc):
            return TokenData((), ())
        array = doc.to_array([ORTH, LOWER, LEMMA, NORM, IS_PUNCT, IS_SPACE, LIKE_NUM, LENGTH, IDX])
        orth, lower, lemma, norm, is_punct, is_space, like_num, length, idx = array.T.tolist()
        anchors: Iterable[tuple[Callable[..., None], ...]] = repeat(())
        if self.matcher.patterns:
            anchors = [self.matcher.anchors_of(*key) for key in zip(orth, lower, norm, lemma, strict=True)]
        long_with_digit = map(self._long_with_digit, orth)
        roles = map(self._cached_role, orth, norm, lemma, is_space)
        languages = map(self.language_of_word.get, lower)
        rows = list(zip(orth, lower, lemma, norm, is_punct, is_space, like_num, length, anchors, long_with_digit,
                        roles, languages, strict=False))
        return TokenData(rows, idx)

    def _cached_role(self, orth: int, norm: int, lemma: int, is_space: int) -> int:
        key = (orth, norm, lemma)
        role = self._roles.get(key)
        if role is None:
            if len(self._roles) > 200_000:
                self._roles.clear()
            role = self._roles[key] = self._role(orth, norm, lemma, is_space)
        return role

    def _role(self, orth: int, norm: int, lemma: int, is_space: int) -> int:
        """The ROLE_* bits of a token (see _scope)."""
        role = ROLE_SPACE if is_space else 0
        if norm in self._negation_words or lemma in self._neg_after:
            role |= ROLE_OWN_NEGATION
        if orth in self.boundaries:
            role |= ROLE_BOUNDARY
        if "\n" in self.nlp.vocab.strings[orth]:
            role |= ROLE_NEWLINE
        if norm in self._contrast:
            role |= ROLE_CONTRAST
        if norm in self._hyp1:
            role |= ROLE_HYPOTHETICAL
        if norm in self._neg1:
            role |= ROLE_NEGATION
        if norm in self._cue_starts:
            role |= ROLE_CUE_START
        return role

    def _long_with_digit(self, orth: int) -> bool:
        found = self._digits.get(orth)
        if found is None:
            if len(self._digits) > 200_000:
                self._digits.clear()
            word = self.nlp.vocab.strings[orth]
            found = self._digits[orth] = len(word) >= 10 and any(c.isdigit() for c in word)
        return found

    def _type(self, key: bytes, orth: int, norm: int) -> tuple[Any, ...]:
        """The cached row of a word type (see token_data): its attributes, lemma, matcher anchors, digits."""
        assert self.lemmatizer is not None
        lower, lemma, mended, is_punct, is_space, like_num, length = self.lemmatizer.resolve(orth, norm)
        norm = mended or norm
        row = (orth, lower, lemma, norm, is_punct, is_space, like_num, length,
               self.matcher.anchors_of(orth, lower, norm, lemma), self._long_with_digit(orth),
               self._role(orth, norm, lemma, is_space), self.language_of_word.get(lower))
        self._types[key] = row
        return row

    def _regex_spans(self, text: str, data: TokenData) -> list[tuple[str, int, int]]:
        """Token spans of the regex rules. A rule with literal words runs only if one of them occurs (and where,
        when its matches start with one); a "scope": "token" rule (tracking numbers) is tried only where a long
        token with digits starts."""
        starts = data.idx
        lowered = text.lower()
        same_positions = len(lowered) == len(text)  # lower-casing can lengthen a text ("İ" -> "i̇")
        spans: list[tuple[str, int, int]] = []
        tracking = False
        if self._token_rules and any(map(_LONG_WITH_DIGIT_OF, data.rows)):  # (most texts have no such token)
            candidates = self._digit_token_starts(data)
            for number in self._token_rules:
                rule, regex = self.regexes[number][:2]
                for match in filter(None, map(regex.match, repeat(text), candidates)):
                    tracking = True
                    spans.append((rule, *_token_span(starts, match)))
        present: dict[int, list[str]] = {}  # rule -> its words in the text
        for with_tracking in (False, True) if tracking else (False,):
            (case_words, lower_words), unconditional = self._words[with_tracking]
            present.update({number: [] for number in unconditional})
            for case, haystack, words in ((True, text, case_words), (False, lowered, lower_words)):
                for word in words.present_in(haystack):
                    for number in self._rules_by_word[case, word]:
                        present.setdefault(number, []).append(word)
        for number in sorted(present):
            rule, regex, anchors, case, _ = self.regexes[number]
            found: Iterable[re.Match[str]] | None = None
            if anchors is not None and (case or same_positions):
                found = matches_near_anchors(regex, text, text if case else lowered, anchors, present[number])
            if found is None:
                found = regex.finditer(text)
            spans.extend((rule, *_token_span(starts, match)) for match in found)
        return spans

    def _digit_token_starts(self, data: TokenData) -> list[int]:
        """Where the tokens of 10 or more characters with a digit start (tracking numbers can)."""
        return list(compress(data.idx, map(_LONG_WITH_DIGIT_OF, data.rows)))

    def _scope(self, data: TokenData, start: int, end: int, predicate: bool = True) -> tuple[bool, bool]:
        """(negated, hypothetical): a negation or a conditional shortly before the match in the same clause.

        A negation inside a condition ("if I don't get a refund ...") does not negate; a rule that spells its
        own negation ("not received") is not negated by it.
        """
        rows = data.rows
        own_negation = False
        for row in rows[start:end]:
            if row[ROW_ROLE] & ROLE_OWN_NEGATION:
                own_negation = True
                break
        negated = hypothetical = False
        previous = None
        first = start - 1 - self._window
        for i in range(start - 1, first if first > -1 else -1, -1):
            row = rows[i]
            role = row[ROW_ROLE]
            if not role:  # (most words play no part)
                previous = row[ROW_NORM]
                continue
            if role & ROLE_BOUNDARY:
                break
            if role & ROLE_SPACE:
                if role & ROLE_NEWLINE:
                    break
                continue
            norm = row[ROW_NORM]
            if role & ROLE_CONTRAST and not negated:
                break
            cue = previous and role & ROLE_CUE_START
            if role & ROLE_HYPOTHETICAL or (cue and (norm, previous) in self._hyp2):
                hypothetical = True
                break
            if not own_negation and (role & ROLE_NEGATION or (cue and (norm, previous) in self._neg2)):
                negated = True
            previous = norm
        if hypothetical:
            negated = False
        # a negation after the match ("passt nicht") negates a predicate, not a time phrase ("nach einem Monat")
        if predicate and not negated and not own_negation and self._neg_after:
            negated = self._negated_after(data, end)
        return negated, hypothetical

    def _negated_after(self, data: TokenData, end: int) -> bool:
        """A negation right after the match (Japanese, German V2): "届きません", "passt nicht".

        A conjunctive particle ends the clause unless an auxiliary follows ("大きすぎて着られません" negates
        the second verb; "承認されていません" the first), and a negative question is a request ("〜ませんか").
        """
        rows = data.rows
        size = len(rows)
        for i in range(end, min(size, end + self.settings["window_after"])):
            row = rows[i]
            if row[ROW_ROLE] & (ROLE_BOUNDARY | ROLE_NEWLINE):
                return False
            if row[ROW_ORTH] in self._after_boundary and (
                    i + 1 >= size or rows[i + 1][ROW_LEMMA] not in self._continuing):
                return False
            if row[ROW_NORM] in self._neg_after or row[ROW_LEMMA] in self._neg_after:
                return not any(rows[j][ROW_ORTH] in self._questions for j in range(i + 1, min(size, i + 3)))
        return False


def blank(lang: str) -> Language:
    """spacy.blank(lang), except French: spaCy's French tokenizer compiles a huge hyphenated-word regex at
    import (about 2 s); the same punctuation rules without that regex load in milliseconds."""
    if lang == "fr":
        return _light_french()
    return spacy.blank(lang)


def _light_french() -> Language:
    from spacy.lang.char_classes import (
        ALPHA,
        ALPHA_LOWER,
        ALPHA_UPPER,
        CONCAT_QUOTES,
        CURRENCY,
        LIST_ELLIPSES,
        LIST_PUNCT,
        LIST_QUOTES,
        UNITS,
        merge_chars,
    )
    from spacy.lang.punctuation import TOKENIZER_INFIXES, TOKENIZER_PREFIXES
    from spacy.lang.tokenizer_exceptions import BASE_EXCEPTIONS
    from spacy.language import BaseDefaults

    elision = "'’"
    hyphens = r"- – — ‐ ‑".replace(" ", "")
    hyphen_suffixes = "ce clés elle en il ils je là moi nous on t vous"
    hyphen_suffixes += " " + hyphen_suffixes.upper()
    elided = "d l n D L N"

    class LightFrenchDefaults(BaseDefaults):
        tokenizer_exceptions: ClassVar[dict[str, Any]] = {
            **BASE_EXCEPTIONS, "aujourd'hui": [{ORTH: "aujourd'hui"}], "Aujourd'hui": [{ORTH: "Aujourd'hui"}]}
        prefixes: ClassVar[list[str]] = [*TOKENIZER_PREFIXES, rf"(?:({merge_chars(elided)})[{elision}])(?=[{ALPHA}])"]
        suffixes: ClassVar[list[str]] = [
            *LIST_PUNCT, *LIST_ELLIPSES, *LIST_QUOTES,
            r"(?<=[0-9])\+", r"(?<=°[FfCcKk])\.", r"(?<=[0-9])%", rf"(?<=[0-9])(?:{CURRENCY})",
            rf"(?<=[0-9])(?:{UNITS})", rf"(?<=[0-9{ALPHA_LOWER}%²\-\+(?:{CONCAT_QUOTES})])\.",
            rf"(?<=[{ALPHA_UPPER}][{ALPHA_UPPER}])\.",
            rf"(?<=[{ALPHA}])[{hyphens}]({merge_chars(hyphen_suffixes)})",
        ]
        infixes: ClassVar[list[str]] = [*TOKENIZER_INFIXES, rf"(?<=[{ALPHA}][{elision}])(?=[{ALPHA}])"]

    class LightFrench(Language):
        lang = "fr"
        Defaults = LightFrenchDefaults

    return LightFrench()


# --- facts ----------------------------------------------------------------------------------------


class Reading(NamedTuple):
    """What the rules read of a message: the subject (unless a buyer's reply) and the body, in one language."""

    trusted: bool
    marketplace: str | None
    is_buyer: bool
    language: str
    text: str  # subject, blank line, body (the buyer's own new words for buyer messages)
    subject_end: int
    body: str


class Understander:
    """Builds facts from parsed messages. Rule models are built once per language, on first use."""

    def __init__(self, models_dir: str | Path | None = None, *, response_days: int = 7) -> None:
        self.folders = search_path("models", models_dir)
        self.response_days = response_days
        self._month_names: dict[str, int] | None = None
        self._models: dict[str, RuleModel] = {}
        self._language_of_word: dict[int, str] = {}  # function word (LOWER hash) -> its language
        self._lock = threading.Lock()

    def model(self, lang: str) -> RuleModel:
        """The rule model of a language (built on first use)."""
        built = self._models.get(lang)
        if built is not None:
            return built
        with self._lock:
            if lang not in self._models:
                try:
                    self._models[lang] = RuleModel(lang, self.folders, self._function_word_languages())
                except (ValueError, re.error, OSError) as exc:
                    raise ConfigError(f"rule model {lang!r} cannot be loaded: {exc}") from None
            return self._models[lang]

    def read(self, message: ParsedMessage) -> Reading:
        """Which text of the message the rules read, and in which language (see Reading)."""
        return self._read(self._draft(message))[0]

    def understand(self, message: ParsedMessage) -> Facts:
        """All facts of one message, each with its evidence."""
        return self._understand(message, self._draft(message))

    def understand_many(self, messages: Iterable[ParsedMessage], batch_size: int = 256) -> Iterator[Facts]:
        """The facts of each message, in order: what understand() gives, faster for many messages.

        Like spaCy's nlp.pipe, works in batches: reads every message of a batch, tokenizes them one language
        at a time, then applies the rules, so each step's code and tables stay warm in the CPU's caches.
        """
        batch: list[ParsedMessage] = []
        for message in messages:
            batch.append(message)
            if len(batch) >= batch_size:
                yield from self._understand_batch(batch)
                batch = []
        yield from self._understand_batch(batch)

    def _understand_batch(self, messages: list[ParsedMessage]) -> list[Facts]:
        drafts = [self._draft(message) for message in messages]
        docs: list[Doc | None] = [None] * len(drafts)
        for language in sorted({draft.language for draft in drafts}):
            make_doc = self.model(language).nlp.make_doc
            for i, draft in enumerate(drafts):
                if draft.language == language:
                    docs[i] = make_doc(draft.text)
        reads = [self._read(draft, doc) for draft, doc in zip(drafts, docs, strict=True)]
        return [self._facts(message, *read) for message, read in zip(messages, reads, strict=True)]

    def _draft(self, message: ParsedMessage) -> Reading:
        """The reading of a message, its language still a guess: Japanese by its script, else the marketplace's."""
        domain = message.sender_domain
        # Amazon's domain in From is what anyone can write; a receiving server's failed check overrules it
        trusted = is_amazon_domain(domain) and message.authentication_failure is None
        marketplace = marketplace_of(message) if trusted else None
        is_buyer = (trusted and domain.startswith("marketplace.")) or (
            message.had_markers and not trusted and "marketplace.amazon" in domain)
        body = prepare_text(message.new_text if is_buyer else message.text)
        subject = _normalize_chars(message.subject)
        if is_buyer and REPLY_SUBJECT.match(subject):
            subject = ""  # a reply's subject restates the old complaint
        text = f"{subject}\n\n{body}" if subject else body
        default = language_of_marketplace(marketplace) or "en"
        language = "ja" if _KANA.search(text) else default if default in LANGUAGES else "en"
        return Reading(trusted, marketplace, is_buyer, language, text, len(subject), body)

    def _read(self, draft: Reading, doc: Doc | None = None) -> tuple[Reading, RuleModel, Doc, TokenData]:
        """The reading with its language told by its function words, and its tokens in that language.

        The text is tokenized in the guessed language and its words counted there; only when they say another
        language is it tokenized again.
        """
        model = self.model(draft.language)
        doc = doc if doc is not None else model.nlp.make_doc(draft.text)
        tokens = model.token_data(doc)
        if draft.language == "ja" and _KANA.search(draft.text):
            return draft, model, doc, tokens
        language = self._language_of_tokens(tokens, draft.language)
        if language == draft.language:
            return draft, model, doc, tokens
        model = self.model(language)
        doc = model.nlp.make_doc(draft.text)
        return draft._replace(language=language), model, doc, model.token_data(doc)

    def _function_word_languages(self) -> dict[int, str]:
        """Function word (LOWER hash) -> its language, for the models' token rows (see decide_language)."""
        if not self._language_of_word:
            self._language_of_word = {hash_string(word): lang for lang, words in
                                      _function_words(self.folders).items() for word in words}
        return self._language_of_word

    @staticmethod
    def _language_of_tokens(tokens: TokenData, default: str) -> str:
        """The language whose function words the text's first 1000 characters use most (see decide_language)."""
        rows = islice(tokens.rows, bisect.bisect_left(tokens.idx, 1000))
        return decide_language(list(filter(None, map(_LANGUAGE_OF, rows))), default)

    def _understand(self, message: ParsedMessage, draft: Reading) -> Facts:
        return self._facts(message, *self._read(draft))

    def _facts(self, message: ParsedMessage, reading: Reading, model: RuleModel, doc: Doc,
               tokens: TokenData) -> Facts:
        """The facts of a message from its reading and tokens (see _read)."""
        evidence: dict[str, Evidence] = {}
        trusted, marketplace, is_buyer, language = (reading.trusted, reading.marketplace, reading.is_buyer,
                                                    reading.language)
        text, body = reading.text, reading.body
        domain = message.sender_domain
        failure = message.authentication_failure
        evidence["trusted"] = Evidence("authentication-results", failure) if failure else \
            Evidence("sender-domain", domain)
        if marketplace:
            rule = "x-marketplace-id" if message.marketplace_id else "sender-domain"
            evidence["marketplace"] = Evidence(rule, message.marketplace_id or domain)

        hits: dict[str, list[Hit]] = {}  # by label
        body_hits: dict[str, list[Hit]] = {}  # by label, outside the subject
        for hit in model.hits(text, reading.subject_end, (doc, tokens)):
            hits.setdefault(hit.label, []).append(hit)
            if not hit.in_subject:
                body_hits.setdefault(hit.label, []).append(hit)

        kind = _kind(message, is_buyer, hits.get("KIND", []), evidence)
        order_id = _order_id(message.subject, body, evidence)
        if order_id is None and is_buyer:
            order_id = _order_id("", prepare_text(message.text), evidence)
        complaint = _complaint(hits, kind, text, evidence)
        intent = _intent(hits.get("INTENT", []), complaint, evidence) if kind == "buyer_message" else None
        tracking, carrier = _tracking(body_hits, evidence)
        delivered_hits = body_hits.get("DELIVERED", [])
        delivered = _delivered(delivered_hits, evidence)
        delivered_on = self._delivery_date(text, delivered_hits, evidence) if delivered else None
        deadline_hours = _deadline_hours(body_hits.get("DEADLINE", []), text, evidence) \
            if kind in ("claim_filed", "claim_info_request") else None
        amount, currency = _amount(body, body_hits.get("AMOUNT_CUE", []), len(text) - len(body), marketplace,
                                   evidence) if kind in CLAIM_KINDS else (None, None)
        deadline_at = None
        if message.sent_at and kind in ("claim_filed", "claim_info_request"):
            if deadline_hours:
                deadline_at = message.sent_at + timedelta(hours=deadline_hours)
                evidence["deadline_at"] = Evidence(evidence["deadline_hours"].rule, evidence["deadline_hours"].text)
            elif kind == "claim_filed":
                deadline_at = message.sent_at + timedelta(days=self.response_days)
                evidence["deadline_at"] = Evidence("config:response_days", f"{self.response_days} days")
        buyer_name = _buyer_name(message) if kind == "buyer_message" else None
        evidence["language"] = Evidence("language-detection", language)
        return Facts(
            kind=kind, order_id=order_id, complaint_type=complaint, buyer_intent=intent,
            tracking_number=tracking, carrier=carrier, delivered=delivered, deadline_hours=deadline_hours,
            deadline_at=deadline_at, amount=amount, currency=currency, marketplace=marketplace,
            language=language, trusted=trusted, sent_at=message.sent_at, sender=message.sender,
            reply_to=message.reply_to, buyer_address=message.sender if kind == "buyer_message" else None,
            buyer_name=buyer_name, subject=message.subject, message_id=message.message_id,
            in_reply_to=message.in_reply_to, references=message.references, evidence=evidence,
            delivered_on=delivered_on,
        )

    def _delivery_date(self, text: str, hits: list[Hit], evidence: dict[str, Evidence]) -> date | None:
        """The date written right after "tracking shows … delivered" ("on February 12, 2026", "am 3. März 2026")."""
        for hit in hits:
            if hit.negated:
                continue
            when = find_date(text[hit.start:hit.end + 60].replace("\u00a0", " "), self._months())
            if when:
                evidence["delivered_on"] = Evidence(f"{hit.rule}+date", when[1])
                return when[0]
        return None

    def _months(self) -> dict[str, int]:
        if self._month_names is None:
            self._month_names = month_names(self.folders)
        return self._month_names


_DEFAULT: Understander | None = None


def default_understander() -> Understander:
    """A process-wide Understander over the bundled models."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Understander()
    return _DEFAULT


def _normalize_chars(text: str) -> str:
    for char in filter(text.__contains__, _MAPPED_CHARS):  # (str.replace is much faster than str.translate)
        text = text.replace(char, _CHAR_MAP[ord(char)] or "")
    return text


def prepare_text(text: str) -> str:
    """Text as the rules read it: one kind of apostrophe and hyphen, wrapped lines and order IDs joined."""
    text = _normalize_chars(text)
    if _WRAP_HINT.search(text):
        text = _join_wrapped_ids(text)
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


def decide_language(found: list[str], default: str) -> str:
    """The language of a text from the languages of its function words, in text order; `default` when unclear
    (fewer than 3 words, or not clearly more than the default language's)."""
    if found.count(default) == len(found):  # (the common case: only the default language's words, or none)
        return default
    counts = Counter(found)
    best = max(counts, key=lambda lang: (counts[lang], lang == default))
    if counts[best] < 3 or counts[best] < counts.get(default, 0) * 1.3:
        return default
    return best


_KANA = re.compile(r"[\u3040-\u30ff]")


# Frequent words that make poor anchors for the matcher (besides each language's function words).
_COMMON_WORDS = {
    "en": {"be", "have", "do", "get", "the", "a", "an", "to", "of", "in", "on", "at", "for", "from", "this",
           "that", "it", "is", "was", "are", "my", "me", "you", "your", "and", "or", "with", "as", "by", "not"},
    "de": {"sein", "haben", "werden", "der", "die", "das", "den", "dem", "ein", "eine", "zu", "in", "im", "und",
           "nicht"},
    "fr": {"être", "avoir", "le", "la", "les", "l'", "de", "d'", "du", "un", "une", "à", "et", "en", "que", "pas"},
    "it": {"essere", "avere", "il", "lo", "la", "i", "le", "di", "da", "a", "in", "e", "è", "un", "una", "che",
           "non"},
    "es": {"ser", "estar", "haber", "el", "la", "lo", "los", "las", "de", "a", "en", "y", "un", "una", "que", "no"},
}
# Words every claim mail repeats: as anchors they would make the matcher try its patterns at each of them.
_MAIL_WORDS = {
    "en": {"claim", "order", "buyer", "customer", "mail", "guarantee", "a\u2011to\u2011z", "amazon", "seller",
           "item", "package", "day", "days", "reply", "information"},
    "de": {"antrag", "bestellung", "käufer", "kunde", "garantie", "a\u2011bis\u2011z", "amazon", "verkäufer",
           "artikel", "paket", "tag", "tage"},
    "fr": {"réclamation", "commande", "acheteur", "client", "garantie", "amazon", "vendeur", "article", "colis",
           "jour", "jours"},
    "it": {"reclamo", "ordine", "acquirente", "cliente", "garanzia", "amazon", "venditore", "articolo", "pacco",
           "giorno", "giorni"},
    "es": {"reclamación", "pedido", "pedir", "comprador", "cliente", "garantía", "amazon", "vendedor", "artículo",
           "paquete", "día", "días"},
}


def _function_words_of(folders: list[Path], lang: str) -> list[str]:
    for folder in folders:
        path = folder / lang / "language.json"
        if path.is_file():
            return [w.lower() for w in json.loads(path.read_text(encoding="utf-8")).get("function_words", [])]
    return []


def month_names(folders: list[Path]) -> dict[str, int]:
    """Month names of every language (models/<lang>/language.json "months"), with accent-free and short forms."""
    names: dict[str, int] = {}
    for folder in reversed(folders):
        for path in sorted(folder.glob("*/language.json")):
            for number, name in enumerate(json.loads(path.read_text(encoding="utf-8")).get("months", []), 1):
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


def _function_words(folders: list[Path]) -> dict[str, frozenset[str]]:
    words: dict[str, set[str]] = {}
    for folder in reversed(folders):
        for path in sorted(folder.glob("*/language.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            words[path.parent.name] = {w.lower() for w in data.get("function_words", [])}
    shared = {w for s in words.values() for w in s if sum(w in o for o in words.values()) > 1}
    return {lang: frozenset(s - shared) for lang, s in words.items()}


def _entries(folders: list[Path], lang: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(rule name, entry) of every rule line: models/xx first, then models/<lang>; overrides win by file name."""
    chosen: dict[str, Path] = {}
    for sub in ("xx", lang):
        for folder in reversed(folders):  # bundled first, override last so it replaces by file name
            for path in sorted((folder / sub).glob("*.jsonl")):
                chosen[f"{sub}/{path.name}"] = path
    for key, path in chosen.items():
        sub = key.split("/", 1)[0]
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("//"):
                continue
            try:
                entry = json.loads(line)
                entry["label"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: bad rule line: {exc}") from None
            yield f"{sub}/{path.stem}:{number}", _canonical_entry(entry)


def _pattern_lemmas(patterns: Iterable[list[dict[str, Any]]]) -> set[str]:
    found: set[str] = set()
    for pattern in patterns:
        for spec in pattern:
            value = spec.get("LEMMA")
            if isinstance(value, str):
                found.add(value.lower())
            elif isinstance(value, dict):
                found.update(v.lower() for v in value.get("IN", []))
    return found


def _widen_lemmas(pattern: list[dict[str, Any]], table_lemmas: dict[str, str]) -> list[dict[str, Any]]:
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


def _pattern_words(patterns: Iterable[list[dict[str, Any]]]) -> set[str]:
    found: set[str] = set()
    for pattern in patterns:
        for spec in pattern:
            for attr in ("NORM", "LOWER", "LEMMA"):
                value = spec.get(attr)
                if isinstance(value, str):
                    found.add(value.lower())
                elif isinstance(value, dict):
                    found.update(v.lower() for v in value.get("IN", []))
    return found


# --- lemma tables ---------------------------------------------------------------------------------


def lemma_table(lang: str, needed: set[str], listed: set[str], folders: list[Path],
                keywords: set[str]) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """(form -> lemma, listed word -> the table's own lemma for it, protected real words).

    Read from models/<lang>/lemmas.json when it covers the rules; else cut from spacy-lookups-data
    (slower: run `python -m pipeline.understand --refresh-lemmas` to store the cut table).
    """
    for folder in folders:
        path = folder / lang / "lemmas.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if needed <= set(data.get("lemmas", [])) and listed <= set(data.get("listed", [])):
                return data["forms"], data.get("table_lemmas", {}), set(data.get("protected", []))
            log.warning("%s does not cover every lemma the rules use; loading the full table "
                        "(run `python -m pipeline.understand --refresh-lemmas`)", path)
            break
    data = build_lemma_table(lang, needed, keywords, listed)
    return data["forms"], data["table_lemmas"], set(data["protected"])


def build_lemma_table(lang: str, needed: set[str], keywords: set[str], listed: set[str]) -> dict[str, Any]:
    """Cut spacy-lookups-data's lemma table down to the needed lemmas; list the protected real words.

    `needed` holds the LEMMA values of the patterns and the words of the phrases; a phrase word brings its own
    lemma's forms too, so "hat sich erledigt" also matches "erledigte". A word the patterns list as a LEMMA
    (`listed`) is its own lemma ("reclamo" the noun, not the verb "reclamare"); what the table would have made
    of it is kept in table_lemmas so that patterns can be widened (see _widen_lemmas). Protected are real words
    of the language (lemma tables, stop words, frequent words) one typo away from a rule word: "through" is not
    "though".
    """
    full = {form: lemma[0] if isinstance(lemma, list) else lemma
            for form, lemma in _lookups_table(lang, "lemma_lookup").items() if lemma}
    lemmas = set(needed)
    for word in needed:
        lemma = full.get(word) or full.get(word.capitalize())
        if lemma:
            lemmas.add(lemma.lower())
    for word in listed:
        lemma = full.get(word) or full.get(word.capitalize())
        if lemma:
            lemmas.add(lemma.lower())
    forms = {form: lemma.lower() for form, lemma in full.items() if lemma.lower() in lemmas and form != lemma}
    table_lemmas = {}
    for word in listed:
        lemma = forms.get(word) or forms.get(word.capitalize())
        if lemma and lemma != word:
            table_lemmas[word] = lemma
        forms[word] = word
    all_keywords = {w for w in keywords | needed | {f.lower() for f in forms} if w.isalpha()}
    folds = {fold_accents(w) for w in all_keywords if len(w) >= 3}
    keywords = {w for w in all_keywords if len(w) >= 5}
    deletes: dict[str, str] = {}
    for word in keywords:
        for i in range(len(word)):
            deletes.setdefault(word[:i] + word[i + 1:], word)
    protected = set()
    for word in _real_words(lang, full):
        if word in all_keywords or not word.isalpha() or len(word) < 3:
            continue
        if fold_accents(word) in folds:
            protected.add(word)
            continue
        if len(word) < 5:
            continue
        if word in deletes or any(word[:i] + word[i + 1:] in keywords for i in range(len(word))) or any(
                word[:i] + word[i + 1] + word[i] + word[i + 2:] in keywords for i in range(len(word) - 1)):
            protected.add(word)
    return {"source": f"spacy-lookups-data {lang}_lemma_lookup, cut to the lemmas the rules use",
            "lemmas": sorted(needed), "listed": sorted(listed), "table_lemmas": dict(sorted(table_lemmas.items())),
            "forms": dict(sorted(forms.items())), "protected": sorted(protected)}


# Words at least this frequent (log probability, spacy-lookups-data lexeme_prob) count as real words.
_REAL_WORD_PROB = -12.5


def _real_words(lang: str, lemma_lookup: dict[str, str]) -> set[str]:
    words = {w.lower() for w in lemma_lookup} | {w.lower() for w in lemma_lookup.values()}
    parts = ("adj", "adp", "adv", "aux", "det", "noun", "num", "other", "pron", "verb")
    for name in ("lemma_index", "lexeme_prob", *(f"lemma_lookup_{p}" for p in parts)):
        try:
            table = _lookups_table(lang, name)
        except FileNotFoundError:
            continue
        if name == "lexeme_prob":
            words |= {w.lower() for w, prob in table.items() if prob >= _REAL_WORD_PROB}
        elif name == "lemma_index":
            words |= {w.lower() for forms in table.values() for w in forms}
        else:
            words |= {w.lower() for w in table} | {str(w).lower() for w in table.values()}
    try:
        stops = __import__(f"spacy.lang.{lang}.stop_words", fromlist=["STOP_WORDS"]).STOP_WORDS
        words |= {w.lower() for w in stops}
    except ImportError:
        pass
    return words


def _lookups_table(lang: str, name: str) -> dict[str, Any]:
    import importlib.resources

    path = importlib.resources.files("spacy_lookups_data") / "data" / f"{lang}_{name}.json.gz"
    if not path.is_file():
        raise FileNotFoundError(str(path))
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def refresh_lemma_tables(models_dir: str | Path | None = None, languages: Iterable[str] = LANGUAGES) -> list[Path]:
    """Write models/<lang>/lemmas.json for each language (into models_dir, else the bundled models)."""
    folders = search_path("models", models_dir)
    written = []
    for lang in languages:
        if lang == "ja":
            continue
        model_patterns = []
        phrase_words: set[str] = set()
        list_words: set[str] = set()
        for _, entry in _entries(folders, lang):
            if "pattern" in entry:
                model_patterns.append(entry["pattern"])
            for phrase in entry.get("phrases", []):
                phrase_words.update(phrase.lower().split())
            list_words.update(w.lower() for w in entry.get("words", []) if " " not in w)
        needed = _pattern_lemmas(model_patterns) | phrase_words
        data = build_lemma_table(lang, needed, _pattern_words(model_patterns) | list_words,
                                 _pattern_lemmas(model_patterns))
        path = folders[0] / lang / "lemmas.json"
        path.write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        written.append(path)
    return written


# --- fact rules -----------------------------------------------------------------------------------


def _kind(message: ParsedMessage, is_buyer: bool, hits: list[Hit], evidence: dict[str, Evidence]) -> str:
    """The message kind from the KIND hits."""
    if is_buyer:
        evidence["kind"] = Evidence("buyer-relay-address", message.sender)
        return "buyer_message"
    found: dict[str, Hit] = {}
    for hit in hits:
        if hit.hypothetical:
            continue
        value = hit.value
        if hit.negated:
            if value != "claim_granted":
                continue
            value = "claim_denied"  # "we have not granted the claim"
        found.setdefault(value, hit)
    for kind in KIND_PRIORITY:
        if kind in found:
            hit = found[kind]
            rule = hit.rule + ("(negated)" if hit.negated else "")
            evidence["kind"] = Evidence(rule, hit.text)
            return kind
    if message.notification_type and "A_Z_CLAIM" in message.notification_type.upper():
        evidence["kind"] = Evidence("x-space-notification-type", message.notification_type)
        return "claim_filed"
    evidence["kind"] = Evidence("no-claim-rule", "")
    return "other"


def _join_wrapped_ids(text: str) -> str:
    def join(match: re.Match[str]) -> str:
        before = match.string[match.start() - 1] if match.start() else " "
        joined = match.group(1) + match.group(2)
        if before.isalnum() or before in "-_" or not ORDER_ID.fullmatch(joined):
            return match.group(0)
        return joined

    return WRAPPED_ORDER_ID.sub(join, text) if "\n" in text and _may_hold_wrapped_id(text) else text


_DIGIT_LINE_START = re.compile(r"\n[ \t>]*[\d-]")


def _may_hold_wrapped_id(text: str) -> bool:
    """Whether a line ending in a digit or hyphen is followed by one starting with one: what every wrapped ID
    needs. (A search that starts at a newline is fast; WRAPPED_ORDER_ID's own search tries every character.)"""
    for line_start in _DIGIT_LINE_START.finditer(text):
        i = line_start.start() - 1
        if i >= 0 and text[i] == "\r":
            i -= 1
        while i >= 0 and text[i] in " \t":
            i -= 1
        if i >= 0 and (text[i].isdecimal() or text[i] == "-"):
            return True
    return False


def _order_ids(text: str) -> list[str]:
    """Order IDs in the text, in order (the scan has no look-behind, so it is checked here: much faster)."""
    found = []
    for tail in _ORDER_ID_TAIL.finditer(text):
        start = tail.start() - 3
        head = text[start:tail.start()] if start >= 0 else ""
        if (head == "D01" or (len(head) == 3 and head.isdecimal())) and (
                not start or not (text[start - 1].isalnum() or text[start - 1] in "-_")):
            found.append(text[start:tail.end()])
    return found


def _order_id(subject: str, text: str, evidence: dict[str, Evidence]) -> str | None:
    in_subject = _order_ids(_join_wrapped_ids(subject))
    if in_subject:
        evidence["order_id"] = Evidence("order-id:subject", in_subject[0])
        return in_subject[0]
    found = _order_ids(text)
    if not found:
        return None
    # the order a message is about is the one it names most, and first when tied
    best = max(dict.fromkeys(found), key=lambda oid: (found.count(oid), -found.index(oid)))
    evidence["order_id"] = Evidence("order-id:body", best)
    return best


def _first(hits: list[Hit], order: tuple[str, ...]) -> Hit | None:
    """The first not negated hit with the value that comes first in `order`."""
    first: dict[str, Hit] = {}
    for hit in hits:
        if not hit.negated and hit.value not in first:
            first[hit.value] = hit
    for value in order:
        if value in first:
            return first[value]
    return None


def _reason_hit(hits: dict[str, list[Hit]], text: str) -> Hit | None:
    """The complaint Amazon's reason field states: on the reason label's line, or the line below (tables)."""
    cues = hits.get("REASON_CUE")
    if not cues:
        return None
    # in text order, as the hits came (COMPLAINT and REASON interleaved)
    stated = sorted((h for h in (*hits.get("COMPLAINT", ()), *hits.get("REASON", ())) if not h.negated),
                    key=lambda h: (h.start, -h.end, h.rule))
    for cue in cues:
        line_end = text.find("\n", cue.end)
        line_end = len(text) if line_end < 0 else line_end
        next_end = text.find("\n", line_end + 1)
        next_end = len(text) if next_end < 0 else next_end
        for limit in (line_end, next_end):
            found = [h for h in stated if cue.end <= h.start < limit]
            if found:
                return found[0]
    return None


def _complaint(hits: dict[str, list[Hit]], kind: str, text: str, evidence: dict[str, Evidence]) -> str | None:
    """The complaint type: Amazon's reason field, else the buyer's words by COMPLAINT_PRIORITY; damage split
    by when it showed (USE_PERIOD, ARRIVAL)."""
    if kind == "other":
        return None
    complaints = [h for h in hits.get("COMPLAINT", ()) if not h.negated]
    reason = _reason_hit(hits, text)
    hit = reason
    if reason is not None and reason.value == "not_as_described":
        size = next((h for h in complaints if h.value == "size"), None)
        hit = size or reason  # Amazon files wrong sizes under "not as described"; the buyer's words say which
    if hit is None:
        hit = _first(complaints, COMPLAINT_PRIORITY)
    if hit is None:
        return None
    value = hit.value
    rule = hit.rule if hit is not reason else f"reason:{hit.rule}"
    if value == "damaged":
        use = _first(hits.get("USE_PERIOD", []), ("use",))
        arrival = _first(hits.get("ARRIVAL", []), ("arrival",))
        if use and not arrival:
            evidence["complaint_type"] = Evidence(f"{rule}+{use.rule}", f"{hit.text} … {use.text}")
            return "damaged_after_use"
        value = "damaged_on_arrival"
        if arrival:
            evidence["complaint_type"] = Evidence(f"{rule}+{arrival.rule}", f"{hit.text} … {arrival.text}")
            return value
    evidence["complaint_type"] = Evidence(rule, hit.text)
    return value


def _intent(hits: list[Hit], complaint: str | None, evidence: dict[str, Evidence]) -> str:
    # "it arrived" settles only a parcel that did not come
    order = INTENT_PRIORITY if complaint in (None, "not_received") else _INTENT_PRIORITY_NOT_ARRIVED
    hit = _first(hits, order)
    if hit:
        evidence["buyer_intent"] = Evidence(hit.rule, hit.text)
        return "resolved" if hit.value == "arrived" else hit.value
    evidence["buyer_intent"] = Evidence("no-intent-rule", "")
    return "other"


def _delivered(hits: list[Hit], evidence: dict[str, Evidence]) -> bool:
    hit = _first(hits, ("delivered",))
    if hit:
        evidence["delivered"] = Evidence(hit.rule, hit.text)
    return hit is not None


def _deadline_hours(hits: list[Hit], text: str, evidence: dict[str, Evidence]) -> int | None:
    for hit in hits:
        if hit.negated:
            continue
        if inside_quotes(text, hit.start):
            continue  # the buyer's quoted comment ("promised within 2 days") is not Amazon's deadline
        number = _DIGITS.search(hit.text.translate(_FULLWIDTH_DIGITS))
        if number is None:
            lowered = hit.text.lower()
            amount = next((n for w, n in _NUMBER_WORDS.items() if re.search(rf"\b{w}\b", lowered)), None)
            if amount is None:
                continue
        else:
            amount = int(number.group(0))
        hours = amount * (24 if hit.value == "days" else 1)
        evidence["deadline_hours"] = Evidence(hit.rule, hit.text)
        return hours
    return None


def inside_quotes(text: str, position: int) -> bool:
    """Whether `position` lies inside quotation marks opened earlier on its line ("…", “…”, „…“, «…»)."""
    quoted = False
    for char in _QUOTE_MARK.findall(text, text.rfind("\n", 0, position) + 1, position):  # (only the marks)
        if char == '"':
            quoted = not quoted
        elif char in "„«":
            quoted = True
        elif char in "”»":
            quoted = False
        elif char == "“":  # English opens with it, German closes with it
            quoted = not quoted
    return quoted


_DIGITS = re.compile(r"\d+")
_QUOTE_MARK = re.compile('["„«”»“]')
_SPACE = re.compile(r"\s")
_S10 = re.compile(r"[A-Z]{2}\d{9}[A-Z]{2}")
_CENTS = re.compile(r"[.,]\d{2}$")
_SEPARATORS = re.compile(r"[.,]")
_AMAZON_NAME_SUFFIX = re.compile(r"\s+-\s+Amazon")
_FULLWIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
_NUMBER_WORDS = {"two": 2, "three": 3, "seven": 7, "zwei": 2, "drei": 3, "sieben": 7, "deux": 2, "trois": 3,
                 "sept": 7, "due": 2, "tre": 3, "sette": 7, "dos": 2, "tres": 3, "siete": 7}


def _tracking(hits: dict[str, list[Hit]], evidence: dict[str, Evidence]) -> tuple[str | None, str | None]:
    """The tracking number with a valid format and check digit, and its carrier (format or a named carrier)."""
    numbers = hits.get("TRACKING")
    if not numbers:
        return None, None
    numbers = sorted(numbers, key=lambda h: (h.start, _rule_line(h.rule)))
    has_cue = "TRACKING_CUE" in hits
    named = hits.get("CARRIER", [])
    for hit in numbers:
        number = _SPACE.sub("", hit.text).upper()
        carrier = tracking_carrier(number, hit.value)
        if carrier is None:
            continue
        if hit.value in ("fedex", "dhl") and not (has_cue or named):
            continue  # bare 10-15 digit numbers are phone or invoice numbers unless the text speaks of tracking
        nearest = min(named, key=lambda h: abs(h.start - hit.start), default=None)
        if nearest is not None and (hit.value in ("fedex", "dhl", "usps") or carrier == "unknown"):
            carrier = nearest.value
            evidence["carrier"] = Evidence(nearest.rule, nearest.text)
        elif carrier == "unknown":
            carrier = None
        else:
            evidence["carrier"] = Evidence(f"tracking-format:{hit.value}", number)
        evidence["tracking_number"] = Evidence(hit.rule, hit.text)
        return number, carrier
    return None, None


def _rule_line(rule: str) -> int:
    tail = rule.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


def tracking_carrier(number: str, fmt: str) -> str | None:
    """The carrier a tracking number's format implies (None when its check digit is wrong)."""
    if fmt == "ups":
        return "UPS" if ups_check_ok(number) else None
    if fmt == "s10":
        if not s10_check_ok(number):
            return None
        return {"CN": "China Post", "GB": "Royal Mail"}.get(number[-2:], "unknown")
    return {"usps": "USPS", "fedex": "FedEx", "dhl": "DHL", "yunexpress": "YunExpress",
            "amazon": "Amazon Logistics", "yanwen": "Yanwen", "4px": "4PX"}.get(fmt, "unknown")


def ups_check_ok(number: str) -> bool:
    """UPS 1Z numbers: mod-10 check over the 15 characters after '1Z'."""
    body = number[2:]
    if len(body) != 16 or not body.isalnum():
        return False
    digits = [int(c) if c.isdigit() else (ord(c) - 63) % 10 for c in body[:15]]
    total = sum(d if i % 2 == 0 else 2 * d for i, d in enumerate(digits))
    return (10 - total % 10) % 10 == int(body[15]) if body[15].isdigit() else False


def s10_check_ok(number: str) -> bool:
    """UPU S10 numbers (AA123456785CN): mod-11 check over the 8 serial digits."""
    if not _S10.fullmatch(number):
        return False
    serial, check = number[2:10], int(number[10])
    total = sum(int(d) * w for d, w in zip(serial, (8, 6, 4, 2, 3, 5, 9, 7), strict=True))
    expected = 11 - total % 11
    expected = 0 if expected == 10 else 5 if expected == 11 else expected
    return expected == check


def _amount(body: str, hits: list[Hit], offset: int, marketplace: str | None,
            evidence: dict[str, Evidence]) -> tuple[str | None, str | None]:
    """The claim amount: the money right after an amount cue ("Claim amount", "claim of"), else the first."""
    matches = _money(body)
    if not matches:
        return None, None
    match = matches[0]
    rule = "money"
    for cue in hits:  # AMOUNT_CUE
        after = [m for m in matches if 0 <= m.start() + offset - cue.end <= 80]
        if after:
            match, rule = after[0], f"money+{cue.rule}"
            break
    symbol = match.group("pre") or match.group("post")
    number = match.group("num") or match.group("num2")
    currency = CURRENCY_SYMBOLS.get(symbol, symbol)
    if symbol == "$" and marketplace == "amazon.ca":
        currency = "CAD"
    value = _decimal(number, currency)
    if value is None:
        return None, None
    evidence["amount"] = Evidence(rule, match.group(0).strip())
    evidence["currency"] = Evidence(f"currency:{symbol}", match.group(0).strip())
    return value, currency


_CURRENCY_MARK = re.compile(r"US\$|CA\$|C\$|EUR|GBP|USD|JPY|[$£€¥￥円]")
_CURRENCY_MARKS = literal_anchors(_CURRENCY_MARK.pattern, True) or {}


def _money(text: str) -> list[re.Match[str]]:
    """MONEY matches, looked for only around currency marks (scanning every digit is slow)."""
    found: list[re.Match[str]] = []
    seen = -1
    marks = matches_near_anchors(_CURRENCY_MARK, text, text, _CURRENCY_MARKS)
    for mark in marks if marks is not None else _CURRENCY_MARK.finditer(text):
        start = max(0, mark.start() - 24, seen)
        for match in MONEY.finditer(text, start, min(len(text), mark.end() + 24)):
            if match.start() >= seen and (match.start() <= mark.start() < match.end()):
                found.append(match)
                seen = match.end()
    return found


def _decimal(number: str, currency: str) -> str | None:
    number = number.replace(" ", "")
    if _CENTS.search(number):
        whole, cents = number[:-3], number[-2:]
        whole = _SEPARATORS.sub("", whole)
        number = f"{whole}.{cents}"
    else:
        number = _SEPARATORS.sub("", number)
    try:
        value = Decimal(number)
    except InvalidOperation:
        return None
    return str(value.quantize(Decimal("1")) if currency == "JPY" else value.quantize(Decimal("0.01")))


def _buyer_name(message: ParsedMessage) -> str | None:
    name = _AMAZON_NAME_SUFFIX.split(message.sender_name or "", maxsplit=1)[0].strip(" \"'")
    if not name or "@" in name or len(name) > 80:
        return None
    return name


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Maintain the rule models.")
    parser.add_argument("--refresh-lemmas", action="store_true",
                        help="rewrite models/<lang>/lemmas.json from spacy-lookups-data for the current rules")
    parser.add_argument("--models-dir", help="a models folder to write into (default: the bundled one)")
    parser.add_argument("--lang", action="append", help="only these languages (repeatable)")
    args = parser.parse_args()
    if args.refresh_lemmas:
        for written in refresh_lemma_tables(args.models_dir, tuple(args.lang) if args.lang else LANGUAGES):
            print(f"wrote {written}")
