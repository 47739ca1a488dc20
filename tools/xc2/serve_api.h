// xc2 serve's OpenAI chat-completions subset, without the HTTP: a request body -> a scheduler job (or an API
// error with its status), and the response and chunk JSON. docs/serving.md lists what is supported.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xc2/engine.h"
#include "xc2/scheduler.h"

namespace xc2::cli::serve {

// An error answered as OpenAI's error JSON with this HTTP status.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
};
std::string error_json(const ApiError& e);

struct ApiLimits {
  std::string model_id;    // the name /v1/models lists; requests must name it
  std::string image_root;  // file:// images inside this folder only; empty: no file:// images
  int max_images = 4;      // per request
  int default_max_tokens = 1024;
};

// A parsed /v1/chat/completions request.
struct ChatRequest {
  SchedulerJob job;         // request, images, options (callbacks left to the caller)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// Parses and checks a request body; throws ApiError (400) for anything wrong, naming the parameter.
ChatRequest parse_chat_request(const std::string& body, const ApiLimits& limits, const Engine& engine);

// Strict base64 (RFC 4648, padding optional, no whitespace except line breaks); false on a bad character.
bool base64_decode(const std::string& in, std::string& out);

// "stop" (eos, im_end, stop id, stop string), "length" (max tokens, context full), "cancelled".
const char* finish_reason(StopReason r);

}  // namespace xc2::cli::serve
