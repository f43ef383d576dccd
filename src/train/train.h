/* train.h: optimizers, learning-rate schedules and the training loop.
 *
 * Optimizers follow PyTorch's update rules exactly (torch.optim.SGD, Adam, AdamW) and work on
 * the flat parameter and gradient buffers of a Net, so one loop updates every tensor.
 */
#ifndef NASC_TRAIN_H
#define NASC_TRAIN_H

#include "../core/common.h"
#include "../data/data.h"
#include "../net/net.h"

typedef enum { OPT_SGD, OPT_ADAM, OPT_ADAMW, OPT_COUNT } OptKind;

typedef struct {
    OptKind kind;
    float momentum;   /* SGD */
    int nesterov;     /* SGD */
    float wd;         /* weight decay: L2 added to the gradient (SGD, Adam), decoupled (AdamW) */
    float beta1, beta2, eps; /* Adam, AdamW */
} OptConfig;

typedef struct {
    OptConfig cfg;
    size_t n;
    float *m; /* SGD momentum buffer / Adam first moment (n) */
    float *v; /* Adam second moment (n) */
    long t;   /* steps taken */
} Optim;

OptConfig optim_defaults(OptKind kind); /* momentum 0.9, wd 0, betas 0.9/0.999, eps 1e-8 */
void optim_init(Optim *o, const OptConfig *cfg, size_t n);
/* One update of params (n) from grads (n) at learning rate lr. */
void optim_step(Optim *o, float *params, const float *grads, float lr);
void optim_free(Optim *o);
const char *optim_name(OptKind k);

typedef enum { SCHED_CONST, SCHED_STEP, SCHED_COSINE, SCHED_COUNT } SchedKind;

typedef struct {
    SchedKind kind;
    float lr;          /* base learning rate */
    float lr_min;      /* cosine: final value (default 0) */
    long total_steps;  /* cosine: steps over which it anneals (including warm-up) */
    long warmup_steps; /* linear warm-up from lr/warmup_steps to lr over these first steps */
    long step_size;    /* step: multiply by gamma every step_size steps */
    float gamma;       /* step: factor (default 0.1) */
} Schedule;

/* The learning rate for 0-based optimizer step `step`. Cosine matches PyTorch's
 * CosineAnnealingLR(T_max = total_steps - warmup_steps, eta_min = lr_min) stepped once per
 * optimizer step after the warm-up. */
float sched_lr(const Schedule *s, long step);
const char *sched_name(SchedKind k);

/* ---------------------------------------------------------------- the training loop (loop.c) */
typedef struct {
    int epoch, epochs;   /* 1-based current epoch */
    long step, steps;    /* 1-based step within the epoch, steps per epoch */
    double loss;         /* running mean training loss of this epoch */
    double acc;          /* running training accuracy of this epoch */
    float lr;
    double seconds;      /* since training began */
} TrainProgress;

typedef struct {
    int epochs, batch;
    OptConfig opt;
    Schedule sched;      /* total_steps is filled in by train_run for cosine */
    float label_smoothing;
    Augment aug;
    uint64_t seed;       /* shuffling, augmentation, dropout */
    /* Knowledge distillation (Hinton et al. 2015) when teacher != NULL: the loss becomes
     * (1 - kd_alpha) CE(labels) + kd_alpha T^2 KL(softmax(teacher/T) || softmax(student/T)),
     * T = kd_temperature; the teacher (same classes) runs in eval mode on the same batch. */
    Net *teacher;
    float kd_alpha, kd_temperature;
    /* Called after every step (may be NULL) and at the end of every epoch with val_acc
     * (negative when there is no validation set). */
    void (*on_step)(void *ctx, const TrainProgress *p);
    void (*on_epoch)(void *ctx, const TrainProgress *p, double val_acc);
    void *ctx;
} TrainConfig;

typedef struct {
    double train_loss, train_acc; /* last epoch */
    double val_acc;               /* after the last epoch; -1 without a validation set */
    double seconds;
    long steps;
} TrainResult;

/* Trains net on the images train_idx[0..ntrain) of `train` (a validation subset val_idx of
 * `val` is evaluated after each epoch when nval > 0). Inputs are normalized with mean/std.
 * Returns NASC_ERR with a message if the loss becomes NaN or infinite. */
int train_run(Net *net, const Dataset *train, const int *train_idx, int ntrain, const Dataset *val,
              const int *val_idx, int nval, const float *mean, const float *std, const TrainConfig *cfg,
              TrainResult *res, Err *e);

/* Re-estimates the BN running statistics (after pruning changed what each BN sees): `batches`
 * forward passes in training mode (no backward, no update of the weights) over random batches
 * of idx[0..n) of d, with the running statistics averaged over all of them (each batch weighs
 * 1/k, k = batches seen, as PyTorch's momentum=None). */
void train_bn_recalibrate(Net *net, const Dataset *d, const int *idx, int n, const float *mean, const float *std,
                          int batches, int batch, uint64_t seed);

/* Accuracy (fraction) of net in eval mode on idx[0..n) of d (all of d when idx is NULL). */
double evaluate(Net *net, const Dataset *d, const int *idx, int n, const float *mean, const float *std, int batch);

#endif
