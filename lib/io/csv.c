/* lib/csv.c — a reader for CSV files of numbers into an nf_dataset. */
#define _POSIX_C_SOURCE 200809L /* getline */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/dataset.h"

/* Longest excerpt of a bad field quoted in an error message. */
#define CSV_QUOTE_MAX 32

/* The reader's state: the file, the current line and the rows read so far. */
typedef struct csv_reader {
  const char *path;
  FILE *file;
  char *line;        /* current line, without its end of line; getline's buffer */
  size_t line_cap;
  size_t line_len;
  size_t line_no;    /* 1-based physical line number */
  size_t header_width; /* fields of the header line, 0 if none */
  size_t width;      /* fields per data row, 0 until the first row */
  size_t rows;
  double *x;         /* rows x width values */
  size_t x_cap;      /* capacity of x in values */
} csv_reader;

/* The outcome of parsing one field. */
typedef enum field_kind { FIELD_NUMBER, FIELD_EMPTY, FIELD_TEXT, FIELD_NONFINITE } field_kind;

/* Reads the next line into r->line without its "\n" or "\r\n"; 0 at end of file,
   -1 on a read error. */
static int next_line(csv_reader *r)
{
  errno = 0;
  ssize_t len = getline(&r->line, &r->line_cap, r->file);
  if (len < 0) return ferror(r->file) || errno == ENOMEM ? -1 : 0;
  r->line_no++;
  if (len > 0 && r->line[len - 1] == '\n') len--;
  if (len > 0 && r->line[len - 1] == '\r') len--;
  r->line[len] = '\0';
  if (r->line_no == 1 && len >= 3 && memcmp(r->line, "\xEF\xBB\xBF", 3) == 0) {
    memmove(r->line, r->line + 3, (size_t)len - 2); /* UTF-8 byte order mark */
    len -= 3;
  }
  r->line_len = (size_t)len;
  return 1;
}

static int is_blank_char(char c) { return c == ' ' || c == '\t'; }

/* True if s[0..len) holds only spaces and tabs. */
static int is_blank(const char *s, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (!is_blank_char(s[i])) return 0;
  return 1;
}

/* Parses s[0..len) (surrounding blanks allowed) as one number with strtod. */
static field_kind parse_field(char *s, size_t len, double *value)
{
  if (is_blank(s, len)) return FIELD_EMPTY;
  char saved = s[len], *end;
  s[len] = '\0';
  *value = strtod(s, &end);
  s[len] = saved;
  if (end == s) return FIELD_TEXT;
  while (end < s + len && is_blank_char(*end)) end++;
  if (end != s + len) return FIELD_TEXT;
  return isfinite(*value) ? FIELD_NUMBER : FIELD_NONFINITE;
}

/* Number of comma-separated fields of the current line. */
static size_t count_fields(const csv_reader *r)
{
  size_t count = 1;
  for (size_t i = 0; i < r->line_len; i++) count += r->line[i] == ',';
  return count;
}

/* Calls visit(r, k, field, len, arg) for each field k = 0, 1, ... of the current
   line; stops at the first nonzero return and returns it. */
static int for_each_field(csv_reader *r, int (*visit)(csv_reader *, size_t, char *, size_t, void *),
                          void *arg)
{
  char *p = r->line, *end = r->line + r->line_len;
  for (size_t k = 0;; k++) {
    char *comma = memchr(p, ',', (size_t)(end - p));
    char *stop = comma ? comma : end;
    int rc = visit(r, k, p, (size_t)(stop - p), arg);
    if (rc || !comma) return rc;
    p = comma + 1;
  }
}

/* Field visitor: nonzero if the field is text (not empty, not a number). */
static int field_is_text(csv_reader *r, size_t k, char *field, size_t len, void *arg)
{
  (void)r, (void)k, (void)arg;
  double v;
  return parse_field(field, len, &v) == FIELD_TEXT;
}

/* Records "path:line:column: what" for the field k (0-based) and returns NF_EFORMAT. */
static nf_status format_error(const csv_reader *r, size_t k, const char *what, const char *field,
                              size_t len)
{
  int quote = (int)(len < CSV_QUOTE_MAX ? len : CSV_QUOTE_MAX);
  if (!field)
    return nf_fail(NF_EFORMAT, "%s:%zu:%zu: %s", r->path, r->line_no, k + 1, what);
  return nf_fail(NF_EFORMAT, "%s:%zu:%zu: %s '%.*s%s'", r->path, r->line_no, k + 1, what, quote,
                 field, (size_t)quote < len ? "..." : "");
}

/* Field visitor: parses field k into the current row, or records the error. */
static int store_field(csv_reader *r, size_t k, char *field, size_t len, void *arg)
{
  double *row = arg;
  field_kind kind = parse_field(field, len, &row[k]);
  switch (kind) {
  case FIELD_NUMBER: return 0;
  case FIELD_EMPTY: return format_error(r, k, "empty field", NULL, 0);
  case FIELD_TEXT: return format_error(r, k, "not a number:", field, len);
  case FIELD_NONFINITE: return format_error(r, k, "non-finite value:", field, len);
  }
  return NF_EFORMAT;
}

/* Makes room for one more row of r->width values in r->x. */
static nf_status reserve_row(csv_reader *r)
{
  size_t need = (r->rows + 1) * r->width;
  if (need <= r->x_cap) return NF_OK;
  if (r->rows + 1 > SIZE_MAX / sizeof(double) / 2 / r->width)
    return nf_fail(NF_ENOMEM, "nf_dataset_read_csv: %s: too many values", r->path);
  size_t cap = r->x_cap ? 2 * r->x_cap : 64 * r->width;
  if (cap < need) cap = need;
  double *x = realloc(r->x, cap * sizeof *x);
  if (!x) return nf_fail(NF_ENOMEM, "nf_dataset_read_csv: %s: out of memory", r->path);
  r->x = x;
  r->x_cap = cap;
  return NF_OK;
}

/* Checks the width of the current data line against the first row (or the header). */
static nf_status check_width(csv_reader *r)
{
  size_t fields = count_fields(r), expected = r->width ? r->width : r->header_width;
  if (expected == 0 || fields == expected) {
    r->width = fields;
    return NF_OK;
  }
  char what[96];
  snprintf(what, sizeof what, "expected %zu fields%s, found %zu", expected,
           r->width ? "" : " (as in the header)", fields);
  return format_error(r, fields < expected ? fields : expected, what, NULL, 0);
}

/* Appends the current line as a data row. */
static nf_status read_row(csv_reader *r)
{
  nf_status st = check_width(r);
  if (st == NF_OK) st = reserve_row(r);
  if (st == NF_OK) st = (nf_status)for_each_field(r, store_field, r->x + r->rows * r->width);
  if (st == NF_OK) r->rows++;
  return st;
}

/* Reads every line of the open file: an optional header, then the data rows. */
static nf_status read_all(csv_reader *r)
{
  int got;
  while ((got = next_line(r)) > 0) {
    if (is_blank(r->line, r->line_len)) continue;
    if (r->rows == 0 && r->header_width == 0 && for_each_field(r, field_is_text, NULL)) {
      r->header_width = count_fields(r);
      continue;
    }
    nf_status st = read_row(r);
    if (st != NF_OK) return st;
  }
  if (got < 0)
    return nf_fail(NF_EIO, "%s:%zu: read error: %s", r->path, r->line_no + 1, strerror(errno));
  if (r->rows == 0)
    return nf_fail(NF_EFORMAT, "%s: no data rows (%s)", r->path,
                   r->header_width ? "only a header" : "empty file");
  return NF_OK;
}

nf_status nf_dataset_read_csv(const char *path, nf_dataset **out)
{
  if (!path || !out) return nf_fail(NF_EINVAL, "nf_dataset_read_csv: NULL argument");
  csv_reader r = {.path = path, .file = fopen(path, "r")};
  if (!r.file)
    return nf_fail(NF_EIO, "nf_dataset_read_csv: cannot open '%s': %s", path, strerror(errno));
  nf_status st = read_all(&r);
  fclose(r.file);
  free(r.line);
  nf_dataset *ds = st == NF_OK ? malloc(sizeof *ds) : NULL;
  if (st == NF_OK && !ds) st = nf_fail(NF_ENOMEM, "nf_dataset_read_csv: out of memory");
  if (st != NF_OK) {
    free(r.x);
    return st;
  }
  double *fit = realloc(r.x, r.rows * r.width * sizeof *fit);
  *ds = (nf_dataset){.n = r.rows, .dim = r.width, .x = fit ? fit : r.x};
  *out = ds;
  return NF_OK;
}
