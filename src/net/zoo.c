/* zoo.c: the reference networks by name, as spec text. They are the same networks as
 * ../shared/bench/torch_ref.py defines (small, resnet8, mbv2), so speed and accuracy can be
 * compared with PyTorch on identical architectures. */
#include "net.h"

static const char small_spec[] =
    "conv(c=16,k=3);bn;relu;conv(c=32,k=3,s=2);bn;relu;conv(c=64,k=3,s=2);bn;relu;gap;linear";

/* Stem, then three basic blocks (16, 32/2, 64/2); projection shortcuts are conv1x1+BN. */
static const char resnet8_spec[] =
    "conv(c=16,k=3);bn;x0=relu;"
    "conv(c=16,k=3);bn;relu;conv(c=16,k=3);bn;add(_,x0);x1=relu;"
    "conv(c=32,k=3,s=2);bn;relu;conv(c=32,k=3);b2=bn;conv(x1,c=32,k=1,s=2);bn;add(b2,_);x2=relu;"
    "conv(c=64,k=3,s=2);bn;relu;conv(c=64,k=3);b3=bn;conv(x2,c=64,k=1,s=2);bn;add(b3,_);relu;"
    "gap;linear";

/* MobileNetV2 for 28x28: stem conv3x3(16); inverted residuals (t,c,n,s) = (1,16,1,1)
 * (6,24,2,2) (6,32,2,2) (6,64,2,1) (6,96,1,1); head conv1x1(256); GAP; linear. */
static char mbv2_spec[4096];

static void mbv2_build(void) {
    static const int cfg[5][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 2, 2}, {6, 64, 2, 1}, {6, 96, 1, 1}};
    size_t n = 0, cap = sizeof mbv2_spec;
    n += (size_t)snprintf(mbv2_spec + n, cap - n, "conv(c=16,k=3);bn;b0=relu6");
    int c = 16, blk = 0;
    for (int s = 0; s < 5; s++)
        for (int r = 0; r < cfg[s][2]; r++) {
            int t = cfg[s][0], cout = cfg[s][1], stride = r == 0 ? cfg[s][3] : 1, hid = c * t;
            char in[16];
            snprintf(in, sizeof in, "b%d", blk);
            if (t != 1) {
                n += (size_t)snprintf(mbv2_spec + n, cap - n, ";conv(%s,c=%d,k=1);bn;relu6;conv(c=%d,k=3,s=%d,g=%d)",
                                      in, hid, hid, stride, hid);
            } else {
                n += (size_t)snprintf(mbv2_spec + n, cap - n, ";conv(%s,c=%d,k=3,s=%d,g=%d)", in, hid, stride, hid);
            }
            n += (size_t)snprintf(mbv2_spec + n, cap - n, ";bn;relu6;conv(c=%d,k=1);", cout);
            blk++;
            if (stride == 1 && c == cout)
                n += (size_t)snprintf(mbv2_spec + n, cap - n, "bn;b%d=add(_,%s)", blk, in);
            else
                n += (size_t)snprintf(mbv2_spec + n, cap - n, "b%d=bn", blk);
            c = cout;
        }
    n += (size_t)snprintf(mbv2_spec + n, cap - n, ";conv(c=256,k=1);bn;relu6;gap;linear");
    NASC_ASSERT(n < cap);
}

const char *zoo_lookup(const char *name) {
    if (!strcmp(name, "small")) return small_spec;
    if (!strcmp(name, "resnet8")) return resnet8_spec;
    if (!strcmp(name, "mbv2")) {
        if (!mbv2_spec[0]) mbv2_build();
        return mbv2_spec;
    }
    return NULL;
}
