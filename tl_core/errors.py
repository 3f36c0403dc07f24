"""Typed errors whose messages are written for the person using the tool.

The CLI prints them and exits 2; the app shows them in an error box. Anything that is not a
``TLError`` is a bug, not a user mistake.
"""

from __future__ import annotations


class TLError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class DatasetError(TLError):
    """The data can't be used as given (missing path, one class, unsafe archive...)."""


class BackboneError(TLError):
    """Unknown backbone name or a model timm cannot build."""


class WeightsUnavailable(TLError):
    """Pretrained weights cannot be had right now (offline and not cached, bad file)."""


class ConfigError(TLError):
    """A training setting is out of range or contradicts another one."""


class TrainingFailed(TLError):
    """A run stopped for a reason the user can act on (diverged loss, out of memory)."""


class NotFound(TLError):
    """No such run, job or workspace *for this caller*: the same answer whether it exists
    elsewhere or not, so ids from another workspace reveal nothing."""


class QuotaExceeded(TLError):
    """A workspace asked for more than its share of a shared server."""


class ClusterError(TLError):
    """The Ray cluster can't be reached or can't run a job (no GPU, no node big enough)."""
