#!/usr/bin/env bash
# Installs a built tree into a temporary prefix and builds a consumer against
# it four ways: CMake package (shared, static) and pkg-config (shared,
# static with --static). Checks that only gostack_ symbols are exported.
# Usage: tests/package.sh BUILD_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
lib=$(ls -d "$work"/prefix/lib*/ | head -1)
bad=$(nm -D --defined-only "$lib/libgostack.so" | awk '$2 ~ /[TDBRV]/ {print $3}' | grep -v '^gostack_' | grep -v '^GOSTACK_' || true)
[ -z "$bad" ] || { echo "package: exported non-gostack symbols: $bad" >&2; exit 1; }
soname=$(readelf -d "$lib/libgostack.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = "libgostack.so.0" ] || { echo "package: SONAME is '$soname'" >&2; exit 1; }
cmake -S "$root/tests/package" -B "$work/cm" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cm" >/dev/null
LD_LIBRARY_PATH="$lib" "$work/cm/consumer_shared"
"$work/cm/consumer_static"
ldd "$work/cm/consumer_static" | grep -q libgostack && { echo "package: static consumer links libgostack.so" >&2; exit 1; }
export PKG_CONFIG_PATH="$lib/pkgconfig"
# Consumers get gostack's include path, nothing of its private dependencies'
# (ck's .pc file hard-codes -D__x86_64__).
case " $(pkg-config --cflags gostack) " in *" -D"*) echo "package: pkg-config --cflags gostack defines macros: $(pkg-config --cflags gostack)" >&2; exit 1 ;; esac
cc -o "$work/pc_shared" "$root/tests/package/consumer.c" $(pkg-config --cflags --libs gostack)
LD_LIBRARY_PATH="$lib" "$work/pc_shared"
# README "Install": outside the loader's paths, an rpath finds the library.
cc -o "$work/pc_rpath" "$root/tests/package/consumer.c" $(pkg-config --cflags --libs gostack) \
	-Wl,-rpath,"$(pkg-config --variable=libdir gostack)"
env -u LD_LIBRARY_PATH "$work/pc_rpath"
cc -o "$work/pc_static" "$root/tests/package/consumer.c" $(pkg-config --cflags gostack) \
	-Wl,-Bstatic $(pkg-config --libs-only-L gostack) -lgostack -Wl,-Bdynamic \
	$(pkg-config --static --libs-only-l gostack | sed 's/-lgostack//')
"$work/pc_static"
echo "package: ok (SONAME $soname, exports only gostack_*)"
