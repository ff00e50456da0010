/* tests/plot_helpers.c — see plot_helpers.h. */
#include "plot_helpers.h"

#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "nflow/plot.h"

double ph_level(cairo_surface_t *img, int x, int y, int *dist2)
{
  const unsigned char *row = cairo_image_surface_get_data(img) +
                             (size_t)y * cairo_image_surface_get_stride(img);
  uint32_t p;
  memcpy(&p, row + 4 * (size_t)x, 4);
  int r = (p >> 16) & 255, g = (p >> 8) & 255, b = p & 255, best = 1 << 30, at = 0;
  for (int k = 0; k < 256; k++) {
    double rgb[3];
    nf_plot_viridis(k / 255.0, rgb);
    int dr = r - (int)lround(255 * rgb[0]), dg = g - (int)lround(255 * rgb[1]),
        db = b - (int)lround(255 * rgb[2]), d = dr * dr + dg * dg + db * db;
    if (d < best) best = d, at = k;
  }
  if (dist2) *dist2 = best;
  return at / 255.0;
}

typedef struct cand {
  double x, y, t;
} cand;

static int by_level(const void *a, const void *b)
{
  double s = ((const cand *)a)->t, t = ((const cand *)b)->t;
  return (s < t) - (s > t);
}

size_t ph_peaks(cairo_surface_t *img, int x0, int y0, int side, double floor, int sep, size_t k,
                double *px, double *py)
{
  enum { CAP = 20000 };
  static cand c[CAP];
  size_t n = 0, m = 0;
  cairo_surface_flush(img);
  for (int y = y0 + 1; y < y0 + side - 1; y++)
    for (int x = x0 + 1; x < x0 + side - 1 && n < CAP; x++) {
      double t = ph_level(img, x, y, NULL);
      int is_max = t >= floor;
      for (int dy = -1; dy <= 1 && is_max; dy++)
        for (int dx = -1; dx <= 1; dx++)
          if ((dx || dy) && ph_level(img, x + dx, y + dy, NULL) > t) is_max = 0;
      if (is_max) c[n++] = (cand){x + 0.5, y + 0.5, t};
    }
  qsort(c, n, sizeof *c, by_level);
  for (size_t i = 0; i < n && m < k; i++) {
    size_t j = 0;
    while (j < m && hypot(px[j] - c[i].x, py[j] - c[i].y) >= sep) j++;
    if (j == m) px[m] = c[i].x, py[m] = c[i].y, m++;
  }
  return m;
}

double ph_eight_centre_error(int x0, int y0, int side, size_t m, const double *px,
                             const double *py)
{
  double worst = 0;
  for (int c = 0; c < 8; c++) {
    double a = 3.14159265358979323846 / 4 * c;
    double u = x0 + side * (4 * cos(a) / 1.414 + 4) / 8, v = y0 + side * (4 - 4 * sin(a) / 1.414) / 8;
    double best = INFINITY;
    for (size_t i = 0; i < m; i++) best = fmin(best, hypot(px[i] - u, py[i] - v));
    worst = fmax(worst, best);
  }
  return worst;
}
