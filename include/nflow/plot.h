/* nflow/plot.h — pictures of flows with cairo (libnflow-plot, pkg-config
   nflow-plot; built when configure finds cairo). A figure is a grid of
   cols x rows square panels of panel_px pixels; each panel has a title, axes
   with ticks and tick labels and, for densities and histograms, a colour bar
   of the viridis map. The figure is written to one PNG.

   Like the core library, no function prints or aborts: bad input returns an
   nf_status with nf_errmsg(). A figure is not thread-safe; two figures are
   independent. Drawing into a panel that already holds one replaces it. */
#ifndef NFLOW_PLOT_H
#define NFLOW_PLOT_H

#include <stddef.h>
#include "nflow/flow.h"
#include "nflow/status.h"
#include "nflow/target.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nf_plot_figure nf_plot_figure;

/* The rectangle [xmin, xmax] x [ymin, ymax] of data coordinates a panel shows. */
typedef struct nf_plot_box {
  double xmin, xmax, ymin, ymax;
} nf_plot_box;

#define NF_PLOT_MIN_PX 96     /* the smallest panel_px */
#define NF_PLOT_MAX_PX 4096   /* the largest panel_px */
#define NF_PLOT_MAX_PANELS 256 /* the most cols x rows */

/* A blank (white) figure of cols x rows panels, each panel_px pixels square.
   NULL (with nf_errmsg) on cols or rows 0, more than NF_PLOT_MAX_PANELS
   panels, panel_px outside [NF_PLOT_MIN_PX, NF_PLOT_MAX_PX] or no memory. */
nf_plot_figure *nf_plot_figure_new(size_t cols, size_t rows, int panel_px);
void nf_plot_figure_free(nf_plot_figure *fig);

/* The pixel square (x, y the top-left corner, side) where the image of a
   density or histogram panel at (col, row) lies: data point (u, v) of box b
   is drawn at pixel (x + side (u - b.xmin) / (b.xmax - b.xmin),
   y + side (b.ymax - v) / (b.ymax - b.ymin)). NF_EINVAL on NULL or a cell
   outside the figure. */
nf_status nf_plot_image_area(const nf_plot_figure *fig, size_t col, size_t row, int *x, int *y,
                             int *side);

/* The model density exp(log p(x)) of a 2-D unconditional flow on a grid of
   one point per pixel (pixel centres) over box, coloured linearly from 0 to
   its largest value (the colour bar's top). The flow's noise seed is set to
   0 (as nf_flow_log_prob evaluates). NF_EINVAL on NULL, a bad cell or box
   (not finite, empty); NF_EDIM for a flow not on R^2 or conditional; the
   flow's status if it fails. */
nf_status nf_plot_density(nf_plot_figure *fig, size_t col, size_t row, const char *title,
                          nf_flow *flow, const nf_plot_box *box);

/* The same for a 2-D target's unnormalised density exp(log p~(x)) (its
   largest grid value scaled to the top of the colour bar). NF_EDIM for a
   target not on R^2. */
nf_status nf_plot_target(nf_plot_figure *fig, size_t col, size_t row, const char *title,
                         const nf_target *target, const nf_plot_box *box);

/* A 2-D histogram of columns i (horizontal) and j (vertical) of the n x dim
   rows x in bins x bins cells over box (rows outside it are not counted),
   coloured linearly by count from 0 to vmax (vmax <= 0: the largest count;
   counts above vmax saturate). bins 0 means 64. NF_EINVAL on NULL, n == 0,
   i or j >= dim, bins > 1024, a bad box or vmax not finite; NF_ENONFINITE
   naming the first non-finite value of columns i, j. */
nf_status nf_plot_hist2d(nf_plot_figure *fig, size_t col, size_t row, const char *title,
                         size_t n, size_t dim, const double *x, size_t i, size_t j,
                         const nf_plot_box *box, size_t bins, double vmax);

/* Line plot of k series y[s][0..n) against x[0..n) (k <= 4), with a legend
   of labels (NULL: none); non-finite y values are gaps. The axes span the
   finite values. NF_EINVAL on NULL, n < 1, k == 0 or k > 4, or no finite
   point; NF_ENONFINITE for a non-finite x. */
nf_status nf_plot_curve(nf_plot_figure *fig, size_t col, size_t row, const char *title,
                        const char *ylabel, size_t n, const double *x, size_t k,
                        const double *const *y, const char *const *labels);

/* A training curve from a trainer CSV (--curve; columns in nflow/trainer.h)
   against iteration: what = "loss" (train_loss and val_loss), "nfe"
   (nfe_forward and nfe_backward) or "ess". NF_EIO if the file cannot be
   read, NF_EFORMAT on a malformed line or a missing column (naming it). */
nf_status nf_plot_curve_csv(nf_plot_figure *fig, size_t col, size_t row, const char *title,
                            const char *path, const char *what);

/* A corner plot of dim coordinates in the dim x dim panels whose top-left is
   (col, row): below the diagonal 2-D histograms of the n_s samples (rows of
   dim), above it of the n_d data rows (transposed, so that the two halves
   mirror each other), on the diagonal both 1-D marginals (data filled, samples
   a line). Each coordinate's range is its data's 0.5% to 99.5% quantiles
   widened by 10%. names (NULL: x1, x2, ...) label the axes. NF_EINVAL on
   NULL, dim < 2, too few panels or n == 0; NF_ENONFINITE on a non-finite value. */
nf_status nf_plot_corner(nf_plot_figure *fig, size_t col, size_t row, size_t dim, size_t n_s,
                         const double *samples, size_t n_d, const double *data,
                         const char *const *names);

/* Writes the figure to path as a PNG, atomically (a temporary file in the
   same folder, renamed over path: on failure nothing is left at path and an
   older file stays). NF_EIO naming the path and the reason. */
nf_status nf_plot_write_png(const nf_plot_figure *fig, const char *path);

/* viridis(t) for t in [0, 1] (clamped; NaN gives t = 0) into rgb[0..3) in
   [0, 1]: a degree-8 least-squares polynomial fit per channel to matplotlib's
   256-entry viridis table (van der Walt & Smith 2015, CC0), within 2.4/255
   of every entry. */
void nf_plot_viridis(double t, double rgb[3]);

#ifdef __cplusplus
}
#endif
#endif
