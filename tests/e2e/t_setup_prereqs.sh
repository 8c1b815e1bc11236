# scripts/setup on a machine without Rust, or with a Rust older than Cargo.toml's rust-version,
# stops before installing anything and prints the exact rustup command (issue 19). Simulated with
# a PATH that has no rustc, then with a fake old rustc first on the PATH.
source "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
min=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$root/Cargo.toml")
if [ "$(id -u)" != 0 ]; then echo "skipped: scripts/setup runs as root only"; exit 0; fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

out=$(env HOME="$work" PATH=/usr/sbin:/usr/bin:/sbin:/bin bash "$root/scripts/setup" 2>&1) && fail "setup without Rust succeeded"
echo "$out" | grep -qF "Rust is not installed (checkout needs $min or newer)" || fail "no missing-Rust message: $out"
echo "$out" | grep -qF "sh.rustup.rs | sh -s -- -y --default-toolchain $min" || fail "no rustup command: $out"
echo "$out" | grep -q "^==> apt-get" && fail "setup installed packages before the Rust check"

printf '#!/bin/sh\necho "rustc 1.80.0 (051478957 2024-07-21)"\n' > "$work/rustc"; chmod +x "$work/rustc"
out=$(env HOME="$work" PATH="$work:/usr/sbin:/usr/bin:/sbin:/bin" bash "$root/scripts/setup" 2>&1) && fail "setup with Rust 1.80 succeeded"
echo "$out" | grep -qF "Rust 1.80.0 is older than $min" || fail "no old-Rust message: $out"
echo "$out" | grep -qF "rustup toolchain install $min && rustup default $min" || fail "no rustup update command: $out"

# The demo and the benchmarks install release builds into their own PostgreSQL 16 tree, so the
# tests' debug installs (cargo pgrx test pg16, into the PG16 tree) never replace the library a
# demo server loads.
source "$root/scripts/env.sh"
[ "$("$PG16_CONFIG" --pkglibdir)" != "$("$PG16R_CONFIG" --pkglibdir)" ] || fail "the demo's tree is the tests' tree"
for s in scripts/run scripts/bench bench/import.sh; do
  grep -q -- '--pg-config "$PG16R_CONFIG"' "$root/$s" || fail "$s does not install into the release tree"
  grep -q -- '--pg-config "$PG16_CONFIG"' "$root/$s" && fail "$s installs into the tests' tree"
done
test_lib="$("$PG16_CONFIG" --pkglibdir)/checkout.so" demo_lib="$("$PG16R_CONFIG" --pkglibdir)/checkout.so"
if [ -f "$test_lib" ] && [ -f "$demo_lib" ]; then
  cmp -s "$test_lib" "$demo_lib" && fail "the demo's library is the tests' build"
else echo "skipped: the library check (no demo install yet)"; fi
echo "t_setup_prereqs: ok"
