"""The control socket gives every front end the same answers as the command line run as root.

One daemon in a network namespace serves its control socket; the same sequence of calls is made
through it by the command line run as an unprivileged member of the admin group, the C client
(`pbxfw_client_*`), PHP's `PbxfwClient` and Python's `pbxfw.Client` (each as that user), and
locally by the command line as root. Every front end gets the same outcome kinds, the same
results, and through the socket byte-identical refusals.

It needs the `pbxfw` program (`$PBXFW_BIN`), `libpbxfw.so` beside it, a C compiler, php-cli
and setpriv; scripts/python-test builds the first two.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

import pbxfw

ROOT = pathlib.Path(os.environ.get("PBXFW_ROOT", pathlib.Path(__file__).resolve().parents[2]))
BIN = pathlib.Path(os.environ.get("PBXFW_BIN", ROOT / "target" / "debug" / "pbxfw"))
LIB_DIR = BIN.parent

READ_GID, ADMIN_GID, USER = 64301, 64302, 64310
AS_ADMIN = ["setpriv", f"--reuid={USER}", f"--regid={READ_GID}", f"--groups={ADMIN_GID}", "--"]
CLIENT = "198.51.100.7"
SSH = f"{CLIENT} 50000 10.0.0.1 443"

POLICY = '[interfaces]\neth0 = "internet"\n[services.https]\nzones = ["internet"]\n' \
    '[[pbx.trunks]]\nname = "provider"\nhost = "203.0.113.200"\nprotocol = "pjsip"\n'
# Without the web interface open to the internet: it would cut the web client off.
POLICY_CUT = '[interfaces]\neth0 = "internet"\n' \
    '[[pbx.trunks]]\nname = "provider"\nhost = "203.0.113.200"\nprotocol = "pjsip"\n'

# (method, params): the calls every front end makes, in this order.
SEQUENCE: List[Tuple[str, Dict[str, Any]]] = [
    ("status", {}),
    ("ban", {"prefix": "203.0.113.66", "seconds": 3600, "reason": "parity"}),
    ("bans", {}),
    ("unban", {"prefixes": ["203.0.113.66"]}),
    ("ban", {"prefix": "203.0.113.200", "seconds": 3600}),
    ("apply", {"policy": "cut"}),
    ("apply", {"policy": "ok"}),
    ("confirm", {}),
    ("disable", {}),
]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or bool(os.environ.get("PBXFW_SKIP_KERNEL"))
    or not (BIN.is_file() and (LIB_DIR / "libpbxfw.so").is_file() and shutil.which("php")
            and shutil.which("cc") and shutil.which("setpriv")),
    reason="needs root, the pbxfw program, libpbxfw.so, php-cli, cc and setpriv (scripts/python-test)",
)


class Daemon:
    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        self.ns = f"pbxfw-ctl-{uuid.uuid4().hex[:8]}"
        self.policy = tmp / "pbxfw.toml"
        self.policy.write_text(POLICY)
        (tmp / "ok.toml").write_text(POLICY)
        (tmp / "cut.toml").write_text(POLICY_CUT)
        for sub in ("state", "run"):
            (tmp / sub).mkdir()
        self.socket = tmp / "run" / "control.sock"
        self.lock = tmp / "lock"
        self.env = dict(
            os.environ,
            PBXFW_STATE_DIR=str(tmp / "state"),
            PBXFW_RUN_DIR=str(tmp / "run"),
            PBXFW_LOCK_FILE=str(self.lock),
            PBXFW_BIN=str(BIN),
        )
        self.env.pop("SSH_CONNECTION", None)
        self.env.pop("PBXFW_POLICY", None)
        self.env.pop("PBXFW_CONTROL_SOCKET", None)
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.log = open(tmp / "daemon.log", "w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, str(BIN), "daemon", "--policy", str(self.policy),
             "--tick", "1", "--control-group", str(READ_GID), "--control-admin-group", str(ADMIN_GID)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=self.log,
        )
        deadline = time.monotonic() + 15
        while not self.socket.exists():
            assert time.monotonic() < deadline, (tmp / "daemon.log").read_text()
            time.sleep(0.05)

    def run(self, argv: List[str], extra: Dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns] + argv, capture_output=True, text=True, timeout=120,
            env=dict(self.env, **(extra or {})),
        )

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        subprocess.run(["ip", "netns", "del", self.ns], check=False)


@pytest.fixture()
def daemon() -> Iterator[Daemon]:
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        dm = Daemon(pathlib.Path(d))
        try:
            yield dm
        finally:
            dm.close()


def params_of(d: Daemon, method: str, params: Dict[str, Any]) -> Dict[str, Any]:
    """The protocol's parameters: policy names become their text, and changes carry the web
    client's address for anti-lockout."""
    p = dict(params)
    if method == "apply":
        p["policy"] = (d.tmp / f"{p['policy']}.toml").read_text()
    if method in ("apply", "ban"):
        p["client"] = f"{CLIENT}:443"
    return p


def meaning_of_code(code: int) -> str:
    return {0: "ok", 5: "usage", 10: "refused", 11: "refused"}.get(code, f"code {code}")


def key(method: str, result: Any) -> Any:
    """What a result says, whatever the front end's way of saying it."""
    if method == "ban":
        return result["prefix"]
    if method == "bans":
        return sorted(b["prefix"] for b in result["bans"])
    if method == "unban":
        return sorted(e["element"] for e in result["lifted"])
    if method in ("apply", "status"):
        return result["fingerprint"]
    if method == "disable":
        return bool(result["was_loaded"]) if isinstance(result, dict) else bool(result)
    return result


def via_c(d: Daemon, exe: pathlib.Path) -> Callable[[str, Dict[str, Any]], Tuple[str, Any]]:
    def call(method: str, params: Dict[str, Any]) -> Tuple[str, Any]:
        out = d.run(AS_ADMIN + [str(exe), str(d.socket), method, json.dumps(params_of(d, method, params))])
        head, _, body = out.stdout.partition("\n")
        if head == "ok":
            return "ok", key(method, json.loads(body))
        return meaning_of_code(int(head.removeprefix("err "))), body
    return call


def via_php(d: Daemon) -> Callable[[str, Dict[str, Any]], Tuple[str, Any]]:
    script = ROOT / "pbxfw-capi" / "php" / "tests" / "client.php"

    def call(method: str, params: Dict[str, Any]) -> Tuple[str, Any]:
        out = d.run(AS_ADMIN + ["php", "-n", str(script), str(d.socket), method,
                                json.dumps(params_of(d, method, params))])
        head, _, body = out.stdout.partition("\n")
        if head == "ok":
            return "ok", key(method, json.loads(body))
        return meaning_of_code(int(head.removeprefix("err "))), body
    return call


PY_DRIVER = textwrap.dedent(
    """
    import json, sys, pbxfw
    try:
        c = pbxfw.Client(sys.argv[1])
        method, params = sys.argv[2], json.loads(sys.argv[3])
        if method == "status":
            out = c.status()
        elif method == "bans":
            out = c.bans()
        elif method == "unban":
            out = c.unban(params["prefixes"])
        elif method == "ban":
            out = c.ban(params["prefix"], params["seconds"], reason=params.get("reason"), client=params["client"])
        elif method == "apply":
            out = c.apply(params["policy"], client=params["client"])
        elif method == "confirm":
            out = c.confirm()
        elif method == "disable":
            out = c.disable()
        sys.stdout.write("ok\\n" + json.dumps(out))
    except pbxfw.PbxfwError as e:
        sys.stdout.write(f"err {type(e).__name__}\\n{e}")
    """
)


def via_python(d: Daemon) -> Callable[[str, Dict[str, Any]], Tuple[str, Any]]:
    def call(method: str, params: Dict[str, Any]) -> Tuple[str, Any]:
        out = d.run(AS_ADMIN + [sys.executable, "-W", "error", "-c", PY_DRIVER, str(d.socket), method,
                                json.dumps(params_of(d, method, params))])
        head, _, body = out.stdout.partition("\n")
        if head == "ok":
            return "ok", key(method, json.loads(body))
        cls = head.removeprefix("err ")
        return {"RefusedError": "refused", "UsageError": "usage"}.get(cls, cls + out.stderr), body
    return call


def cli_argv(d: Daemon, method: str, params: Dict[str, Any], local: bool) -> List[str]:
    if method == "status":
        return ["status", "--format", "json"]
    if method == "bans":
        return ["bans", "--format", "json"]
    if method == "ban":
        argv = ["ban", params["prefix"], "--for", f"{params['seconds']}s"]
        if "reason" in params:
            argv += ["--reason", params["reason"]]
        return argv + (["--policy", str(d.policy)] if local else [])
    if method == "unban":
        return ["unban"] + params["prefixes"]
    if method == "apply":
        return ["apply", str(d.tmp / f"{params['policy']}.toml")]
    return [method]


def via_cli(d: Daemon, local: bool) -> Callable[[str, Dict[str, Any]], Tuple[str, Any]]:
    def call(method: str, params: Dict[str, Any]) -> Tuple[str, Any]:
        argv = ([] if local else AS_ADMIN) + [str(BIN)] + cli_argv(d, method, params, local)
        out = d.run(argv, {"SSH_CONNECTION": SSH})
        code = out.returncode
        if method in ("status", "bans") and code == 3:
            code = 0  # not loaded: printed all the same
        kind = {0: "ok", 2: "usage", 6: "refused"}.get(code, f"exit {code}: {out.stderr}")
        if kind != "ok":
            said = [line for line in out.stderr.strip().splitlines() if "asking the daemon" not in line]
            return kind, "\n".join(said).removeprefix("pbxfw: ")
        if not local:
            assert "asking the daemon through" in out.stderr, out.stderr
        body = out.stdout
        if method in ("status", "bans"):
            return kind, key(method, json.loads(body))
        if method == "ban":
            return kind, re.search(r"banned (\S+) until", body).group(1)  # type: ignore[union-attr]
        if method == "unban":
            return kind, sorted(re.findall(r"lifted (\S+) from", body))
        if method == "apply":
            return kind, re.search(r"[0-9a-f]{16}", body).group(0)  # type: ignore[union-attr]
        if method == "disable":
            return kind, "disabled" in body
        return kind, body.strip()
    return call


def build_c_client(out_dir: pathlib.Path) -> pathlib.Path:
    exe = out_dir / "client"
    subprocess.run(
        ["cc", "-std=c11", "-Wall", "-Werror", f"-I{ROOT / 'pbxfw-capi' / 'include'}",
         str(ROOT / "pbxfw-capi" / "tests" / "c" / "client.c"), f"-L{LIB_DIR}",
         f"-Wl,-rpath,{LIB_DIR}", "-lpbxfw", "-o", str(exe)],
        check=True,
    )
    return exe


def run_sequence(d: Daemon, call: Callable[[str, Dict[str, Any]], Tuple[str, Any]]) -> List[Tuple[str, Any]]:
    out = [call(m, p) for m, p in SEQUENCE]
    # Back to where the sequence starts, for the next front end.
    subprocess.run(["ip", "netns", "exec", d.ns, str(BIN), "apply", str(d.policy)],
                   env=d.env, check=True, capture_output=True)
    return out


def test_every_front_end_gets_the_same_answers_through_the_socket(daemon: Daemon) -> None:
    d = daemon
    subprocess.run(["ip", "netns", "exec", d.ns, str(BIN), "apply", str(d.policy)],
                   env=d.env, check=True, capture_output=True)
    exe = build_c_client(d.tmp)
    os.chmod(d.tmp, 0o755)
    results = {
        "root": run_sequence(d, via_cli(d, local=True)),
        "cli": run_sequence(d, via_cli(d, local=False)),
        "c": run_sequence(d, via_c(d, exe)),
        "php": run_sequence(d, via_php(d)),
        "python": run_sequence(d, via_python(d)),
    }
    root = results["root"]
    assert [k for k, _ in root] == [
        "ok", "ok", "ok", "ok", "refused", "refused", "ok", "usage", "ok"
    ], root
    assert root[2][1] == ["203.0.113.66"] and root[3][1] == ["203.0.113.66"], root
    assert "is never banned" in root[4][1], root[4]
    assert "lock the administrator out" in root[5][1] and CLIENT in root[5][1], root[5]
    assert "nothing to confirm" in root[7][1], root[7]
    for name in ("cli", "c", "php", "python"):
        got = results[name]
        for i, ((method, _), mine, theirs) in enumerate(zip(SEQUENCE, root, got)):
            where = f"{name}, step {i} {method}"
            assert mine[0] == theirs[0], f"{where}: {mine} vs {theirs}"
            if mine[0] == "ok":
                assert mine[1] == theirs[1], f"{where}: {mine[1]!r} vs {theirs[1]!r}"
        # Through the socket, every front end gets the daemon's words, byte for byte.
        for i, ((method, _), a, b) in enumerate(zip(SEQUENCE, results["cli"], got)):
            if a[0] != "ok":
                assert a[1] == b[1], f"{name}, step {i} {method}: {a[1]!r} vs {b[1]!r}"
    # The never-banned and nothing-to-confirm refusals read the same locally too.
    for name in ("cli", "c", "php", "python"):
        assert results[name][4][1] == root[4][1] and results[name][7][1] == root[7][1], name


def test_the_read_role_looks_and_outsiders_are_refused(daemon: Daemon) -> None:
    d = daemon
    reader = ["setpriv", f"--reuid={USER + 1}", f"--regid={READ_GID}", "--clear-groups", "--"]
    outsider = ["setpriv", f"--reuid={USER + 2}", f"--regid={USER + 2}", "--clear-groups", "--"]
    probe = textwrap.dedent(
        """
        import sys, pbxfw
        try:
            c = pbxfw.Client(sys.argv[1])
            print(c.version()["role"], c.status()["loaded"])
            c.unban(["192.0.2.1"])
        except pbxfw.DeniedError as e:
            print("denied", isinstance(e, PermissionError), e)
        """
    )
    out = d.run(reader + [sys.executable, "-c", probe, str(d.socket)])
    lines = out.stdout.splitlines()
    assert lines[0] == "read False", out
    assert lines[1].startswith("denied True") and "role (read)" in lines[1], out
    out = d.run(outsider + [sys.executable, "-c", probe, str(d.socket)])
    assert out.stdout.startswith("denied True"), out
    # No daemon: UnavailableError, a ConnectionError.
    with pytest.raises(pbxfw.UnavailableError) as e:
        pbxfw.Client(str(d.tmp / "nothing.sock"))
    assert isinstance(e.value, ConnectionError)


def test_an_acme_window_through_the_socket_and_the_module(daemon: Daemon) -> None:
    """A certificate-renewal window (docs/acme.md), opened through the control socket by the
    admin role and looked at by the read role, then through the module as root."""
    d = daemon
    acme = d.tmp / "acme.toml"
    acme.write_text("[settings]\nacme = true\n" + POLICY)
    out = d.run([str(BIN), "apply", str(acme)])
    assert out.returncode == 0, out.stderr
    reader = ["setpriv", f"--reuid={USER + 1}", f"--regid={READ_GID}", "--clear-groups", "--"]
    driver = textwrap.dedent(
        """
        import json, sys, pbxfw
        c = pbxfw.Client(sys.argv[1])
        try:
            if sys.argv[2] == "open":
                out = c.acme_open(30)
            elif sys.argv[2] == "close":
                out = c.acme_close()
            else:
                out = c.acme_status()
            print(json.dumps(out))
        except pbxfw.PbxfwError as e:
            print(type(e).__name__)
        """
    )

    def via(who: List[str], action: str) -> Any:
        r = d.run(who + [sys.executable, "-c", driver, str(d.socket), action])
        assert r.returncode == 0, r.stderr
        text = r.stdout.strip()
        return json.loads(text) if text.startswith("{") else text

    assert via(reader, "status")["open"] is False
    assert via(reader, "open") == "DeniedError"
    opened = via(AS_ADMIN, "open")
    assert opened["open"] is True and opened["expires_in"] == 30 and opened["port"] == 80, opened
    status = via(reader, "status")
    assert status["open"] is True and 0 < status["expires_in"] <= 30, status
    assert via(AS_ADMIN, "close")["open"] is False
    assert via(reader, "status")["open"] is False
    # The module, as root in the namespace.
    module = textwrap.dedent(
        """
        import json, pbxfw
        w = pbxfw.acme("open", 20)
        s = pbxfw.acme()
        c = pbxfw.acme("close")
        try:
            pbxfw.acme("opne")
            bad = "accepted"
        except pbxfw.UsageError:
            bad = "usage"
        print(json.dumps([w["open"], w["expires_in"], s["open"], c["open"], bad]))
        """
    )
    r = d.run([sys.executable, "-c", module])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [True, 20, True, False, "usage"], r.stdout
