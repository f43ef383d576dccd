/* data.h: datasets, splits, normalization, augmentation and mini-batches.
 *
 * A Dataset holds raw 8-bit images (N, C, H, W) and labels in memory. Sources:
 *   "fashion-mnist"          /usr/share/datasets/fashion-mnist (IDX, gzip)
 *   "fashion-mnist:DIR"      IDX files (gzip or not) in DIR, Fashion-MNIST's file names
 *   "mnist:DIR"              IDX files (gzip or not) in DIR, MNIST's file names
 *   "cifar10:DIR"            CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin)
 *   "DIR" (or "folder:DIR")  one sub-folder of PNG/JPEG images per class; if DIR has
 *                            train/ and test/ sub-folders those are the splits, else every
 *                            image is in both (and a validation split should be used).
 * Every failure (missing file, bad magic, truncated data, inconsistent sizes) returns
 * NASC_ERR with a message naming the file and the problem.
 */
#ifndef NASC_DATA_H
#define NASC_DATA_H

#include "../core/common.h"

typedef struct {
    int n, c, h, w;
    int classes;
    uint8_t *images; /* (n, c, h, w) pixel values 0..255 */
    int32_t *labels; /* (n) in [0, classes) */
    char name[64];   /* "fashion-mnist", "mnist", "cifar10", "folder" */
} Dataset;

typedef enum { SPLIT_TRAIN, SPLIT_TEST } Split;

int dataset_load(Dataset *out, const char *source, Split split, Err *e);
void dataset_free(Dataset *d);
/* Input shape and class count of a source without loading it when it is a known dataset
 * (Fashion-MNIST and MNIST 1x28x28, CIFAR-10 3x32x32, 10 classes); else from its test split. */
int dataset_shape(const char *source, int *c, int *h, int *w, int *classes, Err *e);

/* Per-channel mean and std of pixel/255 for normalization: the published constants for the
 * named datasets (Fashion-MNIST 0.2860/0.3530, MNIST 0.1307/0.3081, CIFAR-10's), computed
 * from the images otherwise. */
void dataset_norm_stats(const Dataset *d, float *mean, float *std);

/* A seeded split of [0, n) into a training part and `nval` validation indices (both sorted
 * ascending). Caller frees both arrays. */
void dataset_split(int n, int nval, uint64_t seed, int **train_idx, int *ntrain, int **val_idx);

typedef struct {
    int crop_pad; /* random crop after zero-padding by this many pixels (0 = off) */
    int flip;     /* random horizontal flip with probability 1/2 */
} Augment;

/* Fill x (n, c, h, w) with the normalized images idx[0..n) ((pixel/255 - mean)/std), applying
 * the augmentation with rng (padding is pixel value 0, as torchvision's RandomCrop does),
 * and y (n) with their labels. rng may be NULL when aug is all zero. */
void dataset_batch(const Dataset *d, const int *idx, int n, const float *mean, const float *std,
                   const Augment *aug, Rng *rng, float *x, int *y);

#endif
