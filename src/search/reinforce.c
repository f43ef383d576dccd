/* reinforce.c: a learned policy trained with REINFORCE (Williams 1992), as the NASNet / ENAS
 * controllers but with the simplest policy: an independent softmax over the values of each
 * decision (logits theta[d][v], all 0 at start: the uniform distribution).
 *
 * ask samples every decision from its softmax; a member whose canonical form was already
 * asked is redrawn (up to 100 times, then a fresh uniform member), so no function is asked
 * twice. All trials run at full fidelity.
 *
 * tell updates the policy after every result (batches of one, so ask never waits):
 *   reward   r = validation accuracy; TRIAL_INFEASIBLE / TRIAL_FAILED get r = 0 (the lowest
 *              possible accuracy);
 *   baseline b = exponential moving average of r (decay 0.9, starting at the first reward);
 *   shaping    the advantage r - b is divided by a moving estimate of its standard deviation
 *              (same decay) and clipped to [-3, 3], so the learning rate does not depend on
 *              the accuracy scale (NB201 accuracies differ by a few tenths of a percent at the
 *              top, by 90 points at the bottom);
 *   update     theta[d][v] += lr * (A * (1[v = m_d] - p_dv) + beta * dH_d/dtheta[d][v]) with
 *              lr = 0.4 and an entropy bonus beta = 0.02 (H_d the entropy of decision d),
 *              i.e. ascent on A log p(m) + beta H.
 * The gradient is taken at the member actually asked (a redrawn duplicate makes it slightly
 * off-policy; harmless at these rates).
 */
#include "strategies.h"

#include <math.h>

#define RF_LR 0.4
#define RF_ENTROPY 0.02
#define RF_DECAY 0.9
#define RF_CLIP 3.0

typedef struct {
    StrSet seen;
    double *theta; /* (ndims, vmax) logits */
    int vmax;
    long told;
    double baseline, var;
} RfImpl;

static void rf_probs(const Strategy *s, const RfImpl *im, int d, double *p) {
    int c = s->space->card[d];
    const double *th = &im->theta[(size_t)d * im->vmax];
    double mx = th[0], z = 0;
    for (int v = 1; v < c; v++) mx = fmax(mx, th[v]);
    for (int v = 0; v < c; v++) z += (p[v] = exp(th[v] - mx));
    for (int v = 0; v < c; v++) p[v] /= z;
}

static void rf_sample(Strategy *s, RfImpl *im, int *m) {
    double *p = xmalloc((size_t)im->vmax * sizeof *p);
    for (int d = 0; d < s->space->ndims; d++) {
        rf_probs(s, im, d, p);
        double u = rng_uniform(&s->rng), acc = 0;
        int c = s->space->card[d], v = c - 1;
        for (int k = 0; k < c; k++)
            if (u < (acc += p[k])) {
                v = k;
                break;
            }
        m[d] = v;
    }
    free(p);
}

static int rf_ask(Strategy *s, Trial *t) {
    RfImpl *im = s->impl;
    int m[SPACE_MAX_DIMS], ok = 0;
    for (int tr = 0; tr < 100 && !ok; tr++) {
        rf_sample(s, im, m);
        ok = !strat_seen(s->space, &im->seen, m);
    }
    if (!ok && !strat_sample_unique(s, &im->seen, m, 10000)) return -1;
    char *k = strat_key(s->space, m, NULL);
    strset_add(&im->seen, k);
    free(k);
    strat_emit(s, t, m, s->cfg.max_fid);
    return 1;
}

static void rf_tell(Strategy *s, const Trial *t, TrialStatus status, double score) {
    RfImpl *im = s->impl;
    double r = status == TRIAL_OK ? score : 0.0;
    if (im->told++ == 0) {
        im->baseline = r;
        im->var = 0;
        return; /* no advantage yet */
    }
    double adv = r - im->baseline;
    im->var = RF_DECAY * im->var + (1 - RF_DECAY) * adv * adv;
    im->baseline = RF_DECAY * im->baseline + (1 - RF_DECAY) * r;
    double a = im->var > 0 ? adv / sqrt(im->var) : 0;
    a = fmax(-RF_CLIP, fmin(RF_CLIP, a));
    double *p = xmalloc((size_t)im->vmax * sizeof *p);
    for (int d = 0; d < s->space->ndims; d++) {
        int c = s->space->card[d];
        double *th = &im->theta[(size_t)d * im->vmax], h = 0;
        rf_probs(s, im, d, p);
        for (int v = 0; v < c; v++) h -= p[v] > 0 ? p[v] * log(p[v]) : 0;
        for (int v = 0; v < c; v++) {
            double g = a * ((v == t->m[d]) - p[v]);
            double gh = p[v] > 0 ? -p[v] * (log(p[v]) + h) : 0; /* dH/dtheta_v */
            th[v] += RF_LR * (g + RF_ENTROPY * gh);
        }
    }
    free(p);
}

static void rf_destroy(Strategy *s) {
    RfImpl *im = s->impl;
    strset_free(&im->seen);
    free(im->theta);
    free(im);
}

static const StrategyOps rf_ops = {"reinforce", rf_ask, rf_tell, rf_destroy};

int reinforce_init(Strategy *s, Err *e) {
    RfImpl *im = xcalloc(1, sizeof *im);
    strset_init(&im->seen);
    for (int d = 0; d < s->space->ndims; d++) im->vmax = NASC_MAX(im->vmax, s->space->card[d]);
    im->theta = xcalloc((size_t)s->space->ndims * im->vmax, sizeof *im->theta);
    s->impl = im;
    s->ops = &rf_ops;
    return NASC_OK;
}
