// EngineDiagnostics (include/xc2/diagnostics.h): the engine's backend and model, read for benchmarks.
#include "xc2/diagnostics.h"

#include "backends/backend.h"
#include "core/check.h"
#include "engine/device_decoder.h"
#include "engine/engine_impl.h"
#include "model/weight_names.h"
#include "model/xcomposer2.h"

namespace xc2 {
namespace {

Backend& backend_of(Engine* e) { return *EngineAccess::impl(*e).backend; }
model::XComposer2& model_of(Engine* e) { return *EngineAccess::impl(*e).model; }

}  // namespace

std::string EngineDiagnostics::backend_name() const { return backend_of(engine_).name(); }

double EngineDiagnostics::measure_copy_bandwidth_gbs() { return backend_of(engine_).measure_copy_bandwidth_gbs(); }

double EngineDiagnostics::peak_bandwidth_gbs() const { return backend_of(engine_).peak_bandwidth_gbs(); }

DeviceMemory EngineDiagnostics::memory() const {
  const Backend::MemoryStats m = backend_of(engine_).memory_stats();
  return {m.needed, m.peak, m.cached, m.device_used, m.device_total};
}

void EngineDiagnostics::reset_memory_peak() { backend_of(engine_).reset_memory_peak(); }

void EngineDiagnostics::synchronize() { backend_of(engine_).synchronize(); }

uint64_t EngineDiagnostics::weight_bytes_per_token() const { return model_of(engine_).decode_weight_bytes(); }

uint64_t EngineDiagnostics::kv_bytes_per_position() const {
  const io::ModelConfig& c = model_of(engine_).config();
  return 2ull * static_cast<uint64_t>(c.num_hidden_layers) * static_cast<uint64_t>(c.num_key_value_heads) *
         static_cast<uint64_t>(c.head_dim()) * dtype_size(backend_of(engine_).act_dtype());
}

bool EngineDiagnostics::decode_uses_graphs() {
  // The engine's own decision: a decoder for one step after one position, as generate() would create it.
  auto cache = model_of(engine_).new_cache();
  text::SamplingParams sp;
  sp.do_sample = false;
  const std::unique_ptr<engine::DeviceDecoder> dev = engine::DeviceDecoder::create(model_of(engine_), *cache, sp, {}, 1, 1);
  return dev != nullptr && dev->uses_graphs();
}

}  // namespace xc2
