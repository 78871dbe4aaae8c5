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
# One run: wall seconds from bash's own clock (`$EPOCHREALTIME` starts no process, so only the
# tool is timed, start-up included; `date` and time(1) around it added 2-4 ms to every run),
# appended to the file named by $1.
run() {
  local into=$1; shift
  local t0=$EPOCHREALTIME
  "$@" > "$dir/out" 2>&1
  local t1=$EPOCHREALTIME
  echo "$t1 - $t0" | bc -l >> "$into"
}
# Peak RSS in KiB of one more run, under time(1), appended to the file named by $1.
peak() {
  local into=$1; shift
  /usr/bin/time -f '%M' -o "$dir/time" "$@" > /dev/null 2>&1
  cat "$dir/time" >> "$into"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# The machine is a shared VM whose speed drifts by tens of percent within minutes: the tools
# run interleaved, fail2ban once and pbxfw 5 times per round (3 rounds unless ROUNDS says),
# and the medians are compared.
rounds=${ROUNDS:-3}
: > "$dir/f2b"; : > "$dir/pbx"; : > "$dir/f2b.kb"; : > "$dir/pbx.kb"
f2b_cmd=(fail2ban-regex "$dir/full.log" /etc/fail2ban/filter.d/asterisk.conf)
pbx_cmd=(target/release/pbxfw replay --example "$dir/full.log" --year 2026)
for _ in $(seq "$rounds"); do
  run "$dir/f2b" "${f2b_cmd[@]}"
  f2b_matched=$(grep -oE 'Lines: [0-9]+ lines, [0-9]+ ignored, [0-9]+ matched' "$dir/out" | tail -1)
  for _ in 1 2 3 4 5; do
    run "$dir/pbx" "${pbx_cmd[@]}"
  done
  pbx_events=$(head -1 "$dir/out")
done
peak "$dir/f2b.kb" "${f2b_cmd[@]}"
peak "$dir/pbx.kb" "${pbx_cmd[@]}"
report() { # label, file of times, file of peaks
  local secs kb
  secs=$(median < "$2")
  kb=$(sort -n "$3" | tail -1)
  printf '%-14s %8.3f s  %10.0f lines/s  %8.1f MiB peak  (median of %d runs)\n' "$1" "$secs" \
    "$(echo "$lines / $secs" | bc -l)" "$(echo "$kb / 1024" | bc -l)" "$(wc -l < "$2")"
}
echo "log: $lines lines ($(du -h "$dir/full.log" | cut -f1)), $(grep -c . "$dir/full.log") non-empty"
report fail2ban-regex "$dir/f2b" "$dir/f2b.kb"
report "pbxfw replay" "$dir/pbx" "$dir/pbx.kb"
f2b=$(median < "$dir/f2b")
pbx=$(median < "$dir/pbx")
printf 'pbxfw replay is %.0fx fail2ban-regex (medians)\n' "$(echo "$f2b / $pbx" | bc -l)"
echo "fail2ban-regex: $f2b_matched"
echo "pbxfw replay:   $pbx_events"
