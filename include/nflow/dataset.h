/* nflow/dataset.h — in-memory data sets: an n x dim row-major matrix (owned, or
   a view of the caller's memory); the 2-D toy sets of FFJORD (Grathwohl et al.
   2018), CSV and NumPy .npy readers, and atomic CSV and .npy writers. */
#ifndef NFLOW_DATASET_H
#define NFLOW_DATASET_H

#include <stddef.h>
#include "nflow/status.h"
#include "nflow/limits.h"
#include "nflow/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nf_dataset {
  size_t n;    /* rows */
  size_t dim;  /* columns */
  double *x;   /* n x dim, row-major; owned unless is_view */
  int is_view; /* 1: x is the caller's memory (nf_dataset_view), not freed with the set */
} nf_dataset;

/* An n x dim data set of zeros; NULL (with nf_errmsg) on n == 0, dim == 0 or no memory. */
nf_dataset *nf_dataset_new(size_t n, size_t dim);

/* An n x dim data set over the caller's row-major x, not copied: x must outlive
   the set, and nf_dataset_free frees only the set. NULL (with nf_errmsg) on
   n == 0, dim == 0, x == NULL or no memory. */
nf_dataset *nf_dataset_view(size_t n, size_t dim, double *x);

/* Frees ds and, unless it is a view, its values (NULL is a no-op). */
void nf_dataset_free(nf_dataset *ds);

/* Names of the toy sets, NULL-terminated: 8gaussians, moons, circles, rings,
   pinwheel, 2spirals, checkerboard, swissroll. */
const char *const *nf_toy_names(void);

/* n points of the toy set `name` (2-D, shapes and scaling of FFJORD's
   lib/toy_data.py), drawn from rng: the same rng state gives the same points.
   NF_EINVAL on an unknown name, n == 0 or a NULL argument; *out is set only on success. */
nf_status nf_toy_sample(const char *name, size_t n, nf_rng *rng, nf_dataset **out);

/* Default longest CSV line: 1 MiB. */
#define NF_CSV_MAX_LINE_DEFAULT ((size_t)1 << 20)

/* Options of nf_dataset_read_csv_opts; a zero field takes its default. */
typedef struct nf_csv_opts {
  size_t max_line_bytes; /* longest line, its end excluded (0: NF_CSV_MAX_LINE_DEFAULT) */
} nf_csv_opts;

/* Reads a CSV file of numbers (comma separated, parsed with strtod, blanks around
   a number allowed; a first line with a non-numeric field is a header; blank
   lines and comment lines, whose first non-blank character is '#', skipped
   anywhere; LF or CRLF line ends; UTF-8 or ASCII, a UTF-8 byte order mark
   skipped; every row as wide as the first row and the header). Memory grows
   with the data read, within nf_set_alloc_limit (NF_ENOMEM "path: needs N
   bytes, more than the allocation limit of L bytes"). opts NULL: the defaults.
   NF_EIO "path: what" if it cannot be opened or read, or is a directory;
   NF_EFORMAT on a ragged row, an empty, non-numeric or non-finite field, or no
   data rows, with "path:line:column: what" in nf_errmsg (column = 1-based
   field number); on a line longer than opts->max_line_bytes ("path:line: line
   longer than N bytes"); on CR-only line ends ("path: lines end in CR only
   (classic Mac); convert to LF or CRLF"); on UTF-16 text, a UTF-16 byte order
   mark or any NUL byte ("path: looks like UTF-16; save as UTF-8"). *out is set
   only on success. The decimal point is the C locale's: a program that calls
   setlocale with a comma-decimal locale must restore LC_NUMERIC to "C" around
   this call. */
nf_status nf_dataset_read_csv_opts(const char *path, const nf_csv_opts *opts, nf_dataset **out);

/* nf_dataset_read_csv_opts with the default options. */
nf_status nf_dataset_read_csv(const char *path, nf_dataset **out);

/* Reads a NumPy .npy file (NEP 1 format, versions 1.0, 2.0 and 3.0, as written by
   numpy.save) holding a little-endian float64 ('<f8') or float32 ('<f4', converted)
   array of shape (n, d), or (n,) read as d = 1, in C or Fortran order (both give
   the row-major n x d set). The size of the data is checked against the shape
   before anything is reserved for it (a pipe's, as it arrives), and the
   reader's memory (the raw values and the set) against nf_set_alloc_limit
   (NF_ENOMEM "path: needs N bytes, more than the allocation limit of L
   bytes"). NF_EIO "path: what" if it cannot be opened or read, or is a
   directory; NF_EFORMAT with "path: what" in nf_errmsg on a missing magic
   string, another version, a malformed header, another dtype (big-endian,
   integer, ...), another number of dimensions, n == 0 or d == 0, data shorter
   or longer than the shape says ("path: data ends after k of N values",
   "path: bytes left after the N values"), or a non-finite value ("path: row
   i, column j is not finite", 1-based). *out is set only on success. */
nf_status nf_dataset_read_npy(const char *path, nf_dataset **out);

/* Writes ds atomically (a temporary renamed over path) as CSV: no header, one row
   per line, values separated by commas and printed with %.17g in the C locale
   (whatever the caller's locale), so nf_dataset_read_csv reads them back bit for
   bit. NF_EINVAL on a NULL argument, NF_ENONFINITE ("path: row i, column j is
   not finite", 1-based) on a NaN or Inf, which the readers refuse; NF_EIO naming
   path if it cannot be written (an existing file is then left as it was). */
nf_status nf_dataset_write_csv(const nf_dataset *ds, const char *path);

/* Writes ds atomically as a NumPy .npy file (NEP 1 version 1.0, '<f8', C order,
   shape (n, d), header padded with spaces to a multiple of 64 bytes ending in a
   newline), read back bit for bit by nf_dataset_read_npy and by numpy.load.
   Statuses as nf_dataset_write_csv. */
nf_status nf_dataset_write_npy(const nf_dataset *ds, const char *path);

/* Writes per-row values v[0..n) (n >= 1) as a CSV of one value per line;
   otherwise as nf_dataset_write_csv. */
nf_status nf_write_column_csv(const char *path, size_t n, const double *v);
/* Writes per-row values v[0..n) (n >= 1) as a .npy of shape (n,); otherwise as
   nf_dataset_write_npy. */
nf_status nf_write_column_npy(const char *path, size_t n, const double *v);

/* Splits the rows of ds (unchanged) into new sets: a shuffled first part of
   round(frac * n) rows (halves rounded up) and the rest, both non-empty. NF_EINVAL if
   frac leaves either part empty or an argument is NULL; outputs set only on success. */
nf_status nf_dataset_split(const nf_dataset *ds, double frac, nf_rng *rng,
                           nf_dataset **first, nf_dataset **second);

#ifdef __cplusplus
}
#endif
#endif
