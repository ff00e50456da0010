/* lib/npy.c — a reader for NumPy .npy files (NEP 1 format, versions 1.0 to 3.0)
   of float64 or float32 matrices into an nf_dataset. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "io/io_internal.h"
#include "nflow/dataset.h"

/* Longest header dictionary accepted (NumPy itself refuses more than 10000 bytes
   by default; this leaves room for long shapes and extra keys). */
#define NPY_HEADER_MAX 65536
/* Longest 'descr' string kept for messages. */
#define NPY_DESCR_MAX 32

/* What the header dictionary says about the array. */
typedef struct npy_header {
  char descr[NPY_DESCR_MAX];
  int fortran_order;
  size_t ndim;
  size_t shape[2];
  int has_descr, has_order, has_shape;
} npy_header;

/* A position in the header text, and the file's path for messages. */
typedef struct npy_cursor {
  const char *path;
  const char *p, *end;
} npy_cursor;

/* Unsigned little-endian integer of the k bytes at b. */
static uint64_t load_le(const unsigned char *b, size_t k)
{
  uint64_t v = 0;
  for (size_t i = k; i-- > 0;) v = v << 8 | b[i];
  return v;
}

/* Skips blanks (spaces, tabs, newlines) of the header. */
static void skip_space(npy_cursor *c)
{
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

/* Consumes the character ch after blanks; 1 if it was there. */
static int accept(npy_cursor *c, char ch)
{
  skip_space(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return 1;
  }
  return 0;
}

/* Records "path: malformed header: what" and returns NF_EFORMAT. */
static nf_status header_error(const npy_cursor *c, const char *what)
{
  return nf_fail(NF_EFORMAT, "%s: malformed header: %s", c->path, what);
}

/* Parses a Python string literal ('...' or "...", no escapes) into buf (truncated to cap). */
static nf_status parse_string(npy_cursor *c, char *buf, size_t cap)
{
  skip_space(c);
  if (c->p == c->end || (*c->p != '\'' && *c->p != '"'))
    return header_error(c, "expected a string");
  char quote = *c->p++;
  const char *start = c->p;
  while (c->p < c->end && *c->p != quote) c->p++;
  if (c->p == c->end) return header_error(c, "unterminated string");
  size_t len = (size_t)(c->p - start);
  if (len >= cap) len = cap - 1;
  memcpy(buf, start, len);
  buf[len] = '\0';
  c->p++;
  return NF_OK;
}

/* Parses True or False. */
static nf_status parse_bool(npy_cursor *c, int *value)
{
  skip_space(c);
  size_t left = (size_t)(c->end - c->p);
  if (left >= 4 && memcmp(c->p, "True", 4) == 0) {
    c->p += 4;
    *value = 1;
    return NF_OK;
  }
  if (left >= 5 && memcmp(c->p, "False", 5) == 0) {
    c->p += 5;
    *value = 0;
    return NF_OK;
  }
  return header_error(c, "'fortran_order' is not True or False");
}

/* Parses a non-negative decimal integer that fits in size_t. */
static nf_status parse_size(npy_cursor *c, size_t *value)
{
  skip_space(c);
  if (c->p == c->end || *c->p < '0' || *c->p > '9')
    return header_error(c, "'shape' is not a tuple of integers");
  size_t v = 0;
  for (; c->p < c->end && *c->p >= '0' && *c->p <= '9'; c->p++) {
    size_t digit = (size_t)(*c->p - '0');
    if (v > (SIZE_MAX - digit) / 10) return header_error(c, "'shape' entry too large");
    v = 10 * v + digit;
  }
  *value = v;
  return NF_OK;
}

/* Parses the shape tuple: (), (n,), (n, d), ...; keeps the first two entries and
   counts all of them in h->ndim. */
static nf_status parse_shape(npy_cursor *c, npy_header *h)
{
  if (!accept(c, '(')) return header_error(c, "'shape' is not a tuple of integers");
  h->ndim = 0;
  while (!accept(c, ')')) {
    size_t v = 0;
    nf_status st = parse_size(c, &v);
    if (st) return st;
    if (h->ndim < 2) h->shape[h->ndim] = v;
    h->ndim++;
    if (!accept(c, ',') && !(skip_space(c), c->p < c->end && *c->p == ')'))
      return header_error(c, "'shape' is not a tuple of integers");
  }
  return NF_OK;
}

/* Parses the value of one dictionary entry, by key. */
static nf_status parse_entry(npy_cursor *c, const char *key, npy_header *h)
{
  if (strcmp(key, "descr") == 0) {
    h->has_descr = 1;
    return parse_string(c, h->descr, sizeof h->descr);
  }
  if (strcmp(key, "fortran_order") == 0) {
    h->has_order = 1;
    return parse_bool(c, &h->fortran_order);
  }
  if (strcmp(key, "shape") == 0) {
    h->has_shape = 1;
    return parse_shape(c, h);
  }
  return header_error(c, "unknown key (expected 'descr', 'fortran_order', 'shape')");
}

/* Parses the header dictionary {'descr': ..., 'fortran_order': ..., 'shape': ...}
   (keys in any order, a trailing comma and trailing blanks allowed). */
static nf_status parse_header(npy_cursor *c, npy_header *h)
{
  if (!accept(c, '{')) return header_error(c, "not a dictionary");
  while (!accept(c, '}')) {
    char key[32];
    nf_status st = parse_string(c, key, sizeof key);
    if (!st && !accept(c, ':')) st = header_error(c, "expected ':' after a key");
    if (!st) st = parse_entry(c, key, h);
    if (st) return st;
    if (!accept(c, ',') && !(skip_space(c), c->p < c->end && *c->p == '}'))
      return header_error(c, "expected ',' or '}'");
  }
  skip_space(c);
  if (c->p != c->end) return header_error(c, "text after the dictionary");
  if (!h->has_descr || !h->has_order || !h->has_shape)
    return header_error(c, "missing 'descr', 'fortran_order' or 'shape'");
  return NF_OK;
}

/* Reads the magic string, the version and the header length; leaves the file at
   the header dictionary, which ends *data_at bytes into the file. */
static nf_status read_preamble(const char *path, FILE *f, size_t *header_len, uint64_t *data_at)
{
  unsigned char pre[12];
  if (fread(pre, 1, 8, f) != 8 || memcmp(pre, "\x93NUMPY", 6) != 0)
    return nf_fail(NF_EFORMAT, "%s: not a .npy file (no \\x93NUMPY magic string)", path);
  int major = pre[6], minor = pre[7];
  if (major < 1 || major > 3 || minor != 0)
    return nf_fail(NF_EFORMAT, "%s: .npy version %d.%d is not 1.0, 2.0 or 3.0", path, major, minor);
  size_t width = major == 1 ? 2 : 4;
  if (fread(pre + 8, 1, width, f) != width)
    return nf_fail(NF_EFORMAT, "%s: file ends inside the header length", path);
  *header_len = (size_t)load_le(pre + 8, width);
  *data_at = 8 + width + load_le(pre + 8, width);
  return NF_OK;
}

/* Reads and parses the header dictionary of header_len bytes. */
static nf_status read_header(const char *path, FILE *f, size_t header_len, npy_header *h)
{
  if (header_len > NPY_HEADER_MAX)
    return nf_fail(NF_EFORMAT, "%s: header of %zu bytes is longer than %d", path, header_len,
                   NPY_HEADER_MAX);
  char *text = malloc(header_len ? header_len : 1);
  if (!text) return nf_fail(NF_ENOMEM, "%s: out of memory for the header", path);
  nf_status st = NF_OK;
  if (fread(text, 1, header_len, f) != header_len)
    st = nf_fail(NF_EFORMAT, "%s: file ends inside the header", path);
  npy_cursor c = {.path = path, .p = text, .end = text + header_len};
  if (!st) st = parse_header(&c, h);
  free(text);
  return st;
}

/* Checks the dtype (little-endian float64 or float32, setting *item_size) and the
   shape ((n, d) or (n,), n, d > 0), setting *n and *d. */
static nf_status check_array(const char *path, const npy_header *h, size_t *item_size,
                             size_t *n, size_t *d)
{
  if (strcmp(h->descr, "<f8") == 0)
    *item_size = 8;
  else if (strcmp(h->descr, "<f4") == 0)
    *item_size = 4;
  else if (h->descr[0] == '>' && (!strcmp(h->descr + 1, "f8") || !strcmp(h->descr + 1, "f4")))
    return nf_fail(NF_EFORMAT, "%s: dtype '%s' is big-endian (only '<f8' and '<f4' are read)", path,
                   h->descr);
  else
    return nf_fail(NF_EFORMAT, "%s: dtype '%s' is not float64 or float32", path, h->descr);
  if (h->ndim != 1 && h->ndim != 2)
    return nf_fail(NF_EFORMAT, "%s: array has %zu dimensions, not 1 or 2", path, h->ndim);
  *n = h->shape[0];
  *d = h->ndim == 2 ? h->shape[1] : 1;
  if (*n == 0 || *d == 0)
    return nf_fail(NF_EFORMAT, "%s: array of shape %zu x %zu is empty", path, *n, *d);
  size_t count, bytes;
  if (nf_size_mul(*n, *d, &count) || nf_size_mul(count, 8 + *item_size, &bytes))
    return nf_fail(NF_EFORMAT, "%s: array of shape %zu x %zu is too large", path, *n, *d);
  return NF_OK;
}

/* Checks that the data_bytes after the header hold exactly the count values of
   item_size bytes (data_bytes NF_SIZE_UNKNOWN: a pipe, checked while reading). */
static nf_status check_data_size(const char *path, uint64_t data_bytes, size_t count,
                                 size_t item_size)
{
  if (data_bytes == NF_SIZE_UNKNOWN || data_bytes == (uint64_t)count * item_size) return NF_OK;
  if (data_bytes > (uint64_t)count * item_size)
    return nf_fail(NF_EFORMAT, "%s: bytes left after the %zu values", path, count);
  return nf_fail(NF_EFORMAT, "%s: data ends after %zu of %zu values", path,
                 (size_t)(data_bytes / item_size), count);
}

/* Value k of the raw little-endian float64 or float32 array. */
static double raw_value(const unsigned char *raw, size_t item_size, size_t k)
{
  uint64_t bits = load_le(raw + k * item_size, item_size);
  if (item_size == 8) {
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
  }
  uint32_t bits32 = (uint32_t)bits;
  float v;
  memcpy(&v, &bits32, sizeof v);
  return v;
}

/* Reads the bytes raw values that follow the header into a new buffer *raw,
   grown geometrically from at most `first` bytes as they arrive (so that a pipe
   claiming a huge shape costs only what it sends), and checks that nothing follows. */
static nf_status read_raw(const char *path, FILE *f, size_t bytes, size_t first, size_t item_size,
                          unsigned char **raw)
{
  size_t cap = first < bytes ? first : bytes, got = 0;
  unsigned char *buf = malloc(cap), *grown;
  nf_status st = buf ? NF_OK : nf_fail(NF_ENOMEM, "%s: out of memory for %zu bytes", path, cap);
  while (!st && got < bytes) {
    if (got == cap) {
      cap = cap > bytes / 2 ? bytes : 2 * cap;
      if (!(grown = realloc(buf, cap))) {
        st = nf_fail(NF_ENOMEM, "%s: out of memory for %zu bytes", path, cap);
        break;
      }
      buf = grown;
    }
    size_t k = fread(buf + got, 1, cap - got, f);
    got += k;
    if (k == 0 && ferror(f))
      st = nf_fail(NF_EIO, "%s: read error: %s", path, strerror(errno));
    else if (k == 0)
      st = nf_fail(NF_EFORMAT, "%s: data ends after %zu of %zu values", path, got / item_size,
                   bytes / item_size);
  }
  if (!st && fgetc(f) != EOF)
    st = nf_fail(NF_EFORMAT, "%s: bytes left after the %zu values", path, bytes / item_size);
  if (st) free(buf);
  else *raw = buf;
  return st;
}

/* Converts the count raw values (row-major, or column-major if fortran) into
   the row-major ds->x and checks that they are finite. */
static nf_status convert_values(const char *path, const unsigned char *raw, size_t item_size,
                                int fortran, nf_dataset *ds)
{
  size_t n = ds->n, d = ds->dim, count = n * d;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < d; j++)
      ds->x[i * d + j] = raw_value(raw, item_size, fortran ? j * n + i : i * d + j);
  size_t bad = nf_first_nonfinite(count, ds->x);
  if (bad < count)
    return nf_fail(NF_EFORMAT, "%s: row %zu, column %zu is not finite", path, bad / d + 1,
                   bad % d + 1);
  return NF_OK;
}

/* Reads the whole open file of size bytes (NF_SIZE_UNKNOWN for a pipe):
   preamble, header, then the values, once the file is known to hold them and
   the allocation limit allows them. */
static nf_status read_npy(const char *path, FILE *f, uint64_t size, nf_dataset **out)
{
  size_t header_len = 0, item_size = 0, n = 0, d = 0;
  uint64_t data_at = 0;
  npy_header h = {0};
  nf_status st = read_preamble(path, f, &header_len, &data_at);
  if (!st) st = read_header(path, f, header_len, &h);
  if (!st) st = check_array(path, &h, &item_size, &n, &d);
  size_t count = n * d, bytes = count * item_size; /* no overflow: check_array */
  uint64_t data_bytes = size == NF_SIZE_UNKNOWN ? size : size > data_at ? size - data_at : 0;
  if (!st) st = check_data_size(path, data_bytes, count, item_size);
  if (!st) st = nf_check_alloc(path, bytes + count * sizeof(double));
  unsigned char *raw = NULL;
  if (!st) st = read_raw(path, f, bytes, size == NF_SIZE_UNKNOWN ? (size_t)1 << 20 : bytes,
                         item_size, &raw);
  nf_dataset *ds = NULL;
  if (!st && !(ds = nf_dataset_new(n, d))) st = nf_fail_prefixed(nf_last_status(), path);
  if (!st) st = convert_values(path, raw, item_size, h.fortran_order, ds);
  free(raw);
  if (st) {
    nf_dataset_free(ds);
    return st;
  }
  *out = ds;
  return NF_OK;
}

nf_status nf_dataset_read_npy(const char *path, nf_dataset **out)
{
  if (!path || !out) return nf_fail(NF_EINVAL, "nf_dataset_read_npy: NULL argument");
  FILE *f = NULL;
  uint64_t size = 0;
  nf_status st = nf_open_input(path, &f, &size);
  if (st) return st;
  st = read_npy(path, f, size, out);
  fclose(f);
  return st;
}
