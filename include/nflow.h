/* nflow.h — normalizing flows in C: the whole public API. */
#ifndef NFLOW_H
#define NFLOW_H

#include "nflow/version.h"
#include "nflow/status.h"
#include "nflow/limits.h"
#include "nflow/rng.h"
#include "nflow/layer.h"
#include "nflow/mlp.h"
#include "nflow/flow.h"
#include "nflow/affine.h"
#include "nflow/permute.h"
#include "nflow/linear_lu.h"
#include "nflow/planar.h"
#include "nflow/radial.h"
#include "nflow/actnorm.h"
#include "nflow/gaussianization.h"
#include "nflow/transformer.h"
#include "nflow/coupling.h"
#include "nflow/adam.h"
#include "nflow/dataset.h"
#include "nflow/trainer.h"
#include "nflow/recipes.h"
#include "nflow/ode.h"
#include "nflow/odenet.h"
#include "nflow/field.h"
#include "nflow/cnf.h"
#include "nflow/preprocess.h"
#include "nflow/meta.h"
#include "nflow/config.h"
#include "nflow/model.h"

#endif
