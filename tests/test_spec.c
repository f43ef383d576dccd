/* test_spec.c: the spec language (parse, print, round trip, errors with positions), NB201
 * expansion (structure, parameter counts, errors), the zoo networks' sizes against the
 * PyTorch reference (../shared/bench/torch_ref.py's counts), and model files (bit-identical
 * save/load; truncated, corrupted and foreign files refused). */
#include <unistd.h>

#include "../src/net/net.h"
#include "check.h"

static void roundtrip(const char *text, int channels, int cells) {
    Err e;
    Spec a, b;
    if (spec_parse(&a, text, channels, cells, &e) != NASC_OK) {
        CHECK(0, "parse failed for '%s': %s", text, e.msg);
        return;
    }
    char *p1 = spec_print(&a);
    int ok = spec_parse(&b, p1, channels, cells, &e) == NASC_OK;
    CHECK(ok, "printed spec does not parse: %s\n%s", e.msg, p1);
    if (ok) {
        char *p2 = spec_print(&b);
        CHECK(strcmp(p1, p2) == 0, "print/parse/print differs:\n%s\n%s", p1, p2);
        CHECK(a.n == b.n, "node count changed %d -> %d", a.n, b.n);
        for (int i = 0; i < a.n && i < b.n; i++) {
            CHECK(a.nodes[i].op == b.nodes[i].op && a.nodes[i].nin == b.nodes[i].nin, "node %d differs", i);
            for (int j = 0; j < a.nodes[i].nin; j++) CHECK(a.nodes[i].in[j] == b.nodes[i].in[j], "node %d input %d", i, j);
        }
        free(p2);
        spec_free(&b);
    }
    free(p1);
    spec_free(&a);
}

static void expect_error(const char *text, const char *want) {
    Err e = {{0}};
    Spec s;
    int rc = spec_parse(&s, text, 16, 1, &e);
    CHECK(rc == NASC_ERR, "'%s' should not parse", text);
    if (rc == NASC_OK) {
        spec_free(&s);
        return;
    }
    CHECK(strstr(e.msg, want) != NULL, "error for '%s' is '%s', expected it to contain '%s'", text, e.msg, want);
}

static void expect_build_error(const char *text, const char *want) {
    Err e = {{0}};
    Spec s;
    Net net;
    if (spec_parse(&s, text, 16, 1, &e) != NASC_OK) {
        CHECK(0, "'%s' should parse: %s", text, e.msg);
        return;
    }
    int rc = net_build(&net, &s, 1, 28, 28, 10, &e);
    CHECK(rc == NASC_ERR, "'%s' should not build", text);
    if (rc == NASC_OK) net_free(&net);
    else CHECK(strstr(e.msg, want) != NULL, "build error for '%s' is '%s', want '%s'", text, e.msg, want);
    spec_free(&s);
}

static void sizes(const char *name, const char *text, int cin, int hw, size_t want_params, double want_macs) {
    Err e;
    Spec s;
    Net net;
    if (spec_parse(&s, text, 16, 1, &e) != NASC_OK || net_build(&net, &s, cin, hw, hw, 10, &e) != NASC_OK) {
        CHECK(0, "%s: %s", name, e.msg);
        return;
    }
    CHECK(net_param_count(&net) == want_params, "%s: %zu params, PyTorch counts %zu", name, net_param_count(&net),
          want_params);
    if (want_macs > 0) CHECK(net_macs(&net) == want_macs, "%s: %.0f MACs, PyTorch counts %.0f", name, net_macs(&net), want_macs);
    net_free(&net);
    spec_free(&s);
}

static void test_model_file(void) {
    Err e;
    Spec s;
    Net a, b;
    CHECK(spec_parse(&s, zoo_lookup("resnet8"), 16, 1, &e) == NASC_OK, "resnet8 parses");
    CHECK(net_build(&a, &s, 1, 28, 28, 10, &e) == NASC_OK, "resnet8 builds");
    spec_free(&s);
    net_init_params(&a, 7);
    for (size_t i = 0; i < a.nbuffers; i++) a.buffers[i] = 0.5f + 0.001f * (float)i;
    Rng r;
    rng_seed(&r, 3);
    float *x = xmalloc(4 * 28 * 28 * sizeof(float));
    for (int i = 0; i < 4 * 28 * 28; i++) x[i] = (float)rng_normal(&r);
    float out1[40], out2[40];
    memcpy(out1, net_forward(&a, x, 4, 0), sizeof out1);
    char dir[] = "/tmp/nasc_test_model_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256], bad[300];
    snprintf(path, sizeof path, "%s/m.nasc", dir);
    Norm norm = {1, {0.2860f}, {0.3530f}}, norm2;
    CHECK(model_save(path, &a, &norm, &e) == NASC_OK, "save: %s", e.msg);
    CHECK(model_load(path, &b, &norm2, &e) == NASC_OK, "load: %s", e.msg);
    memcpy(out2, net_forward(&b, x, 4, 0), sizeof out2);
    CHECK(memcmp(out1, out2, sizeof out1) == 0, "outputs after save/load are bit-identical");
    CHECK(norm2.nchan == 1 && norm2.mean[0] == 0.2860f && norm2.std[0] == 0.3530f, "normalization kept");
    CHECK(b.nparams == a.nparams && memcmp(a.params, b.params, a.nparams * 4) == 0, "params identical");
    net_free(&b);

    size_t n;
    unsigned char *data = file_read_all(path, &n, &e);
    /* truncated */
    snprintf(bad, sizeof bad, "%s/trunc.nasc", dir);
    CHECK(file_write_atomic(bad, data, n / 2, &e) == NASC_OK, "write");
    CHECK(model_load(bad, &b, NULL, &e) == NASC_ERR && strstr(e.msg, "truncated"), "truncated refused: %s", e.msg);
    CHECK(file_write_atomic(bad, data, 10, &e) == NASC_OK, "write");
    CHECK(model_load(bad, &b, NULL, &e) == NASC_ERR && strstr(e.msg, "truncated"), "10-byte file refused: %s", e.msg);
    /* corrupted: flip one bit in the weights */
    data[n - 100] ^= 0x10;
    CHECK(file_write_atomic(bad, data, n, &e) == NASC_OK, "write");
    CHECK(model_load(bad, &b, NULL, &e) == NASC_ERR && strstr(e.msg, "corrupted"), "corrupted refused: %s", e.msg);
    data[n - 100] ^= 0x10;
    /* foreign */
    CHECK(file_write_atomic(bad, "hello, world\n", 13, &e) == NASC_OK, "write");
    CHECK(model_load(bad, &b, NULL, &e) == NASC_ERR && strstr(e.msg, "not a nasc model"), "foreign refused: %s", e.msg);
    /* missing */
    snprintf(bad, sizeof bad, "%s/missing.nasc", dir);
    CHECK(model_load(bad, &b, NULL, &e) == NASC_ERR && strstr(e.msg, "cannot open"), "missing refused: %s", e.msg);
    /* wrong version */
    data[8] = 99;
    snprintf(bad, sizeof bad, "%s/v.nasc", dir);
    CHECK(file_write_atomic(bad, data, n, &e) == NASC_OK, "write");
    CHECK(model_load(bad, &b, NULL, &e) == NASC_ERR && strstr(e.msg, "version"), "version refused: %s", e.msg);
    free(data);
    unlink(bad);
    snprintf(bad, sizeof bad, "%s/trunc.nasc", dir);
    unlink(bad);
    unlink(path);
    rmdir(dir);
    free(x);
    net_free(&a);
}

int main(void) {
    /* Round trips. */
    roundtrip("conv(c=16,k=3);bn;relu;gap;linear", 16, 1);
    roundtrip(zoo_lookup("small"), 16, 1);
    roundtrip(zoo_lookup("resnet8"), 16, 1);
    roundtrip(zoo_lookup("mbv2"), 16, 1);
    roundtrip("# comment\nresize(s=24)\nstem=conv(c=8,k=5,s=2,p=1,d=1,g=1,bias=1)\n a=maxpool(k=3,s=2,p=1); b=avgpool(stem,k=3,s=1,p=1,cip=0)\n"
              "c=concat(a, b)\n dropout(p=0.25); hswish; s=gap; conv(c=4,k=1,bias=1); relu; conv(c=16,k=1,bias=1); hsigmoid;"
              "mul(c,_); sigmoid; relu6; zero; id; add(_, c, c); gap; linear(c=10,bias=0)",
              16, 1);
    roundtrip("nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", 16, 1);
    roundtrip("nb201:|none~0|+|nor_conv_1x1~0|none~1|+|avg_pool_3x3~0|skip_connect~1|none~2|", 8, 3);

    /* A printed spec is the canonical text. */
    {
        Err e;
        Spec s;
        CHECK(spec_parse(&s, "conv(c=16, k=3, p=1) ;bn\n\nrelu;a=gap;linear(a)", 16, 1, &e) == NASC_OK, "parse");
        char *p = spec_print(&s);
        CHECK(!strcmp(p, "conv(c=16,k=3);bn;relu;a=gap;linear"), "canonical print: %s", p);
        free(p);
        spec_free(&s);
        CHECK(spec_parse(&s, "conv(c=8,k=3);a=bn;relu;conv(c=8,k=3);add(a)", 16, 1, &e) == NASC_OK, "parse add(a)");
        CHECK(s.n == 5 && s.nodes[4].nin == 2 && s.nodes[4].in[0] == 3 && s.nodes[4].in[1] == 1, "add(a) is add(_, a)");
        spec_free(&s);
    }

    /* Errors name the position. */
    expect_error("conv(c=16,k=3);bn;relu;foo;linear", "line 1, column 24: unknown op 'foo'");
    expect_error("conv(c=16,k=3)\nbn\nconv(c=16)", "line 3, column 1: op 'conv' needs attribute 'k'");
    expect_error("conv(c=16,k=3,q=2)", "line 1, column 15: op 'conv' has no attribute 'q'");
    expect_error("conv(c=16,k=3", "line 1, column 14: expected ',' or ')'");
    expect_error("conv(c=16,k=3) bn", "line 1, column 16: expected ';'");
    expect_error("conv(c=1.5,k=3)", "whole number");
    expect_error("conv(c=0,k=3)", "at least 1");
    expect_error("add(nope, input)", "unknown input 'nope'");
    expect_error("relu=conv(c=1,k=1)", "reserved");
    expect_error("a=relu;a=relu", "already used");
    expect_error("dropout(p=1.5)", "dropout probability");
    expect_error("", "empty");
    expect_error("conv(c=8,k=3,k=5)", "given twice");
    expect_error("nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_5x5~1|skip_connect~2|",
                 "column 72: unknown operation 'nor_conv_5x5'");
    expect_error("nb201:|nor_conv_3x3~1|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|skip_connect~2|",
                 "cannot take input from node 1");
    expect_error("nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "expected '+|'");
    expect_build_error("conv(c=16,k=3);gap", "10 classes");
    expect_build_error("a=conv(c=16,k=3);conv(c=8,k=3);add(_,a);gap;linear", "shape");
    expect_build_error("conv(c=15,k=3,g=2);gap;linear", "divisible");

    /* Sizes: PyTorch's counts for torch_ref.py's networks (params; MACs of conv + linear). */
    sizes("small", zoo_lookup("small"), 1, 28, 24058, 1919872);
    sizes("resnet8", zoo_lookup("resnet8"), 1, 28, 77754, 9345920);
    sizes("mbv2", zoo_lookup("mbv2"), 1, 28, 209066, 13466192);
    /* NB201 all-skip cell at C=16, N=1 on 1x28x28 (PyTorch: scripts/torch_nb201_train.py). */
    sizes("nb201 skip", "nb201:|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
          1, 28, 73018, 0);
    sizes("nb201 example",
          "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", 1, 28,
          218842, 0);

    test_model_file();
    return check_summary("test_spec");
}
