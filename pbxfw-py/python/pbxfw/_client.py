"""``pbxfw.Client``: the firewall through the daemon's control socket, for a program that is not
root (docs/control-socket.md). The methods the module has for the local kernel
(``status``, ``bans``, ``unban``, ``confirm``, ``rollback``, ``disable``) have the same names,
arguments and results here, so a program can switch between them; a failure raises what the same
failure raises locally (``RefusedError``, ``ConfigError``, …), and the socket's own
``DeniedError`` and ``UnavailableError``."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional

from pbxfw._pbxfw import _Client


def _requester(client: Optional[str], admins: Optional[Iterable[str]], force: bool) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if client is not None:
        out["client"] = client
    if admins:
        out["admins"] = list(admins)
    if force:
        out["force"] = True
    return out


def _backend(backend: Optional[str]) -> Dict[str, Any]:
    return {} if backend is None else {"backend": backend}


class Client:
    """A connection to the daemon's control socket at ``path`` (default:
    ``$PBXFW_CONTROL_SOCKET``, else ``/run/pbxfw/control.sock``); each call waits at most
    ``timeout`` seconds."""

    def __init__(self, path: Optional[str] = None, timeout: float = 30.0) -> None:
        # At most a day: longer is the same as for ever here.
        self._native = _Client(path, min(timeout, 86400.0))

    def call(self, method: str, params: Optional[Dict[str, Any]] = None) -> Any:
        """Call ``method`` with ``params``, as the protocol names them."""
        return json.loads(self._native.call(method, json.dumps(params or {})))

    def version(self) -> Dict[str, Any]:
        """The daemon's version, the protocol's, and this caller's role (``read``, ``admin``)."""
        result: Dict[str, Any] = self.call("version")
        return result

    def status(self, backend: Optional[str] = None) -> Dict[str, Any]:
        """As ``pbxfw.status()``."""
        result: Dict[str, Any] = self.call("status", _backend(backend))
        return result

    def bans(self, backend: Optional[str] = None) -> Dict[str, Any]:
        """As ``pbxfw.bans()``."""
        result: Dict[str, Any] = self.call("bans", _backend(backend))
        return result

    def unban(self, prefixes: List[str], backend: Optional[str] = None) -> Dict[str, Any]:
        """As ``pbxfw.unban()``."""
        result: Dict[str, Any] = self.call("unban", {"prefixes": list(prefixes), **_backend(backend)})
        return result

    def confirm(self) -> str:
        """As ``pbxfw.confirm()``."""
        result: str = self.call("confirm")
        return result

    def rollback(self, backend: Optional[str] = None) -> str:
        """As ``pbxfw.rollback()``."""
        result: str = self.call("rollback", _backend(backend))
        return result

    def disable(self, backend: Optional[str] = None) -> bool:
        """As ``pbxfw.disable()``: whether anything was loaded. Refused while the lock file
        exists."""
        return bool(self.call("disable", _backend(backend))["was_loaded"])

    def apply(
        self,
        policy: str,
        backend: Optional[str] = None,
        *,
        format: str = "toml",
        confirm: Optional[int] = None,
        admins: Optional[List[str]] = None,
        client: Optional[str] = None,
        force: bool = False,
        counters: bool = False,
        save: bool = False,
    ) -> Dict[str, Any]:
        """As ``pbxfw.apply()``, of policy text. ``client`` is the address (``ADDR:PORT``) this
        program's own user reaches the host from, checked by anti-lockout like an SSH session;
        ``save`` also makes it the daemon's policy file (when confirmed, with ``confirm``)."""
        params: Dict[str, Any] = {"policy": policy, "format": format, **_backend(backend)}
        if confirm is not None:
            params["confirm"] = confirm
        if counters:
            params["counters"] = True
        if save:
            params["save"] = True
        params.update(_requester(client, admins, force))
        result: Dict[str, Any] = self.call("apply", params)
        return result

    def ban(
        self,
        prefix: str,
        seconds: int,
        backend: Optional[str] = None,
        *,
        reason: Optional[str] = None,
        admins: Optional[List[str]] = None,
        client: Optional[str] = None,
        force: bool = False,
    ) -> Dict[str, Any]:
        """As ``pbxfw.ban()``, under the daemon's policy."""
        params: Dict[str, Any] = {"prefix": prefix, "seconds": seconds, **_backend(backend)}
        if reason is not None:
            params["reason"] = reason
        params.update(_requester(client, admins, force))
        result: Dict[str, Any] = self.call("ban", params)
        return result

    def explain(self, packet: Dict[str, Any], live: bool = False, backend: Optional[str] = None) -> Dict[str, Any]:
        """What happens to ``packet`` (``iface``, ``src``, ``proto``, ``dport``, …): under the
        daemon's policy, or with ``live`` the kernel as it is now."""
        params: Dict[str, Any] = {"packet": packet, **_backend(backend)}
        if live:
            params["live"] = True
        result: Dict[str, Any] = self.call("explain", params)
        return result

    def show(self, zone: Optional[str] = None) -> Dict[str, Any]:
        """What each zone of the daemon's policy opens (``pbxfw show``)."""
        result: Dict[str, Any] = self.call("show", {} if zone is None else {"zone": zone})
        return result

    def check(self, policy: str, format: str = "toml") -> Dict[str, Any]:
        """A policy text's diagnostics (``pbxfw check --format json``)."""
        result: Dict[str, Any] = self.call("check", {"policy": policy, "format": format})
        return result

    def discover(self) -> Dict[str, Any]:
        """What the daemon's Asterisk configuration implies (``pbxfw discover``)."""
        result: Dict[str, Any] = self.call("discover")
        return result

    def _edit(self, method: str, entries: List[str], backend: Optional[str],
              admins: Optional[List[str]], client: Optional[str], force: bool) -> Dict[str, Any]:
        params = {"entries": list(entries), **_backend(backend), **_requester(client, admins, force)}
        result: Dict[str, Any] = self.call(method, params)
        return result

    def trust(self, addr: str, backend: Optional[str] = None, *, admins: Optional[List[str]] = None,
              client: Optional[str] = None, force: bool = False) -> Dict[str, Any]:
        """Put ``addr`` in the trusted zone of the daemon's policy file and kernel."""
        return self._edit("trust", [addr], backend, admins, client, force)

    def untrust(self, addr: str, backend: Optional[str] = None, *, admins: Optional[List[str]] = None,
                client: Optional[str] = None, force: bool = False) -> Dict[str, Any]:
        """Take ``addr`` out of the trusted zone."""
        return self._edit("untrust", [addr], backend, admins, client, force)

    def blacklist_add(self, entries: List[str], backend: Optional[str] = None, *,
                      admins: Optional[List[str]] = None, client: Optional[str] = None,
                      force: bool = False) -> Dict[str, Any]:
        """Add entries to the blacklist of the daemon's policy file and kernel."""
        return self._edit("blacklist_add", entries, backend, admins, client, force)

    def blacklist_del(self, entries: List[str], backend: Optional[str] = None, *,
                      admins: Optional[List[str]] = None, client: Optional[str] = None,
                      force: bool = False) -> Dict[str, Any]:
        """Remove entries from the blacklist."""
        return self._edit("blacklist_del", entries, backend, admins, client, force)

    def zone_add(self, zone: str, ids: List[str], backend: Optional[str] = None, *,
                 admins: Optional[List[str]] = None, client: Optional[str] = None,
                 force: bool = False) -> Dict[str, Any]:
        """Put ``ids`` (addresses, CIDRs, hostnames) in ``zone``, as ``pbxfw zone add``."""
        params = {"zone": zone, "entries": list(ids), **_backend(backend), **_requester(client, admins, force)}
        result: Dict[str, Any] = self.call("zone_add", params)
        return result

    def zone_del(self, zone: str, ids: List[str], backend: Optional[str] = None, *,
                 admins: Optional[List[str]] = None, client: Optional[str] = None,
                 force: bool = False) -> Dict[str, Any]:
        """Take ``ids`` out of ``zone``."""
        params = {"zone": zone, "entries": list(ids), **_backend(backend), **_requester(client, admins, force)}
        result: Dict[str, Any] = self.call("zone_del", params)
        return result

    def zones(self, zone: Optional[str] = None) -> List[Dict[str, Any]]:
        """What each zone (or ``zone``) of the daemon's policy holds."""
        result: List[Dict[str, Any]] = self.call("zones", {} if zone is None else {"zone": zone})
        return result

    def vpn_connect(self, address: str, identity: str, seconds: Optional[int] = None) -> Dict[str, Any]:
        """A VPN client connected from ``address`` as ``identity``: the address gets its user's
        grants (docs/vpn.md). Needs the VPN role (group ``pbxfw-vpn``)."""
        params: Dict[str, Any] = {"address": address, "identity": identity}
        if seconds is not None:
            params["seconds"] = seconds
        result: Dict[str, Any] = self.call("vpn_connect", params)
        return result

    def acme_open(self, seconds: int = 60, backend: Optional[str] = None) -> Dict[str, Any]:
        """As ``pbxfw.acme("open", seconds)``: a certificate-renewal window (docs/acme.md)."""
        result: Dict[str, Any] = self.call("acme_open", {"seconds": seconds, **_backend(backend)})
        return result

    def acme_close(self, backend: Optional[str] = None) -> Dict[str, Any]:
        """As ``pbxfw.acme("close")``."""
        result: Dict[str, Any] = self.call("acme_close", _backend(backend))
        return result

    def acme_status(self, backend: Optional[str] = None) -> Dict[str, Any]:
        """As ``pbxfw.acme("status")`` (the read role may ask)."""
        result: Dict[str, Any] = self.call("acme_status", _backend(backend))
        return result

    def vpn_disconnect(self, address: str, identity: str) -> Dict[str, Any]:
        """The VPN client is gone: its grants end now."""
        result: Dict[str, Any] = self.call("vpn_disconnect", {"address": address, "identity": identity})
        return result
