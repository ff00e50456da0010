/* tests/io_fixtures.c — writes the files tests/test_io_python.sh reads with NumPy:
   FOLDER/model.safetensors (metadata data/iterations, tensors "shift" [3] and
   "scale" [2]), FOLDER/data.npy (3 x 2) and FOLDER/column.npy (3,), and
   FOLDER/data.csv with the same 3 x 2 values. Usage: io_fixtures FOLDER. */
#include <stdio.h>

#include "io/safetensors.h"
#include "nflow/dataset.h"

/* Values needing 17 digits, a negative zero and a subnormal (the Python side
   compares them bit for bit). */
static double values[] = {0.1, 1.0 / 3.0, -0.0, 1e-300, 5e-324, -2.5};

/* Writes name in folder with write_one(path); 0 on success, else prints nf_errmsg. */
static int write_in(const char *folder, const char *name, nf_status (*write_one)(const char *))
{
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", folder, name);
  if (write_one(path) == NF_OK) return 0;
  fprintf(stderr, "io_fixtures: %s\n", nf_errmsg());
  return 1;
}

/* The model file: metadata and two tensors over values. */
static nf_status write_model(const char *path)
{
  nf_meta *m = nf_meta_new();
  nf_status s = m ? nf_meta_set(m, "data", "moons.csv") : NF_ENOMEM;
  if (s == NF_OK) s = nf_meta_set(m, "iterations", "100");
  nf_tensor t[] = {{"shift", 3, values}, {"scale", 2, values + 3}};
  if (s == NF_OK) s = nf_safetensors_write(path, m, 2, t);
  nf_meta_free(m);
  return s;
}

/* values as a 3 x 2 set, written by write_set. */
static nf_status write_matrix(const char *path,
                              nf_status (*write_set)(const nf_dataset *, const char *))
{
  nf_dataset *ds = nf_dataset_view(3, 2, values);
  nf_status s = ds ? write_set(ds, path) : NF_ENOMEM;
  nf_dataset_free(ds);
  return s;
}

/* values as a 3 x 2 .npy. */
static nf_status write_data_npy(const char *path)
{
  return write_matrix(path, nf_dataset_write_npy);
}

/* values as a 3 x 2 CSV. */
static nf_status write_data_csv(const char *path)
{
  return write_matrix(path, nf_dataset_write_csv);
}

/* The first three values as a (3,) .npy. */
static nf_status write_column(const char *path) { return nf_write_column_npy(path, 3, values); }

int main(int argc, char **argv)
{
  if (argc != 2) {
    fprintf(stderr, "usage: io_fixtures FOLDER\n");
    return 2;
  }
  return write_in(argv[1], "model.safetensors", write_model) |
         write_in(argv[1], "data.npy", write_data_npy) |
         write_in(argv[1], "data.csv", write_data_csv) |
         write_in(argv[1], "column.npy", write_column);
}
