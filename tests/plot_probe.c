/* tests/plot_probe.c — reads a PNG the nflow tool drew (a row of cols x rows
   panels of px pixels) and prints, as key=value lines, its size against the
   layout's, and for the density panel at (col, row) over [-4, 4]^2 how many
   of its brightest local maxima it found and their largest distance (pixels)
   to the eight 8gaussians centres. Used by tests/test_cli_plot.sh. */
#include <stdio.h>
#include <stdlib.h>

#include "nflow/plot.h"
#include "plot_helpers.h"

int main(int argc, char **argv)
{
  if (argc != 7) {
    fprintf(stderr, "usage: plot_probe FILE.png COLS ROWS PX COL ROW\n");
    return 2;
  }
  size_t cols = strtoul(argv[2], NULL, 10), rows = strtoul(argv[3], NULL, 10);
  size_t col = strtoul(argv[5], NULL, 10), row = strtoul(argv[6], NULL, 10);
  nf_plot_figure *fig = nf_plot_figure_new(cols, rows, atoi(argv[4]));
  cairo_surface_t *img = cairo_image_surface_create_from_png(argv[1]);
  int x0, y0, side;
  if (!fig || cairo_surface_status(img) || nf_plot_image_area(fig, col, row, &x0, &y0, &side)) {
    fprintf(stderr, "plot_probe: cannot read %s or lay out the figure\n", argv[1]);
    return 1;
  }
  printf("width=%d\nheight=%d\nlayout_width=%zu\n", cairo_image_surface_get_width(img),
         cairo_image_surface_get_height(img), cols * (size_t)atoi(argv[4]));
  double px[8], py[8];
  size_t m = ph_peaks(img, x0, y0, side, 0.3, side / 10, 8, px, py);
  printf("peaks=%zu\npeak_error_px=%.2f\nside=%d\n", m,
         ph_eight_centre_error(x0, y0, side, m, px, py), side);
  int d2;
  double top = ph_level(img, x0 + side + (int)(0.03 * atoi(argv[4])) + 3, y0 + 1, &d2);
  double bottom = ph_level(img, x0 + side + (int)(0.03 * atoi(argv[4])) + 3, y0 + side - 2, &d2);
  printf("colorbar_top=%.3f\ncolorbar_bottom=%.3f\n", top, bottom);
  cairo_surface_destroy(img);
  nf_plot_figure_free(fig);
  return 0;
}
