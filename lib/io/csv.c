/* lib/csv.c — a reader for CSV files of numbers into an nf_dataset. */
#define _POSIX_C_SOURCE 200809L /* getc_unlocked */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "io/io_internal.h"
#include "nflow/dataset.h"

/* Longest excerpt of a bad field quoted in an error message. */
#define CSV_QUOTE_MAX 32

/* The reader's state: the file, the current line and the rows read so far. */
typedef struct csv_reader {
  const char *path;
  FILE *file;
  size_t max_line;   /* longest line accepted, in bytes, its end excluded */
  char *line;        /* current line, NUL-terminated, without its end of line */
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

/* Grows *buf, of *cap items of unit bytes, to hold need items (need <= max):
   doubling (at least 64 items), at most max items and what the allocation
   limit leaves beside the other bytes the reader holds. NF_ENOMEM naming path. */
static nf_status grow(const char *path, void **buf, size_t *cap, size_t need, size_t max,
                      size_t unit, size_t other)
{
  size_t room = nf_alloc_room(), fit = room > other ? (room - other) / unit : 0;
  size_t c = *cap > SIZE_MAX / 2 ? SIZE_MAX : 2 * *cap, bytes;
  if (c < 64) c = 64;
  if (c > max) c = max;
  if (c > fit) c = fit;
  if (c < need) c = need;
  if (nf_size_mul(c, unit, &bytes) || bytes > SIZE_MAX - other)
    return nf_fail(NF_ENOMEM, "%s: %zu items of %zu bytes overflow the address space", path, c,
                   unit);
  nf_status st = nf_check_alloc(path, bytes + other);
  if (st) return st;
  void *b = realloc(*buf, bytes);
  if (!b) return nf_fail(NF_ENOMEM, "%s: out of memory for %zu bytes", path, bytes);
  *buf = b;
  *cap = c;
  return NF_OK;
}

/* Appends byte c to the current line; NF_EFORMAT past the line limit. */
static nf_status push_byte(csv_reader *r, char c)
{
  if (r->line_len == r->max_line)
    return nf_fail(NF_EFORMAT, "%s:%zu: line longer than %zu bytes (the limit, "
                   "nf_csv_opts.max_line_bytes)", r->path, r->line_no + 1, r->max_line);
  if (r->line_len + 2 > r->line_cap) { /* the byte and the final NUL */
    void *b = r->line;
    nf_status st = grow(r->path, &b, &r->line_cap, r->line_len + 2, r->max_line + 1, 1,
                        r->x_cap * sizeof(double));
    r->line = b;
    if (st) return st;
  }
  r->line[r->line_len++] = c;
  return NF_OK;
}

/* NF_EFORMAT "path: looks like UTF-16; save as UTF-8". */
static nf_status utf16_error(const csv_reader *r)
{
  return nf_fail(NF_EFORMAT, "%s: looks like UTF-16; save as UTF-8", r->path);
}

/* Checks the start of the first line for a byte order mark: UTF-16 ones are
   refused, a UTF-8 one is dropped. */
static nf_status check_bom(csv_reader *r)
{
  const unsigned char *b = (const unsigned char *)r->line;
  if (r->line_len >= 2 && ((b[0] == 0xFF && b[1] == 0xFE) || (b[0] == 0xFE && b[1] == 0xFF)))
    return utf16_error(r);
  if (r->line_len >= 3 && memcmp(b, "\xEF\xBB\xBF", 3) == 0) {
    memmove(r->line, r->line + 3, r->line_len - 2); /* with the NUL */
    r->line_len -= 3;
  }
  return NF_OK;
}

/* Reads the next line into r->line without its "\n" or "\r\n"; *got = 0 at the
   end of the file. NF_EFORMAT on a NUL byte (UTF-16), a CR not followed by LF
   (classic Mac line ends) or a line over the limit; NF_EIO on a read error. */
static nf_status next_line(csv_reader *r, int *got)
{
  int c = EOF, any = 0;
  nf_status st = NF_OK;
  r->line_len = 0;
  while (!st && (c = getc_unlocked(r->file)) != EOF && c != '\n') {
    any = 1;
    if (c == '\r' && (c = getc_unlocked(r->file)) != '\n' && c != EOF)
      return nf_fail(NF_EFORMAT, "%s: lines end in CR only (classic Mac); convert to LF or "
                     "CRLF", r->path);
    if (c == '\n' || c == EOF) break;
    st = c == '\0' ? utf16_error(r) : push_byte(r, (char)c);
  }
  if (st) return st;
  if (c == EOF && ferror(r->file))
    return nf_fail(NF_EIO, "%s:%zu: read error: %s", r->path, r->line_no + 1, strerror(errno));
  *got = any || c == '\n';
  if (!*got) return NF_OK;
  r->line_no++;
  r->line[r->line_len] = '\0'; /* room kept by push_byte and read_all */
  return r->line_no == 1 ? check_bom(r) : NF_OK;
}

static int is_blank_char(char c) { return c == ' ' || c == '\t'; }

/* True if s[0..len) holds only spaces and tabs. */
static int is_blank(const char *s, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (!is_blank_char(s[i])) return 0;
  return 1;
}

/* True if the current line is a comment: '#' after optional blanks. */
static int is_comment(const csv_reader *r)
{
  size_t i = 0;
  while (i < r->line_len && is_blank_char(r->line[i])) i++;
  return i < r->line_len && r->line[i] == '#';
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
  size_t need;
  if (nf_size_mul(r->rows + 1, r->width, &need))
    return nf_fail(NF_ENOMEM, "%s: too many values", r->path);
  if (need <= r->x_cap) return NF_OK;
  void *x = r->x;
  nf_status st = grow(r->path, &x, &r->x_cap, need, SIZE_MAX, sizeof(double), r->line_cap);
  r->x = x;
  return st;
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

/* Reads every line of the open file: an optional header, then the data rows;
   blank and comment lines skipped. */
static nf_status read_all(csv_reader *r)
{
  int got = 0;
  void *line = NULL;
  nf_status st = grow(r->path, &line, &r->line_cap, 1, r->max_line + 1, 1, 0);
  r->line = line;
  while (st == NF_OK && (st = next_line(r, &got)) == NF_OK && got) {
    if (is_blank(r->line, r->line_len) || is_comment(r)) continue;
    if (r->rows == 0 && r->header_width == 0 && for_each_field(r, field_is_text, NULL)) {
      r->header_width = count_fields(r);
      continue;
    }
    if ((st = read_row(r)) != NF_OK) return st;
  }
  if (st) return st;
  if (r->rows == 0)
    return nf_fail(NF_EFORMAT, "%s: no data rows (%s)", r->path,
                   r->header_width ? "only a header" : "empty file");
  return NF_OK;
}

nf_status nf_dataset_read_csv_opts(const char *path, const nf_csv_opts *opts, nf_dataset **out)
{
  if (!path || !out) return nf_fail(NF_EINVAL, "nf_dataset_read_csv: NULL argument");
  size_t max_line = opts && opts->max_line_bytes ? opts->max_line_bytes : NF_CSV_MAX_LINE_DEFAULT;
  csv_reader r = {.path = path, .max_line = max_line < SIZE_MAX / 2 ? max_line : SIZE_MAX / 2};
  uint64_t size;
  nf_status st = nf_open_input(path, &r.file, &size);
  if (st) return st;
  st = read_all(&r);
  fclose(r.file);
  free(r.line);
  nf_dataset *ds = st == NF_OK ? malloc(sizeof *ds) : NULL;
  if (st == NF_OK && !ds) st = nf_fail(NF_ENOMEM, "%s: out of memory", path);
  if (st != NF_OK) {
    free(r.x);
    return st;
  }
  double *fit = realloc(r.x, r.rows * r.width * sizeof *fit);
  *ds = (nf_dataset){.n = r.rows, .dim = r.width, .x = fit ? fit : r.x};
  *out = ds;
  return NF_OK;
}

nf_status nf_dataset_read_csv(const char *path, nf_dataset **out)
{
  return nf_dataset_read_csv_opts(path, NULL, out);
}
