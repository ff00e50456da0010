/* tests/test_npy.c — the NumPy .npy reader on fixed fixtures in tests/data (written
   byte by byte from the NEP 1 format): values compared exactly, every malformed
   file with its exact message. */
#define _POSIX_C_SOURCE 200809L /* mkfifo, fork */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

/* Sentinel for "output left untouched". */
static nf_dataset sentinel_storage;
#define SENTINEL (&sentinel_storage)

/* Reads fixture name and asserts the shape n x dim and the row-major values want, bit for bit. */
static void assert_reads(const char *name, size_t n, size_t dim, const double *want)
{
  nf_dataset *ds = NULL;
  nf_status st = nf_dataset_read_npy(th_data_path(name), &ds);
  ck_assert_msg(st == NF_OK, "%s: %s", name, nf_errmsg());
  ck_assert_uint_eq(ds->n, n);
  ck_assert_uint_eq(ds->dim, dim);
  ck_assert_mem_eq(ds->x, want, n * dim * sizeof *want);
  nf_dataset_free(ds);
}

/* The 3 x 2 array of npy_f8_c.npy and npy_f8_fortran.npy (-0.0 checks the sign bit). */
static const double matrix32[] = {1.5, -2.25, 0.1, 1e300, -0.0, 3.0};

START_TEST(reads_float64_c_order)
{
  assert_reads("npy_f8_c.npy", 3, 2, matrix32);
}
END_TEST

START_TEST(reads_float64_fortran_order)
{
  assert_reads("npy_f8_fortran.npy", 3, 2, matrix32);
}
END_TEST

START_TEST(reads_float32_converted)
{
  const double want[] = {0.5, -1.25, 0.1f, 3e38f, -7.0, 1e-40f}; /* 1e-40f is subnormal */
  assert_reads("npy_f4.npy", 2, 3, want);
}
END_TEST

START_TEST(reads_one_dimensional_as_a_column)
{
  const double want[] = {4.0, -0.5, 2.5e-10, 8.0};
  assert_reads("npy_1d.npy", 4, 1, want);
}
END_TEST

START_TEST(reads_versions_2_and_3)
{
  const double want[] = {1.0, 2.0, 3.0, 4.0};
  assert_reads("npy_v2.npy", 2, 2, want); /* 4-byte header length, C order */
  assert_reads("npy_v3.npy", 2, 2, want); /* 4-byte header length, Fortran order */
}
END_TEST

START_TEST(reads_keys_in_any_order)
{
  const double want[] = {5.0, 6.0}; /* double quotes, no trailing comma */
  assert_reads("npy_keys.npy", 2, 1, want);
}
END_TEST

START_TEST(rejects_other_dtypes_and_shapes)
{
  th_assert_read_error(nf_dataset_read_npy, "npy_i4.npy", NF_EFORMAT, ": dtype '<i4' is not float64 or float32");
  th_assert_read_error(nf_dataset_read_npy, "npy_big.npy", NF_EFORMAT, ": dtype '>f8' is big-endian (only '<f8' and '<f4' are read)");
  th_assert_read_error(nf_dataset_read_npy, "npy_zero_rows.npy", NF_EFORMAT, ": array of shape 0 x 2 is empty");
  th_assert_read_error(nf_dataset_read_npy, "npy_3d.npy", NF_EFORMAT, ": array has 3 dimensions, not 1 or 2");
  th_assert_read_error(nf_dataset_read_npy, "npy_scalar.npy", NF_EFORMAT, ": array has 0 dimensions, not 1 or 2");
}
END_TEST

START_TEST(rejects_bad_data)
{
  th_assert_read_error(nf_dataset_read_npy, "npy_truncated.npy", NF_EFORMAT, ": data ends after 10 of 12 values");
  th_assert_read_error(nf_dataset_read_npy, "npy_trailing.npy", NF_EFORMAT, ": bytes left after the 2 values");
  th_assert_read_error(nf_dataset_read_npy, "npy_nan.npy", NF_EFORMAT, ": row 3, column 1 is not finite");
  /* Fortran order [[1, -inf], [2, 4]]: the bad entry is at row 1, column 2 */
  th_assert_read_error(nf_dataset_read_npy, "npy_inf_f4.npy", NF_EFORMAT, ": row 1, column 2 is not finite");
}
END_TEST

START_TEST(rejects_malformed_headers)
{
  th_assert_read_error(nf_dataset_read_npy, "npy_magic.npy", NF_EFORMAT, ": not a .npy file (no \\x93NUMPY magic string)");
  th_assert_read_error(nf_dataset_read_npy, "npy_version.npy", NF_EFORMAT, ": .npy version 4.0 is not 1.0, 2.0 or 3.0");
  th_assert_read_error(nf_dataset_read_npy, "npy_short_header.npy", NF_EFORMAT, ": file ends inside the header");
  th_assert_read_error(nf_dataset_read_npy, "npy_no_shape.npy", NF_EFORMAT, ": malformed header: missing 'descr', 'fortran_order' or 'shape'");
  th_assert_read_error(nf_dataset_read_npy, "npy_bad_bool.npy", NF_EFORMAT, ": malformed header: 'fortran_order' is not True or False");
  th_assert_read_error(nf_dataset_read_npy, "npy_bad_shape.npy", NF_EFORMAT, ": malformed header: 'shape' is not a tuple of integers");
  th_assert_read_error(nf_dataset_read_npy, "npy_2d_csv_is_not_npy.csv", NF_EIO, ": cannot open: No such file or directory");
  th_assert_read_error(nf_dataset_read_npy, "csv_plain.csv", NF_EFORMAT, ": not a .npy file (no \\x93NUMPY magic string)");
}
END_TEST

START_TEST(checks_the_size_before_reserving_memory)
{
  /* 176 bytes claiming 1337 x 1000000 float64 values (10.7 GB) */
  th_assert_read_error(nf_dataset_read_npy, "npy_huge_shape.npy", NF_EFORMAT,
                       ": data ends after 6 of 1337000000 values");
  th_assert_read_error(nf_dataset_read_npy, ".", NF_EIO, ": is a directory");
  nf_dataset *ds = SENTINEL;
  if (access("/dev/zero", R_OK) == 0) { /* not a regular file: read as it comes */
    ck_assert_int_eq(nf_dataset_read_npy("/dev/zero", &ds), NF_EFORMAT);
    ck_assert_str_eq(nf_errmsg(), "/dev/zero: not a .npy file (no \\x93NUMPY magic string)");
  }
  ck_assert_ptr_eq(ds, SENTINEL);
}
END_TEST

/* The path of a new FIFO that a child process fills with fixture name's bytes. */
static const char *fifo_of(const char *name)
{
  static char path[64];
  snprintf(path, sizeof path, "npy_fifo_%ld", (long)getpid());
  unlink(path);
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    FILE *in = fopen(th_data_path(name), "rb"), *out = fopen(path, "wb");
    int c;
    while (in && out && (c = fgetc(in)) != EOF) fputc(c, out);
    _exit(out && fclose(out) == 0 ? 0 : 1); /* _exit does not flush */
  }
  return path;
}

START_TEST(reads_a_pipe_as_it_arrives)
{
  const char *path = fifo_of("npy_f8_c.npy");
  nf_dataset *ds = NULL;
  nf_status st = nf_dataset_read_npy(path, &ds);
  wait(NULL);
  unlink(path);
  ck_assert_msg(st == NF_OK, "%s", nf_errmsg());
  ck_assert_mem_eq(ds->x, matrix32, sizeof matrix32);
  nf_dataset_free(ds);
  /* 10.7 GB claimed, 48 bytes sent: refused without reserving the claim */
  path = fifo_of("npy_huge_shape.npy");
  ds = SENTINEL;
  st = nf_dataset_read_npy(path, &ds);
  wait(NULL);
  unlink(path);
  ck_assert_int_eq(st, NF_EFORMAT);
  ck_assert_ptr_eq(ds, SENTINEL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), ": data ends after 6 of 1337000000 values"));
}
END_TEST

/* nf_dataset_read_npy under an allocation limit of 95 bytes. */
static nf_status read_npy_limit95(const char *path, nf_dataset **out)
{
  nf_set_alloc_limit(95);
  nf_status st = nf_dataset_read_npy(path, out);
  nf_set_alloc_limit(0);
  return st;
}

START_TEST(honours_the_allocation_limit)
{
  /* 6 float64 values: 48 raw bytes and 48 for the set */
  th_assert_read_error(read_npy_limit95, "npy_f8_c.npy", NF_ENOMEM,
                       ": needs 96 bytes, more than the allocation limit of 95 bytes");
  ck_assert_uint_eq(nf_alloc_limit(), 0);
  nf_set_alloc_limit(96);
  assert_reads("npy_f8_c.npy", 3, 2, matrix32);
  nf_set_alloc_limit(0);
}
END_TEST

START_TEST(rejects_null_arguments)
{
  nf_dataset *ds = SENTINEL;
  ck_assert_int_eq(nf_dataset_read_npy(NULL, &ds), NF_EINVAL);
  ck_assert_ptr_eq(ds, SENTINEL);
  ck_assert_str_eq(nf_errmsg(), "nf_dataset_read_npy: NULL argument");
  ck_assert_int_eq(nf_dataset_read_npy(th_data_path("npy_f8_c.npy"), NULL), NF_EINVAL);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {reads_float64_c_order, reads_float64_fortran_order,
                          reads_float32_converted, reads_one_dimensional_as_a_column,
                          reads_versions_2_and_3, reads_keys_in_any_order,
                          rejects_other_dtypes_and_shapes, rejects_bad_data,
                          rejects_malformed_headers, rejects_null_arguments,
                          checks_the_size_before_reserving_memory, honours_the_allocation_limit,
                          reads_a_pipe_as_it_arrives, NULL};
  return th_run_tests("npy", 10, tests);
}
