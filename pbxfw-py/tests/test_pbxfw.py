"""The Python API of pbxfw, against the installed wheel."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import uuid

import pytest

import pbxfw

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the test machine has 3.11
    tomllib = None

ROOT = pathlib.Path(os.environ.get("PBXFW_ROOT", pathlib.Path(__file__).resolve().parents[2]))
CASES = sorted((ROOT / "testdata" / "cases").glob("*.toml"))

SMALL = '[interfaces]\neth0 = "internet"\neth1 = "local"\n'


# --- Policy -------------------------------------------------------------------------------------


def test_discovery_from_an_asterisk_tree() -> None:
    tree = ROOT / "testdata" / "asterisk"
    found = pbxfw.discover(str(tree))
    trunks = {(t["protocol"], t["host"]) for t in found["policy"]["pbx"]["trunks"]}
    assert ("iax", "192.0.2.80") in trunks and ("pjsip", "sip.provider-c.example") in trunks
    assert found["policy"]["pbx"]["rtp"] == "10000-20000"
    origins = {o["path"]: o["origin"] for o in found["origins"]}
    assert origins["pbx.rtp"] == "rtp_additional.conf:11"
    # As the command line (exit 3) and C (PBXFW_ERR_IO) say it.
    with pytest.raises(FileNotFoundError, match="no Asterisk configuration"):
        pbxfw.discover(str(ROOT / "testdata" / "cases"))
    # A policy naming the directory gets the discovery merged, explicit entries winning.
    policy = pbxfw.Policy.from_toml(f'[pbx]\ndiscover = "{tree}"\nrtp = "12000-12999"\n')
    assert policy.explain(iface="eth0", src="192.0.2.80", proto="udp", dport=4569).decided_by == (
        "trunk:branch-office"
    )
    assert any(d["path"] == "pbx.rtp" for d in policy.diagnostics)


def test_the_three_constructors_agree() -> None:
    doc = {"interfaces": {"eth0": "internet", "eth1": "local"}}
    a = pbxfw.Policy.from_toml(SMALL)
    b = pbxfw.Policy.from_json(json.dumps(doc))
    c = pbxfw.Policy.from_dict(doc)
    assert a.fingerprint == b.fingerprint == c.fingerprint
    assert len(a.fingerprint) == 16
    assert repr(a) == f"<pbxfw.Policy fingerprint={a.fingerprint}>"


def test_a_valid_policy_carries_its_warnings() -> None:
    p = pbxfw.Policy.from_toml(SMALL + '[[networks]]\nsource = "10.1.2.3/8"\nzone = "local"\n')
    assert p.diagnostics == [
        {
            "path": "networks[0].source",
            "severity": "warning",
            "value": "10.1.2.3/8",
            "message": "has host bits set; it is read as 10.0.0.0/8",
        }
    ]
    assert pbxfw.Policy.from_toml(SMALL).diagnostics == []


def test_an_invalid_policy_raises_with_every_diagnostic() -> None:
    bad = '[interfaces]\neth0 = "dmz"\n[pbx]\nrtp = "20000-10000"\n'
    with pytest.raises(pbxfw.ConfigError) as info:
        pbxfw.Policy.from_toml(bad)
    e = info.value
    assert isinstance(e, ValueError) and isinstance(e, pbxfw.PbxfwError)
    paths = sorted(d["path"] for d in e.diagnostics)
    assert paths == ["interfaces.eth0", "pbx.rtp"], e.diagnostics
    assert all(d["severity"] == "error" for d in e.diagnostics)
    assert "interfaces.eth0" in str(e) and "pbx.rtp" in str(e)


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (pbxfw.Policy.from_toml, "[interfaces"),
        (pbxfw.Policy.from_json, "{"),
        (pbxfw.Policy.from_json, "[1, 2]"),
    ],
)
def test_syntax_errors_are_config_errors(make: object, text: str) -> None:
    with pytest.raises(pbxfw.ConfigError) as info:
        make(text)  # type: ignore[operator]
    assert len(info.value.diagnostics) == 1
    assert info.value.diagnostics[0]["severity"] == "error"


def test_from_dict_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(pbxfw.ConfigError) as info:
        pbxfw.Policy.from_dict({"interfaces": {"eth0": object()}})
    assert "JSON-serialisable" in str(info.value)
    assert info.value.diagnostics == []


def test_wrong_types_are_type_errors() -> None:
    with pytest.raises(TypeError):
        pbxfw.Policy.from_toml(b"[interfaces]")  # type: ignore[arg-type]


def test_compile_for_every_backend() -> None:
    p = pbxfw.Policy.from_toml(SMALL)
    assert "table inet pbxfw {" in p.compile()
    assert p.compile("nft") == p.compile()
    ipt = p.compile("iptables")
    assert '-I INPUT 1 -m comment --comment "pbxfw" -j PBXFW' in ipt
    assert f"fingerprint {p.fingerprint}" in ipt
    assert p.compile("ir").startswith("pbxfw-ir 1\n")
    with pytest.raises(ValueError, match="unknown backend"):
        p.compile("pf")


# --- explain ------------------------------------------------------------------------------------


def test_explain_names_the_deciding_object() -> None:
    p = pbxfw.Policy.from_toml(SMALL)
    e = p.explain(iface="eth1", src="192.0.2.5", proto="tcp", dport=22)
    assert (e.verdict, e.zone, e.decided_by) == ("accept", "local", "zone:local service:ssh")
    assert e.step == 8 and e.step_name and e.chain == "zone_local"
    assert isinstance(e.rule_index, int)
    assert repr(e).startswith("<pbxfw.Explanation verdict='accept'")
    d = p.explain(iface="eth0", src="198.51.100.1", proto="tcp", dport=22)
    assert (d.verdict, d.decided_by) == ("drop", "default")
    echo = p.explain(iface="eth0", src="2001:db8::1", proto="icmpv6")
    assert echo.verdict == "accept"
    # An established packet of a blacklisted source takes the fast path (step 2: its flows
    # were cut when it was blacklisted); an answer on a connection the PBX opened meets the
    # blacklist.
    b = pbxfw.Policy.from_toml(SMALL + '[blacklist]\nentries = ["198.51.100.0/24"]\n')
    mine = b.explain(iface="eth0", src="198.51.100.1", proto="tcp", dport=22, state="established")
    assert (mine.verdict, mine.step) == ("accept", 2)
    answer = b.explain(
        iface="eth0", src="198.51.100.1", proto="tcp", dport=22, state="established", reply=True
    )
    assert (answer.verdict, answer.decided_by) == ("drop", "blacklist:198.51.100.0/24")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"src": "not-an-address", "proto": "udp", "dport": 5060},
        {"src": "192.0.2.1", "proto": "sctp", "dport": 5060},
        {"src": "192.0.2.1", "proto": "icmp", "dport": 5060},
        {"src": "192.0.2.1", "proto": "udp", "icmp_type": 8},
        {"src": "192.0.2.1", "proto": "udp", "dport": 5060, "state": "half-open"},
    ],
)
def test_explain_refuses_bad_packets(kwargs: dict) -> None:
    p = pbxfw.Policy.from_toml(SMALL)
    with pytest.raises(ValueError):
        p.explain(iface="eth0", **kwargs)


def test_explain_needs_keywords_and_fits_in_a_port() -> None:
    p = pbxfw.Policy.from_toml(SMALL)
    with pytest.raises(TypeError):
        p.explain("eth0", "192.0.2.1", "udp")  # type: ignore[misc]
    with pytest.raises(OverflowError):
        p.explain(iface="eth0", src="192.0.2.1", proto="udp", dport=70000)


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11")
@pytest.mark.parametrize("path", CASES, ids=[c.stem for c in CASES])
def test_explain_agrees_with_the_shared_cases(path: pathlib.Path) -> None:
    assert tomllib is not None
    doc = tomllib.loads(path.read_text())
    expects = doc.pop("expect")
    policy = pbxfw.Policy.from_dict(doc)
    checked = 0
    for i, x in enumerate(expects):
        # Set contents other than a registration, meters over their rate, a connection's
        # mark and a payload are not inputs of explain.
        if x.get("in_sets") or x.get("over") or x.get("ct_mark") or x.get("payload") \
                or "tcp_syn" in x:
            continue
        e = policy.explain(
            iface=x["iif"],
            src=x["src"],
            proto=x["proto"],
            dport=x.get("dport"),
            sport=x.get("sport"),
            icmp_type=x.get("icmp_type"),
            state=x.get("state", "new"),
            registered=x.get("registered", False),
            reply=x.get("reply", False),
        )
        where = f"{path.stem} expect[{i}] ({x['note']})"
        assert e.verdict == x["verdict"], where
        if "decided_by" in x:
            assert e.decided_by == x["decided_by"], where
        if "zone" in x:
            assert e.zone == x["zone"], where
        checked += 1
    assert checked > 0


def test_the_cases_are_there() -> None:
    assert len(CASES) >= 8


# --- the responsive layer -----------------------------------------------------------------------

SCANNER = {
    "event": "auth_failed",
    "source": "203.0.113.9",
    "reason": "unknown_account",
    "account": "100",
    "protocol": "pjsip",
}


def test_a_scanner_is_banned_and_the_ban_survives_a_snapshot() -> None:
    policy = pbxfw.Policy.from_toml(SMALL)
    r = pbxfw.Responsive(policy)
    t = 1_795_000_000
    actions: list = []
    for i in range(5):
        actions += r.on_event(dict(SCANNER, account=str(100 + i)), now=t + i)
    bans = [a for a in actions if a["action"] == "ban"]
    assert len(bans) == 1, actions
    assert bans[0]["prefix"] == "203.0.113.9"
    assert bans[0]["until"] > t
    assert r.bans(now=t + 10) == [("203.0.113.9", bans[0]["until"])]
    # The same as a JSON line, with its own time.
    line = json.dumps(dict(SCANNER, source="203.0.113.10", at=t))
    assert isinstance(r.on_event(line), list)
    again = pbxfw.Responsive.restore(policy, r.snapshot())
    assert again.bans(now=t + 10) == r.bans(now=t + 10)
    assert again.snapshot() == r.snapshot()
    assert isinstance(r.tick(now=t + 10**7), list)
    assert r.bans(now=t + 10**7) == []
    assert "tracking" in repr(r)


def test_a_registered_phone_is_allowed() -> None:
    r = pbxfw.Responsive(pbxfw.Policy.from_toml(SMALL))
    acts = r.on_event(
        {"event": "registered", "source": "198.51.100.7", "account": "300", "expires": 3600},
        now=1_795_000_000,
    )
    assert [a["action"] for a in acts] == ["allow_registered"]
    assert acts[0]["addr"] == "198.51.100.7" and acts[0]["account"] == "300"


def test_bad_events_and_snapshots_are_refused() -> None:
    policy = pbxfw.Policy.from_toml(SMALL)
    r = pbxfw.Responsive(policy)
    for bad in ['{"event":"nonsense"}', "not json", {"event": "auth_failed"}]:
        with pytest.raises(ValueError, match="not a pbxfw event"):
            r.on_event(bad, now=1)
    with pytest.raises(pbxfw.StateError) as info:
        pbxfw.Responsive.restore(policy, '{"version": 99}')
    assert isinstance(info.value, ValueError)
    with pytest.raises(pbxfw.StateError):
        pbxfw.Responsive.restore(policy, "garbage")


# --- exceptions ---------------------------------------------------------------------------------


def test_the_exception_hierarchy() -> None:
    assert issubclass(pbxfw.ConfigError, pbxfw.PbxfwError)
    assert issubclass(pbxfw.ConfigError, ValueError)
    assert issubclass(pbxfw.ApplyError, pbxfw.BackendError)
    assert issubclass(pbxfw.BackendError, pbxfw.PbxfwError)
    assert issubclass(pbxfw.RefusedError, pbxfw.PbxfwError)
    assert not issubclass(pbxfw.RefusedError, pbxfw.BackendError)
    assert issubclass(pbxfw.UsageError, ValueError)
    r = pbxfw.RefusedError("m", "lockout")
    assert (str(r), r.reason) == ("m", "lockout")
    e = pbxfw.ApplyError("m", "nft", "refused", "load")
    assert (str(e), e.backend, e.kind, e.stage) == ("m", "nft", "refused", "load")


def test_unknown_backends_are_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        pbxfw.status(backend="pf")
    with pytest.raises(ValueError, match="unknown backend"):
        pbxfw.disable("pf")
    with pytest.raises(ValueError, match="unknown backend"):
        pbxfw.apply(pbxfw.Policy.from_toml(SMALL), "pf")


def test_the_package_is_typed() -> None:
    here = pathlib.Path(pbxfw.__file__).parent
    assert (here / "py.typed").is_file()
    assert (here / "_pbxfw.pyi").is_file()
    assert pbxfw._pbxfw.__name__ == "pbxfw._pbxfw"  # type: ignore[attr-defined]


# --- the kernel, in a network namespace this test creates ---------------------------------------

kernel = pytest.mark.skipif(
    os.geteuid() != 0 or bool(os.environ.get("PBXFW_SKIP_KERNEL")),
    reason="kernel tests need root (PBXFW_SKIP_KERNEL skips them)",
)


@pytest.fixture
def netns():  # type: ignore[no-untyped-def]
    name = f"pbxfw-py-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_netns(ns: str, code: str) -> dict:
    """Run `code` with this interpreter inside `ns`; it prints one JSON object. What an apply
    keeps on the host (its record, a pending confirmation) goes to directories of its own."""
    with tempfile.TemporaryDirectory() as state, tempfile.TemporaryDirectory() as run:
        env = dict(os.environ, PBXFW_STATE_DIR=state, PBXFW_RUN_DIR=run)
        env.pop("SSH_CONNECTION", None)
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@kernel
@pytest.mark.parametrize("backend", ["nft", "iptables-nft", "iptables-legacy"])
def test_apply_status_disable(netns: str, backend: str) -> None:
    got = in_netns(
        netns,
        f"""
        import json, pbxfw
        p = pbxfw.Policy.from_toml({SMALL!r})
        applied = pbxfw.apply(p, backend={backend!r})
        st = pbxfw.status(backend={backend!r})
        gone = pbxfw.disable({backend!r})
        again = pbxfw.disable({backend!r})
        after = pbxfw.status({backend!r})
        print(json.dumps(dict(fp=p.fingerprint, applied=applied, status=st, gone=gone,
                              again=again, after=after)))
        """,
    )
    assert got["applied"]["fingerprint"] == got["fp"]
    assert got["applied"]["elapsed_ms"] > 0
    assert got["status"]["loaded"] is True
    assert got["status"]["fingerprint"] == got["fp"]
    assert {"ban4", "registered6"} <= {s["name"] for s in got["status"]["sets"]}
    assert got["status"]["backend"] in ("nft", "iptables")
    assert (got["gone"], got["again"]) == (True, False)
    assert got["after"]["loaded"] is False


@kernel
def test_a_refused_apply_raises_apply_error_and_changes_nothing(netns: str) -> None:
    # Another table named like pbxfw's, with a set of the wrong type: the kernel refuses the
    # whole transaction.
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input="table inet pbxfw {\n set ban4 {\n  type ipv6_addr\n }\n}\n",
        text=True,
        check=True,
    )
    got = in_netns(
        netns,
        f"""
        import json, pbxfw
        try:
            pbxfw.apply(pbxfw.Policy.from_toml({SMALL!r}))
            print(json.dumps(dict(raised=None)))
        except pbxfw.ApplyError as e:
            print(json.dumps(dict(raised=type(e).__name__, stage=e.stage, kind=e.kind,
                                  backend=e.backend, base=isinstance(e, pbxfw.BackendError))))
        """,
    )
    assert got == {
        "raised": "ApplyError",
        "stage": "load",
        "kind": "refused",
        "backend": "nft",
        "base": True,
    }
    table = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "pbxfw"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "type ipv6_addr" in table and "chain" not in table


@kernel
def test_the_interpreter_runs_while_the_kernel_is_loaded(netns: str) -> None:
    # A large blacklist makes the apply take a while; another Python thread keeps running
    # meanwhile only if the call releases the interpreter.
    got = in_netns(
        netns,
        f"""
        import json, threading, time, pbxfw
        entries = ",".join(f'"10.{{i >> 8 & 255}}.{{i & 255}}.{{i >> 16}}"' for i in range(50000))
        p = pbxfw.Policy.from_toml({SMALL!r} + f"[blacklist]\\nentries = [{{entries}}]\\n")
        result = {{}}
        def run():
            result.update(pbxfw.apply(p))
        t = threading.Thread(target=run)
        stamps = []
        t.start()
        while t.is_alive():
            stamps.append(time.monotonic())
        t.join()
        # How long this thread kept running while the other one was alive.
        print(json.dumps(dict(elapsed_ms=result["elapsed_ms"], ran_ms=(stamps[-1] - stamps[0]) * 1000)))
        """,
    )
    assert got["elapsed_ms"] > 50, got
    assert got["ran_ms"] > got["elapsed_ms"] / 2, got


@kernel
def test_the_lock_file_refuses_disable(netns: str, tmp_path: pathlib.Path) -> None:
    lock = tmp_path / "lock"
    lock.write_text("")
    got = in_netns(
        netns,
        f"""
        import json, os, pbxfw
        os.environ["PBXFW_LOCK_FILE"] = {str(lock)!r}
        pbxfw.apply(pbxfw.Policy.from_toml({SMALL!r}))
        try:
            pbxfw.disable()
            raised = None
        except pbxfw.RefusedError as e:
            raised = dict(reason=e.reason, message=str(e))
        still = pbxfw.status()["loaded"]
        os.remove({str(lock)!r})
        print(json.dumps(dict(raised=raised, still=still, gone=pbxfw.disable())))
        """,
    )
    assert got["raised"]["reason"] == "locked", got
    assert "lock file" in got["raised"]["message"]
    assert got["still"] is True and got["gone"] is True


@kernel
def test_apply_is_refused_where_the_command_line_refuses(netns: str) -> None:
    # An administrator on the internet whose SSH the policy does not open: refused, nothing
    # loaded; forced, it goes through.
    got = in_netns(
        netns,
        f"""
        import json, pbxfw
        p = pbxfw.Policy.from_toml({SMALL!r})
        try:
            pbxfw.apply(p, admins=["198.51.100.7"])
            raised = None
        except pbxfw.RefusedError as e:
            raised = dict(reason=e.reason, message=str(e))
        loaded = pbxfw.status()["loaded"]
        web = None
        try:
            pbxfw.apply(p, admins=["198.51.100.7:443"])
        except pbxfw.RefusedError as e:
            web = str(e)
        forced = pbxfw.apply(p, admins=["198.51.100.7"], force=True)["fingerprint"]
        try:
            pbxfw.apply(p, admins=["nowhere"])
            bad = None
        except pbxfw.UsageError as e:
            bad = str(e)
        print(json.dumps(dict(raised=raised, loaded=loaded, web=web, forced=forced,
                              fp=p.fingerprint, bad=bad)))
        """,
    )
    assert got["raised"]["reason"] == "lockout", got
    assert "198.51.100.7 (tcp/22" in got["raised"]["message"], got
    assert got["loaded"] is False
    assert "tcp/443" in got["web"]
    assert got["forced"] == got["fp"]
    assert "nowhere" in got["bad"]


@kernel
def test_carry_out_bans_and_lifts_by_role(netns: str) -> None:
    got = in_netns(
        netns,
        f"""
        import json, time, pbxfw
        p = pbxfw.Policy.from_toml({SMALL!r})
        pbxfw.apply(p)
        r = pbxfw.Responsive(p)
        t = int(time.time())
        actions = []
        for i in range(5):
            actions += r.on_event(dict({SCANNER!r}, account=str(100 + i)), now=t)
        done = pbxfw.carry_out(p, actions, now=t)
        size = lambda: {{s["name"]: s["size"] for s in pbxfw.status()["sets"]}}
        banned = size()
        lifted = pbxfw.carry_out(p, [dict(action="unban", prefix="203.0.113.9")])
        try:
            pbxfw.carry_out(p, [dict(action="shred")])
            bad = None
        except pbxfw.UsageError as e:
            bad = str(e)
        print(json.dumps(dict(done=done, banned=banned, lifted=lifted, after=size(), bad=bad)))
        """,
    )
    assert got["done"]["failures"] == [] and got["done"]["updates"] >= 1, got
    assert got["banned"]["ban4"] == 1, got
    assert got["lifted"]["failures"] == [], got
    assert got["after"]["ban4"] == 0, got
    assert got["bad"] and "actions" in got["bad"]


@kernel
def test_bans_by_hand_are_listed_lifted_and_never_of_what_the_policy_protects(netns: str) -> None:
    got = in_netns(
        netns,
        f"""
        import json, pbxfw
        p = pbxfw.Policy.from_toml({SMALL!r} + '[settings]\\nadmins = ["192.0.2.250"]\\n')
        pbxfw.apply(p, force=True)
        banned = pbxfw.ban(p, "203.0.113.66", 3600, reason="seen on the web server")
        listed = pbxfw.bans()
        try:
            pbxfw.ban(p, "192.0.2.250", 60)
            refused = None
        except pbxfw.RefusedError as e:
            refused = [e.reason, str(e)]
        try:
            pbxfw.ban(p, "203.0.113.67", 0)
            zero = None
        except pbxfw.UsageError as e:
            zero = str(e)
        lifted = pbxfw.unban(["203.0.113.0/24"])
        print(json.dumps(dict(banned=banned, listed=listed, refused=refused, zero=zero,
                              lifted=lifted, after=pbxfw.bans())))
        """,
    )
    assert got["banned"]["set"] == "ban4" and got["banned"]["reason"] == "seen on the web server"
    bans = got["listed"]["bans"]
    assert [(b["prefix"], b["origin"]) for b in bans] == [("203.0.113.66", "manual")], bans
    assert 3500 < bans[0]["expires_in"] <= 3600
    assert got["refused"][0] == "never_banned" and "administrator" in got["refused"][1]
    assert got["zero"] and "for longer, use the blacklist" in got["zero"]
    assert got["lifted"]["lifted"] == [{"set": "ban4", "element": "203.0.113.66"}]
    assert got["after"]["bans"] == []


PBXFW_BIN = pathlib.Path(
    os.environ.get("PBXFW_BIN", ROOT / "target" / "debug" / "pbxfw")
)
needs_bin = pytest.mark.skipif(
    not PBXFW_BIN.is_file(), reason="needs the pbxfw program (scripts/python-test builds it)"
)


@kernel
@needs_bin
def test_a_rollback_runs_on_the_backend_the_apply_used(netns: str) -> None:
    got = in_netns(
        netns,
        f"""
        import json, os, pbxfw
        os.environ["PBXFW_BIN"] = {str(PBXFW_BIN)!r}
        p = pbxfw.Policy.from_toml({SMALL!r})
        pbxfw.apply(p, "iptables-nft", confirm=120)
        try:
            pbxfw.rollback("nft")
            other = None
        except pbxfw.UsageError as e:
            other = str(e)
        still = pbxfw.status("iptables-nft")["pending_confirmation"] is not None
        done = pbxfw.rollback()
        print(json.dumps(dict(other=other, still=still, done=done,
                              loaded=pbxfw.status("iptables-nft")["loaded"])))
        """,
    )
    assert "iptables-nft" in got["other"], got
    assert got["still"] is True, "a refused rollback takes nothing"
    assert "removed" in got["done"], got
    assert got["loaded"] is False


@kernel
@needs_bin
def test_an_apply_without_a_rollback_timer_is_refused(netns: str, tmp_path: pathlib.Path) -> None:
    # A copy of pbxfw others may write: the timer would run it as root later, so it is not
    # trusted; a program that does not exist cannot time anything. Neither apply changes
    # anything.
    loose = tmp_path / "pbxfw"
    loose.write_bytes(PBXFW_BIN.read_bytes())
    loose.chmod(0o775)
    got = in_netns(
        netns,
        f"""
        import json, os, pbxfw
        p = pbxfw.Policy.from_toml({SMALL!r})
        out = {{}}
        for name, program in [("missing", "/nonexistent/pbxfw"), ("loose", {str(loose)!r}),
                              ("relative", "pbxfw")]:
            os.environ["PBXFW_BIN"] = program
            try:
                pbxfw.apply(p, confirm=120)
                out[name] = None
            except OSError as e:
                out[name] = str(e)
        st = pbxfw.status()
        out["loaded"] = st["loaded"]
        out["pending"] = st["pending_confirmation"]
        print(json.dumps(out))
        """,
    )
    assert got["missing"] and "nonexistent" in got["missing"], got
    assert got["loose"] and "writable" in got["loose"], got
    assert got["relative"] and "absolute" in got["relative"], got
    assert got["loaded"] is False and got["pending"] is None, got
