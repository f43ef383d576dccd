/* export.h: deployment formats. A trained nasc network leaves nasc as an ONNX model, fp32 from
 * a Net or int8 in QDQ form from a QNet (src/compress/quant.h), and a network trained elsewhere
 * comes in from ONNX for nasc to compress or re-export.
 *
 * ONNX files (opset 13, IR version 7) have one input `input` (N, C, H, W) float, normalized
 * exactly as nasc's loader does: x = (pixel / 255 - mean[c]) / std[c], N dynamic, and one
 * output `logits` (N, classes). The normalization is recorded in the model's metadata_props
 * (nasc.norm_mean, nasc.norm_std: comma-separated, one value per channel), which the importer
 * reads back. Every OpKind has a mapping (see onnx.c's file comment); the importer recognizes
 * those patterns and the common plain forms other exporters write (see onnx_import.c).
 *
 * This header does not expose protobuf types: callers need no generated code on their path.
 */
#ifndef NASC_EXPORT_H
#define NASC_EXPORT_H

#include "../compress/quant.h"
#include "../net/net.h"

/* Serialize net (its parameters and BN running statistics, inference semantics) as an ONNX
 * model. norm may be NULL or have nchan 0 (no normalization recorded). On success *buf (caller
 * frees) holds *len bytes. NASC_ERR with a message when the net cannot be expressed. */
int onnx_export(const Net *net, const Norm *norm, uint8_t **buf, size_t *len, Err *e);
/* The same, written atomically to path. */
int onnx_export_file(const char *path, const Net *net, const Norm *norm, Err *e);

/* The int8 network q as ONNX in QDQ form (opset 13): the float input is quantized by a
 * QuantizeLinear with the input's (scale, zero point) and dequantized; every int8 value of q
 * becomes QuantizeLinear -> DequantizeLinear with its (scale, zp) after the float op that makes
 * it; conv/linear weights are int8 initializers with per-output-channel scales (zero points 0,
 * DequantizeLinear axis 0), biases int32 with scale input_scale * weight_scale[c]; folded BNs
 * are in the weights, fused ReLU/ReLU6 sit between the op and its QuantizeLinear, a BN that folds
 * into nothing is a depthwise 1x1 conv. The logits are the last value dequantized. Runtimes
 * that fuse QDQ (ONNX Runtime) then run integer kernels; their float requantization may round
 * a value one step away from nasc's integer (mult, shift) requantization now and then. */
int onnx_export_qnet(const QNet *q, const Norm *norm, uint8_t **buf, size_t *len, Err *e);
int onnx_export_qnet_file(const char *path, const QNet *q, const Norm *norm, Err *e);

/* Parse an ONNX model into a built Net with its weights (fp32) and the normalization recorded
 * in its metadata (norm->nchan = 0 when there is none). Never crashes on malformed input: a
 * truncated or non-ONNX buffer, an unsupported op ("node NAME: op type 'X' is not supported
 * (supported: ...)"), or tensors whose sizes do not match give NASC_ERR with a message. */
int onnx_import(const uint8_t *buf, size_t len, Net *net, Norm *norm, Err *e);
/* The same from a file; messages name the file. */
int onnx_import_file(const char *path, Net *net, Norm *norm, Err *e);

#endif
