"""The fixed words of DESIGN.md: message kinds, complaint types, buyer intents, claim states, strategies."""

KINDS = ("claim_filed", "claim_info_request", "claim_granted", "claim_denied", "claim_withdrawn",
         "buyer_message", "other")
COMPLAINTS = ("not_received", "size", "damaged_on_arrival", "damaged_after_use", "not_as_described", "other")
INTENTS = ("wants_refund", "wants_resend", "resolved", "will_withdraw", "other")
STATES = ("new", "awaiting_buyer", "awaiting_amazon", "refund_needed", "resolved", "granted")
STRATEGIES = ("represent_delivered", "offer_refund_or_resend", "represent_size", "persuade_withdraw_damaged",
              "represent_misuse", "request_withdrawal", "manual_review")
