// xc2 serve: an OpenAI-compatible HTTP server (POST /v1/chat/completions, GET /v1/models, /health, /metrics)
// over the continuous-batching scheduler (include/xc2/scheduler.h). HTTP/1.1 through cpp-httplib (Debian's
// libcpp-httplib-dev); without it xc2 is built with a `serve` that says so.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "cli_common.h"
#include "serve_api.h"

#ifdef XC2_HAVE_HTTPLIB
#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <limits.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdlib.h>

#include <nlohmann/json.hpp>
#endif

namespace xc2::cli {

struct ServeFlags {
  CommonOptions common;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key;
  int max_batch = 8;
  int max_queue = 64;
  int64_t kv_budget = 0;
  int64_t max_body = 32 << 20;
  std::string image_root;
  int max_images = 4;
  int max_tokens = 1024;
  int prefill_chunk = 256;
  bool no_prefix_cache = false;
  double grace = 10;
  std::string model_id;
};

#ifndef XC2_HAVE_HTTPLIB

Handler register_serve(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (not in this build)");
  cmd->allow_extras();
  return []() -> int {
    throw UsageError("this xc2 was built without cpp-httplib, so without `serve` (install libcpp-httplib-dev, "
                     "e.g. tools/install_deps.sh, and rebuild)");
  };
}

#else

namespace {

using nlohmann::json;
using serve::ApiError;
using SteadyClock = std::chrono::steady_clock;

// A Prometheus histogram (cumulative buckets, seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double v) {
    std::lock_guard<std::mutex> lk(mu_);
    size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += v;
    ++n_;
  }
  void write(std::ostream& os, const std::string& name, const std::string& help) const {
    std::lock_guard<std::mutex> lk(mu_);
    os << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
    uint64_t cum = 0;
    for (size_t i = 0; i < bounds_.size(); ++i) {
      cum += counts_[i];
      os << name << "_bucket{le=\"" << bounds_[i] << "\"} " << cum << "\n";
    }
    cum += counts_.back();
    os << name << "_bucket{le=\"+Inf\"} " << cum << "\n" << name << "_sum " << sum_ << "\n" << name << "_count " << n_ << "\n";
  }

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t n_ = 0;
};

struct Metrics {
  std::mutex mu;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (endpoint, status) -> count
  std::atomic<uint64_t> prompt_tokens{0}, completion_tokens{0}, cancelled{0}, disconnects{0};
  Histogram ttft{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}};
  Histogram itl{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}};
};

// What the scheduler's callbacks hand to the HTTP thread of one request.
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> pieces;
  bool done = false;
  GenerationResult result;
  std::string error;
  ErrorCode code = ErrorCode::Internal;
};

std::atomic<bool> g_stop{false};

// The socket of a request's connection (httplib 0.11 does not hand it to handlers): the descriptor whose two
// ends are the request's addresses; -1 if none is found. Valid while the handler runs (httplib closes it after).
int request_socket(const httplib::Request& req) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  int found = -1;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof(local), pl = sizeof(peer);
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    auto port_and_host = [](const sockaddr_storage& a, std::string& host) -> int {
      char buf[INET6_ADDRSTRLEN] = {0};
      if (a.ss_family == AF_INET) {
        const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
        inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof(buf));
        host = buf;
        return ntohs(v4->sin_port);
      }
      if (a.ss_family == AF_INET6) {
        const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
        inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof(buf));
        host = buf;
        return ntohs(v6->sin6_port);
      }
      return -1;
    };
    std::string lh, ph;
    if (port_and_host(local, lh) == req.local_port && port_and_host(peer, ph) == req.remote_port &&
        ph == req.remote_addr) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(d);
  return found;
}

// Whether the client closed its end (an orderly close or a reset; data it sent ahead is left unread).
bool peer_closed(int fd) {
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

int status_for(ErrorCode c) {
  switch (c) {
    case ErrorCode::InvalidArgument:
    case ErrorCode::Unsupported:
    case ErrorCode::NotFound:
    case ErrorCode::Io: return 400;
    default: return 500;
  }
}

class Server {
 public:
  Server(const ServeFlags& f, Engine& engine, Scheduler& sched) : f_(f), engine_(engine), sched_(sched) {
    limits_.model_id = f.model_id;
    limits_.max_images = f.max_images;
    limits_.default_max_tokens = f.max_tokens;
    if (!f.image_root.empty()) {
      char real[PATH_MAX];
      if (!realpath(f.image_root.c_str(), real)) throw UsageError("--image-root: no such folder: " + f.image_root);
      limits_.image_root = real;
    }
    created_ = static_cast<int64_t>(std::time(nullptr));
  }

  httplib::Server& http() { return svr_; }

  void setup() {
    const size_t threads = static_cast<size_t>(std::min(256, f_.max_batch + f_.max_queue + 8));
    svr_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    svr_.set_payload_max_length(static_cast<size_t>(f_.max_body));
    svr_.set_keep_alive_max_count(100);
    svr_.set_read_timeout(30);
    svr_.set_write_timeout(30);
    svr_.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      ApiError e;
      e.status = res.status;
      if (res.status == 413 && req.get_header_value("Content-Type").find("x-www-form-urlencoded") != std::string::npos) {
        // cpp-httplib caps form bodies at 8 KiB (curl -d without a Content-Type sends one).
        e.message = "send the request body as JSON (Content-Type: application/json), not as a form";
        e.code = "request_too_large";
      } else if (res.status == 413) {
        e.message = "the request body is larger than --max-body (" + std::to_string(f_.max_body) + " bytes)";
        e.code = "request_too_large";
      } else if (res.status == 404) {
        e.message = "no such endpoint (POST /v1/chat/completions, GET /v1/models, /health, /metrics)";
        e.code = "not_found";
      } else {
        e.message = "bad request";
      }
      res.set_content(serve::error_json(e), "application/json");
    });
    svr_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      ApiError e;
      e.status = 500;
      e.type = "server_error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& ex) {
        e.message = std::string("internal error: ") + ex.what();
      } catch (...) {
        e.message = "internal error";
      }
      res.status = 500;
      res.set_content(serve::error_json(e), "application/json");
    });
    svr_.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      std::string ep = req.path;
      if (ep.rfind("/v1/models/", 0) == 0) ep = "/v1/models/{id}";
      else if (ep != "/v1/chat/completions" && ep != "/v1/models" && ep != "/health" && ep != "/metrics") ep = "other";
      std::lock_guard<std::mutex> lk(metrics_.mu);
      ++metrics_.requests[{ep, res.status}];
      if (f_.common.verbose) std::cerr << "xc2 serve: " << req.method << " " << req.path << " " << res.status << "\n";
    });

    svr_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (g_stop.load()) {
        res.status = 503;
        res.set_content("{\"status\":\"shutting down\"}", "application/json");
        return;
      }
      res.set_content("{\"status\":\"ok\"}", "application/json");
    });
    svr_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_text(), "text/plain; version=0.0.4");
    });
    svr_.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res)) return;
      json j = {{"object", "list"}, {"data", json::array({model_object()})}};
      res.set_content(j.dump(), "application/json");
    });
    svr_.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res)) return;
      if (req.matches[1] != f_.model_id) {
        ApiError e;
        e.status = 404;
        e.message = "no model '" + std::string(req.matches[1]) + "' (this server serves '" + f_.model_id + "')";
        e.param = "model";
        e.code = "model_not_found";
        return send_error(res, e);
      }
      res.set_content(model_object().dump(), "application/json");
    });
    svr_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res)) return;
      chat(req, res);
    });
  }

 private:
  static constexpr int kParsing = 4;
  struct ParseSlot {
    explicit ParseSlot(Server& s) : s_(s) {
      std::unique_lock<std::mutex> lk(s_.parse_mu_);
      s_.parse_cv_.wait(lk, [&] { return s_.parsing_ < kParsing; });
      ++s_.parsing_;
    }
    ~ParseSlot() {
      {
        std::lock_guard<std::mutex> lk(s_.parse_mu_);
        --s_.parsing_;
      }
      s_.parse_cv_.notify_one();
    }
    Server& s_;
  };

  static void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(serve::error_json(e), "application/json");
  }

  // The model as GET /v1/models lists it and GET /v1/models/{id} returns it.
  json model_object() const {
    return {{"id", f_.model_id}, {"object", "model"}, {"created", created_}, {"owned_by", "xc2"}};
  }

  bool authorized(const httplib::Request& req, httplib::Response& res) {
    if (f_.api_key.empty()) return true;
    const std::string want = "Bearer " + f_.api_key;
    const std::string got = req.get_header_value("Authorization");
    // Compared without an early exit.
    unsigned diff = static_cast<unsigned>(got.size() ^ want.size());
    for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned>(i < got.size() ? got[i] ^ want[i] : 1);
    if (diff == 0) return true;
    ApiError e;
    e.status = 401;
    e.message = got.empty() ? "missing API key (send 'Authorization: Bearer KEY')" : "invalid API key";
    e.code = "invalid_api_key";
    send_error(res, e);
    return false;
  }

  std::string chunk_json(const std::string& id, const json& delta, const char* finish) const {
    json j = {{"id", id},
              {"object", "chat.completion.chunk"},
              {"created", static_cast<int64_t>(std::time(nullptr))},
              {"model", f_.model_id},
              {"choices", json::array({{{"index", 0}, {"delta", delta}, {"logprobs", nullptr},
                                        {"finish_reason", finish ? json(finish) : json(nullptr)}}})}};
    return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
  }

  static json usage_json(const GenerationResult& r) {
    const int64_t c = static_cast<int64_t>(r.tokens.size());
    return {{"prompt_tokens", r.prompt_positions}, {"completion_tokens", c}, {"total_tokens", r.prompt_positions + c}};
  }

  void chat(const httplib::Request& req, httplib::Response& res) {
    const auto t0 = SteadyClock::now();
    if (g_stop.load()) {
      ApiError e;
      e.status = 503;
      e.type = "server_error";
      e.message = "the server is shutting down";
      return send_error(res, e);
    }
    serve::ChatRequest cr;
    try {
      // A parsed body and its decoded images take several times the body's size: at most kParsing requests
      // are parsed at once, so that a burst of large requests cannot take the memory (the rest wait here).
      ParseSlot slot(*this);
      cr = serve::parse_chat_request(req.body, limits_, engine_);
    } catch (const ApiError& e) {
      return send_error(res, e);
    }
    auto ch = std::make_shared<Channel>();
    auto last = std::make_shared<SteadyClock::time_point>(t0);
    auto first = std::make_shared<bool>(true);
    cr.job.on_text = [this, ch, last, first, t0](const std::string& piece) {
      const auto now = SteadyClock::now();
      if (*first) metrics_.ttft.observe(std::chrono::duration<double>(now - t0).count());
      else metrics_.itl.observe(std::chrono::duration<double>(now - *last).count());
      *first = false;
      *last = now;
      std::lock_guard<std::mutex> lk(ch->mu);
      ch->pieces.push_back(piece);
      ch->cv.notify_all();
      return true;
    };
    cr.job.on_done = [this, ch](const GenerationResult& r, const std::string& error, ErrorCode code) {
      if (error.empty()) {
        metrics_.prompt_tokens += static_cast<uint64_t>(r.prompt_positions);
        metrics_.completion_tokens += r.tokens.size();
        if (r.stop_reason == StopReason::Cancelled) ++metrics_.cancelled;
      }
      std::lock_guard<std::mutex> lk(ch->mu);
      ch->result = r;
      ch->error = error;
      ch->code = code;
      ch->done = true;
      ch->cv.notify_all();
    };
    std::optional<Scheduler::JobId> id;
    try {
      id = sched_.submit(std::move(cr.job));
    } catch (const Error& e) {
      ApiError a;
      a.status = status_for(e.code());
      a.message = e.what();
      if (a.status == 500) a.type = "server_error";
      return send_error(res, a);
    }
    if (!id) {
      ApiError e;
      e.status = 429;
      e.type = "rate_limit_error";
      e.code = "queue_full";
      e.message = "the request queue is full (--max-queue " + std::to_string(f_.max_queue) + "): retry later";
      return send_error(res, e);
    }
    const std::string cid = "chatcmpl-" + std::to_string(*id) + "-" + std::to_string(created_);
    if (!cr.stream) {
      // Waits for the answer; a client that goes away meanwhile cancels its request.
      const int fd = request_socket(req);
      std::unique_lock<std::mutex> lk(ch->mu);
      bool cancelled = false;
      while (!ch->cv.wait_for(lk, std::chrono::milliseconds(200), [&] { return ch->done; })) {
        if (!cancelled && fd >= 0 && peer_closed(fd)) {
          cancelled = true;
          ++metrics_.disconnects;
          sched_.cancel(*id);
        }
      }
      if (!ch->error.empty()) {
        ApiError e;
        e.status = status_for(ch->code);
        e.message = ch->error;
        if (e.status == 500) e.type = "server_error";
        return send_error(res, e);
      }
      const GenerationResult& r = ch->result;
      json j = {{"id", cid},
                {"object", "chat.completion"},
                {"created", static_cast<int64_t>(std::time(nullptr))},
                {"model", f_.model_id},
                {"choices", json::array({{{"index", 0},
                                          {"message", {{"role", "assistant"}, {"content", r.text}}},
                                          {"logprobs", nullptr},
                                          {"finish_reason", serve::finish_reason(r.stop_reason)}}})},
                {"usage", usage_json(r)}};
      res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
      return;
    }
    // Streaming: server-sent events; a write that fails (the client went away) cancels the request.
    const bool include_usage = cr.include_usage;
    auto started = std::make_shared<bool>(false);
    auto last_write = std::make_shared<SteadyClock::time_point>(SteadyClock::now());
    const Scheduler::JobId job = *id;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, ch, cid, include_usage, started, last_write](size_t, httplib::DataSink& sink) -> bool {
          auto write = [&](const std::string& s) {
            *last_write = SteadyClock::now();
            return sink.write(s.data(), s.size());
          };
          if (!*started) {
            *started = true;
            if (!write(chunk_json(cid, {{"role", "assistant"}, {"content", ""}}, nullptr))) return false;
          }
          std::deque<std::string> pieces;
          bool done;
          {
            std::unique_lock<std::mutex> lk(ch->mu);
            // Wakes up now and then to notice a client that went away while nothing was written.
            ch->cv.wait_for(lk, std::chrono::milliseconds(200), [&] { return ch->done || !ch->pieces.empty(); });
            pieces.swap(ch->pieces);
            done = ch->done;
          }
          for (const std::string& p : pieces)
            if (!write(chunk_json(cid, {{"content", p}}, nullptr))) return false;
          if (pieces.empty() && !done) {
            // Nothing new for a second (e.g. waiting in the queue): a comment line, which fails once the client
            // has gone.
            if (SteadyClock::now() - *last_write >= std::chrono::seconds(1) && !write(": keep-alive\n\n")) return false;
            return true;
          }
          if (!done) return true;
          std::string tail;
          if (!ch->error.empty()) {
            ApiError e;
            e.status = status_for(ch->code);
            e.message = ch->error;
            tail = "data: " + serve::error_json(e) + "\n\n";
          } else {
            tail = chunk_json(cid, json::object(), serve::finish_reason(ch->result.stop_reason));
            if (include_usage) {
              json u = {{"id", cid},        {"object", "chat.completion.chunk"},
                        {"created", static_cast<int64_t>(std::time(nullptr))},
                        {"model", f_.model_id}, {"choices", json::array()}, {"usage", usage_json(ch->result)}};
              tail += "data: " + u.dump() + "\n\n";
            }
          }
          tail += "data: [DONE]\n\n";
          if (!write(tail)) return false;
          sink.done();
          return true;
        },
        [this, ch, job](bool success) {
          bool finished;
          {
            std::lock_guard<std::mutex> lk(ch->mu);
            finished = ch->done;
          }
          if (!success || !finished) {
            ++metrics_.disconnects;
            sched_.cancel(job);
          }
        });
  }

  std::string metrics_text() {
    const SchedulerStats s = sched_.stats();
    std::ostringstream os;
    os << "# HELP xc2_requests_total HTTP requests answered, by endpoint and status.\n"
       << "# TYPE xc2_requests_total counter\n";
    {
      std::lock_guard<std::mutex> lk(metrics_.mu);
      for (const auto& [k, n] : metrics_.requests)
        os << "xc2_requests_total{endpoint=\"" << k.first << "\",status=\"" << k.second << "\"} " << n << "\n";
    }
    auto counter = [&](const char* name, const char* help, uint64_t v) {
      os << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n" << name << " " << v << "\n";
    };
    auto gauge = [&](const char* name, const char* help, int64_t v) {
      os << "# HELP " << name << " " << help << "\n# TYPE " << name << " gauge\n" << name << " " << v << "\n";
    };
    counter("xc2_prompt_tokens_total", "Prompt positions (text tokens and image rows) of finished requests.",
            metrics_.prompt_tokens.load());
    counter("xc2_completion_tokens_total", "Tokens generated for finished requests.", metrics_.completion_tokens.load());
    counter("xc2_requests_cancelled_total", "Requests cancelled (client gone, or shutdown).", metrics_.cancelled.load());
    counter("xc2_client_disconnects_total", "Streams whose client went away before the end.", metrics_.disconnects.load());
    gauge("xc2_queue_length", "Requests waiting for a slot.", s.queued);
    gauge("xc2_running_batch_size", "Requests in the running batch.", s.running);
    gauge("xc2_kv_reserved_positions", "KV positions reserved by running requests.", s.kv_reserved);
    gauge("xc2_kv_cached_positions", "KV positions held by the prefix cache.", s.kv_cached);
    gauge("xc2_kv_budget_positions", "The KV budget (--kv-budget).", s.kv_budget);
    counter("xc2_decoder_steps_total", "Decoder forwards run by the scheduler.", s.steps);
    counter("xc2_prefix_cache_lookups_total", "Requests that looked up the prefix cache.", s.prefix_lookups);
    counter("xc2_prefix_cache_hits_total", "Requests that reused cached KV blocks.", s.prefix_hits);
    counter("xc2_prefix_cache_hit_positions_total", "Prompt positions reused instead of recomputed.",
            s.prefix_hit_positions);
    metrics_.ttft.write(os, "xc2_time_to_first_token_seconds", "From the request to its first streamed text.");
    metrics_.itl.write(os, "xc2_inter_token_latency_seconds", "Between successive streamed pieces of a request.");
    return os.str();
  }

  const ServeFlags& f_;
  Engine& engine_;
  Scheduler& sched_;
  serve::ApiLimits limits_;
  int64_t created_ = 0;
  Metrics metrics_;
  std::mutex parse_mu_;
  std::condition_variable parse_cv_;
  int parsing_ = 0;
  httplib::Server svr_;
};

}  // namespace

Handler register_serve(CLI::App& app) {
  auto f = std::make_shared<ServeFlags>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching");
  cmd->footer(R"EX(Examples:
  xc2 serve --port 8000                  # the bundled demo model, whose model id is xc2-shapes
  xc2 serve --model internlm-xcomposer2-vl-7b --max-batch 16 --image-root /srv/images
  XC2_API_KEY=secret xc2 serve --host 0.0.0.0 --port 8000
  curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{
    "model": "xc2-shapes", "temperature": 0,
    "messages": [{"role": "user", "content": [
      {"type": "text", "text": "Describe the picture."},
      {"type": "image_url", "image_url": {"url": "data:image/png;base64,'"$(base64 -w0 examples/shapes-1.png)"'"}}]}]}'

Endpoints: POST /v1/chat/completions (stream, max_tokens, temperature (0: greedy), top_p, seed, stop, n = 1;
extensions top_k, repetition_penalty, ignore_eos), GET /v1/models, GET /health, GET /metrics (Prometheus).
Images: data: URIs (base64), file:// inside --image-root; the server fetches nothing from the network.
Defaults are those of `xc2 chat` (upstream chat()); the template and image placement too.
--port 0 picks a free port; the address is printed on stderr. SIGINT/SIGTERM: stop accepting, finish the
requests in flight within --grace seconds (then cancel them), exit 0. See docs/serving.md.)EX");
  add_common_options(cmd, f->common);
  cmd->add_option("--host", f->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", f->port, "TCP port (0: any free port)")->check(CLI::Range(0, 65535))->capture_default_str();
  cmd->add_option("--api-key", f->api_key, "Require 'Authorization: Bearer KEY' on /v1 (default: $XC2_API_KEY)");
  cmd->add_option("--max-batch", f->max_batch, "Requests decoded together")->check(CLI::Range(1, 1024))->capture_default_str();
  cmd->add_option("--max-queue", f->max_queue, "Requests waiting for a slot before 429")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  cmd->add_option("--kv-budget", f->kv_budget,
                  "KV positions of all running requests and the prefix cache (0: max-batch x (max_length + 1024))")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str();
  cmd->add_option("--max-body", f->max_body, "Largest request body in bytes (413 beyond)")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 34))
      ->capture_default_str();
  cmd->add_option("--image-root", f->image_root, "Allow file:// images inside this folder (off by default)");
  cmd->add_option("--max-images", f->max_images, "Images per request")->check(CLI::Range(0, 64))->capture_default_str();
  cmd->add_option("--max-tokens", f->max_tokens, "Default max_tokens of a request")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd->add_option("--prefill-chunk", f->prefill_chunk, "Prompt rows of one request per decoder step")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_flag("--no-prefix-cache", f->no_prefix_cache, "Do not keep finished requests' KV blocks for reuse");
  cmd->add_option("--grace", f->grace, "Seconds to finish in-flight requests on SIGINT/SIGTERM")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  cmd->add_option("--model-id", f->model_id, "The model name clients use (default: the model folder's name)");

  return [f]() -> int {
    if (f->api_key.empty())
      if (const char* k = std::getenv("XC2_API_KEY"); k && *k) f->api_key = k;
    const std::string dir = resolve_model_dir(f->common);
    if (f->model_id.empty()) {
      std::string d = dir;
      while (d.size() > 1 && d.back() == '/') d.pop_back();
      const size_t slash = d.rfind('/');
      f->model_id = slash == std::string::npos ? d : d.substr(slash + 1);
    }
    // Signals go to one thread (sigwait); block them before any thread starts.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGUSR1);  // SIGUSR1: the server ended on its own (wakes the signal thread)
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    auto engine = load_engine(f->common);
    SchedulerOptions so;
    so.max_batch = f->max_batch;
    so.max_queue = f->max_queue;
    so.kv_budget = f->kv_budget;
    so.prefill_chunk = f->prefill_chunk;
    so.prefix_cache = !f->no_prefix_cache;
    Scheduler sched(*engine, so);
    Server server(*f, *engine, sched);
    server.setup();
    httplib::Server& http = server.http();
    int port = f->port;
    if (port == 0) {
      port = http.bind_to_any_port(f->host);
      if (port < 0) throw UsageError("cannot listen on " + f->host);
    } else if (!http.bind_to_port(f->host, port)) {
      throw UsageError("cannot listen on " + f->host + ":" + std::to_string(port) + " (in use, or not allowed)");
    }
    if (!f->common.quiet)
      std::cerr << "xc2 serve: " << f->model_id << " (" << engine->info().variant << ", " << engine->info().device
                << ") on http://" << f->host << ":" << port << (f->api_key.empty() ? "" : " (API key required)")
                << std::endl;

    // Shutdown: on the first SIGINT/SIGTERM stop accepting; requests in flight get --grace seconds, then are
    // cancelled; the listener closes when they are done.
    std::mutex mu;
    std::condition_variable cv;
    bool finished = false;
    std::thread signals([&] {
      int sig = 0;
      sigwait(&sigs, &sig);
      if (sig == SIGUSR1) return;
      g_stop.store(true);
      if (!f->common.quiet) std::cerr << "xc2 serve: stopping (waiting up to " << f->grace << " s for requests)" << std::endl;
      sched.stop_accepting();
      std::thread waiter([&] {
        sched.wait_idle();
        std::lock_guard<std::mutex> lk(mu);
        finished = true;
        cv.notify_all();
      });
      {
        std::unique_lock<std::mutex> lk(mu);
        if (!cv.wait_for(lk, std::chrono::duration<double>(f->grace), [&] { return finished; })) {
          lk.unlock();
          sched.cancel_all();
        }
      }
      waiter.join();
      http.stop();
    });
    const bool ok = http.listen_after_bind();
    if (!g_stop.load()) pthread_kill(signals.native_handle(), SIGUSR1);
    signals.join();
    // Nothing may still run callbacks into `server` when it goes (it goes before the scheduler).
    sched.cancel_all();
    sched.wait_idle();
    if (!ok && !g_stop.load()) throw UsageError("the server stopped listening on " + f->host);
    if (!f->common.quiet) std::cerr << "xc2 serve: stopped" << std::endl;
    return kExitOk;
  };
}

#endif

}  // namespace xc2::cli
