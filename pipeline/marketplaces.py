"""Amazon's marketplaces: their domains, X-Marketplace-ID values and languages (the values of real mail)."""

from __future__ import annotations

from functools import lru_cache

# Amazon's retail domains; mail from these (or a subdomain) is Amazon's own.
AMAZON_TLDS = (
    "com",
    "co.uk",
    "de",
    "fr",
    "it",
    "es",
    "co.jp",
    "ca",
    "com.mx",
    "com.au",
    "com.br",
    "in",
    "nl",
    "se",
    "pl",
    "com.be",
    "com.tr",
    "sa",
    "ae",
    "sg",
    "eg",
    "ie",
)
# X-Marketplace-ID values (the same ids Seller Central's links carry as mp= and marketplaceId=)
MARKETPLACE_IDS = {
    "ATVPDKIKX0DER": "amazon.com",
    "A2EUQ1WTGCTBG2": "amazon.ca",
    "A1AM78C64UM0Y8": "amazon.com.mx",
    "A2Q3Y263D00KWC": "amazon.com.br",
    "A1F83G8C2ARO7P": "amazon.co.uk",
    "A1PA6795UKMFR9": "amazon.de",
    "A13V1IB3VIYZZH": "amazon.fr",
    "APJ6JRA9NG5V4": "amazon.it",
    "A1RKKUPIHCS9HS": "amazon.es",
    "A1805IZSGTT6HS": "amazon.nl",
    "AMEN7PMS3EDWL": "amazon.com.be",
    "A2NODRKZP88ZB9": "amazon.se",
    "A1C3SOZRARQ6R3": "amazon.pl",
    "A28R8C7NBKEWEA": "amazon.ie",
    "A33AVAJ2PDY3EV": "amazon.com.tr",
    "A1VC38T7YXB528": "amazon.co.jp",
    "A39IBJ37TRP1C6": "amazon.com.au",
    "A21TJRUUN4KGV": "amazon.in",
}
MARKETPLACE_LANGUAGE = {
    "amazon.com": "en",
    "amazon.ca": "en",
    "amazon.co.uk": "en",
    "amazon.ie": "en",
    "amazon.com.au": "en",
    "amazon.in": "en",
    "amazon.de": "de",
    "amazon.fr": "fr",
    "amazon.com.be": "fr",
    "amazon.it": "it",
    "amazon.es": "es",
    "amazon.com.mx": "es",
    "amazon.co.jp": "ja",
    "amazon.nl": "nl",
    "amazon.se": "sv",
    "amazon.pl": "pl",
    "amazon.com.tr": "tr",
    "amazon.com.br": "pt",
}


@lru_cache(maxsize=1024)  # a mailbox has few sender domains; this runs for every message
def is_amazon_domain(domain: str) -> bool:
    """True for amazon.<tld> and its subdomains (marketplace.amazon.de, …)."""
    domain = domain.lower().rstrip(".")
    return any(domain == f"amazon.{tld}" or domain.endswith(f".amazon.{tld}") for tld in AMAZON_TLDS)


@lru_cache(maxsize=1024)
def marketplace_of_domain(domain: str) -> str | None:
    """The marketplace of an Amazon sender domain (marketplace.amazon.de -> amazon.de), or None."""
    if not is_amazon_domain(domain):
        return None
    for tld in sorted(AMAZON_TLDS, key=len, reverse=True):
        if domain == f"amazon.{tld}" or domain.endswith(f".amazon.{tld}"):
            return f"amazon.{tld}"
    return None


def language_of_marketplace(marketplace: str | None) -> str | None:
    """The main language of a marketplace, or None when unknown."""
    return MARKETPLACE_LANGUAGE.get(marketplace or "")


def seller_central_url(marketplace: str | None) -> str:
    """Seller Central of a marketplace: https://sellercentral.amazon.<tld>."""
    return f"https://sellercentral.{marketplace or 'amazon.com'}"
