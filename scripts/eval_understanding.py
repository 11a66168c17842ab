#!/usr/bin/env python3
"""Scores pipeline.understanding on the labelled corpus: per-field precision/recall/F1 and confusion matrices.

The corpus (tests/data/corpus/<lang>/) is split by a hash of each file's path: about a quarter is held out.
Rules are tuned by looking at tuning-split errors only (`--errors` shows those); the held-out figures are
reported beside them so over-fitting shows.

    python scripts/eval_understanding.py              # both splits, tables
    python scripts/eval_understanding.py --errors     # plus the tuning split's mistakes
    python scripts/eval_understanding.py --json       # machine-readable
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.message import parse_message  # noqa: E402
from pipeline.understanding.understander import Understander  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus"
FIELDS = (
    "kind",
    "order_id",
    "complaint_type",
    "buyer_intent",
    "tracking_number",
    "carrier",
    "delivered",
    "deadline_hours",
    "amount",
    "currency",
    "marketplace",
    "trusted",
    "notification_type",
    "return_carrier",
    "return_tracking_number",
    "return_reason",
    "reply_channel",
)
HELD_OUT_BUCKETS = 4  # 1 in 4 files is held out


def split_of(relative: str) -> str:
    """'heldout' for about a quarter of the files, by a stable hash of their path; 'tune' otherwise."""
    digest = hashlib.sha256(relative.encode()).digest()
    return "heldout" if digest[0] % HELD_OUT_BUCKETS == 0 else "tune"


def load_corpus() -> list[dict[str, Any]]:
    """Every labelled message: path, language, split, expected facts."""
    cases = []
    for lang_dir in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        for manifest in sorted(lang_dir.glob("manifest*.json")):
            for name, expected in json.loads(manifest.read_text(encoding="utf-8")).items():
                relative = f"{lang_dir.name}/{name}"
                cases.append(
                    {
                        "path": lang_dir / name,
                        "lang": lang_dir.name,
                        "name": relative,
                        "split": split_of(relative),
                        "expected": expected,
                    }
                )
    return cases


def run(cases: list[dict[str, Any]], understander: Understander) -> list[dict[str, Any]]:
    """Understand each case; attach the predicted facts."""
    for case in cases:
        facts = understander.understand(parse_message(case["path"].read_bytes()))
        case["predicted"] = {f: getattr(facts, f) for f in FIELDS}
    return cases


def _value(value: Any) -> Any:
    return "null" if value is None else value


def field_scores(cases: list[dict[str, Any]], name: str) -> dict[str, float]:
    """Accuracy, and micro P/R/F1 where a non-null prediction is a claim and a non-null label a truth."""
    tp = fp = fn = correct = 0
    for case in cases:
        exp, got = case["expected"].get(name), case["predicted"][name]
        if name == "amount" and exp is not None:
            exp = str(exp)
        correct += exp == got
        if got is not None and got is not False:
            tp += exp == got
            fp += exp != got
        if exp is not None and exp is not False and exp != got:
            fn += 1
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": correct / len(cases) if cases else 1.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "n": len(cases),
    }


def macro_f1(cases: list[dict[str, Any]], name: str) -> tuple[float, dict[str, dict[str, float]]]:
    """Macro-F1 over the classes (null counts as a class), with each class's P/R/F1."""
    labels = sorted({_value(c["expected"].get(name)) for c in cases} | {_value(c["predicted"][name]) for c in cases})
    per: dict[str, dict[str, float]] = {}
    for label in labels:
        tp = sum(_value(c["expected"].get(name)) == label == _value(c["predicted"][name]) for c in cases)
        fp = sum(_value(c["predicted"][name]) == label != _value(c["expected"].get(name)) for c in cases)
        fn = sum(_value(c["expected"].get(name)) == label != _value(c["predicted"][name]) for c in cases)
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / (tp + fn) if tp + fn else 1.0
        per[label] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": tp + fn}
    scored = [v["f1"] for v in per.values() if v["support"]]
    return (sum(scored) / len(scored) if scored else 1.0), per


def confusion(cases: list[dict[str, Any]], name: str) -> dict[str, dict[str, int]]:
    """Expected label -> predicted label -> count."""
    matrix: dict[str, Counter[str]] = defaultdict(Counter)
    for case in cases:
        matrix[_value(case["expected"].get(name))][_value(case["predicted"][name])] += 1
    return {k: dict(v) for k, v in sorted(matrix.items())}


def evaluate(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """All figures of one split."""
    buyer = [c for c in cases if c["expected"]["kind"] == "buyer_message"]
    complaint_f1, complaint_per = macro_f1(cases, "complaint_type")
    intent_f1, intent_per = macro_f1(buyer, "buyer_intent")
    return {
        "n": len(cases),
        "languages": dict(Counter(c["lang"] for c in cases)),
        "fields": {name: field_scores(cases, name) for name in FIELDS},
        "complaint_macro_f1": complaint_f1,
        "complaint_per_class": complaint_per,
        "intent_macro_f1": intent_f1,
        "intent_per_class": intent_per,
        "kind_confusion": confusion(cases, "kind"),
        "complaint_confusion": confusion(cases, "complaint_type"),
        "intent_confusion": confusion(buyer, "buyer_intent"),
    }


def evaluate_corpus(languages: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """Run the understander over the corpus; figures per split ('tune', 'heldout')."""
    cases = [c for c in load_corpus() if languages is None or c["lang"] in languages]
    run(cases, Understander())
    return {
        split: evaluate([c for c in cases if c["split"] == split])
        | {"cases": [c for c in cases if c["split"] == split]}
        for split in ("tune", "heldout")
    }


def _print_report(results: dict[str, dict[str, Any]]) -> None:
    for split, figures in results.items():
        print(f"\n== {split}: {figures['n']} messages {figures['languages']}")
        print(f"{'field':<16}{'acc':>7}{'P':>7}{'R':>7}{'F1':>7}")
        for name, s in figures["fields"].items():
            print(f"{name:<16}{s['accuracy']:>7.3f}{s['precision']:>7.3f}{s['recall']:>7.3f}{s['f1']:>7.3f}")
        print(
            f"complaint_type macro-F1 {figures['complaint_macro_f1']:.3f}   "
            f"buyer_intent macro-F1 {figures['intent_macro_f1']:.3f}"
        )
        for title, key in (
            ("kind", "kind_confusion"),
            ("complaint_type", "complaint_confusion"),
            ("buyer_intent", "intent_confusion"),
        ):
            matrix = figures[key]
            labels = sorted(set(matrix) | {p for row in matrix.values() for p in row})
            print(f"\nconfusion {title} (rows expected, columns predicted)")
            print(" " * 20 + "".join(f"{label[:9]:>10}" for label in labels))
            for exp in labels:
                row = matrix.get(exp, {})
                print(f"{exp[:19]:<20}" + "".join(f"{row.get(p, 0):>10}" for p in labels))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--errors", action="store_true", help="list the tuning split's wrong facts")
    parser.add_argument("--lang", action="append", help="only these corpus languages (repeatable)")
    parser.add_argument(
        "--split",
        choices=("tune", "heldout"),
        default="tune",
        help="whose errors --errors lists (look at held-out errors only to report them)",
    )
    args = parser.parse_args()
    results = evaluate_corpus(tuple(args.lang) if args.lang else None)
    if args.json:
        print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "cases"} for k, v in results.items()}, indent=2))
    else:
        _print_report(results)
    if args.errors:
        print(f"\n== {args.split}-split errors")
        for case in results[args.split]["cases"]:
            wrong = {
                f: (case["expected"].get(f), case["predicted"][f])
                for f in FIELDS
                if (
                    str(case["expected"].get(f))
                    if f == "amount" and case["expected"].get(f) is not None
                    else case["expected"].get(f)
                )
                != case["predicted"][f]
            }
            if wrong:
                print(f"{case['name']}: " + "; ".join(f"{f} expected {e!r} got {g!r}" for f, (e, g) in wrong.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
