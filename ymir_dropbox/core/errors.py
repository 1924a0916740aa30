"""The base errors: what stops an operation. A problem *in a package* is never an exception
(it is a :class:`ymir_dropbox.reading.problems.Problem` in a report)."""

from __future__ import annotations


class DropboxError(Exception):
    """Base of every error that stops an operation (bad config, I/O failure)."""


class ConfigError(DropboxError):
    """The configuration (file, environment or the command line's use of it) is wrong."""


class UsageError(DropboxError):
    """A command line that cannot be carried out as written (``import`` of a folder, ...)."""
