/* lib/io/safetensors.c — writer and hostile-input-proof reader of the safetensors
   container (huggingface.co/docs/safetensors) for float64 tensors, with nflow's
   "crc32" metadata checksum. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "internal.h"
#include "io/io_internal.h"
#include "io/safetensors.h"

/* A tensor of a file read: its name, length and place in the values (in doubles);
   begin/end (bytes) and index (header order) only while checking the layout. */
typedef struct st_entry {
  char *name;
  size_t n;
  uint64_t begin, end;
  size_t index;
} st_entry;

struct nf_safetensors {
  nf_meta *meta;
  size_t count;
  st_entry *entries;
  double *values;
};

/* ---------------------------------------------------------------- writer */

/* CRC-32 over metadata keys and values, each with its NUL byte, in order, skipping "crc32". */
static uint32_t crc_of_meta(const nf_meta *m)
{
  uint32_t crc = 0;
  for (size_t i = 0; i < nf_meta_count(m); i++) {
    const char *k = nf_meta_key(m, i), *v = nf_meta_value(m, i);
    if (strcmp(k, "crc32") == 0) continue;
    crc = nf_crc32(crc, k, strlen(k) + 1);
    crc = nf_crc32(crc, v, strlen(v) + 1);
  }
  return crc;
}

/* NF_OK if the arguments of nf_safetensors_write describe a file it can write,
   else NF_EINVAL naming path and the problem. */
static nf_status check_write_args(const char *path, const nf_meta *metadata, size_t n_tensors,
                                  const nf_tensor *tensors)
{
  if (!path || (n_tensors && !tensors))
    return nf_fail(NF_EINVAL, "nf_safetensors_write: NULL argument");
  if (nf_meta_get(metadata, "crc32"))
    return nf_fail(NF_EINVAL, "%s: metadata key 'crc32' is reserved for the checksum", path);
  uint64_t bytes = 0;
  for (size_t i = 0; i < n_tensors; i++) {
    const nf_tensor *t = &tensors[i];
    if (!t->name || (t->n && !t->data))
      return nf_fail(NF_EINVAL, "%s: tensor %zu has a NULL name or data", path, i);
    if (strncmp(t->name, "__", 2) == 0)
      return nf_fail(NF_EINVAL, "%s: tensor name '%s' starts with '__' (reserved)", path, t->name);
    for (size_t j = 0; j < i; j++)
      if (strcmp(tensors[j].name, t->name) == 0)
        return nf_fail(NF_EINVAL, "%s: tensor name '%s' appears twice", path, t->name);
    if (t->n > (UINT64_MAX - bytes) / 8) return nf_fail(NF_EINVAL, "%s: tensors too large", path);
    bytes += 8 * (uint64_t)t->n;
  }
  return NF_OK;
}

/* Adds name -> {"dtype":"F64","shape":[n],"data_offsets":[begin,end]} to root; 0 on success. */
static int add_tensor_entry(json_t *root, const nf_tensor *t, uint64_t begin)
{
  json_t *e = json_pack("{s:s, s:[I], s:[I,I]}", "dtype", "F64", "shape", (json_int_t)t->n,
                        "data_offsets", (json_int_t)begin, (json_int_t)(begin + 8 * t->n));
  return e ? json_object_set_new(root, t->name, e) : -1;
}

/* The "__metadata__" object: metadata's entries then "crc32"; NULL on failure. */
static json_t *metadata_object(const nf_meta *metadata, uint32_t crc)
{
  json_t *m = json_object();
  char hex[9];
  snprintf(hex, sizeof hex, "%08" PRIx32, crc);
  for (size_t i = 0; m && i <= nf_meta_count(metadata); i++) {
    const char *k = i < nf_meta_count(metadata) ? nf_meta_key(metadata, i) : "crc32";
    const char *v = i < nf_meta_count(metadata) ? nf_meta_value(metadata, i) : hex;
    if (json_object_set_new(m, k, json_string(v)) != 0) {
      json_decref(m);
      m = NULL;
    }
  }
  return m;
}

/* The compact JSON header text (malloc'd), or NULL with NF_EINVAL: jansson
   refuses only text that is not UTF-8 (or fails for lack of memory). */
static char *header_text(const char *path, const nf_meta *metadata, size_t n_tensors,
                         const nf_tensor *tensors, uint32_t crc)
{
  json_t *root = json_object();
  json_t *meta = metadata_object(metadata, crc);
  int bad = !root || !meta || json_object_set_new(root, "__metadata__", meta) != 0;
  uint64_t begin = 0;
  for (size_t i = 0; !bad && i < n_tensors; begin += 8 * tensors[i].n, i++)
    bad = add_tensor_entry(root, &tensors[i], begin) != 0;
  char *text = bad ? NULL : json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!text)
    nf_fail(NF_EINVAL, "%s: a metadata entry or tensor name is not valid UTF-8 (or out of memory)",
            path);
  return text;
}

/* What the atomic writer's callback writes. */
typedef struct st_write_job {
  const char *header; /* padded header */
  size_t header_len;
  size_t n_tensors;
  const nf_tensor *tensors;
} st_write_job;

/* Writes the length field, the padded header and the data section to f. */
static nf_status write_file(FILE *f, void *user)
{
  const st_write_job *job = user;
  unsigned char len[8];
  for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)job->header_len >> (8 * i));
  fwrite(len, 1, 8, f);
  fwrite(job->header, 1, job->header_len, f);
  for (size_t i = 0; i < job->n_tensors; i++)
    nf_write_f64le(f, job->tensors[i].n, job->tensors[i].data, NULL);
  return NF_OK;
}

nf_status nf_safetensors_write(const char *path, const nf_meta *metadata, size_t n_tensors,
                               const nf_tensor *tensors)
{
  nf_status st = check_write_args(path, metadata, n_tensors, tensors);
  if (st != NF_OK) return st;
  uint32_t crc = crc_of_meta(metadata);
  for (size_t i = 0; i < n_tensors; i++) crc = nf_crc32_f64le(crc, tensors[i].n, tensors[i].data);
  char *text = header_text(path, metadata, n_tensors, tensors, crc);
  if (!text) return NF_EINVAL;
  size_t len = strlen(text), padded = len + (8 - (8 + len) % 8) % 8;
  char *header = padded <= NF_SAFETENSORS_HEADER_MAX ? realloc(text, padded) : NULL;
  if (!header) {
    free(text);
    return padded > NF_SAFETENSORS_HEADER_MAX
               ? nf_fail(NF_EINVAL, "%s: header of %zu bytes exceeds the limit", path, padded)
               : nf_fail(NF_ENOMEM, "%s: out of memory for the header", path);
  }
  memset(header + len, ' ', padded - len);
  st_write_job job = {header, padded, n_tensors, tensors};
  st = nf_atomic_write(path, write_file, &job);
  free(header);
  return st;
}

/* ---------------------------------------------------------------- reader */

void nf_safetensors_free(nf_safetensors *st)
{
  if (!st) return;
  for (size_t i = 0; i < st->count; i++) free(st->entries[i].name);
  free(st->entries);
  free(st->values);
  nf_meta_free(st->meta);
  free(st);
}

const nf_meta *nf_safetensors_meta(const nf_safetensors *st) { return st ? st->meta : NULL; }

size_t nf_safetensors_count(const nf_safetensors *st) { return st ? st->count : 0; }

const char *nf_safetensors_name(const nf_safetensors *st, size_t i)
{
  return st && i < st->count ? st->entries[i].name : NULL;
}

const double *nf_safetensors_find(const nf_safetensors *st, const char *name, size_t *n)
{
  for (size_t i = 0; st && name && i < st->count; i++)
    if (strcmp(st->entries[i].name, name) == 0) {
      if (n) *n = st->entries[i].n;
      return st->values + st->entries[i].begin / 8;
    }
  return NULL;
}

/* NF_EFORMAT "path: tensor 'name': what". */
static nf_status tensor_fail(const char *path, const char *name, const char *what)
{
  return nf_fail(NF_EFORMAT, "%s: tensor '%s': %s", path, name, what);
}

/* 1 if j is a JSON integer >= 0, its value in *v. */
static int as_u64(const json_t *j, uint64_t *v)
{
  if (!json_is_integer(j) || json_integer_value(j) < 0) return 0;
  *v = (uint64_t)json_integer_value(j);
  return 1;
}

/* *n = product of the shape list j (an empty shape is a scalar: 1). */
static nf_status shape_count(const char *path, const char *name, const json_t *j, size_t *n)
{
  if (!json_is_array(j))
    return tensor_fail(path, name, "shape is not a list of non-negative integers");
  size_t count = 1;
  for (size_t i = 0; i < json_array_size(j); i++) {
    uint64_t d;
    if (!as_u64(json_array_get(j, i), &d))
      return tensor_fail(path, name, "shape is not a list of non-negative integers");
    if (d != 0 && count > SIZE_MAX / 8 / d) return tensor_fail(path, name, "shape overflows");
    count *= (size_t)d;
  }
  *n = count;
  return NF_OK;
}

/* Checks one tensor's header entry j against a data section of data_len bytes
   and fills e (not its name). */
static nf_status parse_entry(const char *path, const char *name, const json_t *j, uint64_t data_len,
                             st_entry *e)
{
  if (!json_is_object(j)) return tensor_fail(path, name, "entry is not an object");
  const char *dtype = json_string_value(json_object_get(j, "dtype"));
  if (!dtype) return tensor_fail(path, name, "dtype is missing or not a string");
  if (strcmp(dtype, "F64") != 0)
    return nf_fail(NF_EFORMAT, "%s: tensor '%s': dtype '%s' is not supported (only F64)", path,
                   name, dtype);
  nf_status st = shape_count(path, name, json_object_get(j, "shape"), &e->n);
  if (st != NF_OK) return st;
  const json_t *off = json_object_get(j, "data_offsets");
  if (!json_is_array(off) || json_array_size(off) != 2 ||
      !as_u64(json_array_get(off, 0), &e->begin) || !as_u64(json_array_get(off, 1), &e->end))
    return tensor_fail(path, name, "data_offsets is not a list of two non-negative integers");
  if (e->begin > e->end)
    return nf_fail(NF_EFORMAT, "%s: tensor '%s': data_offsets begin %" PRIu64 " > end %" PRIu64,
                   path, name, e->begin, e->end);
  if (e->end > data_len)
    return nf_fail(NF_EFORMAT,
                   "%s: tensor '%s': data_offsets end %" PRIu64
                   " is beyond the data section of %" PRIu64 " bytes",
                   path, name, e->end, data_len);
  if ((e->end - e->begin) % 8 || (e->end - e->begin) / 8 != e->n)
    return nf_fail(NF_EFORMAT,
                   "%s: tensor '%s': shape holds %zu values but data_offsets span %" PRIu64
                   " bytes",
                   path, name, e->n, e->end - e->begin);
  return NF_OK;
}

/* Reads "__metadata__" (an object of strings) into a new nf_meta in *out. */
static nf_status parse_metadata(const char *path, const json_t *j, nf_meta **out)
{
  if (!json_is_object(j)) return nf_fail(NF_EFORMAT, "%s: __metadata__ is not an object", path);
  nf_meta *m = nf_meta_new();
  if (!m) return nf_fail(NF_ENOMEM, "%s: out of memory for the metadata", path);
  const char *key;
  const json_t *v;
  nf_status st = NF_OK;
  json_object_foreach((json_t *)j, key, v) {
    st = json_is_string(v)
             ? nf_meta_set(m, key, json_string_value(v))
             : nf_fail(NF_EFORMAT, "%s: __metadata__ '%s' is not a string", path, key);
    if (st != NF_OK) break;
  }
  if (st != NF_OK) {
    nf_meta_free(m);
    return st;
  }
  *out = m;
  return NF_OK;
}

/* Orders entries by data offset (then by header position, for empty tensors). */
static int by_offset(const void *a, const void *b)
{
  const st_entry *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return x->index < y->index ? -1 : x->index > y->index;
}

/* Sorts the entries by offset and checks they tile the data section exactly. */
static nf_status check_layout(const char *path, st_entry *e, size_t count, uint64_t data_len)
{
  qsort(e, count, sizeof *e, by_offset);
  uint64_t at = 0;
  for (size_t i = 0; i < count; i++) {
    if (e[i].begin < at)
      return nf_fail(NF_EFORMAT, "%s: tensors '%s' and '%s' overlap", path, e[i - 1].name,
                     e[i].name);
    if (e[i].begin > at)
      return nf_fail(NF_EFORMAT, "%s: a gap of %" PRIu64 " bytes before tensor '%s'", path,
                     e[i].begin - at, e[i].name);
    at = e[i].end;
  }
  if (at != data_len)
    return nf_fail(NF_EFORMAT,
                   "%s: data section of %" PRIu64 " bytes is longer than the tensors' %" PRIu64,
                   path, data_len, at);
  return NF_OK;
}

/* Copies name into a new entry slot e (index i), checking it against the data length. */
static nf_status add_entry(const char *path, const char *name, const json_t *j, uint64_t data_len,
                           size_t i, st_entry *e)
{
  *e = (st_entry){.index = i};
  nf_status st = parse_entry(path, name, j, data_len, e);
  if (st != NF_OK) return st;
  size_t len = strlen(name) + 1;
  e->name = malloc(len);
  if (!e->name) return nf_fail(NF_ENOMEM, "%s: out of memory", path);
  memcpy(e->name, name, len);
  return NF_OK;
}

/* Fills st's metadata and entries (sorted, checked) from the header object root. */
static nf_status parse_header(const char *path, const json_t *root, uint64_t data_len,
                              nf_safetensors *st)
{
  if (!json_is_object(root)) return nf_fail(NF_EFORMAT, "%s: header is not a JSON object", path);
  st->entries = calloc(json_object_size(root) + 1, sizeof *st->entries);
  if (!st->entries) return nf_fail(NF_ENOMEM, "%s: out of memory", path);
  const char *key;
  const json_t *v;
  nf_status s = NF_OK;
  json_object_foreach((json_t *)root, key, v) {
    if (strcmp(key, "__metadata__") == 0)
      s = parse_metadata(path, v, &st->meta);
    else if ((s = add_entry(path, key, v, data_len, st->count, &st->entries[st->count])) == NF_OK)
      st->count++;
    if (s != NF_OK) return s;
  }
  if (!st->meta || !nf_meta_get(st->meta, "crc32"))
    return nf_fail(NF_EFORMAT, "%s: no crc32 checksum in __metadata__", path);
  return check_layout(path, st->entries, st->count, data_len);
}

/* Checks the stored "crc32" against the metadata and the data section bytes. */
static nf_status check_crc(const char *path, const nf_meta *meta, const unsigned char *data,
                           size_t data_len)
{
  const char *stored = nf_meta_get(meta, "crc32");
  if (strlen(stored) != 8 || strspn(stored, "0123456789abcdef") != 8)
    return nf_fail(NF_EFORMAT, "%s: crc32 '%s' is not 8 lowercase hex digits", path, stored);
  uint32_t crc = nf_crc32(crc_of_meta(meta), data, data_len);
  char hex[9];
  snprintf(hex, sizeof hex, "%08" PRIx32, crc);
  if (strcmp(hex, stored) != 0)
    return nf_fail(NF_EFORMAT,
                   "%s: checksum mismatch: the file is corrupted (crc32 %s stored, %s "
                   "computed)",
                   path, stored, hex);
  return NF_OK;
}

/* Reads n bytes into a new buffer (*buf, at least 1 byte); NF_EIO/NF_ENOMEM naming path. */
static nf_status read_bytes(const char *path, FILE *f, size_t n, unsigned char **buf)
{
  unsigned char *b = malloc(n ? n : 1);
  if (!b) return nf_fail(NF_ENOMEM, "%s: out of memory for %zu bytes", path, n);
  if (fread(b, 1, n, f) != n) {
    free(b);
    return nf_fail(NF_EIO, "%s: read failed (the file changed while being read?)", path);
  }
  *buf = b;
  return NF_OK;
}

/* Opens path and finds its size; NF_EIO "path: what" unless it is a readable regular file. */
static nf_status open_regular(const char *path, FILE **f, uint64_t *size)
{
  nf_status s = nf_open_input(path, f, size);
  if (s == NF_OK && *size == NF_SIZE_UNKNOWN) {
    fclose(*f);
    s = nf_fail(NF_EIO, "%s: is not a regular file", path);
  }
  return s;
}

/* Reads the length field and checks it against the file size; the header length in *n. */
static nf_status read_header_length(const char *path, FILE *f, uint64_t size, size_t *n)
{
  if (size < 8)
    return nf_fail(NF_EFORMAT,
                   "%s: file is %" PRIu64 " bytes, shorter than the 8-byte header length", path,
                   size);
  unsigned char b[8];
  if (fread(b, 1, 8, f) != 8) return nf_fail(NF_EIO, "%s: read failed", path);
  uint64_t len = 0;
  for (int i = 8; i-- > 0;) len = len << 8 | b[i];
  if (len == 0) return nf_fail(NF_EFORMAT, "%s: header length is 0", path);
  if (len > size - 8)
    return nf_fail(NF_EFORMAT, "%s: header length %" PRIu64 " exceeds the file size %" PRIu64, path,
                   len, size);
  if (len > NF_SAFETENSORS_HEADER_MAX)
    return nf_fail(NF_EFORMAT, "%s: header length %" PRIu64 " exceeds the limit of %zu bytes", path,
                   len, NF_SAFETENSORS_HEADER_MAX);
  *n = (size_t)len;
  /* the header, then the data section */
  return nf_check_alloc(path, size - 8 > SIZE_MAX ? SIZE_MAX : (size_t)(size - 8));
}

/* Reads and parses the JSON header of n bytes. */
static nf_status read_header(const char *path, FILE *f, size_t n, json_t **root)
{
  unsigned char *text = NULL;
  nf_status s = read_bytes(path, f, n, &text);
  if (s != NF_OK) return s;
  json_error_t err;
  json_t *j = json_loadb((const char *)text, n, JSON_REJECT_DUPLICATES, &err);
  free(text);
  if (!j)
    return nf_fail(NF_EFORMAT, "%s: header is not valid JSON: line %d, column %d: %s", path,
                   err.line, err.column, err.text);
  *root = j;
  return NF_OK;
}

/* Converts the data section, read into v as data_len little-endian bytes, to host
   doubles in place (each 8 bytes are read before they are overwritten). */
static void decode_in_place(double *v, size_t data_len)
{
  for (size_t i = 0; i < data_len / 8; i++) v[i] = nf_get_f64le((const unsigned char *)(v + i));
}

/* Reads the opened file f of size bytes into st: header, layout and checksum
   checked before the data section becomes st's values. */
static nf_status read_contents(const char *path, FILE *f, uint64_t size, nf_safetensors *st)
{
  size_t n = 0;
  json_t *root = NULL;
  nf_status s = read_header_length(path, f, size, &n);
  if (s == NF_OK) s = read_header(path, f, n, &root);
  uint64_t data_len = s == NF_OK ? size - 8 - n : 0;
  if (s == NF_OK) s = parse_header(path, root, data_len, st);
  json_decref(root);
  if (s == NF_OK && data_len > SIZE_MAX) s = nf_fail(NF_ENOMEM, "%s: file too large", path);
  unsigned char *data = NULL; /* malloc'd, so aligned for doubles; data_len is a multiple of 8 */
  if (s == NF_OK) s = read_bytes(path, f, (size_t)data_len, &data);
  if (s == NF_OK) s = check_crc(path, st->meta, data, (size_t)data_len);
  if (s != NF_OK) {
    free(data);
    return s;
  }
  st->values = (double *)(void *)data;
  decode_in_place(st->values, (size_t)data_len);
  return NF_OK;
}

nf_status nf_safetensors_read(const char *path, nf_safetensors **out)
{
  if (!path || !out) return nf_fail(NF_EINVAL, "nf_safetensors_read: NULL argument");
  FILE *f = NULL;
  uint64_t size = 0;
  nf_status s = open_regular(path, &f, &size);
  if (s != NF_OK) return s;
  nf_safetensors *st = calloc(1, sizeof *st);
  s = st ? read_contents(path, f, size, st) : nf_fail(NF_ENOMEM, "%s: out of memory", path);
  fclose(f);
  if (s != NF_OK) {
    nf_safetensors_free(st);
    return s;
  }
  *out = st;
  return NF_OK;
}
