/* tests/test_io.c — the file-format layer: CRC-32, atomic file replacement, nf_meta,
   nf_config (JSON round trips, typed readers), the safetensors container (round
   trip and the reader's defences against damaged files) and the data-set writers. */
#define _GNU_SOURCE /* memmem, mkdtemp, truncate */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"
#include "internal.h"
#include "io/io_internal.h"
#include "io/safetensors.h"
#include "nflow/config.h"
#include "nflow/meta.h"

/* The temporary folder of this run (made in main, removed at the end). */
static char tmp_dir[] = "/tmp/nf_test_io_XXXXXX";

/* tmp_dir/name in one of a few rotating static buffers. */
static const char *tpath(const char *name)
{
  static char buf[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", tmp_dir, name);
  return buf[k];
}

/* Asserts got == want and that nf_errmsg() contains each of the NULL-terminated words. */
static void expect_fail(nf_status got, nf_status want, ...)
{
  ck_assert_msg(got == want, "status %s, want %s (%s)", nf_status_str(got), nf_status_str(want),
                nf_errmsg());
  va_list ap;
  va_start(ap, want);
  for (const char *w; (w = va_arg(ap, const char *));)
    ck_assert_msg(strstr(nf_errmsg(), w), "message '%s' lacks '%s'", nf_errmsg(), w);
  va_end(ap);
}

/* Number of entries of tmp_dir whose name starts with prefix. */
static int count_prefixed(const char *prefix)
{
  DIR *d = opendir(tmp_dir);
  ck_assert_ptr_nonnull(d);
  int k = 0;
  for (struct dirent *e; (e = readdir(d));) k += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
  closedir(d);
  return k;
}

/* Removes tmp_dir and the files in it. */
static void remove_tmp_dir(void)
{
  DIR *d = opendir(tmp_dir);
  if (!d) return;
  for (struct dirent *e; (e = readdir(d));)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      const char *p = tpath(e->d_name);
      if (remove(p) != 0) rmdir(p);
    }
  closedir(d);
  rmdir(tmp_dir);
}

/* ------------------------------------------------------------------ CRC-32 */

START_TEST(crc32_vector_and_chaining)
{
  ck_assert_uint_eq(nf_crc32(0, "123456789", 9), 0xCBF43926u);
  ck_assert_uint_eq(nf_crc32(0, "", 0), 0);
  ck_assert_uint_eq(nf_crc32(nf_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
  ck_assert_uint_eq(nf_crc32(0, "The quick brown fox jumps over the lazy dog", 43), 0x414FA339u);
}
END_TEST

/* ------------------------------------------------------------- atomic write */

/* Callback writing the string user. */
static nf_status write_text(FILE *f, void *user)
{
  fputs(user, f);
  return NF_OK;
}

/* Callback writing some bytes, then failing. */
static nf_status write_then_fail(FILE *f, void *user)
{
  (void)user;
  fputs("partial garbage", f);
  return nf_fail(NF_EFORMAT, "the callback gave up");
}

START_TEST(atomic_write_replaces_the_file)
{
  const char *p = tpath("atomic.txt");
  ck_assert_int_eq(nf_atomic_write(p, write_text, "first"), NF_OK);
  ck_assert_int_eq(nf_atomic_write(p, write_text, "second"), NF_OK);
  size_t len;
  unsigned char *b = th_read_file(p, &len);
  ck_assert_uint_eq(len, 6);
  ck_assert_mem_eq(b, "second", 6);
  free(b);
  ck_assert_int_eq(count_prefixed("atomic.txt.tmp"), 0);
}
END_TEST

START_TEST(atomic_write_failure_keeps_the_old_file)
{
  const char *p = tpath("keep.txt");
  th_write_file(p, "old contents\n", 13);
  expect_fail(nf_atomic_write(p, write_then_fail, NULL), NF_EFORMAT, "gave up", NULL);
  size_t len;
  unsigned char *b = th_read_file(p, &len);
  ck_assert_uint_eq(len, 13);
  ck_assert_mem_eq(b, "old contents\n", 13);
  free(b);
  ck_assert_int_eq(count_prefixed("keep.txt.tmp"), 0);
}
END_TEST

START_TEST(atomic_write_unwritable_places)
{
  const char *p = tpath("no_such_folder/f.bin");
  expect_fail(nf_atomic_write(p, write_text, "x"), NF_EIO, p, "temporary", NULL);
  /* a folder in the way: the rename fails, the temporary goes */
  const char *d = tpath("a_folder");
  ck_assert_int_eq(mkdir(d, 0700), 0);
  expect_fail(nf_atomic_write(d, write_text, "x"), NF_EIO, d, "rename", NULL);
  ck_assert_int_eq(count_prefixed("a_folder.tmp"), 0);
  expect_fail(nf_atomic_write(NULL, write_text, "x"), NF_EINVAL, NULL);
  if (geteuid() != 0) { /* root may write anywhere */
    const char *ro = tpath("read_only"), *f = tpath("read_only/f.bin");
    ck_assert_int_eq(mkdir(ro, 0500), 0);
    expect_fail(nf_atomic_write(f, write_text, "x"), NF_EIO, f, "Permission denied", NULL);
    chmod(ro, 0700);
  }
}
END_TEST

/* -------------------------------------------------------------------- meta */

START_TEST(meta_set_get_replace_order)
{
  nf_meta *m = nf_meta_new();
  ck_assert_ptr_nonnull(m);
  ck_assert_uint_eq(nf_meta_count(m), 0);
  ck_assert_int_eq(nf_meta_set(m, "data", "moons.csv"), NF_OK);
  ck_assert_int_eq(nf_meta_set(m, "iterations", "100"), NF_OK);
  for (int i = 0; i < 20; i++) { /* growth */
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    ck_assert_int_eq(nf_meta_set(m, k, k), NF_OK);
  }
  ck_assert_int_eq(nf_meta_set(m, "data", "rings.npy"), NF_OK); /* replaces, keeps place */
  ck_assert_uint_eq(nf_meta_count(m), 22);
  ck_assert_str_eq(nf_meta_get(m, "data"), "rings.npy");
  ck_assert_str_eq(nf_meta_key(m, 0), "data");
  ck_assert_str_eq(nf_meta_value(m, 0), "rings.npy");
  ck_assert_str_eq(nf_meta_key(m, 1), "iterations");
  ck_assert_str_eq(nf_meta_value(m, 21), "k19");
  ck_assert_ptr_null(nf_meta_get(m, "absent"));
  ck_assert_ptr_null(nf_meta_key(m, 22));
  ck_assert_ptr_null(nf_meta_value(m, 22));
  expect_fail(nf_meta_set(m, NULL, "v"), NF_EINVAL, NULL);
  expect_fail(nf_meta_set(m, "k", NULL), NF_EINVAL, NULL);
  expect_fail(nf_meta_set(NULL, "k", "v"), NF_EINVAL, NULL);
  ck_assert_uint_eq(nf_meta_count(NULL), 0);
  nf_meta_free(m);
  nf_meta_free(NULL);
}
END_TEST

/* ------------------------------------------------------------------ config */

/* A copy of cfg through JSON text (serialised and parsed back) with its tensors re-attached. */
static nf_config *through_json(const nf_config *cfg)
{
  char *text = json_dumps(nf_config_json(cfg), JSON_COMPACT);
  ck_assert_ptr_nonnull(text);
  json_error_t err;
  json_t *j = json_loads(text, 0, &err);
  ck_assert_ptr_nonnull(j);
  free(text);
  nf_config *back = NULL;
  ck_assert_int_eq(nf_config_from_json(j, "test", &back), NF_OK);
  json_decref(j);
  for (size_t i = 0; i < nf_config_tensor_count(cfg); i++) {
    size_t n;
    const double *v;
    const char *key = nf_config_tensor(cfg, i, &n, &v);
    ck_assert_int_eq(nf_config_set_tensor(back, key, n, v), NF_OK);
  }
  return back;
}

/* Reals that need all 17 digits, or are extreme. */
static const double tricky[] = {
    0.1,        1.0 / 3.0, 1e-300, 5e-324, -0.0, 1.7976931348623157e308, 2.2250738585072014e-308,
    -123456.789};
#define N_TRICKY (sizeof tricky / sizeof *tricky)

START_TEST(config_round_trips_every_type)
{
  nf_config *cfg = nf_config_new();
  ck_assert_int_eq(nf_config_set_int(cfg, "layers", -42), NF_OK);
  ck_assert_int_eq(nf_config_set_int(cfg, "big", 9007199254740993LL), NF_OK);
  ck_assert_int_eq(nf_config_set_string(cfg, "act", "tanh \"quoted\" é"), NF_OK);
  const size_t sizes[] = {2, 64, 0, 128};
  ck_assert_int_eq(nf_config_set_sizes(cfg, "hidden", 4, sizes), NF_OK);
  ck_assert_int_eq(nf_config_set_sizes(cfg, "none", 0, NULL), NF_OK);
  for (size_t i = 0; i < N_TRICKY; i++) {
    char k[16];
    snprintf(k, sizeof k, "r%zu", i);
    ck_assert_int_eq(nf_config_set_real(cfg, k, tricky[i]), NF_OK);
  }
  const double shift[] = {0.5, -1e-310, 3.0};
  ck_assert_int_eq(nf_config_set_tensor(cfg, "shift", 3, shift), NF_OK);
  ck_assert_ptr_null(json_object_get(nf_config_json(cfg), "shift")); /* not in the JSON */

  nf_config *back = through_json(cfg);
  long long i;
  ck_assert_int_eq(nf_config_get_int(back, "layers", &i), NF_OK);
  ck_assert_int_eq(i, -42);
  ck_assert_int_eq(nf_config_get_int(back, "big", &i), NF_OK);
  ck_assert(i == 9007199254740993LL);
  const char *s;
  ck_assert_int_eq(nf_config_get_string(back, "act", &s), NF_OK);
  ck_assert_str_eq(s, "tanh \"quoted\" é");
  size_t n, got[4];
  ck_assert_int_eq(nf_config_get_len(back, "hidden", &n), NF_OK);
  ck_assert_uint_eq(n, 4);
  ck_assert_int_eq(nf_config_get_sizes(back, "hidden", 4, got), NF_OK);
  ck_assert_mem_eq(got, sizes, sizeof sizes);
  ck_assert_int_eq(nf_config_get_len(back, "none", &n), NF_OK);
  ck_assert_uint_eq(n, 0);
  ck_assert_int_eq(nf_config_get_sizes(back, "none", 0, NULL), NF_OK);
  ck_assert_int_eq(nf_config_get_size(back, "hidden", &n), NF_EFORMAT);
  for (size_t k = 0; k < N_TRICKY; k++) {
    char key[16];
    double r;
    snprintf(key, sizeof key, "r%zu", k);
    ck_assert_int_eq(nf_config_get_real(back, key, &r), NF_OK);
    ck_assert_msg(memcmp(&r, &tricky[k], sizeof r) == 0, "%s: %.17g != %.17g", key, r, tricky[k]);
  }
  double r;
  ck_assert_int_eq(nf_config_get_real(back, "layers", &r), NF_OK); /* an integer is a number */
  ck_assert(r == -42.0);
  double t[3];
  ck_assert_int_eq(nf_config_get_len(back, "shift", &n), NF_OK);
  ck_assert_uint_eq(n, 3);
  ck_assert_int_eq(nf_config_get_tensor(back, "shift", 3, t), NF_OK);
  ck_assert_mem_eq(t, shift, sizeof shift);
  ck_assert(nf_config_has(back, "shift") && nf_config_has(back, "act") &&
            !nf_config_has(back, "x"));
  ck_assert_uint_eq(nf_config_tensor_count(back), 1);
  ck_assert_ptr_null(nf_config_tensor(back, 1, NULL, NULL));
  nf_config_free(back);
  nf_config_free(cfg);
  nf_config_free(NULL);
}
END_TEST

START_TEST(config_writers_refuse)
{
  nf_config *cfg = nf_config_new();
  ck_assert_int_eq(nf_config_set_int(cfg, "a", 1), NF_OK);
  expect_fail(nf_config_set_int(cfg, "a", 2), NF_EINVAL, "'a'", "already set", NULL);
  expect_fail(nf_config_set_real(cfg, "r", NAN), NF_EINVAL, "'r'", "not finite", NULL);
  expect_fail(nf_config_set_real(cfg, "r", INFINITY), NF_EINVAL, "not finite", NULL);
  expect_fail(nf_config_set_string(cfg, "a", "x"), NF_EINVAL, "already set", NULL);
  expect_fail(nf_config_set_string(cfg, "s", "\xff\xfe"), NF_EINVAL, "UTF-8", NULL);
  const double bad[] = {1.0, NAN};
  expect_fail(nf_config_set_tensor(cfg, "t", 2, bad), NF_EINVAL, "'t'", "not finite", NULL);
  expect_fail(nf_config_set_tensor(cfg, "t", 0, bad), NF_EINVAL, "'t'", NULL);
  expect_fail(nf_config_set_tensor(cfg, "a", 1, bad), NF_EINVAL, "already set", NULL);
  ck_assert_int_eq(nf_config_set_tensor(cfg, "t", 1, bad), NF_OK);
  expect_fail(nf_config_set_sizes(cfg, "t", 0, NULL), NF_EINVAL, "already set", NULL);
  expect_fail(nf_config_set_int(NULL, "k", 1), NF_EINVAL, NULL);
  expect_fail(nf_config_set_int(cfg, NULL, 1), NF_EINVAL, NULL);
  ck_assert(!nf_config_has(cfg, "r") && !nf_config_has(cfg, "s"));
  nf_config *out = NULL;
  json_t *arr = json_array();
  expect_fail(nf_config_from_json(arr, "model.safetensors", &out), NF_EFORMAT, "model.safetensors",
              "not a JSON object", NULL);
  ck_assert_ptr_null(out);
  json_decref(arr);
  nf_config_free(cfg);
}
END_TEST

START_TEST(config_readers_name_key_and_type)
{
  json_error_t err;
  json_t *j =
      json_loads("{\"i\": 3, \"r\": 2.5, \"s\": \"x\", \"neg\": -1, \"l\": [1, -2, 3]}", 0, &err);
  nf_config *cfg = NULL;
  ck_assert_int_eq(nf_config_from_json(j, "test", &cfg), NF_OK);
  json_decref(j);
  const double one = 1.0;
  ck_assert_int_eq(nf_config_set_tensor(cfg, "t", 1, &one), NF_OK);
  long long i = 77;
  double r = 77;
  const char *s = "untouched";
  size_t z = 77, zs[3] = {7, 7, 7};
  double t[2] = {7, 7};
  expect_fail(nf_config_get_int(cfg, "nope", &i), NF_EFORMAT, "'nope'", "missing", NULL);
  expect_fail(nf_config_get_int(cfg, "r", &i), NF_EFORMAT, "'r'", "integer", NULL);
  expect_fail(nf_config_get_int(cfg, "t", &i), NF_EFORMAT, "'t'", "missing", NULL);
  expect_fail(nf_config_get_real(cfg, "s", &r), NF_EFORMAT, "'s'", "number", NULL);
  expect_fail(nf_config_get_string(cfg, "i", &s), NF_EFORMAT, "'i'", "string", NULL);
  expect_fail(nf_config_get_size(cfg, "neg", &z), NF_EFORMAT, "'neg'", "non-negative", NULL);
  expect_fail(nf_config_get_size(cfg, "r", &z), NF_EFORMAT, "'r'", "non-negative integer", NULL);
  expect_fail(nf_config_get_len(cfg, "i", &z), NF_EFORMAT, "'i'", "list or a tensor", NULL);
  expect_fail(nf_config_get_sizes(cfg, "l", 2, zs), NF_EFORMAT, "'l'", "2 entries, got 3", NULL);
  expect_fail(nf_config_get_sizes(cfg, "l", 3, zs), NF_EFORMAT, "'l'", "entry 1", NULL);
  expect_fail(nf_config_get_sizes(cfg, "i", 1, zs), NF_EFORMAT, "'i'", "list", NULL);
  expect_fail(nf_config_get_tensor(cfg, "t", 2, t), NF_EFORMAT, "'t'", "2 values, got 1", NULL);
  expect_fail(nf_config_get_tensor(cfg, "l", 3, t), NF_EFORMAT, "'l'", "tensor", NULL);
  expect_fail(nf_config_get_tensor(cfg, "nope", 1, t), NF_EFORMAT, "'nope'", "missing", NULL);
  expect_fail(nf_config_get_int(cfg, "i", NULL), NF_EINVAL, NULL);
  expect_fail(nf_config_get_int(NULL, "i", &i), NF_EINVAL, NULL);
  ck_assert(i == 77 && r == 77 && strcmp(s, "untouched") == 0 && z == 77);
  ck_assert(zs[0] == 7 && zs[1] == 7 && zs[2] == 7 && t[0] == 7 && t[1] == 7);
  ck_assert_int_eq(nf_config_get_size(cfg, "i", &z), NF_OK);
  ck_assert_uint_eq(z, 3);
  nf_config_free(cfg);
}
END_TEST

/* ------------------------------------------------------------- safetensors */

/* Values of the test file: tricky reals, a NaN with a payload (bits kept as given). */
static double values_a[4], values_b[1] = {42.0};

/* Writes the standard test file to path: metadata data/iterations, tensors "a" (4), "b" (1). */
static void write_standard(const char *path)
{
  memcpy(values_a, tricky, 3 * sizeof *values_a);
  uint64_t nan_bits = 0x7FF8000000000123ULL;
  memcpy(&values_a[3], &nan_bits, sizeof nan_bits);
  nf_meta *m = nf_meta_new();
  ck_assert_int_eq(nf_meta_set(m, "data", "moons.csv"), NF_OK);
  ck_assert_int_eq(nf_meta_set(m, "iterations", "100"), NF_OK);
  nf_tensor t[] = {{"a", 4, values_a}, {"b", 1, values_b}};
  ck_assert_int_eq(nf_safetensors_write(path, m, 2, t), NF_OK);
  nf_meta_free(m);
}

START_TEST(safetensors_round_trip)
{
  const char *p = tpath("model.safetensors");
  write_standard(p);
  size_t len;
  unsigned char *b = th_read_file(p, &len);
  uint64_t hlen = 0;
  for (int i = 8; i-- > 0;) hlen = hlen << 8 | b[i];
  ck_assert_uint_eq((8 + hlen) % 8, 0);
  ck_assert_uint_eq(len, 8 + hlen + 40);
  free(b);
  nf_safetensors *st = NULL;
  ck_assert_msg(nf_safetensors_read(p, &st) == NF_OK, "%s", nf_errmsg());
  const nf_meta *m = nf_safetensors_meta(st);
  ck_assert_uint_eq(nf_meta_count(m), 3);
  ck_assert_str_eq(nf_meta_key(m, 0), "data");
  ck_assert_str_eq(nf_meta_value(m, 0), "moons.csv");
  ck_assert_str_eq(nf_meta_value(m, 1), "100");
  ck_assert_str_eq(nf_meta_key(m, 2), "crc32");
  ck_assert_uint_eq(strlen(nf_meta_value(m, 2)), 8);
  ck_assert_uint_eq(nf_safetensors_count(st), 2);
  ck_assert_str_eq(nf_safetensors_name(st, 0), "a");
  ck_assert_str_eq(nf_safetensors_name(st, 1), "b");
  ck_assert_ptr_null(nf_safetensors_name(st, 2));
  size_t n = 0;
  const double *a = nf_safetensors_find(st, "a", &n);
  ck_assert_uint_eq(n, 4);
  ck_assert_mem_eq(a, values_a, sizeof values_a);
  ck_assert_mem_eq(nf_safetensors_find(st, "b", &n), values_b, sizeof values_b);
  ck_assert_uint_eq(n, 1);
  ck_assert_ptr_null(nf_safetensors_find(st, "c", &n));
  nf_safetensors_free(st);
  nf_safetensors_free(NULL);
}
END_TEST

START_TEST(safetensors_empty_and_metadata_only)
{
  const char *p = tpath("empty.safetensors");
  ck_assert_int_eq(nf_safetensors_write(p, NULL, 0, NULL), NF_OK);
  nf_safetensors *st = NULL;
  ck_assert_msg(nf_safetensors_read(p, &st) == NF_OK, "%s", nf_errmsg());
  ck_assert_uint_eq(nf_safetensors_count(st), 0);
  ck_assert_uint_eq(nf_meta_count(nf_safetensors_meta(st)), 1);
  nf_safetensors_free(st);
}
END_TEST

START_TEST(safetensors_writer_refuses)
{
  const char *p = tpath("refused.safetensors");
  const double v[] = {1, 2};
  nf_meta *m = nf_meta_new();
  ck_assert_int_eq(nf_meta_set(m, "crc32", "00000000"), NF_OK);
  nf_tensor ok[] = {{"x", 2, v}};
  expect_fail(nf_safetensors_write(p, m, 1, ok), NF_EINVAL, p, "crc32", NULL);
  nf_tensor dup[] = {{"x", 2, v}, {"x", 1, v}};
  expect_fail(nf_safetensors_write(p, NULL, 2, dup), NF_EINVAL, "'x'", "twice", NULL);
  nf_tensor reserved[] = {{"__metadata__", 2, v}};
  expect_fail(nf_safetensors_write(p, NULL, 1, reserved), NF_EINVAL, "__", NULL);
  nf_tensor null_data[] = {{"x", 2, NULL}};
  expect_fail(nf_safetensors_write(p, NULL, 1, null_data), NF_EINVAL, NULL);
  ck_assert_int_eq(access(p, F_OK), -1);
  nf_meta_free(m);
}
END_TEST

/* Asserts that reading path fails with status want and the message has path and the words. */
static void expect_read_fails(const char *path, nf_status want, const char *w1, const char *w2)
{
  nf_safetensors *st = NULL;
  expect_fail(nf_safetensors_read(path, &st), want, path, w1, w2, NULL);
  ck_assert_ptr_null(st);
}

/* Writes the first len bytes of the standard file, with byte at flip (if < len) xor'ed by
   mask, plus `extra` zero bytes, to a file and checks reading it fails as said. */
static void expect_damaged(size_t len, size_t flip, unsigned char mask, size_t extra,
                           const char *w1, const char *w2)
{
  const char *good = tpath("good.safetensors"), *bad = tpath("bad.safetensors");
  write_standard(good);
  size_t n;
  unsigned char *b = th_read_file(good, &n);
  b = realloc(b, n + extra);
  memset(b + n, 0, extra);
  if (len > n) len = n + extra;
  if (flip < len) b[flip] ^= mask;
  th_write_file(bad, b, len);
  free(b);
  expect_read_fails(bad, NF_EFORMAT, w1, w2);
}

/* Header length of the standard file. */
static size_t standard_header_len(void)
{
  const char *good = tpath("good.safetensors");
  write_standard(good);
  size_t n;
  unsigned char *b = th_read_file(good, &n);
  size_t h = 0;
  for (int i = 8; i-- > 0;) h = h << 8 | b[i];
  free(b);
  return h;
}

START_TEST(safetensors_truncated_everywhere)
{
  size_t h = standard_header_len(), total = 8 + h + 40, none = (size_t)-1;
  expect_damaged(0, none, 0, 0, "shorter than the 8-byte", NULL);
  expect_damaged(5, none, 0, 0, "shorter than the 8-byte", NULL);
  expect_damaged(8, none, 0, 0, "exceeds the file size", NULL);
  expect_damaged(8 + h / 2, none, 0, 0, "header length", "exceeds the file size");
  expect_damaged(8 + h - 1, none, 0, 0, "exceeds the file size", NULL);
  expect_damaged(8 + h, none, 0, 0, "beyond the data section", NULL);
  expect_damaged(8 + h + 13, none, 0, 0, "beyond the data section", NULL);
  expect_damaged(total - 1, none, 0, 0, "beyond the data section", NULL);
  expect_damaged(total + 8, none, 0, 8, "data section of 48 bytes", "longer than the tensors");
  expect_damaged(total + 3, none, 0, 3, "longer than the tensors", NULL);
}
END_TEST

START_TEST(safetensors_flipped_bytes)
{
  size_t h = standard_header_len(), total = 8 + h + 40;
  expect_damaged(total, 8, 0x01, 0, "not valid JSON", "line 1"); /* '{' -> 'z' */
  const char *good = tpath("good.safetensors");
  size_t n;
  unsigned char *b = th_read_file(good, &n);
  size_t at = (size_t)((unsigned char *)memmem(b, n, "moons", 5) - b);
  free(b);
  expect_damaged(total, at, 0x02, 0, "checksum mismatch", "corrupted"); /* "moons" -> "ooons" */
  expect_damaged(total, 8 + h + 17, 0x10, 0, "checksum mismatch", "corrupted");
  expect_damaged(total, total - 1, 0x80, 0, "checksum mismatch", NULL);
  expect_damaged(total, 7, 0x01, 0, "header length", "exceeds the file size");
}
END_TEST

/* Every byte of the standard file with bit `bit` flipped: the reader never accepts the
   damage, except inside a tensor name (which the checksum does not cover: the file
   then lacks tensor "a" or "b"). */
static void check_every_flip(int bit)
{
  const char *good = tpath("good.safetensors"), *bad = tpath("flipped.safetensors");
  write_standard(good);
  size_t n;
  unsigned char *b = th_read_file(good, &n);
  for (size_t i = 0; i < n; i++) {
    b[i] ^= (unsigned char)(1u << bit);
    th_write_file(bad, b, n);
    b[i] ^= (unsigned char)(1u << bit);
    nf_safetensors *st = NULL;
    nf_status s = nf_safetensors_read(bad, &st);
    if (s == NF_OK) {
      ck_assert_msg(!nf_safetensors_find(st, "a", NULL) || !nf_safetensors_find(st, "b", NULL),
                    "a flip of bit %d at byte %zu went unnoticed", bit, i);
      nf_safetensors_free(st);
    } else {
      ck_assert_msg(s == NF_EFORMAT, "byte %zu: %s", i, nf_errmsg());
      ck_assert_ptr_null(st);
    }
  }
  free(b);
}

START_TEST(safetensors_every_single_bit_flip)
{
  check_every_flip(0);
  check_every_flip(5);
  check_every_flip(7);
}
END_TEST

/* Writes the 8-byte length of header, header and data_len bytes of zeros to path. */
static void put_crafted(const char *path, const char *header, size_t data_len)
{
  size_t h = strlen(header), total = 8 + h + data_len;
  unsigned char *b = calloc(total, 1);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)h >> (8 * i));
  memcpy(b + 8, header, h);
  th_write_file(path, b, total);
  free(b);
}

/* Asserts that a file with this header and data_len zero bytes is refused
   (NF_EFORMAT) with the words. */
static void expect_header_refused(const char *header, size_t data_len, const char *w1,
                                  const char *w2)
{
  const char *p = tpath("crafted.safetensors");
  put_crafted(p, header, data_len);
  expect_read_fails(p, NF_EFORMAT, w1, w2);
}

#define META "\"__metadata__\":{\"crc32\":\"00000000\"}"

START_TEST(safetensors_bad_headers)
{
  expect_header_refused("[1,2]", 0, "header is not a JSON object", NULL);
  expect_header_refused("{\"a\":{}", 0, "not valid JSON", "line 1");
  expect_header_refused("{\"a\":1,\"a\":2}", 0, "not valid JSON", "duplicate");
  expect_header_refused("{\"__metadata__\":[]}", 0, "__metadata__", "not an object");
  expect_header_refused("{\"__metadata__\":{\"x\":1}}", 0, "__metadata__ 'x'", "not a string");
  expect_header_refused("{\"__metadata__\":{}}", 0, "no crc32", NULL);
  expect_header_refused("{}", 0, "no crc32", NULL);
  expect_header_refused("{" META ",\"a\":5}", 8, "tensor 'a'", "not an object");
  expect_header_refused("{" META ",\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                        8, "tensor 'a'", "dtype 'F32'");
  expect_header_refused("{" META ",\"a\":{\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "tensor 'a'",
                        "dtype");
  expect_header_refused("{" META
                        ",\"a\":{\"dtype\":\"F64\",\"shape\":[-1],\"data_offsets\":[0,8]}}",
                        8, "tensor 'a'", "shape");
  expect_header_refused("{" META ",\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],"
                        "\"data_offsets\":[0,8]}}",
                        8, "tensor 'a'", "overflows");
  expect_header_refused("{" META
                        ",\"a\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[0,16]}}",
                        16, "shape holds 3 values", "span 16 bytes");
  expect_header_refused("{" META
                        ",\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0.0,8]}}",
                        8, "tensor 'a'", "data_offsets");
  expect_header_refused("{" META ",\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0]}}",
                        8, "tensor 'a'", "data_offsets");
  expect_header_refused("{" META ",\"a\":{\"dtype\":\"F64\",\"shape\":[0],\"data_offsets\":[8,0]}}",
                        8, "begin 8 > end 0", NULL);
  expect_header_refused("{" META
                        ",\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}",
                        8, "end 16", "beyond the data section of 8 bytes");
  expect_header_refused("{" META ",\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                        "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[8,24]}}",
                        24, "tensors 'a' and 'b' overlap", NULL);
  expect_header_refused("{" META ",\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                        "\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[16,24]}}",
                        24, "gap of 8 bytes", "'b'");
  expect_header_refused("{" META ",\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
                        8, "checksum mismatch", NULL);
  expect_header_refused(
      "{\"__metadata__\":{\"crc32\":\"XYZ\"},\"a\":{\"dtype\":\"F64\",\"shape\":[1],"
      "\"data_offsets\":[0,8]}}",
      8, "crc32 'XYZ'", "hex");
}
END_TEST

START_TEST(safetensors_length_field_defences)
{
  const char *p = tpath("lengths.safetensors");
  unsigned char b[16] = {0};
  th_write_file(p, b, 16);
  expect_read_fails(p, NF_EFORMAT, "header length is 0", NULL);
  b[7] = 0x40; /* 2^62 */
  th_write_file(p, b, 16);
  expect_read_fails(p, NF_EFORMAT, "header length 4611686018427387904", "exceeds the file size 16");
  /* a sparse 200 MB file claiming a 150 MB header: refused before allocating it */
  uint64_t h = 150000000;
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(h >> (8 * i));
  th_write_file(p, b, 8);
  ck_assert_int_eq(truncate(p, 200000000), 0);
  expect_read_fails(p, NF_EFORMAT, "header length 150000000", "limit");
  remove(p);
  expect_read_fails(p, NF_EIO, "cannot open", NULL);
  expect_read_fails(tmp_dir, NF_EIO, "is a directory", NULL);
}
END_TEST

/* ---------------------------------------------------------------- datasets */

/* A 3 x 3 set of reals needing 17 digits (and -0.0, subnormals, extremes). */
static const double grid[] = {
    0.1,  1.0 / 3.0,           -0.0,         1e-300, 5e-324, 1.7976931348623157e308,
    -2.5, 123456789.123456789, 6.02214076e23};

START_TEST(dataset_view_frees_only_the_struct)
{
  double x[6] = {1, 2, 3, 4, 5, 6};
  nf_dataset *v = nf_dataset_view(3, 2, x);
  ck_assert_ptr_nonnull(v);
  ck_assert(v->n == 3 && v->dim == 2 && v->x == x && v->is_view);
  nf_dataset_free(v); /* valgrind: no free of the stack array */
  ck_assert_ptr_null(nf_dataset_view(0, 2, x));
  ck_assert_ptr_null(nf_dataset_view(3, 2, NULL));
  nf_dataset *d = nf_dataset_new(2, 2);
  ck_assert(!d->is_view);
  nf_dataset_free(d);
}
END_TEST

/* Writes grid as a 3 x 3 set with write, reads it with read and compares bit for bit. */
static void check_dataset_round_trip(const char *name,
                                     nf_status (*write)(const nf_dataset *, const char *),
                                     nf_status (*read)(const char *, nf_dataset **))
{
  const char *p = tpath(name);
  nf_dataset *v = nf_dataset_view(3, 3, (double *)grid);
  ck_assert_msg(write(v, p) == NF_OK, "%s", nf_errmsg());
  nf_dataset_free(v);
  nf_dataset *back = NULL;
  ck_assert_msg(read(p, &back) == NF_OK, "%s", nf_errmsg());
  ck_assert(back->n == 3 && back->dim == 3);
  ck_assert_mem_eq(back->x, grid, sizeof grid);
  nf_dataset_free(back);
}

/* Writes grid as a column of 9 with write, reads it with read (as 9 x 1), compares bit for bit. */
static void check_column_round_trip(const char *name,
                                    nf_status (*write)(const char *, size_t, const double *),
                                    nf_status (*read)(const char *, nf_dataset **))
{
  const char *p = tpath(name);
  ck_assert_msg(write(p, 9, grid) == NF_OK, "%s", nf_errmsg());
  nf_dataset *back = NULL;
  ck_assert_msg(read(p, &back) == NF_OK, "%s", nf_errmsg());
  ck_assert(back->n == 9 && back->dim == 1);
  ck_assert_mem_eq(back->x, grid, sizeof grid);
  nf_dataset_free(back);
}

START_TEST(dataset_writers_round_trip_exactly)
{
  check_dataset_round_trip("grid.csv", nf_dataset_write_csv, nf_dataset_read_csv);
  check_dataset_round_trip("grid.npy", nf_dataset_write_npy, nf_dataset_read_npy);
  check_column_round_trip("col.csv", nf_write_column_csv, nf_dataset_read_csv);
  check_column_round_trip("col.npy", nf_write_column_npy, nf_dataset_read_npy);
  size_t n;
  unsigned char *b = th_read_file(tpath("grid.npy"), &n);
  size_t hlen = (size_t)b[8] | (size_t)b[9] << 8;
  ck_assert_uint_eq((10 + hlen) % 64, 0);
  ck_assert_int_eq(b[10 + hlen - 1], '\n');
  ck_assert_uint_eq(n, 10 + hlen + sizeof grid);
  ck_assert_ptr_nonnull(memmem(b, n, "'shape': (3, 3)", 15));
  free(b);
  b = th_read_file(tpath("col.npy"), &n);
  ck_assert_ptr_nonnull(memmem(b, n, "'shape': (9,)", 13));
  free(b);
}
END_TEST

START_TEST(dataset_writers_refuse)
{
  double x[4] = {1, 2, NAN, 4};
  nf_dataset *v = nf_dataset_view(2, 2, x);
  const char *p = tpath("nonfinite.csv");
  expect_fail(nf_dataset_write_csv(v, p), NF_ENONFINITE, p, "row 2, column 1", NULL);
  expect_fail(nf_dataset_write_npy(v, p), NF_ENONFINITE, "row 2, column 1", NULL);
  expect_fail(nf_write_column_npy(p, 4, x), NF_ENONFINITE, "row 3, column 1", NULL);
  ck_assert_int_eq(access(p, F_OK), -1);
  expect_fail(nf_dataset_write_csv(NULL, p), NF_EINVAL, NULL);
  expect_fail(nf_write_column_csv(p, 0, x), NF_EINVAL, NULL);
  const char *q = tpath("no_such_folder/x.npy");
  x[2] = 3;
  expect_fail(nf_dataset_write_npy(v, q), NF_EIO, q, NULL);
  nf_dataset_free(v);
}
END_TEST

/* The suite, one test case per area. */
static Suite *io_suite(void)
{
  Suite *s = suite_create("io");
  TCase *tc = tcase_create("crc_atomic_meta");
  tcase_add_test(tc, crc32_vector_and_chaining);
  tcase_add_test(tc, atomic_write_replaces_the_file);
  tcase_add_test(tc, atomic_write_failure_keeps_the_old_file);
  tcase_add_test(tc, atomic_write_unwritable_places);
  tcase_add_test(tc, meta_set_get_replace_order);
  suite_add_tcase(s, tc);
  tc = tcase_create("config");
  tcase_add_test(tc, config_round_trips_every_type);
  tcase_add_test(tc, config_writers_refuse);
  tcase_add_test(tc, config_readers_name_key_and_type);
  suite_add_tcase(s, tc);
  tc = tcase_create("safetensors");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, safetensors_round_trip);
  tcase_add_test(tc, safetensors_empty_and_metadata_only);
  tcase_add_test(tc, safetensors_writer_refuses);
  tcase_add_test(tc, safetensors_truncated_everywhere);
  tcase_add_test(tc, safetensors_flipped_bytes);
  tcase_add_test(tc, safetensors_every_single_bit_flip);
  tcase_add_test(tc, safetensors_bad_headers);
  tcase_add_test(tc, safetensors_length_field_defences);
  suite_add_tcase(s, tc);
  tc = tcase_create("datasets");
  tcase_add_test(tc, dataset_view_frees_only_the_struct);
  tcase_add_test(tc, dataset_writers_round_trip_exactly);
  tcase_add_test(tc, dataset_writers_refuse);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  if (!mkdtemp(tmp_dir)) {
    perror("mkdtemp");
    return 1;
  }
  SRunner *sr = srunner_create(io_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  remove_tmp_dir();
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
