"""Negation and condition scope: whether a rule's match is negated or only a possibility.

"not damaged" is negated, "if it does not arrive" a possibility: told from the words shortly before the match in
the same clause (and after it, where a language negates after the verb: "passt nicht", "届きません")."""

from __future__ import annotations

from typing import Any

# A token's role in scope, worked out once per word type.
OWN_NEGATION, BOUNDARY, NEWLINE, CONTRAST, HYPOTHETICAL, NEGATION, CUE_START, SPACE = 1, 2, 4, 8, 16, 32, 64, 128
_CLAUSE_PUNCT = [".", ",", ";", ":", "!", "?", "(", ")", "…", "—", "–", "¿", "¡", "。", "、", "！", "？", "：", "，"]


class Scope:
    """The language's scope words (language.json "scope") as string hashes, and the scope check itself.

    Word lists: negation (negates a match shortly after it; two-word cues like "instead of"), negation_after
    (negates a match shortly before it), contrast (ends a negation's reach: "not damaged, just small"),
    hypothetical (a condition or modal). Settings: window / window_after (tokens a negation reaches),
    clause_punct, after_boundary / after_continue / question_particles (Japanese).
    """

    def __init__(self, vocab: Any, settings: dict[str, Any]) -> None:
        self.strings = vocab.strings
        add = self.strings.add
        words = {
            key: [tuple(w.lower().split()) for w in settings.get(key, [])]
            for key in ("negation", "negation_after", "contrast", "hypothetical")
        }
        self.neg1 = {add(w[0]) for w in words["negation"] if len(w) == 1}
        self.neg2 = {(add(w[0]), add(w[1])) for w in words["negation"] if len(w) == 2}
        self.neg_after = {add(w[0]) for w in words["negation_after"]}
        self.contrast = {add(w[0]) for w in words["contrast"]}
        self.hyp1 = {add(w[0]) for w in words["hypothetical"] if len(w) == 1}
        self.hyp2 = {(add(w[0]), add(w[1])) for w in words["hypothetical"] if len(w) == 2}
        self.after_boundary = {add(w) for w in settings.get("after_boundary", ())}
        self.continuing = {add(w) for w in settings.get("after_continue", ())}
        self.questions = {add(w) for w in settings.get("question_particles", ())}
        self.boundaries = frozenset(add(p) for p in settings.get("clause_punct", _CLAUSE_PUNCT))
        self.negation_words = self.neg1 | self.neg_after
        self.window = int(settings.get("window", 6))
        self.window_after = int(settings.get("window_after", 4))
        self.cue_starts = {first for first, _ in self.neg2 | self.hyp2}
        self._roles: dict[tuple[int, int, int, int], int] = {}

    def role(self, orth: int, norm: int, lemma: int, is_space: int) -> int:
        """The role bits of a word type."""
        key = (orth, norm, lemma, is_space)
        found = self._roles.get(key)
        if found is not None:
            return found
        role = SPACE if is_space else 0
        if norm in self.negation_words or lemma in self.neg_after:
            role |= OWN_NEGATION
        if orth in self.boundaries:
            role |= BOUNDARY
        if "\n" in self.strings[orth]:
            role |= NEWLINE
        if norm in self.contrast:
            role |= CONTRAST
        if norm in self.hyp1:
            role |= HYPOTHETICAL
        if norm in self.neg1:
            role |= NEGATION
        if norm in self.cue_starts:
            role |= CUE_START
        if len(self._roles) > 200_000:
            self._roles.clear()
        self._roles[key] = role
        return role

    def of(self, tokens: list[list[int]], start: int, end: int, predicate: bool = True) -> tuple[bool, bool]:
        """(negated, hypothetical) of the match tokens[start:end]; each token is [orth, norm, lemma, is_space].

        A negation inside a condition ("if I don't get a refund ...") does not negate; a rule that spells its
        own negation ("not received") is not negated by it.
        """
        own_negation = any(self.role(*tokens[i]) & OWN_NEGATION for i in range(start, end))
        negated = hypothetical = False
        previous = None
        for i in range(start - 1, max(start - 1 - self.window, -1), -1):
            orth, norm, lemma, is_space = tokens[i]
            role = self.role(orth, norm, lemma, is_space)
            if not role:
                previous = norm
                continue
            if role & BOUNDARY:
                break
            if role & SPACE:
                if role & NEWLINE:
                    break
                continue
            if role & CONTRAST and not negated:
                break
            cue = previous and role & CUE_START
            if role & HYPOTHETICAL or (cue and (norm, previous) in self.hyp2):
                hypothetical = True
                break
            if not own_negation and (role & NEGATION or (cue and (norm, previous) in self.neg2)):
                negated = True
            previous = norm
        if hypothetical:
            negated = False
        # a negation after the match ("passt nicht") negates a predicate, not a time phrase ("nach einem Monat")
        if predicate and not negated and not own_negation and self.neg_after:
            negated = self._negated_after(tokens, end)
        return negated, hypothetical

    def _negated_after(self, tokens: list[list[int]], end: int) -> bool:
        """A negation right after the match (Japanese, German V2): "届きません", "passt nicht".

        A conjunctive particle ends the clause unless an auxiliary follows ("大きすぎて着られません" negates
        the second verb; "承認されていません" the first), and a negative question is a request ("〜ませんか").
        """
        size = len(tokens)
        for i in range(end, min(size, end + self.window_after)):
            orth, norm, lemma, is_space = tokens[i]
            if self.role(orth, norm, lemma, is_space) & (BOUNDARY | NEWLINE):
                return False
            if orth in self.after_boundary and (i + 1 >= size or tokens[i + 1][2] not in self.continuing):
                return False
            if norm in self.neg_after or lemma in self.neg_after:
                return not any(tokens[j][0] in self.questions for j in range(i + 1, min(size, i + 3)))
        return False
