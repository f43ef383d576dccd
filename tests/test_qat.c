/* test_qat.c: quantization-aware training (src/compress/qat.c).
 *   - fake quantization of a tensor: on-grid values and 0.0 are kept exactly, the rest round to
 *     the grid, out-of-range values clip and are masked; weights round per output channel;
 *   - the hooks: a forward + backward leaves the float master weights in place (the rounded
 *     ones only live during the pass), eval mode does not move the ranges;
 *   - the point of QAT: after training with fake quantization, the int8 network built from the
 *     learned ranges (qnet_build) computes what the fake-quantized float net computed, much
 *     closer than the plain float net does.
 */
#include "../src/compress/qat.h"
#include "../src/compress/quant.h"
#include "../src/train/train.h"
#include "check.h"

static Rng rng;

static void test_fake_quant(void) {
    float scale;
    int32_t zp;
    quant_act_params(-1.0f, 3.0f, &scale, &zp);
    CHECK_CLOSE(scale, 4.0 / 255, 1e-9, 1e-6, "scale of [-1, 3]");
    CHECK(zp == -64, "zero point of [-1, 3]: got %d", zp);
    float x[6] = {0.0f, scale * 5, 10.0f, -5.0f, scale * 5.4f, scale * 5.6f};
    unsigned char m[6];
    qat_fake_quant(x, m, 6, -1.0f, 3.0f);
    CHECK(x[0] == 0.0f && m[0] == 1, "0.0 stays 0.0 exactly");
    CHECK_CLOSE(x[1], scale * 5, 0, 1e-6, "an on-grid value stays");
    CHECK_CLOSE(x[2], scale * (127 + 64), 0, 1e-6, "above the range clips to the top");
    CHECK(m[2] == 0 && m[3] == 0, "clipped values are masked");
    CHECK_CLOSE(x[3], scale * (-128 + 64), 0, 1e-6, "below the range clips to the bottom");
    CHECK_CLOSE(x[4], scale * 5, 0, 1e-6, "5.4 steps round to 5");
    CHECK_CLOSE(x[5], scale * 6, 0, 1e-6, "5.6 steps round to 6");

    float w[6] = {0.5f, -1.0f, 0.25f, 0.0f, 0.0f, 0.0f};
    qat_fake_quant_weight(w, 2, 3);
    CHECK_CLOSE(w[1], -1.0, 0, 1e-7, "the largest weight is on the grid");
    CHECK_CLOSE(w[0], 64.0 / 127, 0, 1e-6, "0.5 rounds to 64/127");
    CHECK(w[3] == 0 && w[4] == 0 && w[5] == 0, "an all-zero channel stays zero");
}

static float *frand(size_t n, float lo, float hi) {
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = rng_uniformf(&rng, lo, hi);
    return p;
}

static void test_net(const char *name, const char *text, int channels, int c, int hw) {
    Spec spec;
    Err e = {{0}};
    CHECK(spec_parse(&spec, text, channels, 1, &e) == NASC_OK, "%s: parse: %s", name, e.msg);
    Net net;
    CHECK(net_build(&net, &spec, c, hw, hw, 10, &e) == NASC_OK, "%s: build: %s", name, e.msg);
    spec_free(&spec);
    net_init_params(&net, 7);
    int B = 16;
    size_t img = (size_t)c * hw * hw;
    float *x = frand((size_t)B * img, -1.5f, 2.5f);
    float *dl = frand((size_t)B * 10, -0.1f, 0.1f);
    float *fp32 = xmalloc((size_t)B * 10 * sizeof(float)), *fq = xmalloc((size_t)B * 10 * sizeof(float));
    float *q8 = xmalloc((size_t)B * 10 * sizeof(float));

    Qat qat;
    qat_init(&qat, &net);
    float *p0 = xmalloc(net.nparams * sizeof(float));
    Optim opt;
    OptConfig oc = optim_defaults(OPT_SGD);
    optim_init(&opt, &oc, net.nparams);
    for (int step = 0; step < 5; step++) {
        memcpy(p0, net.params, net.nparams * sizeof(float));
        net_forward(&net, x, B, 1);
        net_zero_grad(&net);
        net_backward(&net, dl);
        CHECK(!memcmp(p0, net.params, net.nparams * sizeof(float)), "%s: the master weights are back after backward",
              name);
        double gn = 0;
        for (size_t i = 0; i < net.nparams; i++) gn += (double)net.grads[i] * net.grads[i];
        CHECK(isfinite(gn) && gn > 0, "%s: gradients flow through the fake quantization", name);
        optim_step(&opt, net.params, net.grads, 0.01f);
    }
    optim_free(&opt);

    /* Eval mode: the ranges stay, the rounded weights are used, then restored. */
    QRanges r0, r1;
    qat_ranges(&qat, &r0);
    memcpy(p0, net.params, net.nparams * sizeof(float));
    memcpy(fq, net_forward(&net, x, B, 0), (size_t)B * 10 * sizeof(float));
    qat_ranges(&qat, &r1);
    CHECK(!memcmp(r0.lo, r1.lo, (r0.n + 1) * sizeof(float)) && !memcmp(r0.hi, r1.hi, (r0.n + 1) * sizeof(float)),
          "%s: eval mode leaves the ranges alone", name);
    qat_restore(&qat);
    CHECK(!memcmp(p0, net.params, net.nparams * sizeof(float)), "%s: qat_restore gives the master weights back", name);
    qat_free(&qat);
    CHECK(net.hook_fwd == NULL && net.hook_bwd == NULL, "%s: qat_free detaches", name);
    memcpy(fp32, net_forward(&net, x, B, 0), (size_t)B * 10 * sizeof(float));

    QNet qn;
    CHECK(qnet_build(&qn, &net, &r1, &e) == NASC_OK, "%s: qnet_build from QAT ranges: %s", name, e.msg);
    qnet_forward(&qn, x, B, q8);
    double d_fq = 0, d_fp = 0, m_fq = 0, range = 0;
    for (int i = 0; i < B * 10; i++) {
        d_fq += fabs((double)q8[i] - fq[i]);
        d_fp += fabs((double)q8[i] - fp32[i]);
        m_fq = fmax(m_fq, fabs((double)q8[i] - fq[i]));
        range = fmax(range, fabs((double)fp32[i]));
    }
    double step = qnet_out_scale(&qn);
    printf("  %-8s int8 vs fake-quant: mean |d| %.3g, max %.3g (%.2f output steps); int8 vs fp32: mean |d| %.3g\n", name,
           d_fq / (B * 10), m_fq, m_fq / step, d_fp / (B * 10));
    CHECK(d_fq < d_fp, "%s: the int8 net is closer to the fake-quantized net than to fp32", name);
    CHECK(m_fq <= 4 * step, "%s: int8 within 4 output steps of the fake-quantized net (max %.3g, step %.3g)", name,
          m_fq, step);
    CHECK(range > 0, "%s: the logits are not all zero", name);
    qnet_free(&qn);
    qranges_free(&r0);
    qranges_free(&r1);
    free(p0);
    free(x);
    free(dl);
    free(fp32);
    free(fq);
    free(q8);
    net_free(&net);
}

int main(void) {
    rng_seed(&rng, 12345);
    test_fake_quant();
    test_net("small", zoo_lookup("small"), 16, 1, 28);
    test_net("nb201", "nb201:|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|", 8,
             3, 16);
    test_net("mbv2", zoo_lookup("mbv2"), 16, 1, 28);
    return check_summary("test_qat");
}
