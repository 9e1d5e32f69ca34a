#!/usr/bin/env bash
# Installs the Debian packages gostack needs, only those missing.
# Usage: scripts/deps.sh [build|test|bench]...   (sourced or run)
set -euo pipefail
pkgs_build="cmake make gcc g++ pkg-config libck-dev liburcu-dev"
pkgs_test="clang libclang-rt-14-dev valgrind wrk libboost-context-dev"
pkgs_bench="libbenchmark-dev libbenchmark-tools libboost-context-dev libjemalloc-dev libjemalloc2
 libgoogle-perftools-dev libtcmalloc-minimal4 libmimalloc-dev python3 python3-matplotlib python3-numpy python3-scipy"
want=""
for set in "$@"; do
	case "$set" in
	build) want="$want $pkgs_build" ;;
	test) want="$want $pkgs_build $pkgs_test" ;;
	bench) want="$want $pkgs_build $pkgs_bench" ;;
	*) echo "deps.sh: unknown set '$set'" >&2; exit 2 ;;
	esac
done
missing=""
for p in $want; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps.sh: installing:$missing" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
