#!/usr/bin/env python3
"""Benchmarks the understanding stage against spaCy's tokenizer alone, on the same texts, in one run.

Texts: every message of the labelled corpus (tests/data/corpus/), repeated until each measurement has run for at
least --seconds. For each message the text measured is exactly what the understanding stage reads (subject and
body, or the buyer's own new words), grouped by the language it is read in.

    (a) tokenizer only:  nlp.pipe(texts) of spacy.blank(lang), per language
    (b) understanding:   Understander.understand(message) on pre-parsed messages
    (c) with MIME:       parse_message(raw bytes) + understand

Also prints each language's model load time (a fresh Understander, first use of that language).

    python scripts/bench_understand.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import spacy  # noqa: E402

from pipeline.message import parse_message  # noqa: E402
from pipeline.understand import LANGUAGES, Understander  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus"
GOAL_RATIO = 0.5
GOAL_LOAD_SECONDS = 1.0


def corpus_messages() -> list[bytes]:
    """Raw bytes of every .eml in the corpus."""
    return [path.read_bytes() for path in sorted(CORPUS.glob("*/*.eml"))]


def rate(work: Callable[[], int], seconds: float) -> tuple[float, int, float]:
    """(messages per second, messages done, seconds taken): repeat work() until `seconds` have passed."""
    work()  # warm-up: caches, lazily built models
    done = 0
    start = time.perf_counter()
    while True:
        done += work()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed, done, elapsed


def load_times() -> dict[str, float]:
    """Seconds to build each language's rule model in a fresh Understander (spaCy itself already imported)."""
    understander = Understander()
    times = {}
    for lang in LANGUAGES:
        start = time.perf_counter()
        understander.model(lang)
        times[lang] = time.perf_counter() - start
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum duration of each measurement")
    parser.add_argument("--per-language", action="store_true", help="also measure (a) and (b) per language")
    args = parser.parse_args()

    loads = load_times()  # before anything else builds a model or imports a language
    raws = corpus_messages()
    messages = [parse_message(raw) for raw in raws]
    understander = Understander()
    texts: dict[str, list[str]] = {}
    for message in messages:
        reading = understander.read(message)
        texts.setdefault(reading.language, []).append(reading.text)
    blanks = {}
    blank_loads = {}
    for lang in texts:
        start = time.perf_counter()
        blanks[lang] = spacy.blank(lang)
        blank_loads[lang] = time.perf_counter() - start

    def tokenize_all() -> int:
        for lang, group in texts.items():
            for _ in blanks[lang].pipe(group):
                pass
        return len(messages)

    def understand_all() -> int:
        for message in messages:
            understander.understand(message)
        return len(messages)

    def parse_and_understand_all() -> int:
        for raw in raws:
            understander.understand(parse_message(raw))
        return len(messages)

    tokenizer_rate, n_a, s_a = rate(tokenize_all, args.seconds)
    understand_rate, n_b, s_b = rate(understand_all, args.seconds)
    full_rate, n_c, s_c = rate(parse_and_understand_all, args.seconds)
    ratio = understand_rate / tokenizer_rate

    print(f"corpus: {len(messages)} messages " + ", ".join(f"{lang} {len(t)}" for lang, t in sorted(texts.items())))
    print(f"(a) spaCy tokenizer only (spacy.blank(lang).pipe): {tokenizer_rate:9.0f} msg/s  ({n_a} in {s_a:.1f} s)")
    print(f"(b) understanding stage (Understander.understand): {understand_rate:9.0f} msg/s  ({n_b} in {s_b:.1f} s)")
    print(f"(c) MIME parsing + understanding:                 {full_rate:9.0f} msg/s  ({n_c} in {s_c:.1f} s)")
    print(f"ratio (b)/(a): {ratio:.0%}  (goal >= {GOAL_RATIO:.0%}: {'met' if ratio >= GOAL_RATIO else 'NOT met'})")
    if args.per_language:
        print("per language: tokenizer only vs understanding (msg/s, ratio)")
        for lang, group in sorted(texts.items()):
            chosen = [m for m in messages if understander.read(m).language == lang]

            def tokenize_one(lang: str = lang, group: list[str] = group) -> int:
                for _ in blanks[lang].pipe(group):
                    pass
                return len(group)

            def understand_one(chosen: list = chosen) -> int:  # type: ignore[type-arg]
                for message in chosen:
                    understander.understand(message)
                return len(chosen)

            a = rate(tokenize_one, args.seconds)[0]
            b = rate(understand_one, args.seconds)[0]
            print(f"  {lang}: {a:8.0f} vs {b:8.0f}  {b / a:.0%}")
    print("model load per language (fresh Understander; goal < 1 s):")
    for lang, seconds in loads.items():
        blank = f"   spacy.blank('{lang}') alone {blank_loads[lang]:.3f} s" if lang in blank_loads else ""
        verdict = "ok" if seconds < GOAL_LOAD_SECONDS else "SLOW"
        print(f"  {lang}: {seconds:.3f} s {verdict}{blank}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
