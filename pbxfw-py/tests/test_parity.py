"""Every front end is the same product: the same sequence run through the command line, the C
API (from C and from PHP) and Python gives the same refusals, the same results and
byte-identical status JSON (timestamps aside).

The sequence, each front end in a network namespace and state directories of its own:
an apply that would cut off an administrator named by the caller (refused, nothing loaded),
the same for the SSH session in `$SSH_CONNECTION`, status, a plain apply, an apply waiting
for confirmation, a second one and a plain one (both refused: one is waiting), status,
rollback, status, and a confirm with nothing to confirm. Then the front ends share one host:
what one applies with a confirmation, another confirms or rolls back.

It needs the `pbxfw` program (`$PBXFW_BIN`), `libpbxfw.so` beside it, a C compiler and
php-cli; scripts/python-test builds the first two.
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
import uuid
from typing import Callable, Dict, List, Tuple

import pytest

ROOT = pathlib.Path(os.environ.get("PBXFW_ROOT", pathlib.Path(__file__).resolve().parents[2]))
BIN = pathlib.Path(os.environ.get("PBXFW_BIN", ROOT / "target" / "debug" / "pbxfw"))
LIB_DIR = BIN.parent

POLICY_A = '[interfaces]\neth0 = "internet"\neth1 = "local"\n'
POLICY_B = POLICY_A + '[blacklist]\nentries = ["192.0.2.66"]\n'
ADMIN = "198.51.100.7"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or bool(os.environ.get("PBXFW_SKIP_KERNEL")),
    reason="kernel tests need root (PBXFW_SKIP_KERNEL skips them)",
)

# One step: ("apply", policy, {"confirm": …, "admins": […]}) or ("confirm",), ("rollback",),
# ("status",).
Step = Tuple
SSH = {"SSH_CONNECTION": "198.51.100.8 50022 10.99.0.1 22"}
SEQUENCE: List[Step] = [
    ("apply", "a", {"admins": [ADMIN]}),
    ("apply", "a", {}, SSH),
    ("status",),
    ("apply", "a", {}),
    ("apply", "b", {"confirm": 120}),
    ("apply", "b", {"confirm": 120}),
    ("apply", "a", {}),
    ("status",),
    ("rollback",),
    ("status",),
    ("confirm",),
]

# What the outcome means, whatever the front end's way of saying it.
C_CODES = {0: "ok", 5: "usage", 10: "refused", 11: "refused"}
CLI_CODES = {0: "ok", 2: "usage", 6: "refused"}
PY_CLASSES = {"RefusedError": "refused", "UsageError": "usage"}

PY_DRIVER = textwrap.dedent(
    """
    import json, sys, pbxfw
    step = sys.argv[1]
    try:
        if step == "apply":
            p = pbxfw.Policy.from_toml(open(sys.argv[2]).read())
            out = json.dumps(pbxfw.apply(p, **json.loads(sys.argv[3])))
        elif step == "confirm":
            out = pbxfw.confirm()
        elif step == "rollback":
            out = pbxfw.rollback()
        else:
            out = json.dumps(pbxfw.status())
        sys.stdout.write("ok\\n" + out)
    except pbxfw.PbxfwError as e:
        sys.stdout.write(f"err {type(e).__name__}\\n{e}")
    """
)


def build_c_driver(out_dir: pathlib.Path) -> pathlib.Path:
    exe = out_dir / "parity"
    subprocess.run(
        [
            "cc",
            "-std=c11",
            "-Wall",
            "-Werror",
            f"-I{ROOT / 'pbxfw-capi' / 'include'}",
            str(ROOT / "pbxfw-capi" / "tests" / "c" / "parity.c"),
            f"-L{LIB_DIR}",
            f"-Wl,-rpath,{LIB_DIR}",
            "-lpbxfw",
            "-o",
            str(exe),
        ],
        check=True,
    )
    return exe


class FrontEnd:
    """Runs steps inside a namespace with state directories of its own."""

    def __init__(self, name: str, argv: Callable[[Step, Dict[str, str]], List[str]]) -> None:
        self.name = name
        self.argv = argv

    def run(self, ns: str, env: Dict[str, str], step: Step, files: Dict[str, str]) -> Tuple[str, str]:
        out = subprocess.run(
            ["ip", "netns", "exec", ns] + self.argv(step, files),
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(env, **(step[3] if len(step) > 3 else {})),
        )
        return self.meaning(step, out)

    def meaning(self, step: Step, out: subprocess.CompletedProcess) -> Tuple[str, str]:
        head, _, body = out.stdout.partition("\n")
        if self.name == "cli":
            kind = CLI_CODES.get(out.returncode, f"exit {out.returncode}")
            if step[0] == "status" and out.returncode == 3:
                kind = "ok"  # not loaded: printed all the same
            if kind != "ok":
                return kind, out.stderr.strip().removeprefix("pbxfw: ")
            body = out.stdout.removesuffix("\n")
        elif head == "ok":
            kind = "ok"
        elif self.name == "python":
            kind = PY_CLASSES.get(head.removeprefix("err "), head)
        else:
            code = int(head.removeprefix("err ") or -1)
            kind = C_CODES.get(code, f"code {code}")
        if kind != "ok":
            return kind, body
        if step[0] == "apply":
            # Each says it its own way; what was loaded is the fingerprint.
            found = re.search(r"[0-9a-f]{16}", body)
            return kind, found.group(0) if found else body
        return kind, body


def front_ends(tmp: pathlib.Path) -> List[FrontEnd]:
    c_driver = build_c_driver(tmp)
    php = ROOT / "pbxfw-capi" / "php" / "tests" / "parity.php"

    def cli(step: Step, files: Dict[str, str]) -> List[str]:
        if step[0] == "apply":
            argv = [str(BIN), "apply", files[step[1]], "--backend", "nft"]
            for a in step[2].get("admins", []):
                argv += ["--admin", a]
            if "confirm" in step[2]:
                argv += ["--confirm", str(step[2]["confirm"])]
            return argv
        if step[0] == "status":
            return [str(BIN), "status", "--format", "json"]
        return [str(BIN), step[0]]

    def c(step: Step, files: Dict[str, str]) -> List[str]:
        if step[0] == "apply":
            return [str(c_driver), "apply", files[step[1]], json.dumps(step[2])]
        return [str(c_driver), step[0]]

    def php_argv(step: Step, files: Dict[str, str]) -> List[str]:
        base = ["php", "-d", "ffi.enable=1", str(php), str(LIB_DIR / "libpbxfw.so")]
        if step[0] == "apply":
            return base + ["apply", files[step[1]], json.dumps(step[2])]
        return base + [step[0]]

    def python(step: Step, files: Dict[str, str]) -> List[str]:
        base = [sys.executable, "-W", "error", "-c", PY_DRIVER]
        if step[0] == "apply":
            return base + ["apply", files[step[1]], json.dumps(step[2])]
        return base + [step[0]]

    return [FrontEnd("cli", cli), FrontEnd("c", c), FrontEnd("php", php_argv), FrontEnd("python", python)]


def without_countdown(text: str) -> str:
    """A refusal's "rolled back in 1 min 59 s" depends on when it ran: blanked."""
    return re.sub(r"rolled back in [0-9a-z ]+ unless", "rolled back in … unless", text)


def normalised_status(text: str) -> str:
    """The status text with its one timestamp (the confirmation deadline, in Unix
    milliseconds and in ISO 8601) blanked."""
    text = re.sub(r'"deadline_ms": \d+', '"deadline_ms": 0', text)
    return re.sub(r'"deadline_iso": "[^"]*"', '"deadline_iso": ""', text)


def run_sequence(fe: FrontEnd, tmp: pathlib.Path) -> List[Tuple[str, str]]:
    ns = f"pbxfw-par-{uuid.uuid4().hex[:8]}"
    state = tmp / f"{fe.name}-state"
    run = tmp / f"{fe.name}-run"
    state.mkdir()
    run.mkdir()
    files = {"a": str(tmp / "a.toml"), "b": str(tmp / "b.toml")}
    env = dict(
        os.environ,
        PBXFW_STATE_DIR=str(state),
        PBXFW_RUN_DIR=str(run),
        PBXFW_LOCK_FILE=str(tmp / "no-lock"),
        PBXFW_BIN=str(BIN),
    )
    env.pop("SSH_CONNECTION", None)
    env.pop("PBXFW_POLICY", None)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        return [fe.run(ns, env, step, files) for step in SEQUENCE]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.skipif(
    not (BIN.is_file() and (LIB_DIR / "libpbxfw.so").is_file() and shutil.which("php") and shutil.which("cc")),
    reason="needs the pbxfw program, libpbxfw.so, php-cli and cc (scripts/python-test)",
)
def test_every_front_end_runs_the_same_sequence_the_same_way() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        (tmp / "a.toml").write_text(POLICY_A)
        (tmp / "b.toml").write_text(POLICY_B)
        results = {fe.name: run_sequence(fe, tmp) for fe in front_ends(tmp)}

    cli = results["cli"]
    kinds = [k for k, _ in cli]
    assert kinds == [
        "refused", "refused", "ok", "ok", "ok", "refused", "refused", "ok", "ok", "ok", "usage"
    ], cli
    # The refusals say why, naming the session and the rule that would drop it.
    assert "lock the administrator out" in cli[0][1] and f"{ADMIN} (tcp/22" in cli[0][1], cli[0]
    assert "198.51.100.8 (tcp/22" in cli[1][1] and "SSH_CONNECTION" in cli[1][1], cli[1]
    assert "waiting for confirmation" in cli[5][1] and "waiting for confirmation" in cli[6][1]
    fp_a, fp_b = cli[3][1], cli[4][1]
    assert fp_a != fp_b
    assert cli[8][1] == f"rolled back ruleset {fp_b}: ruleset {fp_a} is back"
    pending = json.loads(cli[7][1])
    assert pending["fingerprint"] == fp_b and pending["pending_confirmation"]["fingerprint"] == fp_b
    after = json.loads(cli[9][1])
    assert after["fingerprint"] == fp_a and after["pending_confirmation"] is None
    assert json.loads(cli[2][1])["loaded"] is False

    for name in ("c", "php", "python"):
        got = results[name]
        for i, (step, mine, theirs) in enumerate(zip(SEQUENCE, cli, got)):
            where = f"{name}, step {i} {step}"
            assert mine[0] == theirs[0], f"{where}: {mine} vs {theirs}"
            if step[0] != "status":
                assert without_countdown(mine[1]) == without_countdown(theirs[1]), (
                    f"{where}: {mine[1]!r} vs {theirs[1]!r}"
                )
            elif name == "python":
                # Python gets the same JSON as a dict.
                assert json.loads(normalised_status(mine[1])) == json.loads(
                    normalised_status(json.dumps(json.loads(theirs[1]), indent=2))
                ), where
            else:
                assert normalised_status(mine[1]) == normalised_status(theirs[1]), where


@pytest.mark.skipif(
    not (BIN.is_file() and (LIB_DIR / "libpbxfw.so").is_file() and shutil.which("php") and shutil.which("cc")),
    reason="needs the pbxfw program, libpbxfw.so, php-cli and cc (scripts/python-test)",
)
def test_what_one_front_end_applies_another_confirms_or_rolls_back() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        (tmp / "a.toml").write_text(POLICY_A)
        (tmp / "b.toml").write_text(POLICY_B)
        by = {fe.name: fe for fe in front_ends(tmp)}
        files = {"a": str(tmp / "a.toml"), "b": str(tmp / "b.toml")}
        for sub in ("state", "run"):
            (tmp / sub).mkdir()
        env = dict(
            os.environ,
            PBXFW_STATE_DIR=str(tmp / "state"),
            PBXFW_RUN_DIR=str(tmp / "run"),
            PBXFW_LOCK_FILE=str(tmp / "no-lock"),
            PBXFW_BIN=str(BIN),
        )
        env.pop("SSH_CONNECTION", None)
        ns = f"pbxfw-par-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            steps = [
                ("cli", ("apply", "a", {})),
                ("php", ("apply", "b", {"confirm": 120})),
                ("cli", ("confirm",)),
                ("python", ("apply", "a", {"confirm": 120})),
                ("c", ("rollback",)),
                ("c", ("apply", "a", {"confirm": 120})),
                ("python", ("confirm",)),
                ("python", ("status",)),
            ]
            got = [(who, by[who].run(ns, env, step, files)) for who, step in steps]
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    kinds = [g[1][0] for g in got]
    assert kinds == ["ok"] * len(steps), got
    fp_a, fp_b = got[0][1][1], got[1][1][1]
    assert fp_b in got[2][1][1], "the command line confirmed what PHP applied"
    assert got[4][1][1] == f"rolled back ruleset {fp_a}: ruleset {fp_b} is back", got[4]
    assert fp_a in got[6][1][1], "Python confirmed what C applied"
    final = json.loads(got[7][1][1])
    assert final["fingerprint"] == fp_a and final["pending_confirmation"] is None
