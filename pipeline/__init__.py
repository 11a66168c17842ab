"""pipeline: an A-to-z claim desk for Amazon sellers that lives in their mailbox."""

__version__ = "0.1.0"
