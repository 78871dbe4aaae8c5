"""pbxfw from Python: validate and compile firewall policies for a VoIP PBX, explain what
happens to a packet, drive the responsive layer, and apply rules to the kernel.

>>> import pbxfw
>>> policy = pbxfw.Policy.from_toml('[interfaces]\\neth1 = "local"\\n')
>>> policy.explain(iface="eth1", src="192.0.2.5", proto="tcp", dport=22).decided_by
'zone:local service:ssh'
"""

from pbxfw._errors import (
    ApplyError,
    BackendError,
    ConfigError,
    DeniedError,
    PbxfwError,
    RefusedError,
    StateError,
    UnavailableError,
    UsageError,
)
from pbxfw._client import Client
from pbxfw._pbxfw import (
    Explanation,
    Policy,
    Responsive,
    acme,
    apply,
    ban,
    bans,
    carry_out,
    confirm,
    disable,
    discover,
    rollback,
    status,
    unban,
)

__all__ = [
    "ApplyError",
    "BackendError",
    "Client",
    "ConfigError",
    "DeniedError",
    "Explanation",
    "PbxfwError",
    "Policy",
    "RefusedError",
    "Responsive",
    "StateError",
    "UnavailableError",
    "UsageError",
    "acme",
    "apply",
    "carry_out",
    "confirm",
    "disable",
    "discover",
    "rollback",
    "status",
    "ban",
    "bans",
    "unban",
]
