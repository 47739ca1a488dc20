// `xc2 bench` (library xc2_bench, tools/bench/bench*.cpp): throughput of the engine on this machine, next
// to the machine's own limits, measured through the public API (xc2/engine.h, xc2/diagnostics.h).
//   - a synthetic checkpoint with the real XC2-VL-7B dimensions but few layers (generated on the fly,
//     cached under work_dir, never committed), or a real model folder;
//   - ViT images/s, prefill positions/s (one image + text), decode tokens/s, peak RSS;
//   - the measured streaming-read bandwidth and f32 FMA peak, and the roofline percentages;
//   - optionally the PyTorch reference (tools/reference/bench_ref.py) on the same machine and threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace xc2 {

struct BenchOptions {
  std::string model_dir;           // empty: synthetic checkpoint
  std::string work_dir = "/tmp/xc2-bench";
  int decoder_layers = 2;          // synthetic only
  int vision_layers = 2;           // synthetic only
  int img_size = 490;              // synthetic only (490: XC2-VL-7B)
  int threads = 0;                 // 0 = all cores
  int text_tokens = 64;            // text positions after the image in the prefill prompt
  int decode_steps = 32;
  int repeats = 3;                 // best of
  bool reference = true;           // also run the PyTorch reference
  std::string python = "/usr/bin/python3";
  std::string reference_script;    // default: tools/reference/bench_ref.py found above the executable
  // CUDA (device = "cuda"): the model in `dtype` ("bf16", "f16" or "f32") on GPU 0; decode through the
  // device decode path (graphs + on-device argmax), the copy bandwidth as the roofline, the reference
  // in bfloat16 on the GPU (bench_ref.py --device cuda); plus captioning: caption_batch images through the
  // ViT at once, each prompt prefilled, then all decoded together for caption_tokens greedy tokens; and the
  // GPU memory a 4096-token context needs (the allocator's peak plus the CUDA context).
  // Batched decode (Engine::generate_batch, what `xc2 caption --batch-size` runs): tokens/s summed over B
  // sequences, each with the benchmark prompt as its context, for each B here (empty: skip).
  std::vector<int> decode_batches = {4, 16};
  std::string device = "cpu";
  std::string dtype = "bf16";
  int caption_batch = 16;
  int caption_tokens = 32;
  // The same workload on GPTQ copies of the checkpoint (xc2 quantize: round to nearest, asymmetric, group size
  // quant_group_size; written once next to it), one per bit width here, next to the 16-bit rows. CPU: each with
  // the default quantized path (int8 activations where the CPU has AVX2) and with the exact one. CUDA: prefill,
  // decode (against the copy-bandwidth roofline of the quantized bytes per token) and memory.
  std::vector<int> quant_bits;
  int quant_group_size = 128;
  int quant_head_bits = 0;  // those copies' output head: 4 or 8 bits, 0 16-bit
};

struct BenchRow {
  std::string name;     // e.g. "decode"
  double value = 0;     // in `unit`
  std::string unit;     // "tok/s", "img/s", "GB/s", ...
  std::string note;     // e.g. "91% of the read-bandwidth roofline"
};

struct BenchReport {
  std::string machine;  // CPU model, threads, ISA
  std::string model;    // what was benchmarked
  std::vector<BenchRow> rows;
};

// Runs the benchmark; progress on stderr. Throws xc2::Error on failure.
BenchReport run_bench(const BenchOptions& options);

}  // namespace xc2
