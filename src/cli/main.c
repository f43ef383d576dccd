/* main.c: the nasc command line: `nasc <command> [options]`. Each command lives in its own
 * cmd_*.c; user errors print a message naming the problem and exit non-zero. */
#include "cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: nasc <command> [options]   (nasc <command> --help for its options)\n\n"
            "commands:\n"
            "  train   train a network from a spec and report its accuracy\n"
            "  eval    test accuracy of a saved model\n"
            "  cost    params, MACs, peak memory, flash, latency and target fit of a network\n"
            "  profile measure this machine's per-op latency table for a target (the predictor's data)\n"
            "  search  architecture search under constraints, recorded in a trial database\n"
            "  report  settings, trial counts and best trials of a search's trial database\n"
            "  compress prune, quantize to int8 and distill a trained model\n"
            "  export  a saved model as ONNX\n"
            "  import  an ONNX model as a nasc model file\n"
            "  version print the version\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "cost")) return cmd_cost(argc - 2, argv + 2);
    if (!strcmp(cmd, "profile")) return cmd_profile(argc - 2, argv + 2);
    if (!strcmp(cmd, "search")) return cmd_search(argc - 2, argv + 2);
    if (!strcmp(cmd, "report")) return cmd_report(argc - 2, argv + 2);
    if (!strcmp(cmd, "export")) return cmd_export(argc - 2, argv + 2);
    if (!strcmp(cmd, "import")) return cmd_import(argc - 2, argv + 2);
    if (!strcmp(cmd, "compress")) return cmd_compress(argc - 2, argv + 2);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("nasc %s\n", NASC_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "nasc: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
