"""The exception types of deepseg: one per kind of failure, used everywhere.

Missing files raise the built-in ``FileNotFoundError``. Everything else a user can get wrong raises
``InputError`` (bad images, labels, axes or options) or ``ModelFileError`` (a model folder that is
missing pieces, from an incompatible version, or whose weights do not match their checksum).
Both subclass ``ValueError`` so callers that expect the standard type keep working.
"""

from __future__ import annotations


class DeepSegError(Exception):
    """Base class of every error deepseg raises on purpose."""


class InputError(DeepSegError, ValueError):
    """An image, label image, axes string or option is not what was expected.

    The message names the offending value and the expected form.
    """


class ModelFileError(DeepSegError, ValueError):
    """A model folder or checkpoint cannot be used (missing, incompatible or tampered)."""


class Cancelled(DeepSegError):
    """Long work was cancelled by the user (a progress callback returned ``False``)."""
