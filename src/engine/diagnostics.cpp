// EngineDiagnostics (include/xc2/diagnostics.h): the engine's backend and model, read for benchmarks.
#include "xc2/diagnostics.h"

#include "backends/backend.h"
#include "core/check.h"
#include "engine/device_decoder.h"
#include "model/weight_names.h"
#include "model/xcomposer2.h"

namespace xc2 {

std::string EngineDiagnostics::backend_name() const { return backend_->name(); }

double EngineDiagnostics::measure_copy_bandwidth_gbs() { return backend_->measure_copy_bandwidth_gbs(); }

double EngineDiagnostics::peak_bandwidth_gbs() const { return backend_->peak_bandwidth_gbs(); }

DeviceMemory EngineDiagnostics::memory() const {
  const Backend::MemoryStats m = backend_->memory_stats();
  return {m.needed, m.peak, m.cached, m.device_used, m.device_total};
}

void EngineDiagnostics::reset_memory_peak() { backend_->reset_memory_peak(); }

void EngineDiagnostics::synchronize() { backend_->synchronize(); }

uint64_t EngineDiagnostics::weight_bytes_per_token() const {
  const io::ModelConfig& c = model_->config();
  const uint64_t D = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, L = c.num_hidden_layers;
  const uint64_t H = c.num_attention_heads, Hk = c.num_key_value_heads, d = c.head_dim();
  const uint64_t layer = (H + 2 * Hk) * d * D + D * H * d + 3 * D * I + 2 * D;  // plain linears + 2 norms
  // The element size as the backend stores weights (the CPU keeps the checkpoint's dtype, a GPU converts
  // to its compute dtype): asked of the backend with the smallest decoder weight.
  const io::TensorView* norm = model_->checkpoint().find(model::names::final_norm());
  XC2_CHECK(norm != nullptr, Internal, "no final norm in the checkpoint");
  const uint64_t es = dtype_size(backend_->weight(*norm).dtype);
  return (L * layer + D + V * D + D) * es;  // + final norm, output head, one embedding row
}

uint64_t EngineDiagnostics::kv_bytes_per_position() const {
  const io::ModelConfig& c = model_->config();
  return 2ull * static_cast<uint64_t>(c.num_hidden_layers) * static_cast<uint64_t>(c.num_key_value_heads) *
         static_cast<uint64_t>(c.head_dim()) * dtype_size(backend_->act_dtype());
}

bool EngineDiagnostics::decode_uses_graphs() {
  // The engine's own decision: a decoder for one step after one position, as generate() would create it.
  auto cache = model_->new_cache();
  text::SamplingParams sp;
  sp.do_sample = false;
  const std::unique_ptr<engine::DeviceDecoder> dev = engine::DeviceDecoder::create(*model_, *cache, sp, {}, 1, 1);
  return dev != nullptr && dev->uses_graphs();
}

}  // namespace xc2
