#!/usr/bin/env python3
"""Benchmarks the understanding stage against spaCy's tokenizer alone, on the same texts, in one run.

Texts: every message of the labelled corpus (tests/data/corpus/). For each message the text measured is exactly
what the understanding stage reads (subject and body, or the buyer's own new words), grouped by the language it
is read in.

    (a) tokenizer only:  nlp.pipe(texts) of spacy.blank(lang), per language (spaCy's batch API)
    (b) understanding:   Understander.understand_many(messages) on pre-parsed messages (our batch API: what
                         `pipeline reprocess` and a poll cycle use)
    (b1) one at a time:  Understander.understand(message) for each message
    (c) with MIME:       parse_message(raw bytes) + understand_many

(a) and (b) take turns, round after round (--rounds, each at least --seconds long), so that a slow moment of a
shared machine hits both alike; each figure is the best round (as timeit advises). The goal compares (b) with
(a). (b1) and (c) are measured after them.
Also prints each language's model load time (a fresh Understander, first use of that language).

    python scripts/bench_understand.py [--rounds 7] [--seconds 0.5] [--per-language]
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


def rate(work: Callable[[], int], seconds: float) -> float:
    """Messages per second: repeat work() (which returns how many it did) until `seconds` have passed."""
    done = 0
    start = time.perf_counter()
    while True:
        done += work()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def best_rates(works: dict[str, Callable[[], int]], rounds: int, seconds: float) -> dict[str, float]:
    """The best rate of each work over `rounds` rounds in which they take turns (as timeit advises: the best
    round is the one a busy machine disturbed least; the others measure the machine, not the code)."""
    for work in works.values():
        work()  # warm-up: caches, lazily built models
    rates: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(rounds):
        for name, work in works.items():
            rates[name].append(rate(work, seconds))
    return {name: max(values) for name, values in rates.items()}


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
    parser.add_argument("--rounds", type=int, default=7, help="rounds in which the measurements take turns")
    parser.add_argument("--seconds", type=float, default=0.5, help="minimum duration of one measurement")
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
        for _ in understander.understand_many(messages):
            pass
        return len(messages)

    def understand_one_by_one() -> int:
        for message in messages:
            understander.understand(message)
        return len(messages)

    def parse_and_understand_all() -> int:
        for _ in understander.understand_many(parse_message(raw) for raw in raws):
            pass
        return len(messages)

    # (a) and (b) take turns; the extra figures come after, so that their garbage and their code do not
    # weigh on the comparison
    rates = best_rates({"a": tokenize_all, "b": understand_all}, args.rounds, args.seconds)
    rates |= best_rates({"b1": understand_one_by_one, "c": parse_and_understand_all}, 3, args.seconds)
    ratio = rates["b"] / rates["a"]

    print(f"corpus: {len(messages)} messages " + ", ".join(f"{lang} {len(t)}" for lang, t in sorted(texts.items())))
    print(f"best of {args.rounds} rounds, (a) and (b) taking turns:")
    print(f"(a)  spaCy tokenizer only (spacy.blank(lang).pipe):   {rates['a']:7.0f} msg/s")
    print(f"(b)  understanding stage (understand_many):          {rates['b']:7.0f} msg/s")
    print(f"(b1) one message at a time (understand):             {rates['b1']:7.0f} msg/s"
          f"  ({rates['b1'] / rates['a']:.0%} of (a))")
    print(f"(c)  MIME parsing + understanding:                   {rates['c']:7.0f} msg/s")
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
                for _ in understander.understand_many(chosen):
                    pass
                return len(chosen)

            pair = best_rates({"a": tokenize_one, "b": understand_one}, args.rounds, args.seconds / 3)
            print(f"  {lang}: {pair['a']:8.0f} vs {pair['b']:8.0f}  {pair['b'] / pair['a']:.0%}")
    print("model load per language (fresh Understander; goal < 1 s):")
    for lang, seconds in loads.items():
        blank = f"   spacy.blank('{lang}') alone {blank_loads[lang]:.3f} s" if lang in blank_loads else ""
        verdict = "ok" if seconds < GOAL_LOAD_SECONDS else "SLOW"
        print(f"  {lang}: {seconds:.3f} s {verdict}{blank}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
