/* tests/test_model.c — model files: every saveable family and the diag_normal
   base round-trip bit for bit (log p, samples, theta, metadata); the loader
   refuses damaged, foreign and inconsistent files with the documented status,
   the path in its message and no flow; a third-party family loads once
   registered. Damaged files are written through the internal safetensors API
   (static link), which recomputes the checksum. */
#define _GNU_SOURCE /* mkdtemp, truncate */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "io/safetensors.h"
#include "nflow/config.h"
#include "nflow/layer_impl.h"
#include "nflow/model.h"

enum { D = 3, ROWS = 50 };

/* The temporary folder of this run (made in main, removed at the end). */
static char tmp_dir[] = "/tmp/nf_test_model_XXXXXX";

/* tmp_dir/name in one of a few rotating static buffers. */
static const char *tpath(const char *name)
{
  static char buf[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", tmp_dir, name);
  return buf[k];
}

static void remove_tmp_dir(void)
{
  DIR *d = opendir(tmp_dir);
  if (!d) return;
  for (struct dirent *e; (e = readdir(d));)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) remove(tpath(e->d_name));
  closedir(d);
  rmdir(tmp_dir);
}

/* The provenance every test saves. */
static nf_meta *test_meta(void)
{
  nf_meta *m = nf_meta_new();
  ck_assert_int_eq(nf_meta_set(m, "data", "moons.csv"), NF_OK);
  ck_assert_int_eq(nf_meta_set(m, "iterations", "2000"), NF_OK);
  ck_assert_int_eq(nf_meta_set(m, "test_nll", "1.2345"), NF_OK);
  return m;
}

/* ---------------------------------------------------------------- families */

static nf_layer *make_affine(nf_rng *rng) { (void)rng; return nf_affine_new(D); }
static nf_layer *make_permute(nf_rng *rng) { return nf_permute_random_new(D, rng); }
static nf_layer *make_lu_exp(nf_rng *rng)
{
  const size_t perm[D] = {1, 2, 0};
  return nf_linear_lu_new(D, perm, NF_DIAG_EXP, rng);
}
static nf_layer *make_lu_softplus(nf_rng *rng) { return nf_linear_lu_new(D, NULL, NF_DIAG_SOFTPLUS, rng); }
static nf_layer *make_planar(nf_rng *rng)
{
  nf_layer *layer = nf_planar_new(D, 1e-13, rng);
  nf_planar_set_max_iter(layer, 77);
  return layer;
}
static nf_layer *make_radial(nf_rng *rng) { return nf_radial_new(D, 1e-13, rng); }
static nf_layer *make_actnorm(nf_rng *rng) { (void)rng; return nf_actnorm_new(D); }
static nf_layer *make_gaussianization(nf_rng *rng) { return nf_gaussianization_new(D, 3, rng); }
static nf_layer *make_standardize(nf_rng *rng)
{
  double shift[D], scale[D];
  for (size_t j = 0; j < D; j++) {
    shift[j] = nf_rng_normal(rng);
    scale[j] = exp(0.5 * nf_rng_normal(rng));
  }
  return nf_standardize_new(D, shift, scale);
}
static nf_layer *make_logit(nf_rng *rng)
{
  double lo[D], hi[D];
  for (size_t j = 0; j < D; j++) {
    lo[j] = nf_rng_normal(rng);
    hi[j] = lo[j] + 1 + fabs(nf_rng_normal(rng));
  }
  return nf_logit_new(D, lo, hi, 0.0);
}

static nf_layer *make_coupling(nf_rng *rng, nf_transformer_kind kind)
{
  static const size_t hidden[1] = {8};
  unsigned char mask[D];
  nf_coupling_mask_alternate(D, (int)nf_rng_below(rng, 2), mask);
  nf_coupling_opts o = {nf_transformer_spec_default(kind), mask, 1, hidden, NF_ACT_TANH, NF_PRECISION_DOUBLE};
  return nf_coupling_new(D, 0, &o, rng);
}
static nf_layer *make_coupling_additive(nf_rng *rng) { return make_coupling(rng, NF_TRANSFORMER_ADDITIVE); }
static nf_layer *make_coupling_affine(nf_rng *rng) { return make_coupling(rng, NF_TRANSFORMER_AFFINE); }
static nf_layer *make_coupling_spline(nf_rng *rng) { return make_coupling(rng, NF_TRANSFORMER_SPLINE); }
static nf_layer *make_maf(nf_rng *rng)
{
  static const size_t hidden[1] = {8};
  nf_autoregressive_opts o = nf_autoregressive_opts_default();
  o.n_hidden = 1;
  o.hidden = hidden;
  o.order = NF_ORDER_RANDOM;
  o.order_seed = nf_rng_u64(rng);
  return nf_autoregressive_new(D, 0, &o, rng);
}
static nf_layer *make_iaf(nf_rng *rng) { return nf_inverse_new(make_maf(rng)); }
static nf_layer *make_inverse_lu(nf_rng *rng) { return nf_inverse_new(make_lu_exp(rng)); }
static nf_layer *make_cnf(nf_rng *rng)
{
  static const size_t hidden[1] = {8};
  nf_cnf_opts o = nf_cnf_defaults();
  o.n_hidden = 1;
  o.hidden = hidden;
  o.trace = NF_TRACE_RADEMACHER;
  o.kinetic_weight = 0.01;
  return nf_cnf_new(D, 0, &o, rng);
}

typedef struct family_case {
  const char *name;
  nf_layer *(*make)(nf_rng *rng);
} family_case;

static const family_case families[] = {
  {"affine", make_affine},         {"permute", make_permute},   {"linear_lu exp", make_lu_exp},
  {"linear_lu softplus", make_lu_softplus}, {"planar", make_planar}, {"radial", make_radial},
  {"standardize", make_standardize}, {"logit", make_logit},
  {"coupling additive", make_coupling_additive}, {"coupling affine", make_coupling_affine},
  {"coupling spline", make_coupling_spline},
  {"cnf", make_cnf}, {"autoregressive", make_maf}, {"inverse autoregressive", make_iaf},
  {"inverse linear_lu", make_inverse_lu}, {"actnorm", make_actnorm},
  {"gaussianization", make_gaussianization},
};
enum { N_FAMILIES = sizeof families / sizeof *families };

/* A diag_normal flow: affine, two layers of the family, then (for the
   preprocessing families, which come last) nothing more; theta ~ N(0, 0.3^2). */
static nf_flow *family_flow(const family_case *fc, uint64_t seed)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_DIAG_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(D)), NF_OK);
  for (int k = 0; k < 2; k++)
    ck_assert_msg(nf_flow_push(flow, fc->make(&rng)) == NF_OK, "%s: %s", fc->name, nf_errmsg());
  size_t np = nf_flow_n_params(flow);
  double *theta = th_random_points(1, np, seed + 1, 0.3);
  ck_assert_msg(nf_flow_set_params(flow, theta) == NF_OK, "%s: %s", fc->name, nf_errmsg());
  free(theta);
  return flow;
}

/* Asserts a and b hold the same entries in the same order. */
static void expect_same_meta(const nf_meta *a, const nf_meta *b)
{
  ck_assert_uint_eq(nf_meta_count(a), nf_meta_count(b));
  for (size_t i = 0; i < nf_meta_count(a); i++) {
    ck_assert_str_eq(nf_meta_key(a, i), nf_meta_key(b, i));
    ck_assert_str_eq(nf_meta_value(a, i), nf_meta_value(b, i));
  }
}

/* Saves flow, loads it back and asserts the copy is the same flow bit for bit:
   structure, theta (memcmp), log p on ROWS rows sampled from the flow, samples
   for one rng seed, and the metadata. */
static void expect_round_trip(const char *label, nf_flow *flow, const char *file)
{
  const char *path = tpath(file);
  nf_meta *meta = test_meta(), *back = NULL;
  ck_assert_msg(nf_flow_save(flow, path, meta) == NF_OK, "%s: save: %s", label, nf_errmsg());
  nf_flow *copy = NULL;
  ck_assert_msg(nf_flow_load(path, NULL, &copy, &back) == NF_OK, "%s: load: %s", label, nf_errmsg());
  ck_assert_uint_eq(nf_flow_dim(copy), nf_flow_dim(flow));
  ck_assert_uint_eq(nf_flow_ctx_dim(copy), nf_flow_ctx_dim(flow));
  ck_assert_int_eq(nf_flow_base(copy), nf_flow_base(flow));
  ck_assert_uint_eq(nf_flow_n_layers(copy), nf_flow_n_layers(flow));
  for (size_t k = 0; k < nf_flow_n_layers(flow); k++) {
    ck_assert_str_eq(nf_layer_name(nf_flow_layer(copy, k)), nf_layer_name(nf_flow_layer(flow, k)));
    ck_assert_uint_eq(nf_flow_param_offset(copy, k), nf_flow_param_offset(flow, k));
  }
  size_t np = nf_flow_n_params(flow);
  ck_assert_uint_eq(nf_flow_n_params(copy), np);
  ck_assert_msg(memcmp(nf_flow_params(copy), nf_flow_params(flow), np * sizeof(double)) == 0,
                "%s: theta differs", label);
  expect_same_meta(back, meta);

  size_t d = nf_flow_dim(flow);
  double *xa = malloc(ROWS * d * sizeof *xa), *xb = malloc(ROWS * d * sizeof *xb);
  double la[ROWS], lb[ROWS];
  nf_rng ra, rb;
  nf_rng_seed(&ra, 99);
  nf_rng_seed(&rb, 99);
  ck_assert_int_eq(nf_flow_sample(flow, &ra, ROWS, NULL, xa, la), NF_OK);
  ck_assert_int_eq(nf_flow_sample(copy, &rb, ROWS, NULL, xb, lb), NF_OK);
  ck_assert_msg(memcmp(xa, xb, ROWS * d * sizeof *xa) == 0, "%s: samples differ", label);
  ck_assert_msg(memcmp(la, lb, sizeof la) == 0, "%s: sample log p differs", label);
  ck_assert_msg(nf_flow_log_prob(flow, ROWS, xa, NULL, la) == NF_OK, "%s: %s", label, nf_errmsg());
  ck_assert_int_eq(nf_flow_log_prob(copy, ROWS, xa, NULL, lb), NF_OK);
  for (size_t i = 0; i < ROWS; i++) {
    ck_assert_msg(isfinite(la[i]), "%s: log p[%zu] = %g", label, i, la[i]);
    ck_assert_msg(memcmp(&la[i], &lb[i], sizeof la[i]) == 0, "%s: log p[%zu] %.17g != %.17g",
                  label, i, la[i], lb[i]);
  }
  printf("%s: %zu parameters, log p of %d rows and samples identical after save/load\n", label,
         np, ROWS);
  free(xa);
  free(xb);
  nf_flow_free(copy);
  nf_meta_free(meta);
  nf_meta_free(back);
}

START_TEST(every_family_round_trips_bit_for_bit)
{
  for (size_t f = 0; f < N_FAMILIES; f++) {
    nf_flow *flow = family_flow(&families[f], 100 + f);
    expect_round_trip(families[f].name, flow, "family.nfm");
    nf_flow_free(flow);
  }
}
END_TEST

/* A std_normal flow of every family at once, and a flow without layers. */
START_TEST(mixed_and_empty_flows_round_trip)
{
  nf_rng rng;
  nf_rng_seed(&rng, 7);
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_STD_NORMAL);
  for (size_t f = 0; f < N_FAMILIES; f++)
    if (strcmp(families[f].name, "logit") != 0)
      ck_assert_int_eq(nf_flow_push(flow, families[f].make(&rng)), NF_OK);
  double *theta = th_random_points(1, nf_flow_n_params(flow), 8, 0.2);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  free(theta);
  expect_round_trip("mixed", flow, "mixed.nfm");
  nf_flow_free(flow);

  flow = nf_flow_new(2, 0, NF_BASE_DIAG_NORMAL);
  const double base[4] = {0.5, -1, 0.25, -0.125};
  ck_assert_int_eq(nf_flow_set_params(flow, base), NF_OK);
  expect_round_trip("base only", flow, "base.nfm");
  nf_flow_free(flow);

  /* meta NULL on both sides */
  flow = family_flow(&families[0], 3);
  ck_assert_int_eq(nf_flow_save(flow, tpath("nometa.nfm"), NULL), NF_OK);
  nf_flow *copy = NULL;
  ck_assert_int_eq(nf_flow_load(tpath("nometa.nfm"), NULL, &copy, NULL), NF_OK);
  ck_assert_uint_eq(nf_flow_n_params(copy), nf_flow_n_params(flow));
  nf_flow_free(copy);
  nf_flow_free(flow);
}
END_TEST

/* ---------------------------------------------------------------- refusals */

/* Asserts got == want, that nf_errmsg() contains each NULL-terminated word. */
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

/* nf_flow_load(path) must fail with want, the path and the words in its
   message, and leave *flow and *meta NULL. */
#define EXPECT_LOAD_FAILS(path, want, ...)                                                   \
  do {                                                                                       \
    nf_flow *f_ = (nf_flow *)&f_;                                                            \
    nf_meta *m_ = (nf_meta *)&m_;                                                            \
    expect_fail(nf_flow_load((path), NULL, &f_, &m_), (want), (path), __VA_ARGS__, NULL);    \
    ck_assert_ptr_null(f_);                                                                  \
    ck_assert_ptr_null(m_);                                                                  \
  } while (0)

/* The reference file of the refusal tests: diag_normal; affine, permute,
   planar, standardize (layer 3, with tensors "layers.3.shift", ".scale"). */
static const char *write_reference(void)
{
  nf_rng rng;
  nf_rng_seed(&rng, 5);
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_DIAG_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(D)), NF_OK);
  ck_assert_int_eq(nf_flow_push(flow, make_permute(&rng)), NF_OK);
  ck_assert_int_eq(nf_flow_push(flow, make_planar(&rng)), NF_OK);
  ck_assert_int_eq(nf_flow_push(flow, make_standardize(&rng)), NF_OK);
  nf_meta *meta = test_meta();
  const char *path = tpath("reference.nfm");
  ck_assert_int_eq(nf_flow_save(flow, path, meta), NF_OK);
  nf_meta_free(meta);
  nf_flow_free(flow);
  return path;
}

/* An edit of the reference: metadata key `key` with its first `from` replaced
   by `to` (key NULL: none), tensor `drop` left out, entry `at` of tensor
   `poke` set to value; written to out through the container (new CRC). */
typedef struct edit {
  const char *key, *from, *to;
  const char *drop;
  const char *poke;
  size_t at;
  double value;
} edit;

static void write_edited(const char *ref, const char *out, const edit *e)
{
  nf_safetensors *st = NULL;
  ck_assert_int_eq(nf_safetensors_read(ref, &st), NF_OK);
  const nf_meta *m = nf_safetensors_meta(st);
  nf_meta *meta = nf_meta_new();
  int edited = e->key == NULL;
  for (size_t i = 0; i < nf_meta_count(m); i++) {
    const char *k = nf_meta_key(m, i), *v = nf_meta_value(m, i);
    if (strcmp(k, "crc32") == 0) continue;
    if (e->key && strcmp(k, e->key) == 0) {
      const char *hit = strstr(v, e->from);
      ck_assert_msg(hit != NULL, "'%s' not in %s", e->from, k);
      size_t pre = (size_t)(hit - v), len = strlen(v) - strlen(e->from) + strlen(e->to) + 1;
      char *nv = malloc(len);
      snprintf(nv, len, "%.*s%s%s", (int)pre, v, e->to, hit + strlen(e->from));
      ck_assert_int_eq(nf_meta_set(meta, k, nv), NF_OK);
      free(nv);
      edited = 1;
    } else {
      ck_assert_int_eq(nf_meta_set(meta, k, v), NF_OK);
    }
  }
  ck_assert(edited);
  size_t n = nf_safetensors_count(st), kept = 0;
  nf_tensor *t = calloc(n, sizeof *t);
  double *poked = NULL;
  for (size_t i = 0; i < n; i++) {
    const char *name = nf_safetensors_name(st, i);
    if (e->drop && strcmp(name, e->drop) == 0) continue;
    size_t len;
    const double *v = nf_safetensors_find(st, name, &len);
    if (e->poke && strcmp(name, e->poke) == 0) {
      poked = malloc(len * sizeof *poked);
      memcpy(poked, v, len * sizeof *v);
      poked[e->at] = e->value;
      v = poked;
    }
    t[kept++] = (nf_tensor){name, len, v};
  }
  ck_assert_int_eq(nf_safetensors_write(out, meta, kept, t), NF_OK);
  free(poked);
  free(t);
  nf_meta_free(meta);
  nf_safetensors_free(st);
}

START_TEST(truncated_files_are_refused)
{
  const char *ref = write_reference();
  size_t len;
  unsigned char *b = th_read_file(ref, &len);
  size_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
  /* empty, inside the length, the length alone, inside the header, the header
     without data, inside the data (on and off a value boundary), one byte short */
  const size_t cuts[] = {0, 3, 8, 8 + hlen / 2, 8 + hlen, 8 + hlen + 8, 8 + hlen + 13, len - 1};
  const char *path = tpath("truncated.nfm");
  for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
    th_write_file(path, b, cuts[k]);
    EXPECT_LOAD_FAILS(path, NF_EFORMAT, "");
  }
  free(b);
  EXPECT_LOAD_FAILS(tpath("no-such-file.nfm"), NF_EIO, "");
}
END_TEST

START_TEST(corrupted_bytes_fail_the_checksum)
{
  const char *ref = write_reference();
  size_t len;
  unsigned char *b = th_read_file(ref, &len);
  const char *path = tpath("flipped.nfm");
  unsigned char *hit = memmem(b, len, "moons", 5);
  ck_assert_ptr_nonnull(hit);
  hit[4] ^= 0x01; /* "moonr": still valid JSON, a changed metadata value */
  th_write_file(path, b, len);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "checksum");
  hit[4] ^= 0x01;
  b[len - 3] ^= 0x10; /* a bit of the last tensor's data */
  th_write_file(path, b, len);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "checksum");
  free(b);
}
END_TEST

START_TEST(inconsistent_files_are_refused)
{
  const char *ref = write_reference(), *path = tpath("edited.nfm");
  const edit unknown = {"architecture", "\"planar\"", "\"wobble\"", NULL, NULL, 0, 0};
  write_edited(ref, path, &unknown);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "unknown family 'wobble'", "nf_layer_register", "layer 2");

  const edit count = {"architecture", "\"type\":\"planar\",\"n_params\":7",
                      "\"type\":\"planar\",\"n_params\":8", NULL, NULL, 0, 0};
  write_edited(ref, path, &count);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "parameter count", "layer 2");

  const edit total = {"architecture", "\"n_params\":19", "\"n_params\":20", NULL, NULL, 0, 0};
  write_edited(ref, path, &total);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "parameter count");

  /* a claim of 10^12 parameters is not believed before the layers are read */
  const edit claim = {"architecture", "\"n_params\":19", "\"n_params\":1000000000000", NULL,
                      NULL, 0, 0};
  write_edited(ref, path, &claim);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "the layers hold 19, the architecture says 1000000000000");

  const edit future = {"format_version", "1", "2", NULL, NULL, 0, 0};
  write_edited(ref, path, &future);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "format version 2 is newer than this library's 1");

  const edit format = {"format", "nflow-model", "pytorch-model", NULL, NULL, 0, 0};
  write_edited(ref, path, &format);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "not an nflow model file", "pytorch-model");

  const edit json = {"architecture", "{", "[", NULL, NULL, 0, 0};
  write_edited(ref, path, &json);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "architecture");

  const edit config = {"architecture", "\"max_iter\":77", "\"max_iter\":\"many\"", NULL, NULL, 0, 0};
  write_edited(ref, path, &config);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "layer 2 ('planar')", "max_iter");

  const edit missing = {NULL, NULL, NULL, "layers.3.scale", NULL, 0, 0};
  write_edited(ref, path, &missing);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "layers.3.scale", "missing");

  const edit theta = {NULL, NULL, NULL, "layers.2", NULL, 0, 0};
  write_edited(ref, path, &theta);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "layers.2", "missing");

  const edit nan = {NULL, NULL, NULL, NULL, "layers.0", 4, NAN};
  write_edited(ref, path, &nan);
  EXPECT_LOAD_FAILS(path, NF_ENONFINITE, "layer 0", "parameter 4");

  const edit huge = {NULL, NULL, NULL, NULL, "layers.0", 4, 1e4}; /* a log-scale: exp overflows */
  write_edited(ref, path, &huge);
  EXPECT_LOAD_FAILS(path, NF_EDOMAIN, "layer 0", "parameter 4");

  const edit base = {NULL, NULL, NULL, NULL, "base", 1, INFINITY};
  write_edited(ref, path, &base);
  EXPECT_LOAD_FAILS(path, NF_ENONFINITE, "base");

  const edit scale = {NULL, NULL, NULL, NULL, "layers.3.scale", 0, -1.0};
  write_edited(ref, path, &scale);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "layer 3 ('standardize')", "scale[0]");
}
END_TEST

START_TEST(loading_honours_the_allocation_limit)
{
  const char *ref = write_reference();
  size_t len;
  free(th_read_file(ref, &len));
  nf_set_alloc_limit(len - 9); /* one byte short of the header and the data section */
  nf_flow *f = NULL;
  nf_status st = nf_flow_load(ref, NULL, &f, NULL);
  nf_set_alloc_limit(len - 8);
  nf_flow *g = NULL;
  nf_status st2 = nf_flow_load(ref, NULL, &g, NULL);
  nf_set_alloc_limit(0);
  char want[64];
  snprintf(want, sizeof want, "needs %zu bytes", len - 8);
  expect_fail(st, NF_ENOMEM, ref, want, "allocation limit", NULL);
  ck_assert_ptr_null(f);
  ck_assert_int_eq(st2, NF_OK);
  nf_flow_free(g);
  EXPECT_LOAD_FAILS(tpath(""), NF_EIO, "is a directory");
}
END_TEST

START_TEST(saving_refuses_what_it_cannot_write)
{
  nf_flow *flow = family_flow(&families[0], 1);
  nf_meta *meta = nf_meta_new();
  ck_assert_int_eq(nf_meta_set(meta, "architecture", "mine"), NF_OK);
  expect_fail(nf_flow_save(flow, tpath("x.nfm"), meta), NF_EINVAL, "architecture", "reserved", NULL);
  nf_meta_free(meta);
  const char *bad = "/nonexistent-folder/x.nfm";
  expect_fail(nf_flow_save(flow, bad, NULL), NF_EIO, bad, NULL);
  expect_fail(nf_flow_save(NULL, tpath("x.nfm"), NULL), NF_EINVAL, NULL);
  expect_fail(nf_flow_load(NULL, NULL, NULL, NULL), NF_EINVAL, NULL);
  nf_flow_free(flow);
}
END_TEST

/* ---------------------------------------------------------------- a user family */

/* "test_shift": x = z + theta (d parameters) and its config "tag". */
static nf_status shift_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                             const double *in, const double *ctx, double *out, double *logdet,
                             const nf_apply_opts *opts, double *work)
{
  (void)ctx;
  (void)logdet;
  (void)opts;
  (void)work;
  size_t d = layer->dim;
  double s = dir == NF_FORWARD ? 1 : -1;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < d; j++) out[i * d + j] = in[i * d + j] + s * theta[j];
  return NF_OK;
}

static void shift_destroy(void *data) { free(data); }

static nf_status shift_save(const nf_layer *layer, nf_config *cfg)
{
  return nf_config_set_int(cfg, "tag", *(const long long *)layer->data);
}

static nf_layer *shift_new(size_t dim, long long tag);

static nf_layer *shift_load(size_t dim, size_t ctx_dim, const nf_config *cfg, const nf_resolver *res)
{
  (void)ctx_dim;
  (void)res;
  long long tag;
  return nf_config_get_int(cfg, "tag", &tag) ? NULL : shift_new(dim, tag);
}

static const nf_layer_type shift_type = {
  .name = "test_shift", .apply = shift_apply, .destroy = shift_destroy,
  .save = shift_save, .load = shift_load,
};

static nf_layer *shift_new(size_t dim, long long tag)
{
  long long *t = malloc(sizeof *t);
  *t = tag;
  return nf_layer_create(&shift_type, dim, 0, dim, t);
}

START_TEST(a_registered_user_family_round_trips)
{
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_DIAG_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, shift_new(D, 42)), NF_OK);
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(D)), NF_OK);
  double *theta = th_random_points(1, nf_flow_n_params(flow), 4, 0.5);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  free(theta);
  const char *path = tpath("user.nfm");
  ck_assert_int_eq(nf_flow_save(flow, path, NULL), NF_OK);
  EXPECT_LOAD_FAILS(path, NF_EFORMAT, "unknown family 'test_shift'", "nf_layer_register");

  ck_assert_int_eq(nf_layer_register(&shift_type), NF_OK);
  ck_assert_ptr_eq(nf_layer_type_find("test_shift"), &shift_type);
  expect_round_trip("test_shift", flow, "user2.nfm");
  nf_flow *copy = NULL;
  ck_assert_int_eq(nf_flow_load(path, NULL, &copy, NULL), NF_OK);
  ck_assert_int_eq(*(const long long *)nf_flow_layer(copy, 0)->data, 42);
  nf_flow_free(copy);

  /* a family without save cannot be saved, and says which layer */
  static const nf_layer_type unsaveable = {.name = "test_unsaveable", .apply = shift_apply};
  ck_assert_int_eq(nf_flow_push(flow, nf_layer_create(&unsaveable, D, 0, 0, NULL)), NF_OK);
  expect_fail(nf_flow_save(flow, tpath("never.nfm"), NULL), NF_EINVAL, "layer 2",
              "test_unsaveable", "save", NULL);
  ck_assert_int_eq(access(tpath("never.nfm"), F_OK), -1);
  nf_flow_free(flow);
}
END_TEST

int main(void)
{
  if (!mkdtemp(tmp_dir)) {
    perror("mkdtemp");
    return 1;
  }
  const TTest *tests[] = {every_family_round_trips_bit_for_bit, mixed_and_empty_flows_round_trip,
                          truncated_files_are_refused, corrupted_bytes_fail_the_checksum,
                          inconsistent_files_are_refused, saving_refuses_what_it_cannot_write,
                          a_registered_user_family_round_trips,
                          loading_honours_the_allocation_limit, NULL};
  int rc = th_run_tests("model", 0, tests);
  remove_tmp_dir();
  return rc;
}
