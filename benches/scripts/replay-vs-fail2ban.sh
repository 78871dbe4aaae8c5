#!/usr/bin/env bash
# pbxfw replay against fail2ban-regex (Debian's fail2ban, stock asterisk filter) on the same
# generated Asterisk log: lines per second and peak memory, side by side in one run.
#   benches/scripts/replay-vs-fail2ban.sh [LINES]      (default 200000)
set -euo pipefail
cd "$(dirname "$0")/../.."
lines=${1:-200000}
command -v fail2ban-regex >/dev/null || { apt-get install -y -qq fail2ban >/dev/null; }
cargo build -q --release -p pbxfw-cli
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
python3 benches/scripts/gen-asterisk-log.py "$lines" . > "$dir/full.log"
measure() { # label, command...
  local label=$1; shift
  # Wall time from a nanosecond clock (time(1)'s %e has 10 ms steps); peak RSS from time(1).
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$dir/time" "$@" > "$dir/out" 2>&1
  t1=$(date +%s.%N)
  secs=$(echo "$t1 - $t0" | bc -l | awk '{printf "%.3f", $1}')
  read -r kb < "$dir/time"
  printf '%-14s %8s s  %10.0f lines/s  %8.1f MiB peak\n' "$label" "$secs" \
    "$(echo "$lines / ($secs + 0.0001)" | bc -l)" "$(echo "$kb / 1024" | bc -l)"
}
echo "log: $lines lines ($(du -h "$dir/full.log" | cut -f1)), $(grep -c . "$dir/full.log") non-empty"
measure fail2ban-regex fail2ban-regex "$dir/full.log" /etc/fail2ban/filter.d/asterisk.conf
f2b_matched=$(grep -oE 'Lines: [0-9]+ lines, [0-9]+ ignored, [0-9]+ matched' "$dir/out" | tail -1)
measure "pbxfw replay" target/release/pbxfw replay "$dir/full.log" --year 2026
pbx_events=$(head -1 "$dir/out")
echo "fail2ban-regex: $f2b_matched"
echo "pbxfw replay:   $pbx_events"
