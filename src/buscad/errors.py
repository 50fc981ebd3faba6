"""Errors a user can fix. The CLI catches :class:`BuscadError` once and prints it as one line."""

from __future__ import annotations


class BuscadError(Exception):
    """Base of every expected, user-fixable problem."""


class DataError(BuscadError):
    """A dataset, manifest, image or mask cannot be used as given."""


class ConfigError(BuscadError):
    """A configuration file or override is invalid."""


class ModelError(BuscadError):
    """A model name, option or weights file is invalid."""
