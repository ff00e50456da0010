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
# Exactly what a user types: cc prog.c $(pkg-config --cflags --libs nflow) (no -lm).
export LD_LIBRARY_PATH="$stage$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for src in "$top_srcdir"/examples/*.c; do
  prog=$(basename "$src" .c)
  (cd "$stage" && ${CC:-cc} "$src" $flags -o "$prog")
done
for prog in density hamiltonian; do "$stage/$prog" > "$stage/$prog.txt"; done
grep -q '^mass=' "$stage/density.txt"
grep -q '^state=' "$stage/hamiltonian.txt"
"$stage/train_save" moons "$stage/m.safetensors" > "$stage/train_save.txt"
"$stage/load_eval" "$stage/m.safetensors" > "$stage/load_eval.txt"
grep -q '^saved=' "$stage/train_save.txt"
grep -q '^checksum=' "$stage/load_eval.txt"
# The tutorial's first step: a density fitted to a CSV file (samples of that
# model, written by the installed nflow), saved, loaded by another program.
"$stage$prefix/bin/nflow" sample --model "$stage/m.safetensors" -n 2000 --out "$stage/moons.csv" >/dev/null
"$stage/train_save" "$stage/moons.csv" "$stage/csv.safetensors" > "$stage/train_save_csv.txt"
"$stage/load_eval" "$stage/csv.safetensors" > "$stage/load_eval_csv.txt"
grep -q "^data=$stage/moons.csv\$" "$stage/load_eval_csv.txt"
grep -q '^finite=1000$' "$stage/load_eval_csv.txt"
# A Boltzmann generator of the double well (300 iterations): log Z within 0.02 of
# quadrature (0.865367) and ESS >= 0.8.
"$stage/boltzmann" 300 20000 > "$stage/boltzmann.txt"
awk -F= '$1 == "logz" { z = $2 } $1 == "ess" { e = $2 }
         END { d = z - 0.865367; if (d < 0) d = -d; exit !(d <= 0.02 && e >= 0.8) }' "$stage/boltzmann.txt" ||
  { echo "boltzmann: $(tr '\n' ' ' < "$stage/boltzmann.txt")"; exit 1; }
"$stage/phi4" 4 -4 8 100 2000 > "$stage/phi4.txt"
grep -q '^abs_m=' "$stage/phi4.txt"
"$stage/map_denoise" 1 300 > "$stage/map_denoise.txt"
grep -q '^mse_map=' "$stage/map_denoise.txt"
# A conditional density p(x | y) (examples/conditional.c): test NLL within 0.1
# nat of the true conditional's, and samples at y = 0.5 centred within 0.1 of
# (1, -0.5).
"$stage/conditional" 1000 > "$stage/conditional.txt"
awk -F= '{ v[$1] = $2 } END { a = v["mean_x0_at_y0.5"] - 1; b = v["mean_x1_at_y0.5"] + 0.5
  exit !(v["test_nll"] - v["true_nll"] <= 0.1 && a * a <= 0.01 && b * b <= 0.01) }' "$stage/conditional.txt" ||
  { echo "conditional: $(tr '\n' ' ' < "$stage/conditional.txt")"; exit 1; }
# make install puts the man pages in place.
test -n "$(find "$stage" -path '*/man1/nflow.1')"
test -n "$(find "$stage" -path '*/man3/nflow.3')"
# With cairo: nflow-plot.pc is installed and a user's program draws through it.
if grep -q "^#define HAVE_CAIRO 1" "$top_builddir/config.h"; then
  test -f "$pcdir/nflow-plot.pc"
  cat > "$stage/draw.c" <<'C'
#include <nflow.h>
#include <nflow/plot.h>
int main(void)
{
  double x[8] = {0, 0, 1, 1, -1, 0.5, 0.2, -0.3};
  nf_plot_box box = {-2, 2, -2, 2};
  nf_plot_figure *fig = nf_plot_figure_new(1, 1, 200);
  nf_status st = fig ? nf_plot_hist2d(fig, 0, 0, "four points", 4, 2, x, 0, 1, &box, 10, 0) : NF_ENOMEM;
  if (!st) st = nf_plot_write_png(fig, "draw.png");
  nf_plot_figure_free(fig);
  return st != NF_OK;
}
C
  pflags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$stage$prefix" --cflags --libs nflow-plot)
  (cd "$stage" && ${CC:-cc} draw.c $pflags -o draw && ./draw && test -s draw.png)
fi
# With MPI: nflow-mpi.pc is installed and a user's program, built with mpicc
# through it, sums over two ranks in rank order.
if grep -q "^#define HAVE_MPI 1" "$top_builddir/config.h" && command -v mpicc >/dev/null 2>&1; then
  test -f "$pcdir/nflow-mpi.pc"
  cat > "$stage/ranks.c" <<'C'
#include <mpi.h>
#include <nflow.h>
#include <nflow/mpi.h>
int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  nf_comm *comm = nf_comm_mpi_new(MPI_COMM_WORLD);
  double v[2] = {1.0, (double)(comm ? comm->rank : 99)};
  nf_status st = comm ? comm->sum(v, 2, comm->user) : NF_ENOMEM;
  int ok = st == NF_OK && v[0] == (double)comm->size && v[1] == comm->size * (comm->size - 1) / 2.0;
  nf_comm_mpi_free(comm);
  MPI_Finalize();
  return !ok;
}
C
  mflags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$stage$prefix" --cflags --libs nflow-mpi)
  (cd "$stage" && mpicc ranks.c $mflags -o ranks &&
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader \
      ASAN_OPTIONS=detect_leaks=0 timeout 120 mpirun -np 2 --oversubscribe ./ranks)
  echo "nflow-mpi: a program built with mpicc and pkg-config summed over 2 ranks"
fi
echo "staged install OK: $(tr '\n' ' ' < "$stage/density.txt")"
