"""Type stubs of the native module. The public API is the ``pbxfw`` package."""

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, final

__all__ = [
    "Policy",
    "Explanation",
    "Responsive",
    "_Client",
    "apply",
    "confirm",
    "rollback",
    "status",
    "disable",
    "acme",
    "carry_out",
    "bans",
    "unban",
    "ban",
    "discover",
]

@final
class Policy:
    """A validated policy. An invalid document raises ``ConfigError`` with every diagnostic."""

    @staticmethod
    def from_toml(text: str) -> Policy:
        """Parse and validate TOML text."""
    @staticmethod
    def from_json(text: str) -> Policy:
        """Parse and validate JSON text."""
    @staticmethod
    def from_dict(doc: Any) -> Policy:
        """Validate a dict, as ``json.loads`` or ``tomllib.load`` give it."""
    @property
    def diagnostics(self) -> List[Dict[str, Any]]:
        """The warnings of the valid policy: dicts with ``path``, ``severity``, ``message``
        and, when there is one, ``value``."""
    @property
    def fingerprint(self) -> str:
        """The compiled ruleset's fingerprint, as ``status`` shows it once applied."""
    def compile(self, backend: str = "nft") -> str:
        """The rules for ``backend``: ``"nft"``, ``"iptables"``, or ``"ir"``."""
    def explain(
        self,
        *,
        iface: str,
        src: str,
        proto: str,
        dport: Optional[int] = None,
        sport: Optional[int] = None,
        icmp_type: Optional[int] = None,
        state: str = "new",
        registered: bool = False,
        reply: bool = False,
    ) -> Explanation:
        """What happens to a packet (``proto`` is udp, tcp, icmp or icmpv6; ``state`` new,
        established, related or invalid; ``reply``: an established or related packet answers a
        connection the PBX opened), and which policy object decides."""

@final
class Explanation:
    """The answer of ``Policy.explain``."""

    @property
    def verdict(self) -> str:
        """``"accept"``, ``"drop"`` or ``"reject"``."""
    @property
    def zone(self) -> Optional[str]:
        """The source's zone, if the packet got as far as classification."""
    @property
    def decided_by(self) -> str:
        """The deciding policy object (``trunk:provider-a``, ``zone:local service:ssh``)."""
    @property
    def step(self) -> int:
        """The step of the packet path, 1 to 10."""
    @property
    def step_name(self) -> str:
        """What that step is."""
    @property
    def chain(self) -> Optional[str]:
        """The deciding rule's chain; ``None`` when the chain policy decided."""
    @property
    def rule_index(self) -> Optional[int]:
        """The deciding rule's position in its chain."""

@final
class _Client:
    """A connection to the daemon's control socket (``pbxfw.Client`` is built on it)."""

    def __new__(cls, path: Optional[str] = None, timeout: float = 30.0) -> _Client:
        """Connect to the socket at ``path`` (default: the daemon's)."""
    def call(self, method: str, params: str) -> str:
        """Call ``method`` with ``params`` (JSON text); the result as JSON text."""

@final
class Responsive:
    """The responsive layer's state machine, without I/O."""

    def __new__(cls, policy: Policy) -> Responsive:
        """A fresh machine configured by the policy's ``[responsive]`` settings."""
    @staticmethod
    def restore(policy: Policy, snapshot: str) -> Responsive:
        """A machine from a ``snapshot()``; raises ``StateError`` if it cannot be read."""
    def on_event(
        self, event: Union[str, Dict[str, Any]], now: Optional[int] = None
    ) -> List[Dict[str, Any]]:
        """Feed one event (a JSON-lines record or the same as a dict); ``now`` in Unix
        seconds, default the record's ``at`` or the clock. Returns the actions."""
    def tick(self, now: Optional[int] = None) -> List[Dict[str, Any]]:
        """Housekeeping at ``now``: expiries and decays. Returns the actions."""
    def bans(self, now: Optional[int] = None) -> List[Tuple[str, int]]:
        """The active bans at ``now``, as ``(prefix, until)`` pairs."""
    def snapshot(self) -> str:
        """The whole state as versioned JSON text, for ``restore``."""

def apply(
    policy: Policy,
    backend: Optional[str] = None,
    *,
    confirm: Optional[int] = None,
    admins: Optional[Sequence[str]] = None,
    force: bool = False,
    counters: bool = False,
) -> Dict[str, Any]:
    """Apply as ``pbxfw apply`` does: ``RefusedError`` (reason ``lockout``) when the ruleset
    would cut off ``$SSH_CONNECTION``, ``settings.admins`` or ``admins`` (``"ADDR"`` for SSH,
    ``"ADDR:PORT"``), unless ``force``; then loaded, verified and recorded. With ``confirm``
    it is rolled back after that many seconds unless ``confirm()`` comes. Returns
    ``{"fingerprint", "elapsed_ms"}`` or ``{"fingerprint", "rolled_back_at_ms"}``; a kernel
    failure raises ``ApplyError``."""

def confirm() -> str:
    """Keep the ruleset an ``apply(confirm=…)`` loaded; returns its fingerprint."""

def rollback(backend: Optional[str] = None) -> str:
    """Go back now to the ruleset before an ``apply(confirm=…)``, on the backend it used
    (naming another is refused); says what happened."""

def status(backend: Optional[str] = None) -> Dict[str, Any]:
    """As ``pbxfw status --format json``: ``backend``, ``loaded``, ``fingerprint``, ``sets``,
    ``counters``, ``pending_confirmation``, ``safe_mode``, ``hostnames``, ``discovery``,
    ``responsive``, ``state_problems``."""

def disable(backend: Optional[str] = None) -> bool:
    """Remove everything pbxfw owns from the kernel; whether anything was loaded.
    ``RefusedError`` (reason ``locked``) while the lock file exists."""

def acme(action: str = "status", seconds: int = 60, backend: Optional[str] = None) -> Dict[str, Any]:
    """A certificate-renewal window (docs/acme.md): ``action`` is ``open`` (for ``seconds``, 1 to
    3600), ``close`` or ``status``. Returns ``backend``, ``open``, ``expires_in``, ``until``,
    ``port``, ``request``. ``UsageError`` when the loaded policy has no ``settings.acme``."""

def bans(backend: Optional[str] = None) -> Dict[str, Any]:
    """As ``pbxfw bans --format json``: ``backend``, ``loaded``, ``bans`` (each with ``prefix``,
    ``origin``, ``reason``, ``since``, ``until``, ``expires_in``, ``strikes``, ``by``, ``set``)."""

def unban(prefixes: Sequence[str], backend: Optional[str] = None) -> Dict[str, Any]:
    """Lift every ban of ``prefixes`` for good (kernel, bans by hand, the daemon's strikes):
    ``prefixes``, ``lifted``, ``loaded``."""

def ban(
    policy: Policy,
    prefix: str,
    seconds: int,
    backend: Optional[str] = None,
    *,
    reason: Optional[str] = None,
    admins: Optional[Sequence[str]] = None,
    force: bool = False,
) -> Dict[str, Any]:
    """Ban ``prefix`` by hand for ``seconds``; never what ``policy`` protects
    (``RefusedError``, reason ``never_banned``): ``prefix``, ``until``, ``until_iso``,
    ``reason``, ``set``."""

def carry_out(
    policy: Policy,
    actions: List[Dict[str, Any]],
    backend: Optional[str] = None,
    now: Optional[int] = None,
) -> Dict[str, Any]:
    """Carry out ``Responsive`` actions in the kernel (``policy`` is the applied one), one
    update per set and operation. Returns ``{"updates", "elements", "failures"}``."""

def discover(dir: str = "/etc/asterisk") -> Dict[str, Any]:
    """Ports, RTP/UDPTL ranges and trunks an Asterisk configuration implies, with origins."""
