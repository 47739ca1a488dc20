// xc2 bench: engine throughput next to the machine's limits (tools/bench/bench.h).
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "bench/bench.h"
#include "cli_common.h"

namespace xc2::cli {

Handler register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  auto common = std::make_shared<CommonOptions>();
  auto no_ref = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("bench", "Measure ViT, prefill and decode speed against the machine's limits");
  cmd->footer(R"(Examples:
  xc2 bench                      # synthetic XC2-VL-7B-sized checkpoint (2+2 layers), PyTorch reference too
  xc2 bench --threads 2 --no-reference
  xc2 bench --model internlm-xcomposer2-vl-7b --decode-steps 64
  xc2 bench --device cuda --layers 32 --vit-layers 24 --decode-steps 64   # the full XC2-VL-7B on a GPU
  xc2 bench --layers 8 --threads 2 --quant 8,4 --no-reference   # 16-bit vs W8 vs W4 on the CPU, side by side
  xc2 bench --device cuda --layers 32 --vit-layers 24 --quant 4 --no-reference   # bf16 vs W4A16 on a GPU

The synthetic checkpoint (about 2.6 GB for 2 decoder layers) is written once under --work-dir and reused.
Decode is reported against the streaming-read roofline (weight + KV bytes per token / measured read
bandwidth), prefill and ViT against the measured f32 FMA peak of the GEMM's instructions. The
"decode batch N" rows decode N sequences together (as `xc2 caption --batch-size N` does), each weight read
once per step for all N, against the same roofline with N tokens per weight read. With --quant, each
quantized decode is judged against the best read bandwidth measured in the whole run and, run by run, against
the read bandwidth measured just before and after that run (on a shared machine it changes by minutes).)");
  cmd->add_option("-m,--model", o->model_dir, "Benchmark this model folder instead of a synthetic one")->type_name("DIR");
  cmd->add_option("-t,--threads", o->threads, "CPU threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--work-dir", o->work_dir, "Where the synthetic checkpoint is cached")->capture_default_str();
  cmd->add_option("--layers", o->decoder_layers, "Synthetic decoder layers")->check(CLI::Range(1, 32))->capture_default_str();
  cmd->add_option("--vit-layers", o->vision_layers, "Synthetic ViT layers")->check(CLI::Range(1, 24))->capture_default_str();
  cmd->add_option("--img-size", o->img_size, "Synthetic image size (490: XC2-VL, 224: XC2-7B)")
      ->check(CLI::IsMember({224, 490}))
      ->capture_default_str();
  cmd->add_option("--text-tokens", o->text_tokens, "Text positions after the image in the prefill")
      ->check(CLI::Range(1, 2048))->capture_default_str();
  cmd->add_option("--decode-steps", o->decode_steps, "Decode steps timed")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--repeats", o->repeats, "Runs; the best is reported")->check(CLI::Range(1, 100))->capture_default_str();
  cmd->add_option("--decode-batch", o->decode_batches,
                  "Batch sizes for the batched-decode rows (as caption --batch-size decodes); 0 = skip")
      ->check(CLI::Range(0, 256))
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--device", o->device, "cpu, or cuda (GPU 0; adds captioning at --caption-batch)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "CUDA compute dtype")->check(CLI::IsMember({"bf16", "f16", "f32"}))->capture_default_str();
  cmd->add_option("--caption-batch", o->caption_batch, "CUDA: images per caption batch (0 = skip)")
      ->check(CLI::Range(0, 256))->capture_default_str();
  cmd->add_option("--caption-tokens", o->caption_tokens, "CUDA: greedy tokens per caption")
      ->check(CLI::Range(3, 1024))->capture_default_str();
  cmd->add_option("--quant", o->quant_bits,
                  "Also run on GPTQ copies with these bit widths (e.g. 8,4; made once with xc2 quantize next to the "
                  "checkpoint), next to the 16-bit rows: on the CPU fast and --exact, each run alternating with a 16-bit "
                  "run where memory holds both models (the ratios come from those pairs); on CUDA prefill, decode "
                  "and memory")
      ->check(CLI::IsMember({4, 8}))
      ->delimiter(',');
  cmd->add_option("--quant-group-size", o->quant_group_size, "Group size of those copies (-1: per channel)")
      ->capture_default_str();
  cmd->add_option("--quant-head-bits", o->quant_head_bits,
                  "Quantize those copies' output head too (4 or 8 bits; 0: 16-bit, as the official releases)")
      ->check(CLI::IsMember({0, 4, 8}))
      ->capture_default_str();
  cmd->add_flag("--no-reference", *no_ref, "Skip the PyTorch reference");
  cmd->add_option("--python", o->python, "Python with PyTorch for the reference")->capture_default_str();
  cmd->add_option("--reference-script", o->reference_script,
                  "The reference's bench_ref.py (default: tools/reference/bench_ref.py above the xc2 executable)")
      ->type_name("FILE");
  cmd->add_flag("-v,--verbose", common->verbose, "More messages");
  cmd->add_flag("-q,--quiet", common->quiet, "Only errors on stderr");
  return [o, common, no_ref]() -> int {
    apply_log_level(*common);
    o->reference = !*no_ref;
    o->decode_batches.erase(std::remove(o->decode_batches.begin(), o->decode_batches.end(), 0),
                            o->decode_batches.end());
    const BenchReport r = run_bench(*o);
    std::cout << "machine  " << r.machine << "\nmodel    " << r.model << "\n\n";
    for (const BenchRow& row : r.rows) {
      char val[64];
      std::snprintf(val, sizeof(val), "%10.2f %-8s", row.value, row.unit.c_str());
      std::cout << std::left;
      std::cout.width(28);
      std::cout << row.name << (row.unit.empty() ? std::string(20, ' ') : std::string(val)) << "  " << row.note << "\n";
    }
    return kExitOk;
  };
}

}  // namespace xc2::cli
