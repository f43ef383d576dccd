/* loop.c: the training loop and evaluation. Mini-batches are drawn from a per-epoch seeded
 * shuffle (the last partial batch is kept), so a run with the same seed and thread count is
 * repeatable. Loss and accuracy are computed in double. */
#include <math.h>

#include "../ops/ops.h"
#include "train.h"

static int argmax(const float *v, int k) {
    int best = 0;
    for (int j = 1; j < k; j++)
        if (v[j] > v[best]) best = j;
    return best;
}

double evaluate(Net *net, const Dataset *d, const int *idx, int n, const float *mean, const float *std, int batch) {
    if (!idx) n = d->n;
    if (n <= 0) return 0.0;
    if (batch < 1) batch = 256;
    size_t img = (size_t)d->c * d->h * d->w;
    float *x = xalloc_aligned((size_t)batch * img * sizeof(float));
    int *y = xmalloc((size_t)batch * sizeof(int));
    int *ids = xmalloc((size_t)batch * sizeof(int));
    long correct = 0;
    for (int s = 0; s < n; s += batch) {
        int b = NASC_MIN(batch, n - s);
        for (int j = 0; j < b; j++) ids[j] = idx ? idx[s + j] : s + j;
        dataset_batch(d, ids, b, mean, std, NULL, NULL, x, y);
        const float *logits = net_forward(net, x, b, 0);
        for (int j = 0; j < b; j++) correct += argmax(logits + (size_t)j * net->classes, net->classes) == y[j];
    }
    free(x);
    free(y);
    free(ids);
    return (double)correct / n;
}

int train_run(Net *net, const Dataset *train, const int *train_idx, int ntrain, const Dataset *val,
              const int *val_idx, int nval, const float *mean, const float *std, const TrainConfig *cfg,
              TrainResult *res, Err *e) {
    memset(res, 0, sizeof *res);
    res->val_acc = -1;
    int B = cfg->batch;
    if (ntrain < 1) {
        err_set(e, "no training images");
        return NASC_ERR;
    }
    if (B > ntrain) B = ntrain;
    const Net *t = cfg->teacher;
    if (t && (t->classes != net->classes || t->in_c != net->in_c || t->in_h != net->in_h || t->in_w != net->in_w)) {
        err_set(e, "the teacher takes %dx%dx%d inputs and has %d classes but the student takes %dx%dx%d and has %d",
                t->in_c, t->in_h, t->in_w, t->classes, net->in_c, net->in_h, net->in_w, net->classes);
        return NASC_ERR;
    }
    long steps_per_epoch = (ntrain + B - 1) / B;
    Schedule sched = cfg->sched;
    if (sched.total_steps <= 0) sched.total_steps = steps_per_epoch * cfg->epochs;
    Optim opt;
    optim_init(&opt, &cfg->opt, net->nparams);
    size_t img = (size_t)train->c * train->h * train->w;
    float *x = xalloc_aligned((size_t)B * img * sizeof(float));
    int *y = xmalloc((size_t)B * sizeof(int));
    int k = net->classes;
    float *probs = xmalloc((size_t)B * k * sizeof(float));
    float *dlogits = xmalloc((size_t)B * k * sizeof(float));
    Net *teacher = cfg->teacher;
    float *kd_ps = NULL, *kd_pt = NULL, *kd_tl = NULL;
    if (teacher) {
        kd_ps = xmalloc((size_t)B * k * sizeof(float));
        kd_pt = xmalloc((size_t)B * k * sizeof(float));
        kd_tl = xmalloc((size_t)B * k * sizeof(float));
    }
    int *order = xmalloc((size_t)ntrain * sizeof(int));
    memcpy(order, train_idx, (size_t)ntrain * sizeof(int));
    Rng rng;
    rng_seed(&rng, cfg->seed);
    rng_seed(&net->rng, cfg->seed ^ 0xd50u);
    double t0 = now_seconds();
    long gstep = 0;
    int rc = NASC_OK;
    for (int ep = 1; ep <= cfg->epochs && rc == NASC_OK; ep++) {
        rng_shuffle_int(&rng, order, ntrain);
        double loss_sum = 0;
        long correct = 0, seen = 0;
        for (long s = 0; s < steps_per_epoch; s++) {
            int b = (int)NASC_MIN((long)B, ntrain - s * B);
            dataset_batch(train, order + s * B, b, mean, std, &cfg->aug, &rng, x, y);
            double kd_loss = 0;
            if (teacher) {
                const float *tl = net_forward(teacher, x, b, 0);
                memcpy(kd_tl, tl, (size_t)b * k * sizeof(float));
            }
            const float *logits = net_forward(net, x, b, 1);
            double loss = xent_forward_ref(probs, logits, y, b, k, cfg->label_smoothing);
            if (teacher) {
                kd_loss = kd_forward_ref(kd_ps, kd_pt, logits, kd_tl, b, k, cfg->kd_temperature);
                loss = (1.0 - cfg->kd_alpha) * loss + cfg->kd_alpha * kd_loss;
            }
            if (!isfinite(loss)) {
                err_set(e,
                        "training diverged: the loss became %s at epoch %d, step %ld (learning rate %g); "
                        "try a lower --lr",
                        isnan(loss) ? "NaN" : "infinite", ep, s + 1, (double)sched_lr(&sched, gstep));
                rc = NASC_ERR;
                break;
            }
            for (int j = 0; j < b; j++) correct += argmax(logits + (size_t)j * k, k) == y[j];
            memset(dlogits, 0, (size_t)b * k * sizeof(float));
            xent_backward_ref(dlogits, probs, y, b, k, cfg->label_smoothing, teacher ? 1.0f - cfg->kd_alpha : 1.0f);
            if (teacher) kd_backward_ref(dlogits, kd_ps, kd_pt, b, k, cfg->kd_temperature, cfg->kd_alpha);
            net_zero_grad(net);
            net_backward(net, dlogits);
            float lr = sched_lr(&sched, gstep);
            optim_step(&opt, net->params, net->grads, lr);
            gstep++;
            loss_sum += loss * b;
            seen += b;
            if (cfg->on_step) {
                TrainProgress p = {ep, cfg->epochs, s + 1, steps_per_epoch, loss_sum / seen, (double)correct / seen, lr,
                                   now_seconds() - t0};
                cfg->on_step(cfg->ctx, &p);
            }
        }
        if (rc != NASC_OK) break;
        res->train_loss = loss_sum / seen;
        res->train_acc = (double)correct / seen;
        if (nval > 0) res->val_acc = evaluate(net, val, val_idx, nval, mean, std, 512);
        if (cfg->on_epoch) {
            TrainProgress p = {ep,  cfg->epochs, steps_per_epoch, steps_per_epoch, res->train_loss, res->train_acc,
                               sched_lr(&sched, gstep > 0 ? gstep - 1 : 0), now_seconds() - t0};
            cfg->on_epoch(cfg->ctx, &p, nval > 0 ? res->val_acc : -1);
        }
    }
    res->seconds = now_seconds() - t0;
    res->steps = gstep;
    optim_free(&opt);
    free(x);
    free(y);
    free(probs);
    free(dlogits);
    free(kd_ps);
    free(kd_pt);
    free(kd_tl);
    free(order);
    return rc;
}

void train_bn_recalibrate(Net *net, const Dataset *d, const int *idx, int n, const float *mean, const float *std,
                          int batches, int batch, uint64_t seed) {
    if (n < 1 || batches < 1 || net->nbuffers == 0) return;
    if (batch > n) batch = n;
    size_t img = (size_t)d->c * d->h * d->w, nb = net->nbuffers;
    float *x = xalloc_aligned((size_t)batch * img * sizeof(float));
    int *y = xmalloc((size_t)batch * sizeof(int)), *ids = xmalloc((size_t)batch * sizeof(int));
    float *old = xmalloc(nb * sizeof(float));
    double *avg = xcalloc(nb, sizeof(double));
    Rng rng;
    rng_seed(&rng, seed);
    /* net.c's BN updates r <- (1 - m) r + m b with m = 0.1: recover each batch's b from the
     * update and average the batches equally. */
    const double m = 0.1;
    for (int k = 1; k <= batches; k++) {
        for (int j = 0; j < batch; j++) ids[j] = idx ? idx[rng_below(&rng, (uint64_t)n)] : (int)rng_below(&rng, (uint64_t)n);
        dataset_batch(d, ids, batch, mean, std, NULL, NULL, x, y);
        memcpy(old, net->buffers, nb * sizeof(float));
        net_forward(net, x, batch, 1);
        for (size_t i = 0; i < nb; i++) {
            double b = ((double)net->buffers[i] - (1 - m) * old[i]) / m;
            avg[i] += (b - avg[i]) / k;
        }
    }
    for (size_t i = 0; i < nb; i++) net->buffers[i] = (float)avg[i];
    free(x);
    free(y);
    free(ids);
    free(old);
    free(avg);
}
