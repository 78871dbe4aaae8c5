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
# One run: wall seconds (nanosecond clock; time(1)'s %e has 10 ms steps) and peak RSS in KiB,
# appended to the file named by $1.
run() {
  local into=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$dir/time" "$@" > "$dir/out" 2>&1
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc -l) $(cat "$dir/time")" >> "$into"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# The machine is a shared VM whose speed drifts by tens of percent within minutes: the tools
# run interleaved, fail2ban 3 times and pbxfw 5 times per round, 3 rounds, and the medians
# are compared.
rounds=${ROUNDS:-3}
: > "$dir/f2b"; : > "$dir/pbx"
for _ in $(seq "$rounds"); do
  run "$dir/f2b" fail2ban-regex "$dir/full.log" /etc/fail2ban/filter.d/asterisk.conf
  f2b_matched=$(grep -oE 'Lines: [0-9]+ lines, [0-9]+ ignored, [0-9]+ matched' "$dir/out" | tail -1)
  for _ in 1 2 3 4 5; do
    run "$dir/pbx" target/release/pbxfw replay "$dir/full.log" --year 2026
  done
  pbx_events=$(head -1 "$dir/out")
done
report() { # label, file
  local secs kb
  secs=$(cut -d' ' -f1 "$2" | median)
  kb=$(cut -d' ' -f2 "$2" | sort -n | tail -1)
  printf '%-14s %8.3f s  %10.0f lines/s  %8.1f MiB peak  (median of %d runs)\n' "$1" "$secs" \
    "$(echo "$lines / $secs" | bc -l)" "$(echo "$kb / 1024" | bc -l)" "$(wc -l < "$2")"
}
echo "log: $lines lines ($(du -h "$dir/full.log" | cut -f1)), $(grep -c . "$dir/full.log") non-empty"
report fail2ban-regex "$dir/f2b"
report "pbxfw replay" "$dir/pbx"
f2b=$(cut -d' ' -f1 "$dir/f2b" | median)
pbx=$(cut -d' ' -f1 "$dir/pbx" | median)
printf 'pbxfw replay is %.0fx fail2ban-regex (medians)\n' "$(echo "$f2b / $pbx" | bc -l)"
echo "fail2ban-regex: $f2b_matched"
echo "pbxfw replay:   $pbx_events"
