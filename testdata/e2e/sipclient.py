#!/usr/bin/env python3
"""A small SIP user agent for the responsive end-to-end tests.

register: REGISTER with digest authentication (RFC 2617, as Kamailio's auth module asks);
ping:     OPTIONS to an account (a registered phone's keep-alives and subscriptions).
Prints one JSON object: requests sent, answered, response codes, whether it registered.
Every request waits at most --timeout seconds for its answer; the run is bounded by --count.
"""
import argparse, hashlib, json, random, re, socket, sys, time

def md5(s):
    return hashlib.md5(s.encode()).hexdigest()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--port", type=int, default=5060)
    ap.add_argument("--user", default="300")
    ap.add_argument("--password", default="")
    ap.add_argument("--mode", choices=["register", "ping"], default="register")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=0.5)
    ap.add_argument("--ua", default="Yealink SIP-T46S 66.86.0.15")
    ap.add_argument("--expires", type=int, default=600)
    ap.add_argument("--auth-user", help="the Authorization username as sent (raw, quotes escaped by the caller); default --user")
    a = ap.parse_args()

    fam = socket.AF_INET6 if ":" in a.src else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((a.src, 0))
    s.settimeout(a.timeout)
    lport = s.getsockname()[1]
    host = f"[{a.dst}]" if fam == socket.AF_INET6 else a.dst
    shost = f"[{a.src}]" if fam == socket.AF_INET6 else a.src
    uri = f"sip:{host}"
    callid = "%x@pbxfw-test" % random.getrandbits(64)
    tag = "%x" % random.getrandbits(32)
    out = {"sent": 0, "answered": 0, "codes": {}, "registered": False}
    cseq = 0

    def request(method, ruri, auth=None):
        nonlocal cseq
        cseq += 1
        branch = "z9hG4bK%x" % random.getrandbits(48)
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {shost}:{lport};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{a.user}@{host}>;tag={tag}",
            f"To: <sip:{a.user}@{host}>",
            f"Call-ID: {callid}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{a.user}@{shost}:{lport}>",
            f"User-Agent: {a.ua}",
        ]
        if method == "REGISTER":
            lines.append(f"Expires: {a.expires}")
        if auth:
            lines.append(auth)
        lines += ["Content-Length: 0", "", ""]
        s.sendto("\r\n".join(lines).encode(), (a.dst, a.port))
        out["sent"] += 1
        try:
            data, _ = s.recvfrom(4096)
        except (socket.timeout, ConnectionRefusedError, OSError):
            return None, ""
        text = data.decode(errors="replace")
        code = text.split(" ", 2)[1] if text.startswith("SIP/2.0 ") else "?"
        out["answered"] += 1
        out["codes"][code] = out["codes"].get(code, 0) + 1
        return code, text

    for i in range(a.count):
        if a.mode == "ping":
            request("OPTIONS", f"sip:{a.user}@{host}")
        else:
            code, text = request("REGISTER", uri)
            if code == "401":
                m = re.search(r'realm="([^"]*)".*?nonce="([^"]*)"', text, re.S | re.I)
                if m:
                    realm, nonce = m.group(1), m.group(2)
                    resp = md5(f"{md5(f'{a.user}:{realm}:{a.password}')}:{nonce}:{md5(f'REGISTER:{uri}')}")
                    auth_user = a.auth_user if a.auth_user is not None else a.user
                    auth = (f'Authorization: Digest username="{auth_user}", realm="{realm}", '
                            f'nonce="{nonce}", uri="{uri}", response="{resp}", algorithm=MD5')
                    code, _ = request("REGISTER", uri, auth)
            if code == "200":
                out["registered"] = True
        if a.interval and i + 1 < a.count:
            time.sleep(a.interval)
    print(json.dumps(out))

if __name__ == "__main__":
    main()
