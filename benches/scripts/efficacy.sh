#!/usr/bin/env bash
# The responsive layer's efficacy against a FreePBX-shaped reference (docs/responsive.md,
# "Efficacy"): installs what is missing (Kamailio, SIPVicious, iptables; no service is started
# or enabled), builds, and runs every scenario against both targets in network namespaces it
# makes and removes. Root. ONLY=svcrack,svwar,crack,sources,round-robin,ipv6,phone,trunk runs
# some rows. Prints the table docs/responsive.md shows. Not part of scripts/test (~5 minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
command -v kamailio >/dev/null || missing+=(kamailio)
command -v svcrack >/dev/null || missing+=(sipvicious)
command -v iptables-legacy-restore >/dev/null || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
  made=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || true
  [ -n "$made" ] && rm -f /usr/sbin/policy-rc.d
  systemctl disable kamailio.service >/dev/null 2>&1 || true
fi
cargo build -q --release -p pbxfw-cli -p pbxfw-benches --bin pbxfw --bin efficacy
exec ./target/release/efficacy
