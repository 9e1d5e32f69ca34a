#!/bin/sh
# tests/valgrind_tools.sh VALGRIND TEST_VALGRIND: Valgrind out of the box, in
# a default build (GOSTACK_VALGRIND=AUTO found valgrind.h: core/tools.c),
# with no suppression file and --leak-check=full, each check able to fail:
#   switch  coroutines on gostack stacks, debug mode included: no "client
#           switching stacks?" warning (the stacks are registered), no
#           memcheck error, no leak record (the scavenger thread, started
#           by the decay of the reclaimed memory, is joined at exit)
#   uaf     a write into a freed stack: memcheck reports "Invalid write"
set -u
vg=$1 prog=$2
out=$(mktemp) || exit 2
trap 'rm -f "$out"' EXIT
fail=0

"$vg" --error-exitcode=9 --leak-check=full "$prog" switch >"$out" 2>&1
rc=$?
cat "$out"
if [ $rc -ne 0 ]; then
	echo "valgrind_tools: switch: exit status $rc, want 0"; fail=1
fi
if grep -q "client switching stacks" "$out"; then
	echo "valgrind_tools: switch: Valgrind did not know the stacks (client switching stacks?)"; fail=1
fi
grep -q "scavenger thread at exit: yes" "$out" || { echo "valgrind_tools: switch: no scavenger thread to join at exit"; fail=1; }
grep -q "test_valgrind switch: ok" "$out" || { echo "valgrind_tools: switch: did not finish"; fail=1; }
if grep -qE "(definitely|indirectly|possibly) lost: [1-9]" "$out"; then
	echo "valgrind_tools: switch: memcheck reports a leak"; fail=1
fi
grep -q "All heap blocks were freed\|definitely lost: 0" "$out" || { echo "valgrind_tools: switch: no leak summary"; fail=1; }

"$vg" --error-exitcode=9 "$prog" uaf >"$out" 2>&1
rc=$?
cat "$out"
if [ $rc -ne 9 ]; then
	echo "valgrind_tools: uaf: exit status $rc, want 9 (a memcheck error)"; fail=1
fi
if ! grep -q "Invalid write of size 1" "$out"; then
	echo "valgrind_tools: uaf: no \"Invalid write\" for a write into a freed stack"; fail=1
fi
[ $fail -eq 0 ] && echo "valgrind_tools: ok"
exit $fail
