/* lib/transformers/kinds.c — the table from nf_transformer_kind to the
   transformers' ops, their names and their default options. */
#include <stddef.h>

#include "internal.h"
#include "transformer.h"

static const char *const kind_names[] = {"additive", "affine", "spline", "circular-spline"};
#define N_KINDS (sizeof kind_names / sizeof *kind_names)

const nf_transformer *nf_transformer_of_kind(nf_transformer_kind kind)
{
  switch (kind) {
  case NF_TRANSFORMER_ADDITIVE: return &nf_transformer_additive;
  case NF_TRANSFORMER_AFFINE: return &nf_transformer_affine;
  case NF_TRANSFORMER_SPLINE: return &nf_transformer_spline;
  case NF_TRANSFORMER_CIRCULAR_SPLINE: return &nf_transformer_circular_spline;
  default: return NULL;
  }
}

nf_transformer_spec nf_transformer_spec_default(nf_transformer_kind kind)
{
  nf_transformer_spec s = {kind, 3.0, 8, 5.0, 1e-3, 1e-3, 1e-3};
  return s;
}

const char *nf_transformer_kind_name(nf_transformer_kind kind)
{
  return (unsigned)kind < N_KINDS ? kind_names[kind] : "?";
}

nf_status nf_transformer_kind_parse(const char *name, nf_transformer_kind *kind)
{
  int i = 0;
  nf_status st = nf_parse_choice("transformer kind", name, kind_names, N_KINDS, kind ? &i : NULL);
  if (st == NF_OK) *kind = (nf_transformer_kind)i;
  return st;
}
