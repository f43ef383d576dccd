// ort_latency.js: batch-1 latency of ONNX models in ONNX Runtime (onnxruntime-node, CPU), for
// bench/int8_vs_ort.sh. For each MODEL.onnx argument: a session with all graph optimizations
// (ORT fuses QDQ pairs into its int8 kernels), THREADS intra-op threads, a random normalized
// input of the model's shape (C, H, W given as C,H,W), WARMUP runs, then ROUNDS runs timed one
// by one; prints "MODEL median_ms p10_ms".
//   NODE_PATH=DIR/node_modules node ort_latency.js THREADS C,H,W RUNS MODEL...
'use strict';
const ort = require('onnxruntime-node');

async function main() {
    const threads = parseInt(process.argv[2], 10);
    const [c, h, w] = process.argv[3].split(',').map(Number);
    const runs = parseInt(process.argv[4], 10);
    for (const model of process.argv.slice(5)) {
        const s = await ort.InferenceSession.create(model, {
            graphOptimizationLevel: 'all', intraOpNumThreads: threads, interOpNumThreads: 1,
            executionMode: 'sequential'});
        const x = new Float32Array(c * h * w);
        for (let i = 0; i < x.length; i++) x[i] = Math.random() * 2 - 1;
        const feeds = {[s.inputNames[0]]: new ort.Tensor('float32', x, [1, c, h, w])};
        for (let i = 0; i < Math.max(5, runs / 10); i++) await s.run(feeds);
        const t = [];
        for (let i = 0; i < runs; i++) {
            const t0 = process.hrtime.bigint();
            await s.run(feeds);
            t.push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
        t.sort((a, b) => a - b);
        console.log(`${model} ${t[Math.floor(t.length / 2)].toFixed(4)} ${t[Math.floor(t.length / 10)].toFixed(4)}`);
    }
}
main().catch(err => { console.error(`ort_latency: ${err.message}`); process.exit(1); });
