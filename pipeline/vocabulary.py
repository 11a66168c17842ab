"""The product's fixed words in one place: kinds, complaints, intents, states, strategies.

The CLI's JSON, the database, the config, the playbook and the tests use exactly these."""

from __future__ import annotations

CLAIM_KINDS = ("claim_filed", "claim_info_request", "claim_granted", "claim_denied", "claim_withdrawn")
KINDS = (
    *CLAIM_KINDS,
    "buyer_message",
    "amazon_inquiry",
    "return_request",
    "refund_issued",
    "cancellation_request",
    "seller_reply_copy",
    "message_undelivered",
    "other",
)
COMPLAINTS = ("not_received", "size", "damaged_on_arrival", "damaged_after_use", "not_as_described", "other")
INTENTS = ("wants_refund", "wants_resend", "resolved", "will_withdraw", "other")
STATES = (
    "new",
    "buyer_contact",
    "awaiting_buyer",
    "awaiting_amazon",
    "refund_needed",
    "refunded",
    "resolved",
    "granted",
)
CLOSED_STATES = ("refunded", "resolved", "granted")
# represented to Amazon in Seller Central
AMAZON_STRATEGIES = ("represent_delivered", "represent_size", "represent_misuse", "appeal_granted")
# answered to the buyer (or to Amazon customer service asking for them) before any claim exists
ANSWER_STRATEGIES = ("answer_delivered", "answer_size", "answer_damaged", "answer_after_use")
STRATEGIES = (
    "represent_delivered",
    "offer_refund_or_resend",
    "represent_size",
    "persuade_withdraw_damaged",
    "represent_misuse",
    "request_withdrawal",
    "manual_review",
    *ANSWER_STRATEGIES,
    "appeal_granted",
)
# Amazon's clock (Seller Central help): a buyer message is answered within 24 h for the response-time metric; a
# buyer may file an A-to-z claim 48 h after contacting the seller; a granted claim may be appealed for 30 days
REPLY_HOURS = 24
MAY_FILE_HOURS = 48
APPEAL_DAYS = 30
REPLY_CHANNELS = ("email", "seller_central")
# what `pipeline claims set` may state, and the words each takes
STATED_FIELDS = ("complaint", "carrier", "tracking", "delivered", "note", "answered")
# the carriers Amazon recognizes for "tracking shows delivered" (the seller may configure others)
RECOGNIZED_CARRIERS = (
    "UPS",
    "USPS",
    "FedEx",
    "DHL",
    "Amazon Logistics",
    "Royal Mail",
    "China Post",
    "Yanwen",
    "YunExpress",
    "4PX",
)
