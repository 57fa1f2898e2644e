"""One small hierarchy of errors: each names what was wrong and what was expected.

The CLI turns any EdgefairError into one line on stderr and exit code 2.
"""

from __future__ import annotations


class EdgefairError(Exception):
    """Root of every error edgefair raises on purpose."""


class InputError(EdgefairError):
    """Data, files or arguments that are not what edgefair expects."""


class ModelError(EdgefairError):
    """A model that cannot be loaded, checked or converted."""


class PolicyError(EdgefairError):
    """A policy file with an unknown key or a bad value."""


class BundleError(EdgefairError):
    """A bundle whose files, hashes or manifest do not match."""


class StoreError(EdgefairError):
    """A counters store that cannot be opened or written."""


class PrivacyBudgetError(EdgefairError):
    """An export that would spend more privacy budget than configured."""


class RepositoryError(EdgefairError):
    """A model repository whose folders, versions or version policy are not as expected."""
