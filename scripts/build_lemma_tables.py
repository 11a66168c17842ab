#!/usr/bin/env python3
"""Writes models/<lang>/lemmas.json: spaCy's lemma lookup table cut down to the lemmas the rules use.

Run it after adding a LEMMA or a phrase word to a rule (a test fails until you do):

    python scripts/build_lemma_tables.py                 # every language with a lookup lemmatizer
    python scripts/build_lemma_tables.py --lang de       # one language
    python scripts/build_lemma_tables.py --models-dir my-models

The table comes from spaCy's own lookups (spacy-lookups-data). It also lists the real words of the language that
are one typo away from a rule word ("through" is not "though"), so the lemmatizer never mends them.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.resources
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.resources import search_path  # noqa: E402
from pipeline.understanding.language import fold_accents, load_languages  # noqa: E402
from pipeline.understanding.rules import rule_lemmas  # noqa: E402

# Words at least this frequent (log probability, spacy-lookups-data lexeme_prob) count as real words.
REAL_WORD_PROB = -12.5


def build_lemma_table(lang: str, needed: set[str], keywords: set[str], listed: set[str]) -> dict[str, Any]:
    """Cut spaCy's lemma table down to the needed lemmas; list the protected real words.

    `needed` holds the LEMMA values of the patterns and the words of the phrases; a phrase word brings its own
    lemma's forms too, so "hat sich erledigt" also matches "erledigte". A word the patterns list as a LEMMA
    (`listed`) is its own lemma ("reclamo" the noun, not the verb "reclamare"); what the table would have made
    of it is kept in table_lemmas so that patterns can be widened (pipeline.understanding.lemmas.widen_lemmas).
    """
    full = {
        form: lemma[0] if isinstance(lemma, list) else lemma
        for form, lemma in lookups_table(lang, "lemma_lookup").items()
        if lemma
    }
    lemmas = set(needed)
    for word in needed | listed:
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
    long_keywords = {w for w in all_keywords if len(w) >= 5}
    deletes: dict[str, str] = {}
    for word in long_keywords:
        for i in range(len(word)):
            deletes.setdefault(word[:i] + word[i + 1 :], word)
    protected = set()
    for word in real_words(lang, full):
        if word in all_keywords or not word.isalpha() or len(word) < 3:
            continue
        if fold_accents(word) in folds:
            protected.add(word)
            continue
        if len(word) < 5:
            continue
        if (
            word in deletes
            or any(word[:i] + word[i + 1 :] in long_keywords for i in range(len(word)))
            or any(word[:i] + word[i + 1] + word[i] + word[i + 2 :] in long_keywords for i in range(len(word) - 1))
        ):
            protected.add(word)
    return {
        "source": f"spacy-lookups-data {lang}_lemma_lookup, cut to the lemmas the rules use",
        "lemmas": sorted(needed),
        "listed": sorted(listed),
        "table_lemmas": dict(sorted(table_lemmas.items())),
        "forms": dict(sorted(forms.items())),
        "protected": sorted(protected),
    }


def real_words(lang: str, lemma_lookup: dict[str, str]) -> set[str]:
    """The language's real words: lemma tables, frequent words, stop words."""
    words = {w.lower() for w in lemma_lookup} | {w.lower() for w in lemma_lookup.values()}
    parts = ("adj", "adp", "adv", "aux", "det", "noun", "num", "other", "pron", "verb")
    for name in ("lemma_index", "lexeme_prob", *(f"lemma_lookup_{p}" for p in parts)):
        try:
            table = lookups_table(lang, name)
        except FileNotFoundError:
            continue
        if name == "lexeme_prob":
            words |= {w.lower() for w, prob in table.items() if prob >= REAL_WORD_PROB}
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


def lookups_table(lang: str, name: str) -> dict[str, Any]:
    """One table of spacy-lookups-data with its original strings (spaCy's Table keeps only their hashes)."""
    path = importlib.resources.files("spacy_lookups_data") / "data" / f"{lang}_{name}.json.gz"
    if not path.is_file():
        raise FileNotFoundError(str(path))
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as handle:
        return dict(json.load(handle))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", help="a models folder to write into (default: the bundled one)")
    parser.add_argument("--lang", action="append", help="only these languages (repeatable)")
    args = parser.parse_args()
    folders = search_path("models", args.models_dir)
    languages = load_languages(folders)
    for lang, data in languages.items():
        if (args.lang and lang not in args.lang) or data.settings["lemmatizer"] != "lookup":
            continue
        (_, needed, keywords), (_, listed, _) = rule_lemmas(folders, lang)
        scope = {
            w.lower()
            for key in ("negation", "negation_after", "contrast", "hypothetical")
            for w in data.scope.get(key, [])
            if " " not in w
        }
        table = build_lemma_table(lang, needed, keywords | scope, listed)
        path = folders[0] / lang / "lemmas.json"
        path.write_text(json.dumps(table, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
