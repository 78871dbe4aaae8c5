#!/usr/bin/env bash
# The edit path as an administrator runs it: `pbxfw blacklist add` of one address, and of
# 10,000, to a policy holding 100,000 entries, with pbxfw loaded (nft) in a network namespace;
# beside it the kernel's share, `nft add element` of the same elements, measured in the same
# run. Whole processes, start-up included, median of ROUNDS (default 11).
#   benches/scripts/edit-path.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${ROUNDS:-11}
cargo build -q --release -p pbxfw-cli -p pbxfw-benches
bin=$PWD/target/release/pbxfw
ns=pbxfw-bench-edit-$$
dir=$(mktemp -d)
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$dir"' EXIT
ip netns add "$ns"
export PBXFW_STATE_DIR=$dir/state PBXFW_RUN_DIR=$dir/run
target/release/gen-policy 100000 > "$dir/pbxfw.toml"
ip netns exec "$ns" "$bin" apply "$dir/pbxfw.toml" > /dev/null
secs() { local t0=$EPOCHREALTIME; "$@" > /dev/null 2>&1; local t1=$EPOCHREALTIME; echo "$t1 - $t0" | bc -l; }
median() { sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'; }
: > "$dir/one"; : > "$dir/nft_one"
for i in $(seq 1 "$rounds"); do
  secs ip netns exec "$ns" "$bin" blacklist add "198.18.0.$i" --policy "$dir/pbxfw.toml" >> "$dir/one"
  secs ip netns exec "$ns" nft add element inet pbxfw blacklist_hosts4 "{ 198.18.1.$i }" >> "$dir/nft_one"
done
# A network goes through the whole edit (read, validate and compile the policy, before and
# after): once, beside it the same network by nft.
net=$(secs ip netns exec "$ns" "$bin" blacklist add 198.18.128.0/24 --policy "$dir/pbxfw.toml")
nft_net=$(secs ip netns exec "$ns" nft add element inet pbxfw blacklist4 "{ 198.18.129.0/24 }")
# 10,000 new addresses (198.19.0.0/17 is not in the generated blacklist), once: the file then
# holds 110,000 entries.
python3 -c 'print(" ".join(f"198.19.{i // 250}.{i % 250 + 1}" for i in range(10000)))' > "$dir/10k"
python3 -c 'print("add element inet pbxfw blacklist_hosts4 { " + ", ".join(f"198.20.{i // 250}.{i % 250 + 1}" for i in range(10000)) + " }")' > "$dir/10k.nft"
# shellcheck disable=SC2046
ten=$(secs ip netns exec "$ns" "$bin" blacklist add $(cat "$dir/10k") --policy "$dir/pbxfw.toml")
nft_ten=$(secs ip netns exec "$ns" nft -f "$dir/10k.nft")
printf '%-44s %10s %10s %8s\n' "edit (100k-entry policy, nft loaded)" "pbxfw s" "nft s" "ratio"
one=$(median < "$dir/one"); nft_one=$(median < "$dir/nft_one")
printf '%-44s %10s %10s %8.1f\n' "blacklist add, 1 address (median of $rounds)" "$one" "$nft_one" "$(echo "$one / $nft_one" | bc -l)"
printf '%-44s %10.3f %10.3f %8.1f\n' "blacklist add, 1 network (whole edit)" "$net" "$nft_net" "$(echo "$net / $nft_net" | bc -l)"
printf '%-44s %10.3f %10.3f %8.1f\n' "blacklist add, 10,000 addresses" "$ten" "$nft_ten" "$(echo "$ten / $nft_ten" | bc -l)"
