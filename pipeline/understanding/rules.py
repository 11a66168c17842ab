"""Rule models: each language's rules run by spaCy's Matcher and PhraseMatcher, and by regular expressions.

The rules come from models/xx and models/<lang>/*.jsonl; they run over a blank spaCy pipeline with lookup lemmas.

A rule line is one JSON object with a stable `id` (evidence names the rule by it), a `label` (what kind of fact it
finds: KIND, COMPLAINT, INTENT, DELIVERED, DEADLINE, …), the `value` it stands for, a `priority` (among hits of
one label, the higher wins) and one of `pattern` (a spaCy Matcher pattern), `phrases` (matched on their lemmas
by spaCy's PhraseMatcher) or `regex` (on the text). models/en/claims.jsonl documents the format at its top.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import spacy
from spacy.attrs import IDX, IS_SPACE, LEMMA, LENGTH, LOWER, NORM, ORTH
from spacy.language import Language
from spacy.matcher import Matcher, PhraseMatcher
from spacy.strings import get_string_id
from spacy.tokens import Doc

from pipeline.understanding import lemmas as _lemmas  # noqa: F401  (registers the pipeline_lemmatizer factory)
from pipeline.understanding.language import LanguageData
from pipeline.understanding.lemmas import LookupLemmatizer, lemma_table, widen_lemmas
from pipeline.understanding.scope import Scope
from pipeline.understanding.text import A_TO_Z, A_TO_Z_WORDS

# labels whose matches are checked for negation / condition (the others are names, numbers and cues)
PREDICATE_LABELS = frozenset({"KIND", "COMPLAINT", "REASON", "INTENT", "DELIVERED"})
SCOPED_LABELS = PREDICATE_LABELS | {"USE_PERIOD", "ARRIVAL", "DEADLINE"}
# the token attributes a pattern's required words are looked up by before the Matcher runs (see _needed_words)
_WORD_COLUMNS = {"ORTH": 0, "LOWER": 1, "NORM": 2, "LEMMA": 3}
_WORD_ATTRS = [ORTH, LOWER, NORM, LEMMA]
MATCHER_CACHE = 256  # Matchers of rule subsets kept per language
# labels that only a tracking number gives a use: their regexes run only where one was found
TRACKING_COMPANIONS = frozenset({"CARRIER", "TRACKING_CUE"})
_RULE_KEYS = {"id", "label", "value", "priority", "pattern", "phrases", "regex", "case", "scope", "note"}


@dataclass(frozen=True)
class Rule:
    """One line of a rules file."""

    id: str
    label: str
    value: str
    priority: int
    pattern: list[dict[str, Any]] | None = None
    phrases: tuple[str, ...] = ()
    regex: str | None = None
    case: bool = False
    token_scope: bool = False  # a regex tried only where a long token with a digit starts (tracking numbers)


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
    priority: int = 0


def load_rules(folders: list[Path], lang: str) -> list[Rule]:
    """Every rule of models/xx then models/<lang>; a user's file replaces the bundled one of the same name."""
    chosen: dict[str, Path] = {}
    for sub in ("xx", lang):
        for folder in reversed(folders):  # bundled first, override last so it replaces by file name
            for path in sorted((folder / sub).glob("*.jsonl")):
                chosen[f"{sub}/{path.name}"] = path
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for path in chosen.values():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("//"):
                continue
            where = f"{path}:{number}"
            try:
                rule = _rule(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{where}: bad rule line: {exc}") from None
            if rule.id in seen:
                raise ValueError(f"{where}: rule id {rule.id!r} is used twice (also at {seen[rule.id]})")
            seen[rule.id] = where
            rules.append(rule)
    return rules


def _rule(entry: dict[str, Any]) -> Rule:
    unknown = set(entry) - _RULE_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    kinds = [key for key in ("pattern", "phrases", "regex") if key in entry]
    if len(kinds) != 1:
        raise ValueError("a rule has exactly one of pattern, phrases, regex")
    rule_id, label = str(entry["id"]), str(entry["label"])
    if not rule_id or not label:
        raise ValueError("id and label must not be empty")
    if "regex" in entry:
        re.compile(entry["regex"])
    return Rule(
        id=rule_id,
        label=label,
        value=str(entry.get("value", "")),
        priority=int(entry.get("priority", 0)),
        pattern=_canonical(entry["pattern"]) if "pattern" in entry else None,
        phrases=tuple(_canonical(entry.get("phrases", []))),
        regex=entry.get("regex"),
        case=bool(entry.get("case")),
        token_scope=entry.get("scope") == "token",
    )


def _needed_words(pattern: list[dict[str, Any]]) -> tuple[tuple[int, frozenset[int]], ...]:
    """For each token of a pattern that must be there (no OP, or "+"), matched on a word attribute by one value
    or an IN list: the column of that attribute in _WORD_ATTRS and the words' hashes. A doc lacking all the
    words of one of these cannot match the pattern."""
    needs = []
    for token in pattern:
        if token.get("OP") not in (None, "+"):
            continue
        for name, column in _WORD_COLUMNS.items():
            wanted = token.get(name)
            if isinstance(wanted, str):
                needs.append((column, frozenset({get_string_id(wanted)})))
            elif isinstance(wanted, dict) and set(wanted) == {"IN"}:
                needs.append((column, frozenset(get_string_id(str(word)) for word in wanted["IN"])))
    return tuple(needs)


def _canonical(value: Any) -> Any:
    """A rule's words written as the text will be: "A-to-z" with the non-breaking hyphens of A_TO_Z."""
    if isinstance(value, str):
        return A_TO_Z_WORDS.sub(A_TO_Z, value) if "to" in value.lower() else value
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: (v if k == "REGEX" else _canonical(v)) for k, v in value.items()}
    return value


class RuleModel:
    """One language's blank spaCy pipeline, its lemmas, and its rules ready to run."""

    def __init__(self, language: LanguageData, folders: list[Path]) -> None:
        self.lang = language.lang
        self.language = language
        settings = language.settings
        self.nlp = spacy.blank(self.lang)
        rules = load_rules(folders, self.lang)
        self.rules = {rule.id: rule for rule in rules}
        lowercase = bool(settings["lowercase"])
        patterns = [
            (rule, _lowercase(rule.pattern) if lowercase else rule.pattern)
            for rule in rules
            if rule.pattern is not None
        ]
        phrases = [rule for rule in rules if rule.phrases]
        self.regexes = [
            (rule, re.compile(rule.regex, 0 if rule.case else re.IGNORECASE))
            for rule in rules
            if rule.regex is not None
        ]
        if settings["lemmatizer"] == "lookup":
            needed = _pattern_values(p for _, p in patterns) | {
                w for r in phrases for p in r.phrases for w in p.lower().split()
            }
            listed = _pattern_values((p for _, p in patterns), ("LEMMA",))
            keywords = _pattern_values((p for _, p in patterns), ("NORM", "LOWER", "LEMMA")) | needed
            keywords |= {
                w.lower()
                for key in ("negation", "negation_after", "contrast", "hypothetical")
                for w in language.scope.get(key, [])
                if " " not in w
            }
            forms, table_lemmas, protected, table = lemma_table(self.lang, needed, listed, folders)
            if table is None:
                keywords |= {f.lower() for f in forms}
            lemmatizer: LookupLemmatizer = self.nlp.add_pipe("pipeline_lemmatizer")  # type: ignore[assignment]
            lemmatizer.configure(forms, keywords, protected, bool(settings["compound_heads"]), table)
            patterns = [(rule, widen_lemmas(pattern, table_lemmas)) for rule, pattern in patterns]
        self.patterns = patterns
        checker = Matcher(self.nlp.vocab)  # every pattern is checked now, not when a message first needs it
        for rule, pattern in patterns:
            try:
                checker.add(rule.id, [pattern])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"rule {rule.id}: bad pattern: {str(exc).splitlines()[0]}") from None
        self.phrases = [(rule, list(self.nlp.pipe(rule.phrases))) for rule in phrases]
        self._narrow: dict[frozenset[str] | None, PhraseMatcher] = {}
        self._needs = {rule.id: _needed_words(pattern) for rule, pattern in patterns}
        self._pattern_of = {rule.id: pattern for rule, pattern in patterns}
        self._label_of = {rule.id: rule.label for rule, _ in patterns}
        self._matcher_cache: OrderedDict[frozenset[str], Matcher] = OrderedDict()
        self.scope = Scope(self.nlp.vocab, language.scope)

    def doc(self, text: str) -> Doc:
        """The text tokenized and lemmatized."""
        return self.nlp(text)

    def hits(self, doc: Doc, subject_end: int = 0, labels: frozenset[str] | None = None) -> list[Hit]:
        """Every match of the rules (of the given labels only, when given) in the doc, negation marked.
        Characters before subject_end are the subject."""
        if labels is not None and not labels:
            return []
        text = doc.text
        strings = self.nlp.vocab.strings
        matcher = self._matcher_for(doc, labels)
        phrase_matcher = self._phrase_matcher(labels)
        spans = [(strings[m], s, e) for m, s, e in matcher(doc)] if matcher is not None else []
        if len(phrase_matcher):
            spans += [(strings[m], s, e) for m, s, e in phrase_matcher(doc)]
        starts = doc.to_array(IDX).tolist()
        if self.regexes:
            spans += self._regex_spans(doc, text, starts, labels)
        found: list[Hit] = []
        blocks: list[tuple[str, int, int]] = []
        attributes = None
        for start, after_end, rule_id in sorted({(start, -end, rule) for rule, start, end in spans}):
            end = -after_end
            rule = self.rules[rule_id]
            a = starts[start]
            last = doc[end - 1]
            b = last.idx + len(last.text)
            if rule.label == "BLOCK":
                blocks.append((rule.value, a, b))
                continue
            negated = hypothetical = False
            if rule.label in SCOPED_LABELS:
                if attributes is None:
                    attributes = doc.to_array([ORTH, NORM, LEMMA, IS_SPACE]).tolist()
                negated, hypothetical = self.scope.of(attributes, start, end, rule.label in PREDICATE_LABELS)
            found.append(
                Hit(
                    rule.label,
                    rule.value,
                    rule.id,
                    text[a:b],
                    a,
                    b,
                    negated,
                    hypothetical,
                    a < subject_end,
                    rule.priority,
                )
            )
        if blocks:  # a BLOCK's value is a label ("INTENT") or a label and value ("COMPLAINT:not_as_described")
            found = [
                h
                for h in found
                if not any(
                    target in (h.label, f"{h.label}:{h.value}") and a < h.end and h.start < b for target, a, b in blocks
                )
            ]
        return found

    def _matcher_for(self, doc: Doc, labels: frozenset[str] | None) -> Matcher | None:
        """A Matcher of only the rules (of these labels) that can match in this doc: those whose every required
        token has one of its words in the doc. spaCy's Matcher tries each pattern's word lists at every token,
        in Python for an IN list, so a doc runs only the patterns it could match (built once per set, kept in
        a small cache: a mailbox's messages fall in a few dozen sets)."""
        present = doc.to_array(_WORD_ATTRS)
        words = [set(present[:, column].tolist()) for column in range(len(_WORD_ATTRS))] if len(doc) else []
        possible = frozenset(
            rule_id
            for rule_id, needs in self._needs.items()
            if (labels is None or self._label_of[rule_id] in labels)
            and all(words and not words[column].isdisjoint(values) for column, values in needs)
        )
        if not possible:
            return None
        matcher = self._matcher_cache.get(possible)
        if matcher is None:
            matcher = Matcher(self.nlp.vocab)
            for rule_id in sorted(possible):
                matcher.add(rule_id, [self._pattern_of[rule_id]])
            self._matcher_cache[possible] = matcher
            if len(self._matcher_cache) > MATCHER_CACHE:
                self._matcher_cache.popitem(last=False)
        else:
            self._matcher_cache.move_to_end(possible)
        return matcher

    def _phrase_matcher(self, labels: frozenset[str] | None) -> PhraseMatcher:
        """The PhraseMatcher of the phrase rules of some labels (all when None), built once."""
        found = self._narrow.get(labels)
        if found is None:
            found = PhraseMatcher(self.nlp.vocab, attr="LEMMA")
            for rule, docs in self.phrases:
                if labels is None or rule.label in labels:
                    found.add(rule.id, docs)
            self._narrow[labels] = found
        return found

    def _regex_spans(
        self, doc: Doc, text: str, starts: list[int], labels: frozenset[str] | None
    ) -> list[tuple[str, int, int]]:
        """Token spans of the regex rules. A token-scope rule (tracking numbers) is tried only where a token of
        10 or more characters with a digit starts; carrier names and tracking cues only beside such a match."""
        lengths = doc.to_array(LENGTH).tolist()
        candidates = [
            at
            for at, length in zip(starts, lengths, strict=True)
            if length >= 10 and any(c.isdigit() for c in text[at : at + length])
        ]
        spans: list[tuple[str, int, int]] = []
        tracking = False
        regexes = [(r, x) for r, x in self.regexes if labels is None or r.label in labels]
        for rule, regex in regexes:
            if rule.token_scope:
                for at in candidates:
                    match = regex.match(text, at)
                    if match:
                        tracking = True
                        spans.append((rule.id, *_token_span(starts, match)))
        for rule, regex in regexes:
            if rule.token_scope or (rule.label in TRACKING_COMPANIONS and not tracking):
                continue
            spans.extend((rule.id, *_token_span(starts, match)) for match in regex.finditer(text))
        return spans


def _token_span(starts: list[int], match: re.Match[str]) -> tuple[int, int]:
    """The tokens (start, end) a regex match covers, from the tokens' character offsets."""
    first = bisect.bisect_right(starts, match.start()) - 1
    last = bisect.bisect_left(starts, match.end())
    return max(first, 0), max(last, first + 1)


def _lowercase(pattern: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """LOWER, NORM and LEMMA values in lower case, as our tokens hold them."""
    out = []
    for spec in pattern or []:
        spec = dict(spec)
        for attr in ("LOWER", "NORM", "LEMMA"):
            if isinstance(spec.get(attr), str):
                spec[attr] = spec[attr].lower()
            elif isinstance(spec.get(attr), dict):
                spec[attr] = {
                    op: [v.lower() for v in values] if op in ("IN", "NOT_IN") else values
                    for op, values in spec[attr].items()
                }
        out.append(spec)
    return out


def _pattern_values(patterns: Iterable[list[dict[str, Any]]], attrs: tuple[str, ...] = ("LEMMA",)) -> set[str]:
    """The words patterns test the given attributes against (IN lists included), lower case."""
    found: set[str] = set()
    for pattern in patterns:
        for spec in pattern:
            for attr in attrs:
                value = spec.get(attr)
                if isinstance(value, str):
                    found.add(value.lower())
                elif isinstance(value, dict):
                    found.update(v.lower() for v in value.get("IN", []))
    return found


def rule_lemmas(folders: list[Path], lang: str) -> Iterator[tuple[str, set[str], set[str]]]:
    """(kind, words) the lemma table must cover: ("needed", …) and ("listed", …), for scripts/build_lemma_tables.py."""
    rules = load_rules(folders, lang)
    patterns = [_lowercase(r.pattern) for r in rules if r.pattern is not None]
    phrase_words = {w for r in rules for p in r.phrases for w in p.lower().split()}
    yield "needed", _pattern_values(patterns) | phrase_words, _pattern_values(patterns, ("NORM", "LOWER", "LEMMA"))
    yield "listed", _pattern_values(patterns), set()


def blank(lang: str) -> Language:
    """spacy.blank(lang): a tokenizer and the language's defaults, no statistical model."""
    return spacy.blank(lang)
