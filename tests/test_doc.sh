#!/bin/sh
# make doc: Doxygen's HTML reference from the headers' comments. Each listed
# function (and an enumerator, and a file) has its page, and its documentation
# block holds a phrase of its header comment: the comments reached Doxygen.
# Skipped (77) when configure did not find doxygen.
set -u
: "${top_srcdir:?}" "${top_builddir:?}"
if ! grep -q '^DOXYGEN = ..*' "$top_builddir/Makefile"; then
  echo "SKIP: configure did not find doxygen (Debian package doxygen); make doc is unavailable"
  exit 77
fi
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
MAKEFLAGS= make -s -C "$top_builddir" doc >/dev/null || { echo "FAIL: make doc exited $?"; exit 1; }
html="$top_builddir/doc/api/html"
[ -f "$html/index.html" ] || fail "no $html/index.html"
[ -s "$top_builddir/doc/doxygen.log" ] && fail "doxygen warned: $(head -5 "$top_builddir/doc/doxygen.log")"

# has_doc PAGE NAME PHRASE: PAGE's documentation block of NAME (from its
# "◆ NAME" heading to the next) contains PHRASE, tags removed.
has_doc() {
  [ -f "$html/$1" ] || { fail "no page $1 (for $2)"; return; }
  sed -e 's/&#9670;&nbsp;/@@ /g' -e 's/<[^>]*>//g' -e 's/&lt;/</g; s/&gt;/>/g; s/&amp;/\&/g; s/&quot;/"/g; s/&#160;/ /g' "$html/$1" |
    awk -v name="$2" 'index($0, "@@ ") { on = (index($0, "@@ " name "()") || $0 ~ ("@@ " name " *$")) } on' >"$tmp"
  grep -qF -- "$3" "$tmp" || fail "$1: the documentation of $2 lacks '$3'"
}
tmp=$(mktemp "${TMPDIR:-/tmp}/nflow-doc.XXXXXX")
trap 'rm -f "$tmp"' EXIT
has_doc flow_8h.html nf_flow_log_prob_ws "log p(x_i | ctx_i) for n rows."
has_doc flow_8h.html nf_flow_nll_grad_ws "OVERWRITES grad (n_params doubles)"
has_doc layer_8h.html nf_layer_apply "out = T(in) (NF_FORWARD) or T^-1(in) (NF_INVERSE) for n rows, and ADDS the"
has_doc status_8h.html nf_errmsg "Detail of the last failure in the calling thread"
has_doc status_8h.html nf_status "NF_EINVAL invalid argument: NULL pointer"
has_doc model_8h.html nf_flow_load "Loads a flow saved by nf_flow_save"
has_doc importance_8h.html nf_importance_mean "Self-normalised <O_j>_p"
# A file's opening comment documents the file.
sed 's/<[^>]*>//g' "$html/flow_8h.html" | grep -qF "Plan once, execute many (as FFTW)" \
  || fail "flow_8h.html lacks flow.h's opening comment"
# Every public header has its page.
for h in "$top_srcdir"/include/nflow/*.h; do
  b=$(basename "$h" .h | sed 's/_/__/g')
  [ -f "$html/${b}_8h.html" ] || fail "no page for nflow/$(basename "$h")"
done
echo "make doc: $(ls "$html" | wc -l) files in $html"
[ "$failures" -eq 0 ]
