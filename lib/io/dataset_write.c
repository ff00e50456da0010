/* lib/io/dataset_write.c — atomic CSV and NumPy .npy (NEP 1 version 1.0) writers
   for data sets and per-row columns. */
#define _POSIX_C_SOURCE 200809L
#include <locale.h>
#include <stdio.h>

#include "internal.h"
#include "io/io_internal.h"
#include "nflow/dataset.h"

/* An n x d row-major matrix to write; column: 1-D (written with shape (n,)). */
typedef struct matrix_job {
  size_t n, d;
  const double *x;
  int column;
} matrix_job;

/* NF_OK if every value of the job is finite, else NF_ENONFINITE naming path,
   row and column (1-based). */
static nf_status check_finite(const char *path, const matrix_job *job)
{
  size_t bad = nf_first_nonfinite(job->n * job->d, job->x);
  if (bad == job->n * job->d) return NF_OK;
  return nf_fail(NF_ENONFINITE, "%s: row %zu, column %zu is not finite (%g)", path,
                 bad / job->d + 1, bad % job->d + 1, job->x[bad]);
}

/* Writes the rows as %.17g values separated by commas, one row per line. */
static nf_status write_csv_rows(FILE *f, void *user)
{
  const matrix_job *job = user;
  for (size_t i = 0; i < job->n; i++)
    for (size_t j = 0; j < job->d; j++)
      fprintf(f, "%.17g%c", job->x[i * job->d + j], j + 1 < job->d ? ',' : '\n');
  return NF_OK;
}

/* Writes the CSV of job atomically with the C locale's decimal point in this thread. */
static nf_status write_csv(const char *path, const matrix_job *job)
{
  nf_status st = check_finite(path, job);
  if (st != NF_OK) return st;
  locale_t c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
  if (!c) return nf_fail(NF_ENOMEM, "%s: cannot create the C locale", path);
  locale_t old = uselocale(c);
  st = nf_atomic_write(path, write_csv_rows, (void *)job);
  uselocale(old);
  freelocale(c);
  return st;
}

/* Writes the .npy magic, version 1.0, header (padded to a multiple of 64 bytes,
   ending in '\n') and the values as little-endian float64. */
static nf_status write_npy_file(FILE *f, void *user)
{
  const matrix_job *job = user;
  char dict[160];
  int len = job->column
                ? snprintf(dict, sizeof dict,
                           "{'descr': '<f8', 'fortran_order': False, 'shape': (%zu,), }", job->n)
                : snprintf(dict, sizeof dict,
                           "{'descr': '<f8', 'fortran_order': False, 'shape': (%zu, %zu), }",
                           job->n, job->d);
  size_t total = 10 + (size_t)len + 1, padded = (total + 63) / 64 * 64, hlen = padded - 10;
  unsigned char pre[10] = {0x93,
                           'N',
                           'U',
                           'M',
                           'P',
                           'Y',
                           1,
                           0,
                           (unsigned char)(hlen & 0xFF),
                           (unsigned char)(hlen >> 8)};
  fwrite(pre, 1, sizeof pre, f);
  fputs(dict, f);
  for (size_t i = (size_t)len; i + 1 < hlen; i++) fputc(' ', f);
  fputc('\n', f);
  nf_write_f64le(f, job->n * job->d, job->x, NULL);
  return NF_OK;
}

/* Writes the .npy of job atomically. */
static nf_status write_npy(const char *path, const matrix_job *job)
{
  nf_status st = check_finite(path, job);
  return st != NF_OK ? st : nf_atomic_write(path, write_npy_file, (void *)job);
}

/* The job of ds, or NF_EINVAL naming fn on a NULL or empty argument. */
static nf_status dataset_job(const char *fn, const nf_dataset *ds, const char *path,
                             matrix_job *job)
{
  if (!ds || !ds->x || !path || ds->n == 0 || ds->dim == 0)
    return nf_fail(NF_EINVAL, "%s: NULL argument or empty data set", fn);
  *job = (matrix_job){.n = ds->n, .d = ds->dim, .x = ds->x};
  return NF_OK;
}

/* The job of the column v[0..n), or NF_EINVAL naming fn on a NULL argument or n == 0. */
static nf_status column_job(const char *fn, const char *path, size_t n, const double *v,
                            matrix_job *job)
{
  if (!path || !v || n == 0) return nf_fail(NF_EINVAL, "%s: NULL argument or n = 0", fn);
  *job = (matrix_job){.n = n, .d = 1, .x = v, .column = 1};
  return NF_OK;
}

nf_status nf_dataset_write_csv(const nf_dataset *ds, const char *path)
{
  matrix_job job;
  nf_status st = dataset_job("nf_dataset_write_csv", ds, path, &job);
  return st != NF_OK ? st : write_csv(path, &job);
}

nf_status nf_dataset_write_npy(const nf_dataset *ds, const char *path)
{
  matrix_job job;
  nf_status st = dataset_job("nf_dataset_write_npy", ds, path, &job);
  return st != NF_OK ? st : write_npy(path, &job);
}

nf_status nf_write_column_csv(const char *path, size_t n, const double *v)
{
  matrix_job job;
  nf_status st = column_job("nf_write_column_csv", path, n, v, &job);
  return st != NF_OK ? st : write_csv(path, &job);
}

nf_status nf_write_column_npy(const char *path, size_t n, const double *v)
{
  matrix_job job;
  nf_status st = column_job("nf_write_column_npy", path, n, v, &job);
  return st != NF_OK ? st : write_npy(path, &job);
}
