// xc2 serve: the OpenAI chat-completions request subset (tools/xc2/serve_api.h).
#include "serve_api.h"

#include <limits.h>
#include <stdlib.h>

#include <cmath>
#include <nlohmann/json.hpp>

namespace xc2::cli::serve {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  ApiError e;
  e.status = 400;
  e.param = param;
  e.message = message;
  throw e;
}

// The JSON type name, for "must be a string, got a number".
std::string type_of(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

double number(const json& v, const std::string& param) {
  if (!v.is_number()) bad(param, "'" + param + "' must be a number, got " + type_of(v));
  const double d = v.get<double>();
  if (!std::isfinite(d)) bad(param, "'" + param + "' must be a finite number");
  return d;
}

int64_t integer(const json& v, const std::string& param) {
  if (!v.is_number_integer() && !v.is_number_unsigned())
    bad(param, "'" + param + "' must be an integer, got " + type_of(v));
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    bad(param, "'" + param + "' is too large");
  return v.get<int64_t>();
}

const json* field(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

// The image of an image_url part: a data: URI, or a file:// path inside the image root.
Engine::PreparedImage load_image_url(const std::string& url, const std::string& param, const ApiLimits& limits,
                                     const Engine& engine) {
  if (url.rfind("http://", 0) == 0 || url.rfind("https://", 0) == 0)
    bad(param, "the server fetches nothing from the network: send the image as a data: URI (base64)");
  if (url.rfind("data:", 0) == 0) {
    const size_t comma = url.find(',');
    if (comma == std::string::npos) bad(param, "a data: URI without ',' before its data");
    const std::string meta = url.substr(5, comma - 5);
    if (meta.size() < 7 || meta.compare(meta.size() - 7, 7, ";base64") != 0)
      bad(param, "the data: URI must be base64 (data:image/png;base64,...)");
    std::string bytes;
    if (!base64_decode(url.substr(comma + 1), bytes)) bad(param, "the data: URI's base64 is invalid");
    if (bytes.empty()) bad(param, "the data: URI holds no data");
    Engine::PreparedImage img = engine.prepare_image_bytes(bytes, param);
    if (!img.error.empty()) bad(param, "not an image xc2 can read: " + img.error);
    return img;
  }
  if (url.rfind("file://", 0) == 0) {
    if (limits.image_root.empty())
      bad(param, "file:// images are off (start the server with --image-root DIR to allow files inside DIR)");
    const std::string path = url.substr(7);
    if (path.empty() || path[0] != '/') bad(param, "a file:// URL needs an absolute path (file:///dir/image.png)");
    char real[PATH_MAX];
    if (!realpath(path.c_str(), real)) bad(param, "no such image file inside --image-root: " + path);
    const std::string r = real;
    if (r.compare(0, limits.image_root.size(), limits.image_root) != 0 || r.size() <= limits.image_root.size() ||
        (limits.image_root.back() != '/' && r[limits.image_root.size()] != '/'))
      bad(param, "the file is outside --image-root: " + path);
    Engine::PreparedImage img = engine.prepare_image(r);
    if (!img.error.empty()) bad(param, "not an image xc2 can read: " + img.error);
    return img;
  }
  bad(param, "unsupported image URL (expected a data: URI, or file:// with --image-root)");
}

// One message's text and images.
struct Message {
  std::string role;
  std::string text;
  std::vector<Engine::PreparedImage> images;
};

Message parse_message(const json& m, size_t i, const ApiLimits& limits, const Engine& engine, int& n_images) {
  const std::string p = "messages[" + std::to_string(i) + "]";
  if (!m.is_object()) bad(p, "'" + p + "' must be an object, got " + type_of(m));
  Message out;
  const json* role = field(m, "role");
  if (!role || !role->is_string()) bad(p + ".role", "'" + p + ".role' must be a string");
  out.role = role->get<std::string>();
  if (out.role == "developer") out.role = "system";
  if (out.role != "system" && out.role != "user" && out.role != "assistant")
    bad(p + ".role", "unsupported role '" + out.role + "' (system, user or assistant)");
  const json* content = field(m, "content");
  if (!content) bad(p + ".content", "'" + p + ".content' is required");
  if (content->is_string()) {
    out.text = content->get<std::string>();
    return out;
  }
  if (!content->is_array()) bad(p + ".content", "'" + p + ".content' must be a string or an array of parts");
  std::vector<std::string> texts;
  for (size_t k = 0; k < content->size(); ++k) {
    const json& part = (*content)[k];
    const std::string pp = p + ".content[" + std::to_string(k) + "]";
    if (!part.is_object()) bad(pp, "'" + pp + "' must be an object");
    const json* type = field(part, "type");
    if (!type || !type->is_string()) bad(pp + ".type", "'" + pp + ".type' must be a string");
    const std::string t = type->get<std::string>();
    if (t == "text") {
      const json* tx = field(part, "text");
      if (!tx || !tx->is_string()) bad(pp + ".text", "'" + pp + ".text' must be a string");
      texts.push_back(tx->get<std::string>());
    } else if (t == "image_url") {
      if (out.role != "user") bad(pp, "images go in user messages only");
      const json* iu = field(part, "image_url");
      std::string url;
      if (iu && iu->is_string()) url = iu->get<std::string>();
      else if (iu && iu->is_object() && field(*iu, "url") && (*iu)["url"].is_string()) url = (*iu)["url"].get<std::string>();
      else bad(pp + ".image_url", "'" + pp + ".image_url' must be an object with a string 'url'");
      if (++n_images > limits.max_images)
        bad(pp, "too many images: at most " + std::to_string(limits.max_images) + " per request");
      out.images.push_back(load_image_url(url, pp + ".image_url.url", limits, engine));
    } else {
      bad(pp + ".type", "unsupported content part type '" + t + "' (text or image_url)");
    }
  }
  for (size_t k = 0; k < texts.size(); ++k) out.text += (k ? "\n" : "") + texts[k];
  return out;
}

}  // namespace

std::string error_json(const ApiError& e) {
  json j = {{"error",
             {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool base64_decode(const std::string& in, std::string& out) {
  out.clear();
  out.reserve(in.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0, n = 0;
  for (char c : in) {
    if (c == '\n' || c == '\r') continue;
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else if (c == '=') {
      ++pad;
      ++n;
      continue;
    } else {
      return false;
    }
    if (pad > 0) return false;  // data after padding
    ++n;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if (pad > 2) return false;
  if (pad > 0 && n % 4 != 0) return false;
  if ((n - pad) % 4 == 1) return false;  // a lone 6-bit group is not a byte
  return true;
}

const char* finish_reason(StopReason r) {
  switch (r) {
    case StopReason::MaxNewTokens:
    case StopReason::ContextFull: return "length";
    case StopReason::Cancelled: return "cancelled";
    default: return "stop";
  }
}

ChatRequest parse_chat_request(const std::string& body, const ApiLimits& limits, const Engine& engine) {
  const json req = json::parse(body, nullptr, false);
  if (req.is_discarded()) bad("", "the request body is not valid JSON");
  if (!req.is_object()) bad("", "the request body must be a JSON object, got " + type_of(req));
  ChatRequest out;
  GenerationOptions& o = out.job.options;
  o.max_new_tokens = limits.default_max_tokens;

  const json* model = field(req, "model");
  if (!model || !model->is_string()) bad("model", "'model' must be a string (GET /v1/models lists it)");
  if (model->get<std::string>() != limits.model_id)
    bad("model", "unknown model '" + model->get<std::string>() + "' (this server serves '" + limits.model_id + "')");

  if (const json* v = field(req, "stream")) {
    if (!v->is_boolean()) bad("stream", "'stream' must be a boolean, got " + type_of(*v));
    out.stream = v->get<bool>();
  }
  if (const json* v = field(req, "stream_options")) {
    if (!v->is_object()) bad("stream_options", "'stream_options' must be an object");
    if (const json* u = field(*v, "include_usage")) {
      if (!u->is_boolean()) bad("stream_options.include_usage", "'stream_options.include_usage' must be a boolean");
      out.include_usage = u->get<bool>();
    }
  }
  if (const json* v = field(req, "n"))
    if (integer(*v, "n") != 1) bad("n", "only n = 1 is supported");
  const json* mt = field(req, "max_completion_tokens");
  if (!mt) mt = field(req, "max_tokens");
  if (mt) {
    const int64_t n = integer(*mt, mt == field(req, "max_tokens") ? "max_tokens" : "max_completion_tokens");
    if (n < 1 || n > 1000000) bad("max_tokens", "'max_tokens' must be in 1..1000000");
    o.max_new_tokens = static_cast<int>(n);
  }
  if (const json* v = field(req, "temperature")) {
    const double t = number(*v, "temperature");
    if (t < 0 || t > 2) bad("temperature", "'temperature' must be in [0, 2]");
    if (t == 0) o.do_sample = false;
    else o.temperature = static_cast<float>(t);
  }
  if (const json* v = field(req, "top_p")) {
    const double t = number(*v, "top_p");
    if (!(t > 0 && t <= 1)) bad("top_p", "'top_p' must be in (0, 1]");
    o.top_p = static_cast<float>(t);
  }
  if (const json* v = field(req, "top_k")) {
    const int64_t k = integer(*v, "top_k");
    if (k < 0 || k > 1000000) bad("top_k", "'top_k' must be >= 0 (0: off)");
    o.top_k = static_cast<int>(k);
  }
  if (const json* v = field(req, "repetition_penalty")) {
    const double t = number(*v, "repetition_penalty");
    if (!(t > 0) || t > 100) bad("repetition_penalty", "'repetition_penalty' must be in (0, 100]");
    o.repetition_penalty = static_cast<float>(t);
  }
  if (const json* v = field(req, "seed")) o.seed = static_cast<uint64_t>(integer(*v, "seed"));
  if (const json* v = field(req, "ignore_eos")) {
    if (!v->is_boolean()) bad("ignore_eos", "'ignore_eos' must be a boolean");
    o.ignore_eos = v->get<bool>();
  }
  if (const json* v = field(req, "stop")) {
    std::vector<std::string> stops;
    if (v->is_string()) {
      stops.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      for (const json& s : *v) {
        if (!s.is_string()) bad("stop", "'stop' must be a string or an array of strings");
        stops.push_back(s.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or an array of strings, got " + type_of(*v));
    }
    if (stops.size() > 4) bad("stop", "at most 4 stop strings");
    for (const std::string& s : stops)
      if (s.empty()) bad("stop", "a stop string is empty");
    o.stop_strings = stops;
  }
  // Features this server does not have: refused rather than silently ignored.
  for (const char* key : {"tools", "functions", "tool_choice", "function_call", "response_format", "logit_bias"})
    if (field(req, key)) bad(key, std::string("'") + key + "' is not supported by xc2 serve");
  if (const json* v = field(req, "logprobs"))
    if (!v->is_boolean() || v->get<bool>()) bad("logprobs", "'logprobs' is not supported by xc2 serve");
  for (const char* key : {"presence_penalty", "frequency_penalty"})
    if (const json* v = field(req, key))
      if (number(*v, key) != 0) bad(key, std::string("'") + key + "' is not supported (use repetition_penalty)");

  const json* msgs = field(req, "messages");
  if (!msgs || !msgs->is_array()) bad("messages", "'messages' must be an array of messages");
  if (msgs->empty()) bad("messages", "'messages' is empty");
  int n_images = 0;
  std::vector<Message> ms;
  for (size_t i = 0; i < msgs->size(); ++i) ms.push_back(parse_message((*msgs)[i], i, limits, engine, n_images));

  // [system...] (user assistant)* user: the chat template of `xc2 chat`, history re-rendered as upstream does.
  size_t i = 0;
  std::string system;
  bool has_system = false;
  while (i < ms.size() && ms[i].role == "system") {
    system += (has_system ? "\n" : "") + ms[i].text;
    has_system = true;
    ++i;
  }
  if (!has_system) system = default_system_prompt();
  std::vector<std::pair<std::string, std::string>> history;
  std::vector<Engine::PreparedImage>& images = out.job.images;
  auto user_text = [&](Message& m, size_t idx) {
    const std::string p = "messages[" + std::to_string(idx) + "]";
    const int n = static_cast<int>(m.images.size());
    const int markers = count_markers(m.text, "<ImageHere>");
    if (n == 0 && markers > 0) bad(p + ".content", "the message has <ImageHere> markers but no image");
    if (n > 0 && markers > 0 && markers != n)
      bad(p + ".content", "the message has " + std::to_string(markers) + " <ImageHere> markers but " +
                              std::to_string(n) + " images");
    for (auto& img : m.images) images.push_back(std::move(img));
    return n > 0 ? place_image_markers(m.text, n) : m.text;
  };
  for (; i + 1 < ms.size(); i += 2) {
    if (ms[i].role != "user")
      bad("messages", "messages must be: system messages first, then user and assistant turns in turn, ending "
                      "with a user message (messages[" + std::to_string(i) + "] is " + ms[i].role + ")");
    if (ms[i + 1].role != "assistant")
      bad("messages", "messages[" + std::to_string(i + 1) + "] must be an assistant message (turns alternate)");
    const std::string q = user_text(ms[i], i);
    history.push_back({q, ms[i + 1].text});
  }
  if (i >= ms.size() || ms[i].role != "user") bad("messages", "the last message must be a user message");
  const std::string query = user_text(ms[i], i);
  const ChatPrompt p = chat_prompt(system, history, query);
  out.job.request.text = p.text;
  out.job.request.user_spans = p.user_spans;
  out.job.request.style = images.empty() ? PromptStyle::ChatText : PromptStyle::ChatImage;
  out.job.request.penalize_prompt = images.empty();
  return out;
}

}  // namespace xc2::cli::serve
