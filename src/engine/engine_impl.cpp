// Engine::Impl's request helpers (engine/engine_impl.h): prompt text -> segments -> decoder rows, stop rules.
#include <algorithm>
#include <random>

#include "core/check.h"
#include "core/log.h"
#include "engine/engine_impl.h"

namespace xc2 {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

text::Prompt EngineImpl::tokenize_request(const Request& r) const {
  const int n = static_cast<int>(r.images.size());
  auto check_markers = [&](const char* marker) {
    const int markers = text::count_markers(r.text, marker);
    XC2_CHECK(markers == n, InvalidArgument, "the prompt has ", markers, " ", marker, " marker",
              markers == 1 ? "" : "s", " but ", n, " image", n == 1 ? " was" : "s were", " given");
  };
  std::vector<text::TextSpan> user;
  if (!options.parse_special) {
    for (const auto& [b, e] : r.user_spans) {
      XC2_CHECK(b <= e && e <= r.text.size(), InvalidArgument, "a user span [", b, ", ", e,
                ") lies outside the prompt text (", r.text.size(), " bytes)");
      user.push_back({b, e});
    }
  }
  switch (r.style) {
    case PromptStyle::ChatImage:
      check_markers(text::kImageMarker);
      return text::build_image_prompt(*tok, r.text, n, text::kImageMarker, true, user);
    case PromptStyle::Interleave:
      check_markers(text::kComposeMarker);
      return text::build_image_prompt(*tok, r.text, n, text::kComposeMarker, false, user);
    case PromptStyle::ChatText:
      XC2_CHECK(n == 0, InvalidArgument, "a text-only prompt cannot carry images");
      return text::build_text_prompt(*tok, r.text, user);
    case PromptStyle::Raw:
      XC2_CHECK(n == 0, InvalidArgument, "a raw prompt cannot carry images");
      return text::build_raw_prompt(*tok, r.text, true, user);
  }
  XC2_THROW(Internal, "unknown prompt style");
}

EngineImpl::Assembled EngineImpl::assemble(const text::Prompt& prompt, const std::vector<ImageHandle>& images,
                                           bool truncate, int64_t already_in_cache) {
  const io::ModelConfig& c = cfg();
  const int64_t vt = c.visual_tokens();
  Assembled out;
  int64_t T = prompt.n_positions(vt);
  const int64_t limit = c.max_length;
  if (already_in_cache + T > limit) {
    XC2_CHECK(truncate, InvalidArgument, "the prompt needs ", already_in_cache + T,
              " positions but the model's max_length is ", limit,
              " (shorten the prompt, use fewer images, or pass --truncate to cut it as upstream does)");
    XC2_LOG_WARN("prompt of " << already_in_cache + T << " positions truncated to max_length " << limit);
    T = std::max<int64_t>(0, limit - already_in_cache);
  }
  XC2_CHECK(T > 0, InvalidArgument, "the prompt is empty");
  out.rows = backend->empty({T, c.hidden_size});
  int64_t pos = 0;
  for (const text::PromptSegment& seg : prompt.segments) {
    if (pos >= T) break;
    if (seg.image >= 0) {
      XC2_ASSERT(static_cast<size_t>(seg.image) < images.size());
      const EncodedImage& img = *images[static_cast<size_t>(seg.image)];
      const int64_t n = std::min(vt, T - pos);
      Tensor dst = out.rows.rows(pos, n);
      backend->copy(img.rows.rows(0, n), dst);
      out.spans.push_back({pos, n});
      out.tokens.insert(out.tokens.end(), static_cast<size_t>(n), -1);
      out.load_ms += img.load_ms;
      out.vision_ms += img.vision_ms;
      pos += n;
    } else if (!seg.ids.empty()) {
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(seg.ids.size()), T - pos);
      std::vector<int32_t> ids(seg.ids.begin(), seg.ids.begin() + n);
      Tensor dst = out.rows.rows(pos, n);
      model->embed(TokenIds::of(ids), dst);
      out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
      out.n_text_tokens += n;
      pos += n;
    }
  }
  XC2_ASSERT(pos == T);
  return out;
}

EngineImpl::Assembled EngineImpl::assemble_request(const Request& request, bool truncate,
                                                   std::vector<int32_t>* penalty_history) {
  Assembled a = assemble(tokenize_request(request), request.images, truncate, 0);
  penalty_history->clear();
  if (request.penalize_prompt)
    for (int32_t id : a.tokens)
      if (id >= 0) penalty_history->push_back(id);
  return a;
}

std::set<int32_t> EngineImpl::stop_set(const GenerationOptions& o) const {
  std::set<int32_t> s(o.stop_ids.begin(), o.stop_ids.end());
  if (!o.ignore_eos) s.insert(default_stops.begin(), default_stops.end());
  return s;
}

StopReason EngineImpl::stop_reason(int32_t id) const {
  return id == tok->eos_id() ? StopReason::Eos : id == tok->im_end_id() ? StopReason::ImEnd : StopReason::StopId;
}

int64_t EngineImpl::context_limit() const {
  return std::max<int64_t>(cfg().max_position_embeddings, cfg().max_length) * 4;
}

void EngineImpl::finish_result(GenerationResult& r) const {
  if (r.stop_reason == StopReason::Eos || r.stop_reason == StopReason::ImEnd || r.stop_reason == StopReason::StopId)
    r.tokens.pop_back();
  r.text = tok->decode(r.tokens, true);
  const size_t cut = r.text.find("[UNUSED_TOKEN_145]");
  if (cut != std::string::npos) r.text.resize(cut);
}

GenerationResult start_result(const EngineImpl::Assembled& a, const GenerationOptions& o) {
  GenerationResult r;
  r.prompt_positions = a.rows.rows();
  r.prompt_tokens = a.n_text_tokens;
  r.timings.load_ms = a.load_ms;
  r.timings.vision_ms = a.vision_ms;
  r.seed = o.seed ? *o.seed : std::random_device{}();
  return r;
}

}  // namespace xc2
