// ChatSession (include/xc2/engine.h): upstream chat() turn by turn, the history kept in one KV sequence.
#include "core/check.h"
#include "core/log.h"
#include "engine/engine_impl.h"
#include "engine/generate.h"
#include "text/prompt.h"

namespace xc2 {
namespace {

// A turn kept to rebuild the cache without the oldest turns when it is full (--truncate).
struct ChatTurn {
  std::string query;  // image markers placed
  std::vector<ImageHandle> images;
  std::vector<int32_t> answer;  // the answer's ids as they are in the cache
};

// The positions turns[from..] take as a conversation's first turns, each with its answer.
int64_t history_positions(EngineImpl& m, const std::string& system, const std::vector<ChatTurn>& turns, size_t from) {
  int64_t n = 0;
  for (size_t i = from; i < turns.size(); ++i) {
    const text::Prompt p = text::build_chat_turn(*m.tok, system, turns[i].query,
                                                 static_cast<int>(turns[i].images.size()), i > from,
                                                 m.options.parse_special);
    n += p.n_positions(m.cfg().visual_tokens()) + static_cast<int64_t>(turns[i].answer.size());
  }
  return n;
}

}  // namespace

struct ChatSession::State {
  Engine* engine = nullptr;
  std::string system;
  std::unique_ptr<model::KvCache> cache;
  std::vector<int32_t> text_ids;  // every text id in the cache (the text path's penalty history)
  std::vector<int32_t> sequence;  // every position in the cache: id, or -1 for image rows
  bool any_image = false;
  int turns = 0;
  std::vector<ChatTurn> history;  // the turns in the cache, oldest first
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
  state_->history.clear();
}

void ChatSession::drop_oldest_turns(size_t n_drop) {
  State& s = *state_;
  EngineImpl& m = EngineAccess::impl(*s.engine);
  std::vector<ChatTurn> keep(s.history.begin() + static_cast<std::ptrdiff_t>(n_drop), s.history.end());
  reset();
  // Prefill the kept turns again, the first one now opening the conversation (system prompt, BOS).
  for (size_t i = 0; i < keep.size(); ++i) {
    const ChatTurn& t = keep[i];
    const text::Prompt p = text::build_chat_turn(*m.tok, s.system, t.query, static_cast<int>(t.images.size()), i > 0,
                                                 m.options.parse_special);
    EngineImpl::Assembled a = m.assemble(p, t.images, false, s.cache->length());
    m.model->forward(a.rows, a.spans, *s.cache, 0);
    if (!t.answer.empty()) m.model->forward(m.model->embed_tokens(t.answer), {}, *s.cache, 0);
    s.any_image = s.any_image || !t.images.empty();
    for (int32_t id : a.tokens)
      if (id >= 0) s.text_ids.push_back(id);
    s.sequence.insert(s.sequence.end(), a.tokens.begin(), a.tokens.end());
    s.text_ids.insert(s.text_ids.end(), t.answer.begin(), t.answer.end());
    s.sequence.insert(s.sequence.end(), t.answer.begin(), t.answer.end());
    ++s.turns;
  }
  s.history = std::move(keep);
  XC2_ASSERT(static_cast<int64_t>(s.sequence.size()) == s.cache->length());
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
  // With truncate_prompt, a turn that no longer fits after the history drops the oldest turns, as few as make
  // it fit (the kept ones are prefilled again, the first opening the conversation); if it does not fit even
  // after the system prompt alone, the conversation starts anew and the turn is cut.
  const int64_t limit = m.cfg().max_length;
  const int64_t visual = m.cfg().visual_tokens();
  if (options.truncate_prompt && s.turns > 0 && s.cache->length() + prompt.n_positions(visual) > limit) {
    const text::Prompt alone = text::build_chat_turn(*m.tok, s.system, q, n_img, true, m.options.parse_special);
    size_t n_drop = 1;
    while (n_drop < s.history.size() &&
           history_positions(m, s.system, s.history, n_drop) + alone.n_positions(visual) > limit)
      ++n_drop;
    if (n_drop < s.history.size()) {
      XC2_LOG_WARN("the conversation no longer fits max_length "
                   << limit << (n_drop == 1 ? ": the oldest turn is dropped" : ": the oldest turns are dropped")
                   << " (" << n_drop << " of " << s.history.size() << ")");
      drop_oldest_turns(n_drop);
      prompt = alone;
    } else {
      XC2_LOG_WARN("the conversation no longer fits max_length " << limit << ": the earlier turns are dropped");
      reset();
      prompt = text::build_chat_turn(*m.tok, s.system, q, n_img, false, m.options.parse_special);
    }
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
  s.history.push_back({q, std::move(images), r.tokens});
  return r;
}

}  // namespace xc2
