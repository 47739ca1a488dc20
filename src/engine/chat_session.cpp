// ChatSession (include/xc2/engine.h): upstream chat() turn by turn, the history kept in one KV sequence.
#include "core/check.h"
#include "core/log.h"
#include "engine/engine_impl.h"
#include "engine/generate.h"
#include "text/prompt.h"

namespace xc2 {

struct ChatSession::State {
  Engine* engine = nullptr;
  std::string system;
  std::unique_ptr<model::KvCache> cache;
  std::vector<int32_t> text_ids;  // every text id in the cache (the text path's penalty history)
  std::vector<int32_t> sequence;  // every position in the cache: id, or -1 for image rows
  bool any_image = false;
  int turns = 0;
};

ChatSession::ChatSession(Engine& engine, std::string system) : state_(std::make_unique<State>()) {
  state_->engine = &engine;
  state_->system = std::move(system);
  state_->cache = engine.impl_->model->new_cache();
}

ChatSession::~ChatSession() = default;

std::unique_ptr<ChatSession> Engine::new_chat(std::optional<std::string> system) {
  return std::unique_ptr<ChatSession>(new ChatSession(*this, system ? *system : text::default_system_prompt()));
}

void ChatSession::reset() {
  state_->cache->clear();
  state_->text_ids.clear();
  state_->sequence.clear();
  state_->any_image = false;
  state_->turns = 0;
}

int64_t ChatSession::n_positions() const { return state_->cache->length(); }
int ChatSession::turns() const { return state_->turns; }
const std::vector<int32_t>& ChatSession::tokens() const { return state_->sequence; }

GenerationResult ChatSession::ask(const std::string& query, const std::vector<std::string>& image_paths,
                                  const GenerationOptions& options, const StreamCallback& on_text) {
  State& s = *state_;
  EngineImpl& m = EngineAccess::impl(*s.engine);
  const auto t_start = Clock::now();
  engine::check_options(options);
  const int n_img = static_cast<int>(image_paths.size());
  const std::string q = n_img > 0 ? text::place_image_markers(query, n_img) : query;
  XC2_CHECK(n_img > 0 || text::count_markers(q, text::kImageMarker) == 0, InvalidArgument, "the prompt has ",
            text::count_markers(q, text::kImageMarker), " ", text::kImageMarker, " markers but no image was given");
  std::vector<ImageHandle> images = s.engine->encode_images(image_paths);
  text::Prompt prompt = text::build_chat_turn(*m.tok, s.system, q, n_img, s.turns > 0, m.options.parse_special);
  // With truncate_prompt, a turn that no longer fits after the history starts a new conversation (the earlier
  // turns are dropped) instead of being cut to nothing; it is cut only if it does not fit on its own.
  const int64_t limit = m.cfg().max_length;
  if (options.truncate_prompt && s.turns > 0 && s.cache->length() + prompt.n_positions(m.cfg().visual_tokens()) > limit) {
    XC2_LOG_WARN("the conversation no longer fits max_length " << limit << ": the earlier turns are dropped");
    reset();
    prompt = text::build_chat_turn(*m.tok, s.system, q, n_img, false, m.options.parse_special);
  }

  const int64_t needed = s.cache->length() + prompt.n_positions(m.cfg().visual_tokens());
  XC2_CHECK(options.truncate_prompt || s.turns == 0 || needed <= limit, InvalidArgument, "the conversation needs ",
            needed, " positions with this message but the model's max_length is ", limit,
            ": start a new conversation (/reset), or pass --truncate to drop the earlier turns when it is full");
  // Nothing in the session changes before the prompt is assembled, so a turn that fails here (too long, a bad
  // image) leaves the conversation as it was.
  std::vector<engine::GenSequence> seq(1);
  seq[0].cache = s.cache.get();
  seq[0].prompt = m.assemble(prompt, images, options.truncate_prompt, s.cache->length());
  s.any_image = s.any_image || n_img > 0;
  for (int32_t id : seq[0].prompt.tokens)
    if (id >= 0) s.text_ids.push_back(id);
  s.sequence.insert(s.sequence.end(), seq[0].prompt.tokens.begin(), seq[0].prompt.tokens.end());
  if (!s.any_image) seq[0].penalty_history = s.text_ids;
  GenerationResult r = start_result(seq[0].prompt, options);
  seq[0].result = &r;
  seq[0].on_text = on_text;
  engine::generate(m, seq, options, t_start);

  // The answer's tokens are in the cache except the last sampled one (never fed back); feed it now
  // unless it was a stop token: the next turn starts with "[UNUSED_TOKEN_145]\n", which closes the
  // answer as upstream's re-rendered history does.
  s.text_ids.insert(s.text_ids.end(), r.tokens.begin(), r.tokens.end());
  s.sequence.insert(s.sequence.end(), r.tokens.begin(), r.tokens.end());
  if (!r.tokens.empty() && (r.stop_reason == StopReason::MaxNewTokens || r.stop_reason == StopReason::Cancelled ||
                            r.stop_reason == StopReason::ContextFull)) {
    Tensor row = m.model->embed_tokens({r.tokens.back()});
    m.model->forward(row, {}, *s.cache, 0);
  }
  XC2_ASSERT(static_cast<int64_t>(s.sequence.size()) == s.cache->length());
  ++s.turns;
  return r;
}

}  // namespace xc2
