/* tests/plot_helpers.h — reading pictures back: a PNG's pixels decoded to
   viridis levels, and the brightest local maxima of a density panel. */
#ifndef NFLOW_TESTS_PLOT_HELPERS_H
#define NFLOW_TESTS_PLOT_HELPERS_H

#include <cairo.h>
#include <stddef.h>

/* The viridis level t in [0, 1] (nearest of 256) of pixel (x, y) of img,
   and the squared RGB distance (0..3*255^2) to that level's colour. */
double ph_level(cairo_surface_t *img, int x, int y, int *dist2);

/* Up to k brightest local maxima (levels >= floor, at least sep pixels
   apart) of the side x side square at (x0, y0): their pixel centres into
   px, py; returns how many. */
size_t ph_peaks(cairo_surface_t *img, int x0, int y0, int side, double floor, int sep, size_t k,
                double *px, double *py);

/* The largest distance (pixels) from each of the eight 8gaussians centres
   (4 (cos, sin)(k pi/4) / 1.414) to the nearest of the m peaks, in a panel
   of the box [-4, 4]^2 at (x0, y0) of side pixels. */
double ph_eight_centre_error(int x0, int y0, int side, size_t m, const double *px,
                             const double *py);

#endif
