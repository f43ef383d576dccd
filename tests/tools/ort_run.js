// ort_run.js: runs ONNX models in ONNX Runtime (onnxruntime-node, CPU) on inputs from tensor files
// and writes the first output to tensor files, for tests/cli_export.sh to compare with nasc.
//   NODE_PATH=DIR/node_modules node ort_run.js LIST
// LIST has one job per line: "MODEL.onnx IN.bin OUT.bin". The model's first input is fed IN.bin.
// Tensor files: "NTS1", u32 ndim, u32 dims[ndim], f32 data, little-endian (as tests/test_export.c).
// Exits 1 (with the model named) if any job fails.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function readTensor(path) {
    const b = fs.readFileSync(path);
    if (b.length < 8 || b.toString('latin1', 0, 4) !== 'NTS1') throw new Error(`${path}: not a tensor file`);
    const nd = b.readUInt32LE(4);
    const dims = [];
    for (let j = 0; j < nd; j++) dims.push(b.readUInt32LE(8 + 4 * j));
    const off = 8 + 4 * nd, n = dims.reduce((a, d) => a * d, 1);
    if (b.length !== off + 4 * n) throw new Error(`${path}: size does not match its dims`);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = b.readFloatLE(off + 4 * i);
    return new ort.Tensor('float32', data, dims);
}

function writeTensor(path, t) {
    const dims = t.dims, data = t.data, nd = dims.length;
    const b = Buffer.alloc(8 + 4 * nd + 4 * data.length);
    b.write('NTS1', 0, 'latin1');
    b.writeUInt32LE(nd, 4);
    dims.forEach((d, j) => b.writeUInt32LE(d, 8 + 4 * j));
    data.forEach((v, i) => b.writeFloatLE(v, 8 + 4 * nd + 4 * i));
    fs.writeFileSync(path, b);
}

async function main() {
    const jobs = fs.readFileSync(process.argv[2], 'utf8').split('\n').filter(l => l.trim());
    let bad = 0;
    for (const line of jobs) {
        const [model, input, output] = line.trim().split(/\s+/);
        try {
            const s = await ort.InferenceSession.create(model, {graphOptimizationLevel: 'all', intraOpNumThreads: 1});
            const feeds = {[s.inputNames[0]]: readTensor(input)};
            const res = await s.run(feeds);
            writeTensor(output, res[s.outputNames[0]]);
            console.log(`${model}: ${s.inputNames[0]} -> ${s.outputNames[0]} [${res[s.outputNames[0]].dims}]`);
        } catch (e) {
            console.error(`${model}: ONNX Runtime failed: ${e.message}`);
            bad = 1;
        }
    }
    process.exit(bad);
}
main();
