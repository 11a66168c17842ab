"""pipeline.understand: the floors on the labelled corpus, and the hard cases one by one."""

from __future__ import annotations

import importlib.util
import json
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import make_mail

from pipeline.errors import ConfigError, MessageError, PipelineError
from pipeline.inspect_view import format_inspect, inspect_file
from pipeline.message import parse_message
from pipeline.resources import bundled_dir
from pipeline.understand import (
    LANGUAGES,
    Facts,
    Understander,
    _entries,
    _pattern_lemmas,
    find_date,
    lemma_table,
    s10_check_ok,
    tracking_carrier,
    ups_check_ok,
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"
FLOORS = {"order_id": 1.0, "kind": 0.98, "complaint_macro_f1": 0.95, "intent_macro_f1": 0.90}


def _eval_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("eval_understanding", ROOT / "scripts" / "eval_understanding.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def understander() -> Understander:
    return Understander()


@pytest.fixture(scope="module")
def corpus_results() -> dict[str, dict[str, Any]]:
    return _eval_module().evaluate_corpus()


mail = make_mail


KIM = "Inquiry from Amazon customer Kim (Order: 112-0497765-4469792)"


def buyer(words: str, *, tld: str = "com", subject: str = KIM, begin: str = "Begin message",
          end: str = "End message", charset: str = "utf-8") -> bytes:
    body = f"------------- {begin} -------------\n\n{words}\n\n------------- {end} -------------\n"
    return mail(body, sender=f"Kim - Amazon Marketplace <k1m2x3@marketplace.amazon.{tld}>", subject=subject,
                charset=charset)


def understand(understander: Understander, raw: bytes) -> Facts:
    return understander.understand(parse_message(raw))


# --- the floors of the issue, on both splits ----------------------------------------------------------


@pytest.mark.parametrize("split", ["tune", "heldout"])
def test_corpus_floors(corpus_results: dict[str, dict[str, Any]], split: str) -> None:
    figures = corpus_results[split]
    assert figures["n"] > 0
    assert figures["fields"]["order_id"]["accuracy"] >= FLOORS["order_id"]
    assert figures["fields"]["kind"]["accuracy"] >= FLOORS["kind"]
    assert figures["complaint_macro_f1"] >= FLOORS["complaint_macro_f1"]
    assert figures["intent_macro_f1"] >= FLOORS["intent_macro_f1"]


def test_corpus_covers_every_language(corpus_results: dict[str, dict[str, Any]]) -> None:
    seen = set(corpus_results["tune"]["languages"]) | set(corpus_results["heldout"]["languages"])
    assert seen == set(LANGUAGES)


# --- hard cases ---------------------------------------------------------------------------------------


def test_negated_damage_is_a_size_complaint(understander: Understander) -> None:
    facts = understand(understander, buyer("The hoodie isn't damaged or anything, it's just the wrong size. "
                                           "Can you send me an XL instead?"))
    assert facts.complaint_type == "size"
    assert facts.buyer_intent == "wants_resend"
    assert facts.evidence["complaint_type"].text == "wrong size"


def test_refused_replacement_wants_refund(understander: Understander) -> None:
    facts = understand(understander, buyer("The lamp arrived shattered. I don't want a replacement, "
                                           "I would like a full refund please."))
    assert facts.complaint_type == "damaged_on_arrival"
    assert facts.buyer_intent == "wants_refund"


def test_threat_to_open_a_claim_is_not_a_negated_refund(understander: Understander) -> None:
    facts = understand(understander, buyer("The package still isn't here. If I don't have a refund by Friday "
                                           "I'm opening an A-to-z claim."))
    assert facts.complaint_type == "not_received"
    assert facts.buyer_intent == "wants_refund"


def test_a_claim_already_filed_is_no_refund_request(understander: Understander) -> None:
    """Past tense: the claim exists; only a threat to open one says the buyer wants their money."""
    facts = understand(understander, buyer("I filed a claim because it has not arrived."))
    assert facts.complaint_type == "not_received"
    assert facts.buyer_intent == "other"
    assert understand(understander, buyer("I will file an A-to-z claim tomorrow.")).buyer_intent == "wants_refund"


def test_wrapped_order_id(understander: Understander) -> None:
    facts = understand(understander, buyer("Hi, a question about my order, the number is 112-7338693-\n"
                                           "1974006. When will it ship?", subject="Inquiry from Amazon customer"))
    assert facts.order_id == "112-7338693-1974006"
    assert facts.buyer_intent == "other"
    assert facts.complaint_type is None


def test_order_id_and_tracking_number_in_one_sentence(understander: Understander) -> None:
    facts = understand(understander, buyer(
        "I ordered on 20 February (order 404-7720915-3358847) and the UPS tracking 1ZX91R642201773084 has "
        "been stuck for ten days. Could you send it again?", subject="Where is my parcel?"))
    assert facts.order_id == "404-7720915-3358847"
    assert (facts.tracking_number, facts.carrier) == ("1ZX91R642201773084", "UPS")
    assert facts.complaint_type == "not_received"
    assert facts.buyer_intent == "wants_resend"


def test_html_only_claim_notification(understander: Understander) -> None:
    html = ("<html><body><p>Hello,</p><p>A buyer has filed an A&#8209;to&#8209;z Guarantee claim. Please respond "
            "within 7 days.</p><table><tr><td>Order ID</td><td>111-5820394-6617023</td></tr>"
            "<tr><td>Claim amount</td><td>&#36;34.99</td></tr><tr><td>Claim reason</td><td>Item not received</td>"
            "</tr></table><p>Tracking information shows the package was delivered on January 6, 2026.</p>"
            "<p>Carrier: UPS | Tracking ID: 1ZX91R642201773084</p></body></html>")
    facts = understand(understander, mail(html, subtype="html", sender="atoz-guarantee-no-reply@amazon.com",
                                          subject="Action required: Claim received on order 111-5820394-6617023",
                                          headers={"X-Marketplace-ID": "ATVPDKIKX0DER"}))
    assert facts.kind == "claim_filed"
    assert facts.order_id == "111-5820394-6617023"
    assert facts.complaint_type == "not_received"
    assert (facts.amount, facts.currency) == ("34.99", "USD")
    assert facts.deadline_hours == 168
    assert facts.delivered is True
    assert facts.trusted and facts.marketplace == "amazon.com"


def test_quoted_reply_with_old_complaint_words(understander: Understander) -> None:
    words = ("All good now, the new one came in one piece. Cheers!\n\n"
             "On Mon, 2 Mar 2026 at 09:00, Acme Store <claims@example.com> wrote:\n"
             "> So sorry it arrived broken. We will send a replacement, Royal Mail RR161433728GB.")
    facts = understand(understander, buyer(words, tld="co.uk",
                                           subject="RE: Inquiry from Amazon customer Mo (Order: 205-8515259-7752454)"))
    assert facts.complaint_type is None
    assert facts.buyer_intent == "resolved"
    assert facts.tracking_number is None


def test_ups_check_digit() -> None:
    assert ups_check_ok("1ZX91R642201773084")
    assert not ups_check_ok("1ZX91R642201773085")
    assert tracking_carrier("1ZX91R642201773085", "ups") is None


def test_s10_check_digit_and_country() -> None:
    assert s10_check_ok("LX204719380CN") and tracking_carrier("LX204719380CN", "s10") == "China Post"
    assert s10_check_ok("TT340182769GB") and tracking_carrier("TT340182769GB", "s10") == "Royal Mail"
    assert not s10_check_ok("LX204719381CN")


def test_invalid_check_digit_is_no_tracking_number(understander: Understander) -> None:
    facts = understand(understander, buyer("UPS tracking 1ZX91R642201773085 says delivered but nothing is here."))
    assert facts.tracking_number is None
    assert facts.complaint_type == "not_received"
    assert facts.delivered is True


def test_german_buyer_message(understander: Understander) -> None:
    words = ("Guten Tag,\n\ndie Jacke ist heute angekommen. Sie ist nicht beschädigt, nur die falsche Größe. "
             "Könnten Sie mir die Jacke bitte in L zuschicken?\n\nViele Grüße\nPetra")
    facts = understand(understander, buyer(words, tld="de", begin="Anfang der Nachricht", end="Ende der Nachricht",
                                           subject="Anfrage von Amazon-Kunde Petra (Bestellung: 303-6628104-2250973)"))
    assert facts.language == "de"
    assert facts.marketplace == "amazon.de"
    assert facts.kind == "buyer_message"
    assert facts.order_id == "303-6628104-2250973"
    assert facts.complaint_type == "size"
    assert facts.buyer_intent == "wants_resend"


def test_german_withdrawal_with_typos(understander: Understander) -> None:
    facts = understand(understander, buyer("ok passt so. ich nehm den antarg bei amazon zurück", tld="de",
                                           begin="Anfang der Nachricht", end="Ende der Nachricht"))
    assert facts.buyer_intent == "will_withdraw"


def test_japanese_claim_decision(understander: Understander) -> None:
    body = ("出品者様\n\n注文番号 249-7702915-1186034 のAmazonマーケットプレイス保証申請について審査いたしました。\n"
            "審査の結果、Amazonマーケットプレイス保証申請を承認し、購入者様に4,200円を返金いたしました。")
    facts = understand(understander, mail(body, sender="atoz-guarantee-no-reply@amazon.co.jp",
                                          subject="Amazonマーケットプレイス保証申請の結果について（注文番号：249-7702915-1186034）"))
    assert facts.language == "ja"
    assert facts.kind == "claim_granted"
    assert facts.order_id == "249-7702915-1186034"
    assert (facts.amount, facts.currency) == ("4200", "JPY")


def test_japanese_claim_filed_may_be_granted_is_still_a_filing(understander: Understander) -> None:
    body = ("注文番号：249-3816604-7720158\n申請理由：商品が届かない\n申請金額：￥3,480\n\n"
            "7日以内にご回答ください。ご回答がない場合、購入者様への返金が承認されることがあります。")
    facts = understand(understander, mail(body, sender="atoz-guarantee-no-reply@amazon.co.jp",
                                          subject="Amazonマーケットプレイス保証の申請がありました（注文番号：249-3816604-7720158）"))
    assert facts.kind == "claim_filed"
    assert facts.complaint_type == "not_received"
    assert facts.deadline_hours == 168


def test_negated_grant_is_a_denial(understander: Understander) -> None:
    body = "After reviewing the claim, we have not granted the claim. No amount will be debited from your account."
    facts = understand(understander, mail(body, sender="atoz-guarantee-no-reply@amazon.com",
                                          subject="Claim decision on order 111-8402751-3367094"))
    assert facts.kind == "claim_denied"


def test_look_alike_sender_is_untrusted(understander: Understander) -> None:
    body = "A buyer has filed an A-to-z Guarantee claim on order 111-2087354-9940126. Respond within 48 hours."
    facts = understand(understander, mail(body, sender="amazon-claims@amaz0n-support.net",
                                          subject="Action required: Claim received on order 111-2087354-9940126",
                                          headers={"X-Marketplace-ID": "ATVPDKIKX0DER"}))
    assert facts.kind == "claim_filed"
    assert facts.trusted is False and facts.marketplace is None
    assert facts.deadline_hours == 48


def test_every_found_fact_has_evidence(understander: Understander) -> None:
    for path in sorted(CORPUS.glob("*/*.eml"))[::7]:
        facts = understander.understand(parse_message(path.read_bytes()))
        data = facts.to_json()
        for field in ("kind", "order_id", "complaint_type", "buyer_intent", "tracking_number", "carrier",
                      "deadline_hours", "deadline_at", "amount", "currency", "marketplace", "language", "trusted"):
            if data[field] not in (None, False):
                assert field in data["evidence"], (path.name, field)
        if facts.delivered:
            assert "delivered" in data["evidence"]


def test_facts_survive_json(understander: Understander) -> None:
    facts = understand(understander, buyer("My package never arrived. Please refund me."))
    assert Facts.from_json(json.loads(json.dumps(facts.to_json()))) == facts


def test_typo_tolerance_keeps_real_words(understander: Understander) -> None:
    facts = understand(understander, buyer("recieved the parcle today!! sorry for all the trouble"))
    assert facts.buyer_intent == "resolved"
    model = understander.model("en")
    doc = model.nlp("I'd rather go through a refund")
    assert [t.norm_ for t in doc][4] == "through"  # a real word, not "though"


# --- rule models ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "ja"])
def test_stored_lemma_tables_cover_the_rules(lang: str) -> None:
    """models/<lang>/lemmas.json must be refreshed after rules gain a LEMMA (else loading is slow)."""
    folders = [bundled_dir("models")]
    entries = [entry for _, entry in _entries(folders, lang)]
    listed = _pattern_lemmas(entry["pattern"] for entry in entries if "pattern" in entry)
    needed = listed | {w for entry in entries for phrase in entry.get("phrases", []) for w in phrase.lower().split()}
    data = json.loads((folders[0] / lang / "lemmas.json").read_text(encoding="utf-8"))
    assert needed <= set(data["lemmas"]), "run: python -m pipeline.understand --refresh-lemmas"
    assert listed <= set(data["listed"]), "run: python -m pipeline.understand --refresh-lemmas"
    forms, _, _ = lemma_table(lang, needed, listed, folders, set())
    assert forms


def test_bad_rule_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "claims.jsonl").write_text('{"label": "KIND", "id": "x", "pattern": [{"BOGUS": 1}]}\n',
                                                 encoding="utf-8")
    with pytest.raises(ConfigError):
        Understander(tmp_path).model("en")


def test_model_override_replaces_a_file_by_name(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "claims.jsonl").write_text(
        '{"label": "KIND", "id": "claim_withdrawn", "phrases": ["zebra crossing"]}\n', encoding="utf-8")
    facts = Understander(tmp_path).understand(parse_message(mail(
        "Look: zebra crossing.", sender="atoz-guarantee-no-reply@amazon.com", subject="Claim received")))
    assert facts.kind == "claim_withdrawn"


# --- pipeline inspect ------------------------------------------------------------------------------------


def test_inspect_html_only_claim_notification() -> None:
    data = inspect_file(CORPUS / "en" / "amz_claim_filed_not_received_html_only_ups_delivered.eml")
    for key in ("kind", "order_id", "complaint_type", "buyer_intent", "tracking_number", "carrier", "deadline_at",
                "marketplace", "language", "trusted", "evidence"):
        assert key in data
    assert data["kind"] == "claim_filed" and data["buyer_intent"] is None
    assert data["deadline_at"].endswith("Z")
    assert data["evidence"]["tracking_number"]["text"] == data["tracking_number"]
    json.dumps(data)
    text = format_inspect(data)
    assert "kind: claim_filed  [" in text
    assert f'tracking_number: {data["tracking_number"]}  [' in text
    assert "buyer_intent: -" in text


def test_inspect_german_buyer_message() -> None:
    data = inspect_file(CORPUS / "de" / "kaeufer_zugestellt_nichts_angekommen.eml", response_days=3)
    assert (data["kind"], data["language"], data["marketplace"]) == ("buyer_message", "de", "amazon.de")
    assert data["complaint_type"] == "not_received" and data["buyer_intent"] == "wants_refund"
    assert data["deadline_at"] is None
    assert 'complaint_type: not_received  [' in format_inspect(data)


def test_inspect_unreadable_or_malformed_file_is_a_message_error(tmp_path: Path) -> None:
    with pytest.raises(MessageError):
        inspect_file(tmp_path / "missing.eml")
    broken = tmp_path / "broken.eml"
    broken.write_bytes(b"not an email")
    with pytest.raises(MessageError) as caught:
        inspect_file(broken)
    assert isinstance(caught.value, PipelineError)


def test_anchored_matcher_finds_what_spacys_matchers_find(understander: Understander) -> None:
    """Our fast matcher is only an index in front of spaCy's semantics: on every corpus message it must return
    exactly the spans spaCy's own Matcher (for the patterns) and PhraseMatcher on LEMMA (for the phrases) return."""
    import numpy
    from spacy.attrs import LEMMA, NORM
    from spacy.matcher import Matcher, PhraseMatcher

    eval_module = _eval_module()
    checked = phrase_matches = 0
    oracles: dict[str, tuple[Matcher, PhraseMatcher]] = {}
    for case in eval_module.load_corpus():
        reading = understander.read(parse_message(case["path"].read_bytes()))
        model = understander.model(reading.language)
        if model.lang not in oracles:
            oracle = Matcher(model.nlp.vocab)
            for rule, pattern in model.patterns:
                oracle.add(rule, [pattern])
            phrase_oracle = PhraseMatcher(model.nlp.vocab, attr="LEMMA")
            for rule, texts in model.phrases:
                phrase_oracle.add(rule, list(model.nlp.pipe(texts)))
            oracles[model.lang] = (oracle, phrase_oracle)
        doc = model.nlp.make_doc(reading.text)
        data = model.token_data(doc)  # what the rules read; spaCy's matchers read the doc
        doc.from_array([NORM, LEMMA], numpy.array([data.norm, data.lemma], dtype="uint64").T)
        strings = model.nlp.vocab.strings
        ours = set(model.matcher(doc, data))
        oracle, phrase_oracle = oracles[model.lang]
        spacys = {(strings[m], s, e) for m, s, e in oracle(doc)}
        phrases = {(strings[m], s, e) for m, s, e in phrase_oracle(doc)}
        assert ours == spacys | phrases, case["name"]
        checked += 1
        phrase_matches += len(phrases - spacys)
    assert checked >= 200
    assert phrase_matches >= 50  # the phrases were really compared, not only the patterns


@pytest.mark.parametrize(("text", "expected"), [
    ("was delivered on February 12, 2026 (UPS)", date(2026, 2, 12)),
    ("was delivered on 3 February 2026 and signed for", date(2026, 2, 3)),
    ("wurde am 3. März 2026 zugestellt", date(2026, 3, 3)),
    ("zugestellt am 03.03.2026", date(2026, 3, 3)),
    ("livré le 5 févr. 2026", date(2026, 2, 5)),
    ("consegnato il 7 aprile 2026", date(2026, 4, 7)),
    ("entregado el 9 de mayo de 2026", date(2026, 5, 9)),
    ("delivered 2026-06-30", date(2026, 6, 30)),
    ("delivered on the 6th", None),
    ("delivered on February 30, 2026", None),
])
def test_dates_in_every_language(understander: Understander, text: str, expected: date | None) -> None:
    found = find_date(text, understander._months())
    assert (found[0] if found else None) == expected


def test_amazons_delivery_date_is_read_with_its_evidence(understander: Understander) -> None:
    raw = mail("A buyer has filed an A-to-z Guarantee claim on order 111-2233445-5566778.\n"
               "Claim reason: Item not received\n"
               "Tracking information shows the package was delivered on April 7, 2026 (UPS 1Z999AA10123456784).\n"
               "Please respond within 7 days.", sender="atoz-guarantee-no-reply@amazon.com",
               subject="Claim received on order 111-2233445-5566778")
    facts = understand(understander, raw)
    assert facts.delivered and facts.delivered_on == date(2026, 4, 7)
    assert facts.evidence["delivered_on"].text == "April 7, 2026"
    assert Facts.from_json(facts.to_json()).delivered_on == date(2026, 4, 7)


def test_a_time_in_the_buyers_quoted_comment_is_not_amazons_deadline(understander: Understander) -> None:
    raw = mail("A buyer has filed an A-to-z Guarantee claim on order 111-2233445-5566778.\n"
               "Claim reason: Item not received\n"
               'Buyer\'s comment: "Seller promised delivery within 2 days and nothing came."\n'
               "Please respond within 7 days.", sender="atoz-guarantee-no-reply@amazon.com",
               subject="Claim received on order 111-2233445-5566778")
    facts = understand(understander, raw)
    assert facts.deadline_hours == 168
    assert facts.evidence["deadline_hours"].text == "within 7 days"


@pytest.mark.parametrize(("verdict", "trusted"), [
    ("mx.example.net; spf=fail smtp.mailfrom=amazon.com; dkim=none; dmarc=fail header.from=amazon.com", False),
    ("mx.example.net; spf=softfail smtp.mailfrom=amazon.com; dkim=fail header.d=amazon.com", False),
    ("mx.example.net; spf=pass smtp.mailfrom=amazonses.com; dkim=pass header.d=amazon.com; dmarc=pass", True),
])
def test_a_receiving_servers_failed_check_takes_trust_away(understander: Understander, verdict: str,
                                                           trusted: bool) -> None:
    """From: amazon.com is what anyone can write; the seller's own server saying SPF/DKIM/DMARC failed wins."""
    raw = mail("The buyer has withdrawn the A-to-z Guarantee claim on order 111-2233445-5566778.",
               sender="atoz-guarantee-no-reply@amazon.com", subject="Claim withdrawn on order 111-2233445-5566778")
    raw = b"Authentication-Results: " + verdict.encode() + b"\r\n" + raw
    facts = understand(understander, raw)
    assert facts.kind == "claim_withdrawn"
    assert facts.trusted is trusted
    assert facts.evidence["trusted"].rule == ("sender-domain" if trusted else "authentication-results")


# --- the fast paths give what the plain way gives ----------------------------------------------------------


def test_understand_many_gives_what_understand_gives(understander: Understander) -> None:
    """The batch API (reprocess uses it) must give every message the same facts and evidence as one at a time,
    whatever the batch size and however languages are mixed in a batch."""
    messages = [parse_message(case["path"].read_bytes()) for case in _eval_module().load_corpus()]
    one_by_one = [understander.understand(message).to_json() for message in messages]
    assert [facts.to_json() for facts in understander.understand_many(messages)] == one_by_one
    assert [facts.to_json() for facts in understander.understand_many(messages, batch_size=7)] == one_by_one
    assert list(understander.understand_many([])) == []


def _mutations(texts: list[str], fragments: list[str], seed: int, count: int) -> list[str]:
    """The texts with fragments (also upper-cased, cut short, glued to a letter) put in at random places."""
    import random

    chance = random.Random(seed)
    found = list(texts)
    for _ in range(count):
        text = chance.choice(texts)
        for _ in range(chance.randint(1, 4)):
            piece = chance.choice(fragments)
            piece = chance.choice([piece, piece.upper(), piece.title(), "x" + piece, piece[1:], f" {piece}. "])
            at = chance.randint(0, len(text))
            text = text[:at] + piece + text[at:]
        found.append(text)
    return found


def test_regex_rules_tried_near_their_literals_find_what_finditer_finds(understander: Understander) -> None:
    """A regex rule runs only where literal_anchors says a match can start; on corpus texts and on texts with
    the rules' own words and matches put in at random, that must find exactly what regex.finditer finds."""
    from pipeline.understand import matches_near_anchors

    texts = [understander.read(parse_message(case["path"].read_bytes())).text
             for case in _eval_module().load_corpus()]
    compared = 0
    for lang in LANGUAGES:
        model = understander.model(lang)
        for _rule, regex, anchors, case, _token_scope in model.regexes:
            if anchors is None:
                continue
            fragments = [*anchors, *(m.group(0) for text in texts for m in regex.finditer(text))][:40]
            for text in _mutations(texts[::5], fragments, seed=len(fragments), count=30):
                haystack = text if case else text.lower()
                if len(haystack) != len(text):
                    continue
                near = matches_near_anchors(regex, text, haystack, anchors)
                if near is not None:
                    assert [m.span() for m in near] == [m.span() for m in regex.finditer(text)], regex.pattern
                    compared += 1
    assert compared > 2000


def test_literal_anchors_read_off_the_parse_tree() -> None:
    from pipeline.understand import literal_anchors

    assert literal_anchors(r"\bFed ?Ex\b", False) == {"fed": (0, 0)}
    assert literal_anchors(r"(?:ri|re)?(?:mand|sped)(?:a|i)re", True) == {"mand": (0, 2), "sped": (0, 2)}
    assert literal_anchors(r"[0-9]+\s*日以内", False) == {"日以内": (1, None)}
    assert literal_anchors(r"\d{10,11}", True) is None  # no literal: the rule always runs


def test_text_fast_paths_agree_with_the_plain_regexes() -> None:
    """The hand-made scans (A-to-z, order IDs, wrapped IDs, quotes, characters) against the one-regex way."""
    import re

    from pipeline.understand import (
        _A_TO_Z,
        _CHAR_MAP,
        A_TO_Z,
        ORDER_ID,
        WRAPPED_ORDER_ID,
        _join_wrapped_ids,
        _normalize_chars,
        _order_ids,
        inside_quotes,
        mark_a_to_z,
    )

    scan = re.compile(r"(?:\d{3}|D01)-\d{7}-\d{7}(?![\w-])")

    def plain_order_ids(text: str) -> list[str]:
        return [m.group(0) for m in scan.finditer(text)
                if not m.start() or not (text[m.start() - 1].isalnum() or text[m.start() - 1] in "-_")]

    def plain_join(text: str) -> str:
        def join(match: re.Match[str]) -> str:
            before = match.string[match.start() - 1] if match.start() else " "
            joined = match.group(1) + match.group(2)
            return match.group(0) if before.isalnum() or before in "-_" or not ORDER_ID.fullmatch(joined) else joined
        return WRAPPED_ORDER_ID.sub(join, text)

    def plain_quotes(text: str, position: int) -> bool:
        quoted = False
        for char in text[text.rfind("\n", 0, position) + 1:position]:
            if char == '"' or char == "“":
                quoted = not quoted
            elif char in "„«":
                quoted = True
            elif char in "”»":
                quoted = False
        return quoted

    pieces = ["A-to-z", "a - to - Z", "xA-to-z", "112-4567890-1234567", "D01-4567890-1234567", "112-4567890-",
              "1234567", "\n", "\r\n", " ", "-", "_", "x", '"', "„", "“", "”", "«", "»", "’", "\u00ad", "١٢٣"]
    texts = _mutations(["", "Order 112-4567890-1234567 of A-to-z"], pieces, seed=4, count=20000)
    for text in texts:
        assert mark_a_to_z(text) == _A_TO_Z.sub(A_TO_Z, text), text
        assert _order_ids(text) == plain_order_ids(text), text
        assert _join_wrapped_ids(text) == (plain_join(text) if "\n" in text else text), text
        assert _normalize_chars(text) == text.translate(_CHAR_MAP), text
        for position in range(0, len(text) + 1, 3):
            assert inside_quotes(text, position) == plain_quotes(text, position), (text, position)
    assert sum(bool(plain_order_ids(text)) for text in texts) > 1000
