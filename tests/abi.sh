#!/bin/sh
# tests/abi.sh SOURCE_DIR LIBGOSTACK TEST_ABI_OLD: the ABI promise, checked
# on the built library (include/gostack.h "ABI", cmake/gostack.map):
#   - every function gostack.h declares is exported, with a default (@@)
#     symbol version, and nothing else is exported;
#   - the functions whose structs grew in 0.2 also keep their GOSTACK_0
#     version (core/abi.c);
#   - test_abi_old, linked as 0.1's binaries were, needs GOSTACK_0 only.
set -u
src=$1 lib=$2 old=$3
fail=0
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT

sed -n 's/^GOSTACK_API[^(]*[ *]\(gostack_[a-z0-9_]*\)(.*/\1/p' "$src/include/gostack.h" | sort -u >"$tmp/header"
readelf --dyn-syms -W "$lib" | awk '$7 != "UND" && $8 ~ /^gostack_/ { print $8 }' | sort -u >"$tmp/exported"
[ -s "$tmp/header" ] || { echo "abi: no GOSTACK_API function found in gostack.h"; exit 1; }
echo "abi: gostack.h declares $(wc -l <"$tmp/header") functions; the library exports $(wc -l <"$tmp/exported") versioned symbols"

while read -r f; do
	grep -qx "$f@@GOSTACK_[0-9.]*" "$tmp/exported" || { echo "abi: $f: not exported with a default version"; fail=1; }
done <"$tmp/header"
sed 's/@.*//' "$tmp/exported" | sort -u | while read -r f; do
	grep -qx "$f" "$tmp/header" || { echo "abi: $f: exported but not in gostack.h"; exit 1; }
done || fail=1
grep -q '^gostack_[a-z0-9_]*$' "$tmp/exported" && { echo "abi: an unversioned gostack_ symbol is exported"; fail=1; }
for f in gostack_allocator_new gostack_allocator_stats_detail; do
	grep -qx "$f@GOSTACK_0" "$tmp/exported" || { echo "abi: $f@GOSTACK_0 (the 0.1 layout) is missing"; fail=1; }
	grep -qx "$f@@GOSTACK_0.2" "$tmp/exported" || { echo "abi: $f@@GOSTACK_0.2 is missing"; fail=1; }
done

readelf -V -W "$old" >"$tmp/old.V"
if ! grep -q "File: libgostack.so.0" "$tmp/old.V"; then
	echo "abi: test_abi_old does not need libgostack.so.0"; fail=1
fi
needs=$(awk '/File: libgostack.so.0/ { f = 1; next } /File:/ { f = 0 } f && /Name:/ { print $3 }' "$tmp/old.V" | sort -u | tr '\n' ' ')
[ "$needs" = "GOSTACK_0 " ] || { echo "abi: test_abi_old needs '$needs' from libgostack.so.0, want GOSTACK_0 only"; fail=1; }

[ $fail -eq 0 ] && echo "abi: ok"
exit $fail
