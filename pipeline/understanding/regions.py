"""The parts of a message whose words carry meaning: what the fact rules may read, and Amazon's labelled fields.

How a region is chosen:

- A buyer's message (relay sender): the buyer's own words between Amazon's marker lines of the text/plain
  part; without a plain part, the one `<pre>` of the HTML part; quoted earlier mail and signatures removed.
  The `# <order>:` and `1 / <title> [ASIN …]` lines, the footer links and the retention notice are outside.
- An Amazon notice (HTML, Seller Central's layout): the body block only. Left out are the header block
  (`data-space-header`) and its hidden preview text, the footer block (`data-space-footer`: "report a problem",
  help and preference links, copyright, Amazon's legal address and share capital), the `SPC-…` watermark,
  paragraphs in small print (the "notification-only address" note), link labels (a link's text is kept only
  when it is an order ID), bare URLs and the line that introduces each ("How was your experience?").
  Tables with a header row (items, ASINs, return reasons, refunds) are taken out of the text and kept as
  rows; "Label: value" lines become fields ("Order#:", "Reason:", "Details:", the return's carrier and
  tracking number). A plain-text notice is cut at its watermark or footer rule the same way.
- Product titles (the "item" column or field) are never part of what the rules read.

Which region a kind's facts come from is the understander's business: a return request's complaint comes
from its reason and customer's comment only, an inquiry's from its reason and details, a claim notice's from
a labelled reason field only (a real one has none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from inscriptis import get_text
from lxml import etree
from lxml import html as lxml_html

from pipeline.message import ParsedMessage, strip_quoted
from pipeline.understanding.language import LanguageData
from pipeline.understanding.text import ORDER_ID, normalize_chars

_URL_LINE = re.compile(r"^\s*(?:https?://|www\.)\S+\s*$", re.IGNORECASE)
_FIELD_LINE = re.compile(r"^[ \t]*(?:[*+\-•·]|\d+\.)?[ \t]*(?P<label>[^:：\n]{1,60}?)[ \t]*[:：][ \t]*(?P<value>.*)$")
_WATERMARK = re.compile(r"^\s*SPC-[A-Z]{2}Amazon-\d+\s*$", re.MULTILINE)
_FOOTER_RULE = re.compile(r"^\s*-{10,}\s*$", re.MULTILINE)
_SMALL_PRINT = re.compile(r"font-size\s*:\s*(?:0?\.[0-7]\d*em|[0-9](?:\.\d+)?px|1[0-2](?:\.\d+)?px)", re.IGNORECASE)
_HIDDEN = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_MAILTO_RELAY = re.compile(r"mailto:([^?\"'\s>]+@(?:m\.)?marketplace\.amazon\.[a-z.]+)", re.IGNORECASE)
_REMOVED = (
    "//head",
    "//style",
    "//script",
    "//title",
    "//img",
    "//comment()",
    "//*[@data-space-header]",
    "//*[@data-space-footer]",
    "//*[@id='spc-watermark']",
)


@dataclass
class Region:
    """The words a message's fact rules may read, and the labelled values Amazon's layout gives."""

    text: str
    source: str  # markers | pre | body | notice | none
    fields: dict[str, str] = field(default_factory=dict)  # field key (models' "fields") -> first value
    rows: list[dict[str, str]] = field(default_factory=list)  # table rows, cells by field key
    relay: str | None = None  # a buyer relay address the notice links to (mailto)


class FieldLabels:
    """Every language's field labels (language.json "fields"), matched on lower-cased, trimmed labels."""

    def __init__(self, languages: dict[str, LanguageData]) -> None:
        labels: dict[str, str] = {}
        for language in languages.values():
            for key, names in language.get("fields", {}).items():
                for name in names:
                    labels.setdefault(_label(name), key)
        self.labels = labels

    def key(self, label: str) -> str | None:
        """The field key of a label as written, or None."""
        return self.labels.get(_label(label))


def buyer_region(message: ParsedMessage) -> Region:
    """The buyer's own words: between the markers, else the HTML part's <pre>, else the new text."""
    if message.had_markers:
        return Region(message.new_text, "markers")
    if not message.has_plain and message.html:
        pre = _pre_text(message.html)
        if pre is not None:
            return Region(strip_quoted(pre), "pre")
    return Region(message.new_text, "body")


def notice_region(message: ParsedMessage, labels: FieldLabels) -> Region:
    """An Amazon notice's meaningful text, its table rows and its labelled fields (see the module's doc)."""
    relay = None
    rows: list[dict[str, str]] = []
    if message.html.strip():
        found = _MAILTO_RELAY.search(message.html)
        relay = found.group(1).lower() if found else None
        text, tables = _notice_html(message.html)
        rows = [_row(header, cells, labels) for header, body in tables for cells in body]
    else:
        text = _cut_plain_footer(message.text)
    text = _without_links(text)
    fields: dict[str, str] = {}
    for row in rows:
        for key, value in row.items():
            fields.setdefault(key, value)
    for key, value in _labelled_lines(text, labels):
        fields.setdefault(key, value)
    return Region(text, "notice", fields, rows, relay)


def _pre_text(html: str) -> str | None:
    try:
        tree = lxml_html.document_fromstring(html)
    except (etree.ParserError, ValueError):
        return None
    pres = tree.xpath("//pre")
    return pres[0].text_content() if pres else None


def _notice_html(html: str) -> tuple[str, list[tuple[list[str], list[list[str]]]]]:
    """The notice's body text without the parts that carry no facts, and its tables (header, rows)."""
    try:
        tree = lxml_html.document_fromstring(html)
    except (etree.ParserError, ValueError):
        return "", []
    for path in _REMOVED:
        for element in tree.xpath(path):
            _drop(element)
    tables = []
    for table in tree.xpath("//table[.//th]"):
        if table.xpath(".//table[.//th]"):
            continue  # an outer layout table around the data table
        header = [_cell(th) for th in table.xpath(".//tr[th][1]/th")]
        body = [[_cell(td) for td in tr.xpath("./td")] for tr in table.xpath(".//tr[td]")]
        tables.append((header, [row for row in body if any(row)]))
        _drop(table)
    for element in tree.xpath("//*[@style]"):
        style = element.get("style") or ""
        if _HIDDEN.search(style) or (element.tag in ("p", "div", "span", "font") and _SMALL_PRINT.search(style)):
            _drop(element)
    for link in tree.xpath("//a"):
        if ORDER_ID.search(link.text_content() or ""):
            link.drop_tag()
        else:
            _drop(link)
    text = get_text(lxml_html.tostring(tree, encoding="unicode"))
    lines = [line.strip() for line in text.replace("\u00a0", " ").splitlines()]
    return "\n".join(_squeeze(lines)), tables


def _drop(element: lxml_html.HtmlElement) -> None:
    """Remove an element and its text, keep the text after it."""
    if element.getparent() is not None:
        element.drop_tree()


def _cell(element: lxml_html.HtmlElement) -> str:
    return " ".join(element.text_content().split())


def _row(header: list[str], cells: list[str], labels: FieldLabels) -> dict[str, str]:
    row: dict[str, str] = {}
    for name, value in zip(header, cells, strict=False):
        key = labels.key(name)
        if key and value:
            row.setdefault(key, value)
    return row


def _labelled_lines(text: str, labels: FieldLabels) -> list[tuple[str, str]]:
    """(field key, value) of the "Label: value" lines; a value may go on over the next lines until a blank one."""
    found: list[tuple[str, str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _FIELD_LINE.match(line)
        if not match:
            continue
        key = labels.key(match.group("label"))
        if key is None:
            continue
        value = match.group("value").strip()
        for following in lines[i + 1 :]:
            field = _FIELD_LINE.match(following)
            if not following.strip() or (field and labels.key(field.group("label"))):
                break
            if key == "details":
                value = f"{value}\n{following.strip()}".strip()
        if value:
            found.append((key, value))
    return found


def _without_links(text: str) -> str:
    """Bare URLs out, and the line that introduces each ("For more information … visit the page:")."""
    lines = text.splitlines()
    keep = [True] * len(lines)
    for i, line in enumerate(lines):
        if _URL_LINE.match(line):
            keep[i] = False
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            if j >= 0 and lines[j].rstrip().endswith((":", "?", "：", "？")):
                keep[j] = False
    return "\n".join(_squeeze([line for line, kept in zip(lines, keep, strict=True) if kept]))


def _cut_plain_footer(text: str) -> str:
    """A plain-text notice without its footer: from the watermark, or a long rule of hyphens, on."""
    for pattern in (_FOOTER_RULE, _WATERMARK):
        match = pattern.search(text)
        if match:
            text = text[: match.start()]
    return text


def _squeeze(lines: list[str]) -> list[str]:
    """No more than one blank line in a row, none at the ends."""
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


def _label(name: str) -> str:
    return " ".join(normalize_chars(name).lower().replace("\u00a0", " ").strip(" :：*").split())
