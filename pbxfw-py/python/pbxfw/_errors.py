"""The exceptions pbxfw raises. Defined in Python so that ConfigError is also a ValueError."""

from __future__ import annotations

from typing import Any, Dict, List


class PbxfwError(Exception):
    """Every error pbxfw raises on purpose."""


class ConfigError(PbxfwError, ValueError):
    """The policy is invalid. ``diagnostics`` holds every problem found, each a dict with
    ``path``, ``severity``, ``message`` and, when there is one, ``value``."""

    def __init__(self, message: str, diagnostics: List[Dict[str, Any]]) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics


class StateError(PbxfwError, ValueError):
    """A responsive-state snapshot, or a state file pbxfw keeps (the applied record, a pending
    confirmation), cannot be read (corrupt, or from a newer version)."""


class UsageError(PbxfwError, ValueError):
    """The request itself is wrong: an unknown backend, nothing to confirm or roll back, an
    administrator address that is not one, actions that are not pbxfw actions."""


class RefusedError(PbxfwError):
    """Refused for safety; nothing changed. ``reason`` says why: ``lockout`` (the ruleset would
    cut off an administrator: the message names each session and the deciding rule),
    ``pending_confirmation`` (an apply waits for ``confirm()`` or ``rollback()``),
    ``not_last_applied`` (the kernel holds a ruleset pbxfw did not apply last), ``locked`` (the
    lock file forbids ``disable``) or ``unsafe_custom_rules`` (the custom rules file could be
    written by someone other than root)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class BackendError(PbxfwError):
    """A kernel backend could not do what was asked. ``backend`` names it (``nft``,
    ``iptables``, ``iptables-nft``, ``iptables-legacy``); ``kind`` says what went wrong:
    ``unsupported``, ``check``, ``spawn``, ``refused``, ``verify``, ``not_loaded``, ``no_set`` or
    ``kernel``."""

    def __init__(self, message: str, backend: str, kind: str) -> None:
        super().__init__(message)
        self.backend = backend
        self.kind = kind


class ApplyError(BackendError):
    """An apply failed. At ``check`` and ``load`` nothing changed; at ``verify`` the kernel
    holds something other than what was asked. ``stage`` is ``check``,
    ``load`` or ``verify``."""

    def __init__(self, message: str, backend: str, kind: str, stage: str) -> None:
        super().__init__(message, backend, kind)
        self.stage = stage


class DeniedError(PbxfwError, PermissionError):
    """The daemon's control socket does not allow the caller: not in a group that may connect
    (``pbxfw``), or a change asked by a member of the read role only (changes need
    ``pbxfw-admin``)."""


class UnavailableError(PbxfwError, ConnectionError):
    """The daemon could not be asked through its control socket: it is not running, is busy
    with other clients, or did not answer within the timeout (it may still carry the request
    out)."""
