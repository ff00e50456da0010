/* tests/test_plot.c — libnflow-plot: pictures decoded back from the PNG and
   checked on their pixels (sizes, colour bar, histogram mass, density peaks),
   and the refusals (bad sizes, NaN, unwritable paths). */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nflow.h"
#include "nflow/plot.h"
#include "plot_helpers.h"

#define PX 300

static char dir[] = "/tmp/nflow-plot-test.XXXXXX";

static cairo_surface_t *read_back(const char *path)
{
  cairo_surface_t *img = cairo_image_surface_create_from_png(path);
  ck_assert_int_eq(cairo_surface_status(img), CAIRO_STATUS_SUCCESS);
  return img;
}

static size_t files_in(const char *d)
{
  size_t n = 0;
  DIR *h = opendir(d);
  for (struct dirent *e; h && (e = readdir(h));) n += e->d_name[0] != '.';
  if (h) closedir(h);
  return n;
}

/* viridis runs from dark purple #440154 to yellow #fde725 (matplotlib's ends,
   within 3/255), its lightness rising all the way (Rec. 709 luma, 256 steps). */
START_TEST(viridis_ends_and_rising_lightness)
{
  double a[3], b[3];
  nf_plot_viridis(0, a);
  nf_plot_viridis(1, b);
  const double lo[3] = {68, 1, 84}, hi[3] = {253, 231, 37};
  for (int k = 0; k < 3; k++) {
    ck_assert_double_le(fabs(255 * a[k] - lo[k]), 3);
    ck_assert_double_le(fabs(255 * b[k] - hi[k]), 3);
  }
  double prev = -1;
  for (int i = 0; i < 256; i++) {
    double c[3];
    nf_plot_viridis(i / 255.0, c);
    double luma = 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    ck_assert_double_gt(luma, prev);
    prev = luma;
  }
}
END_TEST

/* A 2-D histogram panel with a fixed colour scale: the counts decoded from
   the bins' colours sum to the points inside the box (within 1.5%), and half
   the points give half the total (within 2%). The colour bar's top pixel is
   yellow and its bottom pixel dark purple; the PNG is 2 x 1 panels. */
START_TEST(histogram_intensity_follows_the_counts)
{
  nf_rng rng;
  nf_rng_seed(&rng, 7);
  nf_dataset *ds = NULL;
  ck_assert_int_eq(nf_toy_sample("8gaussians", 4000, &rng, &ds), NF_OK);
  nf_plot_figure *fig = nf_plot_figure_new(2, 1, PX);
  ck_assert_ptr_nonnull(fig);
  nf_plot_box box = {-4, 4, -4, 4};
  const size_t bins = 40;
  const double vmax = 60;
  ck_assert_int_eq(nf_plot_hist2d(fig, 0, 0, "all", ds->n, 2, ds->x, 0, 1, &box, bins, vmax), NF_OK);
  ck_assert_int_eq(nf_plot_hist2d(fig, 1, 0, "half", ds->n / 2, 2, ds->x, 0, 1, &box, bins, vmax),
                   NF_OK);
  char path[256];
  snprintf(path, sizeof path, "%s/hist.png", dir);
  ck_assert_int_eq(nf_plot_write_png(fig, path), NF_OK);
  size_t inside[2] = {0, 0};
  for (size_t r = 0; r < ds->n; r++)
    for (int h = 0; h < 2; h++)
      inside[h] += (h == 0 || r < ds->n / 2) && fabs(ds->x[2 * r]) < 4 && fabs(ds->x[2 * r + 1]) < 4;
  cairo_surface_t *img = read_back(path);
  int x0, y0, side;
  ck_assert_int_eq(nf_plot_image_area(fig, 0, 0, &x0, &y0, &side), NF_OK);
  ck_assert_int_eq(cairo_image_surface_get_width(img), 2 * PX);
  ck_assert_int_eq(cairo_image_surface_get_height(img), y0 + side + (int)lround(0.11 * PX));
  double total[2] = {0, 0};
  for (int h = 0; h < 2; h++) {
    int x, y, s;
    nf_plot_image_area(fig, (size_t)h, 0, &x, &y, &s);
    for (size_t by = 0; by < bins; by++)
      for (size_t bx = 0; bx < bins; bx++) {
        int d2;
        double t = ph_level(img, x + (int)((bx + 0.5) * s / bins), y + (int)((by + 0.5) * s / bins), &d2);
        ck_assert_int_le(d2, 12); /* every bin is a viridis colour */
        total[h] += t * vmax;
      }
    ck_assert_double_le(fabs(total[h] - (double)inside[h]), 0.015 * (double)inside[h]);
  }
  ck_assert_double_le(fabs(total[1] / total[0] - (double)inside[1] / (double)inside[0]), 0.02);
  /* the colour bar, right of the image */
  int bar_x = x0 + side + (int)lround(0.03 * PX) + 3, d2;
  ck_assert_double_ge(ph_level(img, bar_x, y0 + 1, &d2), 0.99);
  ck_assert_double_le(ph_level(img, bar_x, y0 + side - 2, &d2), 0.01);
  cairo_surface_destroy(img);
  nf_plot_figure_free(fig);
  nf_dataset_free(ds);
}
END_TEST

/* The density panel of the eight-Gaussian mixture (as a target: exact) has
   its eight brightest local maxima within 2 pixels of the eight centres. */
START_TEST(density_peaks_at_the_eight_centres)
{
  double w[8], mu[16], sd[16];
  for (int k = 0; k < 8; k++) {
    double a = 3.14159265358979323846 / 4 * k;
    w[k] = 1.0 / 8;
    mu[2 * k] = 4 * cos(a) / 1.414, mu[2 * k + 1] = 4 * sin(a) / 1.414;
    sd[2 * k] = sd[2 * k + 1] = 0.5 / 1.414;
  }
  nf_target *t = nf_target_mixture(2, 8, w, mu, sd);
  nf_plot_figure *fig = nf_plot_figure_new(1, 1, PX);
  nf_plot_box box = {-4, 4, -4, 4};
  ck_assert_int_eq(nf_plot_target(fig, 0, 0, "mixture", t, &box), NF_OK);
  char path[256];
  snprintf(path, sizeof path, "%s/density.png", dir);
  ck_assert_int_eq(nf_plot_write_png(fig, path), NF_OK);
  cairo_surface_t *img = read_back(path);
  int x0, y0, side;
  nf_plot_image_area(fig, 0, 0, &x0, &y0, &side);
  double px[8], py[8];
  size_t m = ph_peaks(img, x0, y0, side, 0.5, side / 10, 8, px, py);
  ck_assert_uint_eq(m, 8);
  double err = ph_eight_centre_error(x0, y0, side, m, px, py);
  ck_assert_double_le(err, 2.0);
  cairo_surface_destroy(img);
  nf_plot_figure_free(fig);
  nf_target_free(t);
}
END_TEST

/* Bad sizes, cells, boxes, NaN data, wrong dimensions and unwritable paths
   are refused with a status; a failed write leaves no file behind. */
START_TEST(refusals)
{
  ck_assert_ptr_null(nf_plot_figure_new(0, 1, PX));
  ck_assert_int_eq(nf_last_status(), NF_EINVAL);
  ck_assert_ptr_null(nf_plot_figure_new(1, 1, 10));
  ck_assert_ptr_null(nf_plot_figure_new(100, 100, PX));
  nf_plot_figure *fig = nf_plot_figure_new(2, 2, NF_PLOT_MIN_PX);
  ck_assert_ptr_nonnull(fig);
  double x[6] = {0, 1, NAN, 2, 1, 1};
  nf_plot_box box = {-1, 1, -1, 1}, flat = {0, 0, -1, 1}, nan_box = {NAN, 1, -1, 1};
  ck_assert_int_eq(nf_plot_hist2d(fig, 2, 0, "t", 1, 2, x, 0, 1, &box, 0, 0), NF_EINVAL);
  ck_assert_int_eq(nf_plot_hist2d(fig, 0, 0, "t", 1, 2, x, 0, 1, &flat, 0, 0), NF_EINVAL);
  ck_assert_int_eq(nf_plot_hist2d(fig, 0, 0, "t", 1, 2, x, 0, 1, &nan_box, 0, 0), NF_EINVAL);
  ck_assert_int_eq(nf_plot_hist2d(fig, 0, 0, "t", 3, 2, x, 0, 1, &box, 0, 0), NF_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 1"));
  ck_assert_int_eq(nf_plot_hist2d(fig, 0, 0, "t", 1, 2, x, 0, 2, &box, 0, 0), NF_EINVAL);
  ck_assert_int_eq(nf_plot_hist2d(fig, 0, 0, "t", 1, 2, x, 0, 1, &box, 0, NAN), NF_EINVAL);
  ck_assert_int_eq(nf_plot_hist2d(fig, 0, 0, "t", 0, 2, x, 0, 1, &box, 0, 0), NF_EINVAL);
  nf_target *well3 = nf_target_phi4(2, -4, 8); /* on R^4 */
  ck_assert_int_eq(nf_plot_target(fig, 0, 0, "t", well3, &box), NF_EDIM);
  nf_target_free(well3);
  ck_assert_int_eq(nf_plot_corner(fig, 1, 1, 2, 3, x, 3, x, NULL), NF_EINVAL); /* does not fit */
  ck_assert_int_eq(nf_plot_corner(fig, 0, 0, 2, 3, x, 3, x, NULL), NF_ENONFINITE);
  const double *ys[1] = {x};
  ck_assert_int_eq(nf_plot_curve(fig, 0, 0, "t", "y", 3, x + 3, 5, ys, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_plot_curve_csv(fig, 0, 0, "t", "/nonexistent/curve.csv", "loss"), NF_EIO);
  ck_assert_int_eq(nf_plot_write_png(fig, "/nonexistent/dir/out.png"), NF_EIO);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "/nonexistent/dir/out.png"));
  /* a folder in the way: the rename fails, no temporary is left, the folder stays */
  char blocked[256];
  snprintf(blocked, sizeof blocked, "%s/blocked", dir);
  ck_assert_int_eq(mkdir(blocked, 0700), 0);
  char inner[300];
  snprintf(inner, sizeof inner, "%s/keep", blocked);
  FILE *f = fopen(inner, "w");
  ck_assert_ptr_nonnull(f);
  fclose(f);
  size_t before = files_in(dir);
  ck_assert_int_eq(nf_plot_write_png(fig, blocked), NF_EIO);
  ck_assert_uint_eq(files_in(dir), before);
  ck_assert_uint_eq(files_in(blocked), 1);
  unlink(inner);
  rmdir(blocked);
  nf_plot_figure_free(fig);
}
END_TEST

/* A training curve from a trainer CSV: the train line (blue) lies in the
   curve area; a CSV without the nfe columns is refused naming the column. */
START_TEST(curve_from_csv)
{
  char path[256], png[256];
  snprintf(path, sizeof path, "%s/curve.csv", dir);
  snprintf(png, sizeof png, "%s/curve.png", dir);
  FILE *f = fopen(path, "w");
  fputs("iter,seconds,train_loss,val_loss\n", f);
  for (int i = 1; i <= 50; i++) fprintf(f, "%d,%g,%g,%s\n", 10 * i, 0.1 * i, 3 + 5.0 / i, i % 5 ? "nan" : "3.5");
  fclose(f);
  nf_plot_figure *fig = nf_plot_figure_new(1, 1, PX);
  ck_assert_int_eq(nf_plot_curve_csv(fig, 0, 0, "loss", path, "loss"), NF_OK);
  ck_assert_int_eq(nf_plot_curve_csv(fig, 0, 0, "nfe", path, "nfe"), NF_EFORMAT);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "nfe_forward"));
  ck_assert_int_eq(nf_plot_write_png(fig, png), NF_OK);
  cairo_surface_t *img = read_back(png);
  int x0, y0, side, blue = 0;
  nf_plot_image_area(fig, 0, 0, &x0, &y0, &side);
  cairo_surface_flush(img);
  const unsigned char *d = cairo_image_surface_get_data(img);
  int stride = cairo_image_surface_get_stride(img);
  for (int y = y0; y < y0 + side; y++)
    for (int x = x0; x < x0 + side; x++) {
      const unsigned char *p = d + (size_t)y * stride + 4 * (size_t)x; /* B, G, R, A */
      blue += p[0] > 150 && p[2] < 80;
    }
  ck_assert_int_gt(blue, side); /* at least a line's worth of blue pixels */
  cairo_surface_destroy(img);
  nf_plot_figure_free(fig);
}
END_TEST

int main(void)
{
  if (!mkdtemp(dir)) return 99;
  Suite *s = suite_create("plot");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, viridis_ends_and_rising_lightness);
  tcase_add_test(tc, histogram_intensity_follows_the_counts);
  tcase_add_test(tc, density_peaks_at_the_eight_centres);
  tcase_add_test(tc, refusals);
  tcase_add_test(tc, curve_from_csv);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (getenv("NFLOW_PLOT_KEEP")) printf("pictures kept in %s\n", dir); /* to look at them */
  else if (!failed && system(cmd)) return 99;
  return failed ? 1 : 0;
}
