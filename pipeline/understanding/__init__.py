"""Understanding: which of Amazon's messages this is and what it says, read with spaCy rule models.

Modules, following the data: `language` (each language's data, from models/<lang>/language.json), `text` (text
as the rules read it), `lemmas` and `rules` (spaCy pipelines, Matcher and PhraseMatcher rules from
models/<lang>/claims.jsonl), `scope` (negation), `extract` (facts from rule hits), `tracking` (check digits),
`facts` (the result, no spaCy), `understander` (the whole stage).
"""

from pipeline.understanding.facts import Evidence, Facts

__all__ = ["Evidence", "Facts", "Understander"]


def __getattr__(name: str) -> object:
    # the Understander imports spaCy (slow): only code that understands mail pays for it
    if name == "Understander":
        from pipeline.understanding.understander import Understander

        return Understander
    raise AttributeError(name)
