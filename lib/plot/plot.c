/* lib/plot/plot.c — libnflow-plot: panels of densities, histograms and
   training curves drawn with cairo into one PNG (nflow/plot.h). */
#define _POSIX_C_SOURCE 200809L
#include <cairo.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nflow/layer_impl.h" /* nf_set_error */
#include "nflow/plot.h"

/* Layout, as fractions of panel_px: a title band, the image square, tick
   labels below and to the left, and the colour bar to the right. */
#define TITLE_H 0.085
#define LEFT_W 0.15
#define BOTTOM_H 0.11
#define CBAR_GAP 0.03
#define CBAR_W 0.035
#define RIGHT_W 0.19 /* colour bar, its gap and its labels */
#define TICK_FONT 0.036
#define TITLE_FONT 0.044
#define TICK_LEN 0.012
#define MAX_CURVES 4

struct nf_plot_figure {
  size_t cols, rows;
  int px, side, cell_h; /* panel width, image side, panel height (pixels) */
  cairo_surface_t *surface;
  cairo_t *cr;
};

/* Where the image square and the curve area of a panel lie (pixels). */
typedef struct area {
  double x, y, w, h;
} area;

void nf_plot_viridis(double t, double rgb[3])
{
  /* c[k][p]: coefficient of t^p of channel k (least squares over the 256
     entries of matplotlib's table at t = i/255; max error 2.33/255). */
  static const double c[3][9] = {
    {0.26273616751514023, 0.68950584834408379, -6.3466757034009449, 13.805848736889677,
     18.490099350678143, -164.47520781928225, 335.76583048164304, -285.0861959000303,
     87.896440191170427},
    {0.0029581021477173147, 1.5806489702550821, -2.6321618118189707, 12.659720905204241,
     -46.952176774331342, 99.085098042065695, -112.58327870428514, 64.072256421912911,
     -14.327338171465707},
    {0.33335311568629294, 1.1568157818493758, 6.5948895903623157, -81.721399443794013,
     336.5070001038435, -727.36181907525565, 878.04515392681026, -563.31135088242024,
     149.90455932818767}};
  t = t > 0 ? (t < 1 ? t : 1) : 0; /* NaN -> 0 */
  for (int k = 0; k < 3; k++) {
    double v = 0;
    for (int p = 8; p >= 0; p--) v = v * t + c[k][p];
    rgb[k] = v < 0 ? 0 : v > 1 ? 1 : v;
  }
}

nf_plot_figure *nf_plot_figure_new(size_t cols, size_t rows, int panel_px)
{
  if (!cols || !rows || cols > NF_PLOT_MAX_PANELS || rows > NF_PLOT_MAX_PANELS / cols) {
    nf_set_error(NF_EINVAL, "nf_plot_figure_new: %zu x %zu panels (expected 1 to %d in all)",
                 cols, rows, NF_PLOT_MAX_PANELS);
    return NULL;
  }
  if (panel_px < NF_PLOT_MIN_PX || panel_px > NF_PLOT_MAX_PX) {
    nf_set_error(NF_EINVAL, "nf_plot_figure_new: panel_px %d is outside [%d, %d]", panel_px,
                 NF_PLOT_MIN_PX, NF_PLOT_MAX_PX);
    return NULL;
  }
  nf_plot_figure *f = calloc(1, sizeof *f);
  if (!f) {
    nf_set_error(NF_ENOMEM, "nf_plot_figure_new: out of memory");
    return NULL;
  }
  f->cols = cols, f->rows = rows, f->px = panel_px;
  f->side = (int)floor(panel_px * (1 - LEFT_W - RIGHT_W));
  f->cell_h = (int)lround(panel_px * (TITLE_H + BOTTOM_H)) + f->side;
  if ((double)cols * panel_px > 32767 || (double)rows * f->cell_h > 32767) {
    free(f);
    nf_set_error(NF_EINVAL, "nf_plot_figure_new: %zu x %zu panels of %d pixels exceed cairo's "
                 "32767 pixels a side", cols, rows, panel_px);
    return NULL;
  }
  f->surface = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, (int)cols * panel_px,
                                          (int)rows * f->cell_h);
  f->cr = cairo_create(f->surface);
  if (cairo_status(f->cr) != CAIRO_STATUS_SUCCESS) {
    nf_plot_figure_free(f);
    nf_set_error(NF_ENOMEM, "nf_plot_figure_new: cairo: out of memory");
    return NULL;
  }
  cairo_set_source_rgb(f->cr, 1, 1, 1);
  cairo_paint(f->cr);
  cairo_select_font_face(f->cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  return f;
}

void nf_plot_figure_free(nf_plot_figure *fig)
{
  if (!fig) return;
  if (fig->cr) cairo_destroy(fig->cr);
  if (fig->surface) cairo_surface_destroy(fig->surface);
  free(fig);
}

/* NF_EINVAL unless fig is not NULL and (col, row) is one of its cells. */
static nf_status check_cell(const char *fn, const nf_plot_figure *fig, size_t col, size_t row)
{
  if (!fig) return nf_set_error(NF_EINVAL, "%s: the figure is NULL", fn);
  if (col >= fig->cols || row >= fig->rows)
    return nf_set_error(NF_EINVAL, "%s: panel (col %zu, row %zu) is outside the %zu x %zu figure",
                        fn, col, row, fig->cols, fig->rows);
  return NF_OK;
}

/* NF_EINVAL unless box is a finite non-empty rectangle. */
static nf_status check_box(const char *fn, const nf_plot_box *b)
{
  if (!b) return nf_set_error(NF_EINVAL, "%s: the box is NULL", fn);
  if (!(b->xmin < b->xmax) || !(b->ymin < b->ymax) || !isfinite(b->xmax - b->xmin) ||
      !isfinite(b->ymax - b->ymin))
    return nf_set_error(NF_EINVAL, "%s: box [%g, %g] x [%g, %g] is not a finite rectangle with "
                        "min < max", fn, b->xmin, b->xmax, b->ymin, b->ymax);
  return NF_OK;
}

nf_status nf_plot_image_area(const nf_plot_figure *fig, size_t col, size_t row, int *x, int *y,
                             int *side)
{
  nf_status st = check_cell("nf_plot_image_area", fig, col, row);
  if (st) return st;
  if (!x || !y || !side) return nf_set_error(NF_EINVAL, "nf_plot_image_area: NULL output");
  *x = (int)col * fig->px + (int)lround(LEFT_W * fig->px);
  *y = (int)row * fig->cell_h + (int)lround(TITLE_H * fig->px);
  *side = fig->side;
  return NF_OK;
}

/* The image square of a cell as an area. */
static area image_area(const nf_plot_figure *fig, size_t col, size_t row)
{
  int x = 0, y = 0, s = 0; /* set unless the cell is out of range, which callers check */
  nf_plot_image_area(fig, col, row, &x, &y, &s);
  return (area){x, y, s, s};
}

/* Clears a cell to white. */
static void clear_cell(nf_plot_figure *fig, size_t col, size_t row)
{
  cairo_t *cr = fig->cr;
  cairo_save(cr);
  cairo_rectangle(cr, (double)col * fig->px, (double)row * fig->cell_h, fig->px, fig->cell_h);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_fill(cr);
  cairo_restore(cr);
}

/* Draws text with its anchor (ax, ay in [0, 1] of its extent: 0.5, 0.5 the
   centre) at (x, y), rotated by angle radians. */
static void text(cairo_t *cr, const char *s, double size, double x, double y, double ax,
                 double ay, double angle)
{
  cairo_text_extents_t e;
  cairo_save(cr);
  cairo_set_font_size(cr, size);
  cairo_text_extents(cr, s, &e);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, angle);
  cairo_move_to(cr, -e.x_bearing - ax * e.width, -e.y_bearing - ay * e.height);
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  cairo_show_text(cr, s);
  cairo_restore(cr);
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving 3 to 7 ticks on [lo, hi]. */
static double tick_step(double lo, double hi)
{
  double raw = (hi - lo) / 5, p = pow(10, floor(log10(raw))), m = raw / p;
  return p * (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10);
}

/* Ticks and labels of [lo, hi] along one edge of a: bottom (vertical = 0)
   or left (vertical = 1), or the colour bar's right edge (vertical = 2). */
static void ticks(nf_plot_figure *fig, area a, double lo, double hi, int vertical)
{
  cairo_t *cr = fig->cr;
  double step = tick_step(lo, hi), len = TICK_LEN * fig->px, fs = TICK_FONT * fig->px;
  cairo_set_line_width(cr, 1);
  for (double k = ceil(lo / step - 1e-9); k * step <= hi + 1e-9 * step; k++) {
    double v = fabs(k) < 0.5 ? 0 : k * step, f = (v - lo) / (hi - lo);
    char label[32];
    snprintf(label, sizeof label, "%g", v);
    if (vertical) {
      double y = floor(a.y + a.h - f * a.h) + 0.5, x = vertical == 2 ? a.x + a.w : a.x;
      cairo_move_to(cr, x, y);
      cairo_line_to(cr, vertical == 2 ? x + len : x - len, y);
      text(cr, label, fs, vertical == 2 ? x + 1.5 * len : x - 1.5 * len, y,
           vertical == 2 ? 0 : 1, 0.5, 0);
    } else {
      double x = floor(a.x + f * a.w) + 0.5;
      cairo_move_to(cr, x, a.y + a.h);
      cairo_line_to(cr, x, a.y + a.h + len);
      text(cr, label, fs, x, a.y + a.h + 1.5 * len, 0.5, 0, 0);
    }
  }
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  cairo_stroke(cr);
}

/* The frame of a, its ticks for [x0, x1] x [y0, y1], and the panel title. */
static void frame(nf_plot_figure *fig, size_t col, area a, double x0, double x1, double y0,
                  double y1, const char *title)
{
  cairo_t *cr = fig->cr;
  cairo_save(cr);
  cairo_rectangle(cr, a.x - 0.5, a.y - 0.5, a.w + 1, a.h + 1);
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  cairo_set_line_width(cr, 1);
  cairo_stroke(cr);
  ticks(fig, a, x0, x1, 0);
  ticks(fig, a, y0, y1, 1);
  if (title) {
    cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
    double cx = (double)col * fig->px + fig->px / 2.0;
    text(cr, title, TITLE_FONT * fig->px, cx, a.y - 0.03 * fig->px, 0.5, 1, 0);
  }
  cairo_restore(cr);
}

/* An image of g x g values t in [0, 1] (row 0 at the top) in viridis over
   a, with the frame, ticks of box and a colour bar from 0 to vmax. */
static nf_status draw_image(nf_plot_figure *fig, size_t col, size_t row, const char *title,
                            const double *t, int g, const nf_plot_box *box, double vmax)
{
  cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, g, g);
  if (cairo_surface_status(img) != CAIRO_STATUS_SUCCESS) {
    cairo_surface_destroy(img);
    return nf_set_error(NF_ENOMEM, "nf_plot: cairo: out of memory for a %d x %d image", g, g);
  }
  cairo_surface_flush(img);
  unsigned char *data = cairo_image_surface_get_data(img);
  int stride = cairo_image_surface_get_stride(img);
  for (int r = 0; r < g; r++)
    for (int c = 0; c < g; c++) {
      double rgb[3];
      nf_plot_viridis(t[(size_t)r * g + c], rgb);
      uint32_t px = (uint32_t)lround(rgb[0] * 255) << 16 | (uint32_t)lround(rgb[1] * 255) << 8 |
                    (uint32_t)lround(rgb[2] * 255);
      memcpy(data + (size_t)r * stride + 4 * (size_t)c, &px, 4);
    }
  cairo_surface_mark_dirty(img);
  clear_cell(fig, col, row);
  area a = image_area(fig, col, row);
  cairo_t *cr = fig->cr;
  cairo_save(cr);
  cairo_translate(cr, a.x, a.y);
  cairo_scale(cr, a.w / g, a.h / g);
  cairo_set_source_surface(cr, img, 0, 0);
  cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST);
  cairo_paint(cr);
  cairo_restore(cr);
  cairo_surface_destroy(img);
  frame(fig, col, a, box->xmin, box->xmax, box->ymin, box->ymax, title);
  /* the colour bar: one line of pixels per level */
  area bar = {a.x + a.w + lround(CBAR_GAP * fig->px), a.y, lround(CBAR_W * fig->px), a.h};
  for (int k = 0; k < (int)bar.h; k++) {
    double rgb[3];
    nf_plot_viridis(1 - (k + 0.5) / bar.h, rgb);
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
    cairo_rectangle(cr, bar.x, bar.y + k, bar.w, 1);
    cairo_fill(cr);
  }
  cairo_rectangle(cr, bar.x - 0.5, bar.y - 0.5, bar.w + 1, bar.h + 1);
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  cairo_set_line_width(cr, 1);
  cairo_stroke(cr);
  ticks(fig, bar, 0, vmax > 0 ? vmax : 1, 2);
  return NF_OK;
}

/* Evaluates a log-density at n points x (n x 2) into f. */
typedef nf_status (*log_density_fn)(void *src, size_t n, const double *x, double *f);

static nf_status flow_log_density(void *src, size_t n, const double *x, double *f)
{
  nf_flow_set_seed(src, 0);
  return nf_flow_log_prob(src, n, x, NULL, f);
}

static nf_status target_log_density(void *src, size_t n, const double *x, double *f)
{
  return nf_target_eval(src, n, x, f, NULL);
}

/* exp(log p) at the pixel centres of the image square over box, scaled so
   that its largest value is 1, drawn by draw_image. */
static nf_status draw_density(const char *fn, nf_plot_figure *fig, size_t col, size_t row,
                              const char *title, log_density_fn eval, void *src,
                              const nf_plot_box *box)
{
  int g = fig->side;
  size_t n = (size_t)g * g;
  double *x = malloc(2 * n * sizeof *x), *f = malloc(n * sizeof *f);
  if (!x || !f) {
    free(x), free(f);
    return nf_set_error(NF_ENOMEM, "%s: out of memory for a %d x %d grid", fn, g, g);
  }
  for (int r = 0; r < g; r++)
    for (int c = 0; c < g; c++) {
      x[2 * ((size_t)r * g + c)] = box->xmin + (c + 0.5) / g * (box->xmax - box->xmin);
      x[2 * ((size_t)r * g + c) + 1] = box->ymax - (r + 0.5) / g * (box->ymax - box->ymin);
    }
  nf_status st = eval(src, n, x, f);
  double top = -INFINITY;
  for (size_t k = 0; !st && k < n; k++) {
    if (isnan(f[k]) || f[k] == INFINITY)
      st = nf_set_error(NF_ENONFINITE, "%s: log p is %g at (%g, %g)", fn, f[k], x[2 * k],
                        x[2 * k + 1]);
    else if (f[k] > top) top = f[k];
  }
  if (!st && top == -INFINITY)
    st = nf_set_error(NF_EDOMAIN, "%s: the density is 0 on the whole box", fn);
  for (size_t k = 0; !st && k < n; k++) f[k] = exp(f[k] - top);
  if (!st) st = draw_image(fig, col, row, title, f, g, box, exp(top));
  free(x), free(f);
  return st;
}

nf_status nf_plot_density(nf_plot_figure *fig, size_t col, size_t row, const char *title,
                          nf_flow *flow, const nf_plot_box *box)
{
  static const char fn[] = "nf_plot_density";
  nf_status st = check_cell(fn, fig, col, row);
  if (!st) st = check_box(fn, box);
  if (st) return st;
  if (!flow) return nf_set_error(NF_EINVAL, "%s: the flow is NULL", fn);
  if (nf_flow_dim(flow) != 2 || nf_flow_ctx_dim(flow))
    return nf_set_error(NF_EDIM, "%s: the flow is on R^%zu with %zu context columns; a density "
                        "panel takes an unconditional flow on R^2", fn, nf_flow_dim(flow),
                        nf_flow_ctx_dim(flow));
  return draw_density(fn, fig, col, row, title, flow_log_density, flow, box);
}

nf_status nf_plot_target(nf_plot_figure *fig, size_t col, size_t row, const char *title,
                         const nf_target *target, const nf_plot_box *box)
{
  static const char fn[] = "nf_plot_target";
  nf_status st = check_cell(fn, fig, col, row);
  if (!st) st = check_box(fn, box);
  if (st) return st;
  if (!target) return nf_set_error(NF_EINVAL, "%s: the target is NULL", fn);
  if (nf_target_dim(target) != 2)
    return nf_set_error(NF_EDIM, "%s: the target is on R^%zu; a density panel takes R^2", fn,
                        nf_target_dim(target));
  return draw_density(fn, fig, col, row, title, target_log_density, (void *)target, box);
}

/* Bin of v in [lo, hi) cut into m bins; -1 outside. */
static long bin_of(double v, double lo, double hi, size_t m)
{
  if (!(v >= lo && v < hi)) return -1;
  long b = (long)((v - lo) / (hi - lo) * (double)m);
  return b < (long)m ? b : (long)m - 1;
}

/* Refuses NULL data, n == 0, and a non-finite value in column k of x (n x dim). */
static nf_status check_column(const char *fn, size_t n, size_t dim, const double *x, size_t k)
{
  if (!x || !n) return nf_set_error(NF_EINVAL, "%s: no data (x NULL or n = 0)", fn);
  if (k >= dim)
    return nf_set_error(NF_EINVAL, "%s: column %zu of rows of %zu values", fn, k, dim);
  for (size_t r = 0; r < n; r++)
    if (!isfinite(x[r * dim + k]))
      return nf_set_error(NF_ENONFINITE, "%s: row %zu, column %zu is %g", fn, r, k, x[r * dim + k]);
  return NF_OK;
}

nf_status nf_plot_hist2d(nf_plot_figure *fig, size_t col, size_t row, const char *title,
                         size_t n, size_t dim, const double *x, size_t i, size_t j,
                         const nf_plot_box *box, size_t bins, double vmax)
{
  static const char fn[] = "nf_plot_hist2d";
  nf_status st = check_cell(fn, fig, col, row);
  if (!st) st = check_box(fn, box);
  if (!st) st = check_column(fn, n, dim, x, i);
  if (!st) st = check_column(fn, n, dim, x, j);
  if (st) return st;
  if (bins > 1024 || !isfinite(vmax))
    return nf_set_error(NF_EINVAL, "%s: bins %zu (expected 0 to 1024) or vmax %g not finite", fn,
                        bins, vmax);
  size_t m = bins ? bins : 64;
  double *t = calloc(m * m, sizeof *t);
  if (!t) return nf_set_error(NF_ENOMEM, "%s: out of memory", fn);
  double top = 0;
  for (size_t r = 0; r < n; r++) {
    long bx = bin_of(x[r * dim + i], box->xmin, box->xmax, m);
    long by = bin_of(x[r * dim + j], box->ymin, box->ymax, m);
    if (bx < 0 || by < 0) continue;
    double *cell = &t[(m - 1 - (size_t)by) * m + (size_t)bx];
    if (++*cell > top) top = *cell;
  }
  double scale = vmax > 0 ? vmax : top > 0 ? top : 1;
  for (size_t k = 0; k < m * m; k++) t[k] /= scale;
  st = draw_image(fig, col, row, title, t, (int)m, box, scale);
  free(t);
  return st;
}

/* The finite range of k series of n values, widened by 5% (a flat one by 1). */
static int value_range(size_t n, size_t k, const double *const *y, double *lo, double *hi)
{
  *lo = INFINITY, *hi = -INFINITY;
  for (size_t s = 0; s < k; s++)
    for (size_t r = 0; y[s] && r < n; r++)
      if (isfinite(y[s][r])) *lo = fmin(*lo, y[s][r]), *hi = fmax(*hi, y[s][r]);
  if (*lo > *hi) return -1;
  double pad = *hi > *lo ? 0.05 * (*hi - *lo) : 1;
  *lo -= pad, *hi += pad;
  return 0;
}

/* The curve area of a cell: the image square widened to the colour bar's end. */
static area curve_area(const nf_plot_figure *fig, size_t col, size_t row)
{
  area a = image_area(fig, col, row);
  a.w = fig->px * (1 - LEFT_W - 0.04);
  return a;
}

/* Colours of the curves (Tableau's first four). */
static const double curve_rgb[MAX_CURVES][3] = {
  {0.122, 0.467, 0.706}, {1.0, 0.498, 0.055}, {0.173, 0.627, 0.173}, {0.839, 0.153, 0.157}};

/* The legend of k labelled curves in the top-right corner of a. */
static void legend(nf_plot_figure *fig, area a, size_t k, const char *const *labels)
{
  cairo_t *cr = fig->cr;
  double fs = TICK_FONT * fig->px, line = 1.4 * fs;
  for (size_t s = 0; s < k; s++) {
    double y = a.y + 0.8 * line + (double)s * line, x = a.x + a.w - 0.3 * fig->px;
    cairo_set_source_rgb(cr, curve_rgb[s][0], curve_rgb[s][1], curve_rgb[s][2]);
    cairo_set_line_width(cr, 2);
    cairo_move_to(cr, x, y);
    cairo_line_to(cr, x + 0.06 * fig->px, y);
    cairo_stroke(cr);
    text(cr, labels[s], fs, x + 0.08 * fig->px, y, 0, 0.5, 0);
  }
}

nf_status nf_plot_curve(nf_plot_figure *fig, size_t col, size_t row, const char *title,
                        const char *ylabel, size_t n, const double *x, size_t k,
                        const double *const *y, const char *const *labels)
{
  static const char fn[] = "nf_plot_curve";
  nf_status st = check_cell(fn, fig, col, row);
  if (st) return st;
  if (!x || !y || !n || !k || k > MAX_CURVES)
    return nf_set_error(NF_EINVAL, "%s: expected n >= 1 points of 1 to %d series (got n = %zu, "
                        "k = %zu, x or y %s)", fn, MAX_CURVES, n, k, x && y ? "given" : "NULL");
  for (size_t s = 0; s < k; s++)
    if (!y[s]) return nf_set_error(NF_EINVAL, "%s: series %zu is NULL", fn, s);
  st = check_column(fn, n, 1, x, 0);
  if (st) return st;
  double x0, x1, y0, y1;
  const double *xs[1] = {x};
  value_range(n, 1, xs, &x0, &x1);
  if (value_range(n, k, y, &y0, &y1))
    return nf_set_error(NF_EINVAL, "%s: no finite value to draw", fn);
  if (n > 1) x0 = x[0] < x[n - 1] ? x[0] : x0, x1 = x[n - 1] > x[0] ? x[n - 1] : x1;
  clear_cell(fig, col, row);
  area a = curve_area(fig, col, row);
  cairo_t *cr = fig->cr;
  cairo_save(cr);
  cairo_rectangle(cr, a.x, a.y, a.w, a.h);
  cairo_clip(cr);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  for (size_t s = 0; s < k; s++) {
    int pen = 0; /* a non-finite value lifts the pen */
    for (size_t r = 0; r < n; r++) {
      if (!isfinite(y[s][r])) {
        pen = 0;
        continue;
      }
      double px = a.x + (x[r] - x0) / (x1 - x0) * a.w, py = a.y + (y1 - y[s][r]) / (y1 - y0) * a.h;
      if (pen) cairo_line_to(cr, px, py);
      else cairo_move_to(cr, px, py), cairo_line_to(cr, px, py);
      pen = 1;
    }
    cairo_set_source_rgb(cr, curve_rgb[s][0], curve_rgb[s][1], curve_rgb[s][2]);
    cairo_set_line_width(cr, n == 1 ? 5 : 1.8);
    cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
    cairo_stroke(cr);
  }
  cairo_restore(cr);
  frame(fig, col, a, x0, x1, y0, y1, title);
  double fs = TICK_FONT * fig->px;
  text(cr, "iteration", fs, a.x + a.w / 2, a.y + a.h + 0.065 * fig->px, 0.5, 0, 0);
  if (ylabel)
    text(cr, ylabel, fs, (double)col * fig->px + 0.2 * fs, a.y + a.h / 2, 0.5, 0, -1.5707963267948966);
  if (labels) legend(fig, a, k, labels);
  return NF_OK;
}

/* The curve CSV's header columns, and its rows. */
typedef struct curve_csv {
  char *names[16];
  size_t n_cols, n, cap;
  double *v; /* n x n_cols */
} curve_csv;

static void curve_csv_free(curve_csv *c)
{
  for (size_t k = 0; k < c->n_cols; k++) free(c->names[k]);
  free(c->v);
}

/* Reads the trainer's CSV at path into c. */
static nf_status read_curve_csv(const char *fn, const char *path, curve_csv *c)
{
  memset(c, 0, sizeof *c);
  FILE *f = fopen(path, "r");
  if (!f) return nf_set_error(NF_EIO, "%s: %s: cannot open: %s", fn, path, strerror(errno));
  char line[4096];
  nf_status st = NF_OK;
  if (!fgets(line, sizeof line, f)) st = nf_set_error(NF_EFORMAT, "%s: %s: empty file", fn, path);
  for (char *p = line, *tok; !st && (tok = strtok(p, ",\r\n")); p = NULL) {
    if (c->n_cols == 16) st = nf_set_error(NF_EFORMAT, "%s: %s: more than 16 columns", fn, path);
    else if (!(c->names[c->n_cols++] = strdup(tok))) st = nf_set_error(NF_ENOMEM, "%s: no memory", fn);
  }
  for (size_t ln = 2; !st && fgets(line, sizeof line, f); ln++) {
    if (c->n == c->cap) {
      size_t cap = c->cap ? 2 * c->cap : 64;
      double *v = realloc(c->v, cap * c->n_cols * sizeof *v);
      if (!v) st = nf_set_error(NF_ENOMEM, "%s: out of memory", fn);
      else c->v = v, c->cap = cap;
    }
    char *p = line;
    for (size_t k = 0; !st && k < c->n_cols; k++) {
      char *end;
      c->v[c->n * c->n_cols + k] = strtod(p, &end);
      if (end == p || (*end != ',' && k + 1 < c->n_cols) || (k + 1 == c->n_cols && *end != '\n' && *end))
        st = nf_set_error(NF_EFORMAT, "%s: %s: line %zu: expected %zu comma-separated numbers",
                          fn, path, ln, c->n_cols);
      p = end + 1;
    }
    c->n++;
  }
  if (!st && ferror(f)) st = nf_set_error(NF_EIO, "%s: %s: read error", fn, path);
  if (!st && !c->n) st = nf_set_error(NF_EFORMAT, "%s: %s: no curve points", fn, path);
  fclose(f);
  if (st) curve_csv_free(c);
  return st;
}

/* Column `name` of c copied into out (c->n values); -1 if there is none. */
static int csv_column(const curve_csv *c, const char *name, double *out)
{
  for (size_t k = 0; k < c->n_cols; k++)
    if (!strcmp(c->names[k], name)) {
      for (size_t r = 0; r < c->n; r++) out[r] = c->v[r * c->n_cols + k];
      return 0;
    }
  return -1;
}

nf_status nf_plot_curve_csv(nf_plot_figure *fig, size_t col, size_t row, const char *title,
                            const char *path, const char *what)
{
  static const char fn[] = "nf_plot_curve_csv";
  static const char *const cols[3][2] = {
    {"train_loss", "val_loss"}, {"nfe_forward", "nfe_backward"}, {"ess", NULL}};
  static const char *const whats[3] = {"loss", "nfe", "ess"};
  static const char *const ylabels[3] = {"loss (nats)", "evaluations per step", "ESS per sample"};
  static const char *const legends[3][2] = {
    {"train", "validation"}, {"forward", "backward"}, {"ESS", NULL}};
  nf_status st = check_cell(fn, fig, col, row);
  if (st) return st;
  if (!path || !what) return nf_set_error(NF_EINVAL, "%s: path or what is NULL", fn);
  int w = 0;
  while (w < 3 && strcmp(what, whats[w])) w++;
  if (w == 3) return nf_set_error(NF_EINVAL, "%s: unknown curve '%s' (expected loss, nfe or ess)",
                                  fn, what);
  curve_csv c;
  if ((st = read_curve_csv(fn, path, &c))) return st;
  size_t k = cols[w][1] ? 2 : 1;
  double *v = malloc(3 * c.n * sizeof *v);
  if (!v) st = nf_set_error(NF_ENOMEM, "%s: out of memory", fn);
  if (!st && csv_column(&c, "iter", v))
    st = nf_set_error(NF_EFORMAT, "%s: %s: no column iter", fn, path);
  for (size_t s = 0; !st && s < k; s++)
    if (csv_column(&c, cols[w][s], v + (s + 1) * c.n))
      st = nf_set_error(NF_EFORMAT, "%s: %s: no column %s (the run %s)", fn, path, cols[w][s],
                        w == 1 ? "was not a CNF's" : w == 2 ? "had no target" : "wrote another format");
  const double *y[2] = {v + c.n, v + 2 * c.n};
  if (!st) st = nf_plot_curve(fig, col, row, title, ylabels[w], c.n, v, k, y, legends[w]);
  free(v);
  curve_csv_free(&c);
  return st;
}

/* The q-quantile of n values (sorted in place). */
static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Range of column k of the n rows (of dim) x: its 0.5% to 99.5% quantiles
   widened by 10% on each side; tmp holds n values. */
static void robust_range(size_t n, size_t dim, const double *x, size_t k, double *tmp,
                         double *lo, double *hi)
{
  for (size_t r = 0; r < n; r++) tmp[r] = x[r * dim + k];
  qsort(tmp, n, sizeof *tmp, cmp_double);
  double a = tmp[(size_t)(0.005 * (double)(n - 1))], b = tmp[(size_t)(0.995 * (double)(n - 1))];
  double pad = b > a ? 0.1 * (b - a) : 1;
  *lo = a - pad, *hi = b + pad;
}

/* A 1-D panel: the marginal histograms of column k of the data (filled) and
   samples (a line), as densities over [lo, hi]. */
static nf_status marginal(nf_plot_figure *fig, size_t col, size_t row, const char *title,
                          size_t dim, size_t k, size_t n_s, const double *s, size_t n_d,
                          const double *d, double lo, double hi)
{
  enum { BINS = 40 };
  double h[2][BINS] = {{0}}, top = 0;
  const double *src[2] = {d, s};
  size_t cnt[2] = {n_d, n_s};
  for (int w = 0; w < 2; w++) {
    for (size_t r = 0; r < cnt[w]; r++) {
      long b = bin_of(src[w][r * dim + k], lo, hi, BINS);
      if (b >= 0) h[w][b] += BINS / (hi - lo) / (double)cnt[w];
    }
    for (int b = 0; b < BINS; b++) top = fmax(top, h[w][b]);
  }
  clear_cell(fig, col, row);
  area a = image_area(fig, col, row);
  cairo_t *cr = fig->cr;
  top = top > 0 ? 1.1 * top : 1;
  for (int w = 0; w < 2; w++) {
    cairo_move_to(cr, a.x, a.y + a.h);
    for (int b = 0; b < BINS; b++) {
      double y = a.y + a.h * (1 - h[w][b] / top);
      cairo_line_to(cr, a.x + a.w * b / BINS, y);
      cairo_line_to(cr, a.x + a.w * (b + 1) / BINS, y);
    }
    cairo_line_to(cr, a.x + a.w, a.y + a.h);
    if (w == 0) {
      cairo_set_source_rgba(cr, 0.267, 0.005, 0.329, 0.35); /* viridis' first colour */
      cairo_fill(cr);
    } else {
      cairo_set_source_rgb(cr, 0.122, 0.62, 0.537); /* viridis at one half */
      cairo_set_line_width(cr, 1.8);
      cairo_stroke(cr);
    }
  }
  frame(fig, col, a, lo, hi, 0, top, title);
  return NF_OK;
}

nf_status nf_plot_corner(nf_plot_figure *fig, size_t col, size_t row, size_t dim, size_t n_s,
                         const double *samples, size_t n_d, const double *data,
                         const char *const *names)
{
  static const char fn[] = "nf_plot_corner";
  nf_status st = check_cell(fn, fig, col, row);
  if (st) return st;
  if (dim < 2 || col + dim > fig->cols || row + dim > fig->rows)
    return nf_set_error(NF_EINVAL, "%s: %zu x %zu panels from (col %zu, row %zu) do not fit the "
                        "%zu x %zu figure (dim >= 2)", fn, dim, dim, col, row, fig->cols, fig->rows);
  for (size_t k = 0; !st && k < dim; k++) {
    st = check_column(fn, n_s, dim, samples, k);
    if (!st) st = check_column(fn, n_d, dim, data, k);
  }
  if (st) return st;
  double *lo = malloc(dim * sizeof *lo), *hi = malloc(dim * sizeof *hi),
         *tmp = malloc(n_d * sizeof *tmp);
  if (!lo || !hi || !tmp) st = nf_set_error(NF_ENOMEM, "%s: out of memory", fn);
  for (size_t k = 0; !st && k < dim; k++) robust_range(n_d, dim, data, k, tmp, &lo[k], &hi[k]);
  for (size_t r = 0; !st && r < dim; r++)
    for (size_t c = 0; !st && c < dim; c++) {
      char title[96], nr[24], nc[24];
      snprintf(nr, sizeof nr, "x%zu", r + 1);
      snprintf(nc, sizeof nc, "x%zu", c + 1);
      const char *a = names ? names[c] : nc, *b = names ? names[r] : nr;
      nf_plot_box box = {lo[c], hi[c], lo[r], hi[r]};
      if (r == c) {
        snprintf(title, sizeof title, "%s", a);
        st = marginal(fig, col + c, row + r, title, dim, r, n_s, samples, n_d, data, lo[r], hi[r]);
        continue;
      }
      snprintf(title, sizeof title, "%s: %s vs %s", r > c ? "samples" : "data", b, a);
      st = nf_plot_hist2d(fig, col + c, row + r, title, r > c ? n_s : n_d, dim,
                          r > c ? samples : data, c, r, &box, 48, 0);
    }
  free(lo), free(hi), free(tmp);
  return st;
}

/* cairo's PNG writer's sink: fwrite to the FILE in closure. */
static cairo_status_t write_to_file(void *closure, const unsigned char *data, unsigned int len)
{
  return fwrite(data, 1, len, closure) == len ? CAIRO_STATUS_SUCCESS : CAIRO_STATUS_WRITE_ERROR;
}

nf_status nf_plot_write_png(const nf_plot_figure *fig, const char *path)
{
  static const char fn[] = "nf_plot_write_png";
  if (!fig || !path || !*path) return nf_set_error(NF_EINVAL, "%s: NULL figure or path", fn);
  size_t len = strlen(path);
  char *tmp = malloc(len + 8);
  if (!tmp) return nf_set_error(NF_ENOMEM, "%s: out of memory", fn);
  memcpy(tmp, path, len);
  memcpy(tmp + len, ".XXXXXX", 8);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    nf_status st = nf_set_error(NF_EIO, "%s: %s: cannot create a file there: %s", fn, path,
                                strerror(errno));
    free(tmp);
    return st;
  }
  fchmod(fd, 0644); /* mkstemp's 0600 would hide the picture from others */
  FILE *f = fdopen(fd, "wb");
  const char *what = NULL;
  int err = 0;
  cairo_surface_flush(fig->surface);
  if (!f) what = "fdopen", err = errno, close(fd);
  else if (cairo_surface_write_to_png_stream(fig->surface, write_to_file, f) != CAIRO_STATUS_SUCCESS)
    what = "write", err = errno;
  if (f && fflush(f) && !what) what = "write", err = errno;
  if (f && !what && fsync(fileno(f))) what = "fsync", err = errno;
  if (f && fclose(f) && !what) what = "close", err = errno;
  if (!what && rename(tmp, path)) what = "rename", err = errno;
  nf_status st = NF_OK;
  if (what) {
    unlink(tmp);
    st = nf_set_error(NF_EIO, "%s: %s: %s failed: %s", fn, path, what,
                      err ? strerror(err) : "cairo could not encode the PNG");
  }
  free(tmp);
  return st;
}
