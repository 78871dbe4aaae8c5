#!/usr/bin/env python3
"""SIP clients from many source addresses at once, for the efficacy harness
(benches/src/bin/efficacy.rs): password guessing from each source, in turn or round-robin,
with a chosen User-Agent; phones that register with the right password and then keep sending;
a trunk's mixed requests.

Every request waits at most --timeout for its answer (the namespaces answer in well under a
millisecond), and an unanswered one counts as stopped by the firewall.

  crack:   per guess, REGISTER (401 with a nonce), then REGISTER with a wrong password; the guess
           counts as *answered* when that second request gets a final answer (401/403). The
           first request going unanswered ends the guess unanswered.
  phone:   REGISTER with the right password (401, then 200), then --count requests
           (SUBSCRIBE and OPTIONS alternately) --interval apart.
  mixed:   --count requests (OPTIONS, INVITE, REGISTER, SUBSCRIBE in turn) with no auth.

Prints one JSON object.
"""
import argparse, hashlib, json, random, re, socket, time


def md5(s):
    return hashlib.md5(s.encode()).hexdigest()


class Agent:
    def __init__(self, src, dst, port, ua, user, timeout):
        fam = socket.AF_INET6 if ":" in src else socket.AF_INET
        self.s = socket.socket(fam, socket.SOCK_DGRAM)
        self.s.bind((src, 0))
        self.s.settimeout(timeout)
        self.lport = self.s.getsockname()[1]
        self.v6 = fam == socket.AF_INET6
        self.host = f"[{dst}]" if self.v6 else dst
        self.shost = f"[{src}]" if self.v6 else src
        self.dst, self.port, self.ua, self.user = dst, port, ua, user
        self.callid = "%x@pbxfw-efficacy" % random.getrandbits(64)
        self.tag = "%x" % random.getrandbits(32)
        self.cseq = 0
        self.sent = 0
        self.answered = 0

    def request(self, method, ruri=None, auth=None, user=None):
        user = user or self.user
        ruri = ruri or f"sip:{self.host}"
        self.cseq += 1
        branch = "z9hG4bK%x" % random.getrandbits(48)
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.shost}:{self.lport};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{self.host}>;tag={self.tag}",
            f"To: <sip:{user}@{self.host}>",
            f"Call-ID: {self.callid}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{user}@{self.shost}:{self.lport}>",
            f"User-Agent: {self.ua}",
        ]
        if method == "REGISTER":
            lines.append("Expires: 600")
        if method == "SUBSCRIBE":
            lines += ["Event: dialog", "Expires: 600"]
        if auth:
            lines.append(auth)
        lines += ["Content-Length: 0", "", ""]
        self.s.sendto("\r\n".join(lines).encode(), (self.dst, self.port))
        self.sent += 1
        # Provisional answers (100 Trying) are skipped: a final answer is what counts.
        deadline = time.monotonic() + self.s.gettimeout()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, ""
            self.s.settimeout(left)
            try:
                data, _ = self.s.recvfrom(8192)
            except (socket.timeout, ConnectionRefusedError, OSError):
                return None, ""
            text = data.decode(errors="replace")
            code = text.split(" ", 2)[1] if text.startswith("SIP/2.0 ") else "?"
            if code.startswith("1"):
                continue
            self.answered += 1
            return code, text

    def register(self, password):
        """REGISTER, then with credentials: (answered at all, final code)."""
        code, text = self.request("REGISTER")
        if code != "401":
            return code is not None, code
        m = re.search(r'realm="([^"]*)".*?nonce="([^"]*)"', text, re.S | re.I)
        if not m:
            return True, code
        realm, nonce = m.group(1), m.group(2)
        uri = f"sip:{self.host}"
        resp = md5(f"{md5(f'{self.user}:{realm}:{password}')}:{nonce}:{md5(f'REGISTER:{uri}')}")
        auth = (f'Authorization: Digest username="{self.user}", realm="{realm}", '
                f'nonce="{nonce}", uri="{uri}", response="{resp}", algorithm=MD5')
        code, _ = self.request("REGISTER", auth=auth)
        return code is not None, code


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dst", required=True)
    ap.add_argument("--port", type=int, default=5060)
    ap.add_argument("--sources", required=True, help="comma-separated addresses")
    ap.add_argument("--mode", choices=["crack", "phone", "mixed"], default="crack")
    ap.add_argument("--guesses", type=int, default=1, help="crack: guesses per source")
    ap.add_argument("--order", choices=["each", "round-robin"], default="each")
    ap.add_argument("--user", default="300")
    ap.add_argument("--password", default="phone300-secret")
    ap.add_argument("--ua", default="Yealink SIP-T46S 66.86.0.15")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=0.05)
    a = ap.parse_args()
    agents = [Agent(s, a.dst, a.port, a.ua, a.user, a.timeout) for s in a.sources.split(",")]
    out = {"sources": len(agents)}
    if a.mode == "crack":
        answered = [0] * len(agents)
        plan = ([(i, g) for i in range(len(agents)) for g in range(a.guesses)]
                if a.order == "each" else
                [(i, g) for g in range(a.guesses) for i in range(len(agents))])
        for k, (i, g) in enumerate(plan):
            _, code = agents[i].register(f"guess{g:04d}")
            if code in ("401", "403"):
                answered[i] += 1
            if a.interval and k + 1 < len(plan):
                time.sleep(a.interval)
        out.update(guesses=len(plan), answered=sum(answered), max_per_source=max(answered))
    elif a.mode == "phone":
        p = agents[0]
        ok, code = p.register(a.password)
        out["registered"] = code == "200"
        got = 0
        for k in range(a.count):
            method = "SUBSCRIBE" if k % 2 == 0 else "OPTIONS"
            c, _ = p.request(method, f"sip:{a.user}@{p.host}")
            got += c is not None
            if a.interval and k + 1 < a.count:
                time.sleep(a.interval)
        out.update(requests=a.count, answered=got)
    else:
        p = agents[0]
        got = 0
        for k in range(a.count):
            method = ["OPTIONS", "INVITE", "REGISTER", "SUBSCRIBE"][k % 4]
            c, _ = p.request(method, f"sip:{a.user}@{p.host}")
            got += c is not None
        out.update(requests=a.count, answered=got)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
