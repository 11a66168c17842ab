"""The exceptions pipeline raises; the CLI turns each into a one-line message and an exit code."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error pipeline raises on purpose.

    ``exit_code`` is what the CLI exits with when the error reaches it.
    """

    exit_code = 1


class ConfigError(PipelineError):
    """The configuration file is missing, unreadable, or holds a wrong key or value."""

    exit_code = 2


class SecretError(ConfigError):
    """The IMAP password or OAuth2 token could not be read from its env var, file or command."""


class StoreError(PipelineError):
    """The database cannot be opened, migrated or written."""


class MailboxError(PipelineError):
    """The IMAP server could not be reached or answered with an error."""


class LoginError(MailboxError):
    """The IMAP server refused the credentials; retrying quickly will not help."""


class FolderNotFoundError(MailboxError):
    """A configured folder (or the Drafts folder) does not exist on the server."""


class MessageError(PipelineError):
    """A message could not be parsed; it is kept with this error and never blocks the rest."""


class DraftError(PipelineError):
    """A reply draft could not be rendered (a required fact is missing) or stored."""


class ImportRowError(PipelineError):
    """One row of a shipments file is invalid; the row is skipped and reported."""
