// onnx_check.cc: runs ONNX's own model checker (libonnx-dev, C++) on model files, then strict
// shape inference with type checks (what Python's onnx.checker.check_model(full_check=True)
// does; libonnx 1.12's C++ check_model has no full_check flag): `onnx_check FILE.onnx...`. Prints "FILE: ok" or the
// checker's complaint, and exits 1 if any file fails. Built by tests/cli_export.sh with
//   g++ -DONNX_ML=1 -DONNX_NAMESPACE=onnx onnx_check.cc -lonnx -lonnx_proto -lprotobuf
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <fstream>
#include <iostream>

int main(int argc, char **argv) {
    if (argc < 2) {
        std::cerr << "usage: onnx_check FILE.onnx...\n";
        return 2;
    }
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        onnx::ModelProto model;
        std::ifstream f(argv[i], std::ios::binary);
        if (!f || !model.ParseFromIstream(&f)) {
            std::cerr << argv[i] << ": cannot read or parse\n";
            bad = 1;
            continue;
        }
        try {
            onnx::checker::check_model(model);
            onnx::ModelProto inferred = model;
            onnx::shape_inference::InferShapes(inferred, onnx::OpSchemaRegistry::Instance(),
                                               onnx::ShapeInferenceOptions(true, 1, true));
            std::cout << argv[i] << ": ok\n";
        } catch (const std::exception &e) {
            std::cerr << argv[i] << ": " << e.what() << "\n";
            bad = 1;
        }
    }
    return bad;
}
