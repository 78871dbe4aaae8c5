#!/usr/bin/env python3
"""Write an Asterisk log of N lines for the replay benchmark (deterministic: fixed seed).

Lines are the recorded real-format samples of testdata/events/asterisk-full.log (chan_sip,
res_pjsip and security-channel lines, registrations, failures) with their IPv4 addresses
rewritten to spread over many sources, mixed with ordinary VERBOSE call-handling lines that
neither tool should match, about one in two.
"""
import random, re, sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
root = sys.argv[2] if len(sys.argv) > 2 else "."
templates = [l.rstrip("\n") for l in open(f"{root}/testdata/events/asterisk-full.log")
             if l.strip() and not l.startswith("#")]
noise = [
    "[2026-11-20 10:15:40] VERBOSE[2345][C-00000042] pbx.c: Executing [s@macro-dial-one:1] Set(\"SIP/300-0000002a\", \"DEXTEN=300\") in new stack",
    "[2026-11-20 10:15:41] VERBOSE[2345][C-00000042] app_dial.c: Called PJSIP/300",
    "[2026-11-20 10:15:42] VERBOSE[2345][C-00000042] app_dial.c: PJSIP/300-00000011 is ringing",
    "[2026-11-20 10:15:43] VERBOSE[2345][C-00000042] bridge_channel.c: Channel PJSIP/300-00000011 joined 'simple_bridge' basic-bridge",
    "[2026-11-20 10:15:44] VERBOSE[1638] res_pjsip/pjsip_configuration.c: Contact 300/sip:300@198.51.100.7:5062 is now Reachable.  RTT: 12.345 msec",
]
rnd = random.Random(42)
ipv4 = re.compile(r"\b(203\.0\.113|198\.51\.100)\.\d{1,3}\b")
out = sys.stdout
for i in range(n):
    if rnd.random() < 0.5:
        out.write(rnd.choice(noise) + "\n")
        continue
    t = templates[i % len(templates)]
    a = rnd.randrange(1, 255)
    b = rnd.randrange(1, 255)
    out.write(ipv4.sub(lambda m: f"{m.group(1).split('.')[0]}.{a}.{b}.{rnd.randrange(1, 255)}", t) + "\n")
