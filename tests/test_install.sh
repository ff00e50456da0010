#!/bin/sh
# Stages `make install` and builds the examples against it the way a user
# would: cc prog.c $(pkg-config --cflags --libs nflow); then runs the program.
set -eu
: "${top_srcdir:?}" "${top_builddir:?}"
# A user's program is not built with the sanitizer runtime: nothing to test there.
[ "${nf_sanitizers:-no}" = yes ] && exit 77
stage=$(mktemp -d "${TMPDIR:-/tmp}/nflow-install.XXXXXX")
trap 'rm -rf "$stage"' EXIT
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$top_builddir" install DESTDIR="$stage" >/dev/null
prefix=$(sed -n 's/^prefix=//p' "$top_builddir/nflow.pc")
libdir=$(sed -n 's/^libdir=//p' "$top_builddir/nflow.pc" | sed "s|\${exec_prefix}|$prefix|")
pcdir="$stage$libdir/pkgconfig"
test -f "$stage$prefix/include/nflow.h"
test -f "$pcdir/nflow.pc"
test -x "$stage$prefix/bin/nflow"
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$stage$prefix" --cflags --libs nflow)
for prog in density hamiltonian; do
  ${CC:-cc} -std=c11 -Wall -Wextra -Werror -o "$stage/$prog" "$top_srcdir/examples/$prog.c" $flags -lm
  LD_LIBRARY_PATH="$stage$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$stage/$prog" > "$stage/$prog.txt"
done
grep -q '^mass=' "$stage/density.txt"
grep -q '^state=' "$stage/hamiltonian.txt"
echo "staged install OK: $(tr '\n' ' ' < "$stage/density.txt")"
