// xc2 caption: batch captioning to JSON Lines, one record per image, written and flushed as soon as
// it is done. A bad image gets an {"path", "error"} record and the batch goes on; --resume skips the
// images already captioned in the output file; --shard K/N splits one list across N processes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli_common.h"

namespace xc2::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct CaptionFlags {
  CommonOptions common;
  GenerationFlags gen;
  std::vector<std::string> paths;
  bool recursive = false;
  std::string list;
  std::string out;
  bool resume = false;
  std::string prompt = "Please describe this image in detail.";
  std::string system;
  bool system_set = false;
  bool no_system = false;
  int batch_size = 1;
  std::string shard;
  bool sample = false;
  bool no_progress = false;
};

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  static const std::set<std::string> exts = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"};
  return exts.count(ext) > 0;
}

std::vector<std::string> list_folder(const std::string& dir, bool recursive) {
  std::vector<std::string> out;
  std::error_code ec;
  if (recursive) {
    for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_regular_file(ec) && has_image_extension(it->path())) out.push_back(it->path().string());
    }
  } else {
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
      if (it->is_regular_file(ec) && has_image_extension(it->path())) out.push_back(it->path().string());
    }
  }
  if (ec) throw UsageError("cannot list folder '" + dir + "': " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

void read_lines(std::istream& in, std::vector<std::string>& out) {
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
}

std::vector<std::string> collect_inputs(const CaptionFlags& f) {
  std::vector<std::string> all;
  for (const std::string& p : f.paths) {
    if (p == "-") {
      read_lines(std::cin, all);
    } else if (fs::is_directory(p)) {
      auto v = list_folder(p, f.recursive);
      all.insert(all.end(), v.begin(), v.end());
    } else {
      all.push_back(p);  // explicit files are kept whatever their name; a bad one gets an error record
    }
  }
  if (!f.list.empty()) {
    std::ifstream in(f.list);
    if (!in) throw UsageError("cannot read --list file '" + f.list + "'");
    read_lines(in, all);
  }
  // Drop repeats, keeping the first occurrence (order matters for --shard).
  std::set<std::string> seen;
  std::vector<std::string> unique;
  for (auto& p : all)
    if (seen.insert(p).second) unique.push_back(p);
  return unique;
}

// "K/N" with 1 <= K <= N.
std::pair<int, int> parse_shard(const std::string& s) {
  const size_t slash = s.find('/');
  int k = 0, n = 0;
  try {
    if (slash == std::string::npos) throw std::invalid_argument("");
    size_t a = 0, b = 0;
    k = std::stoi(s.substr(0, slash), &a);
    n = std::stoi(s.substr(slash + 1), &b);
    if (a != slash || b != s.size() - slash - 1) throw std::invalid_argument("");
  } catch (const std::exception&) {
    throw UsageError("--shard '" + s + "' is not K/N (e.g. 1/4 ... 4/4)");
  }
  if (n < 1 || k < 1 || k > n) throw UsageError("--shard '" + s + "': need 1 <= K <= N");
  return {k, n};
}

// Paths already captioned in `out_path`; rewrites the file keeping only complete, valid records (a
// killed run may leave a partial last line).
std::set<std::string> load_done(const std::string& out_path) {
  std::set<std::string> done;
  std::ifstream in(out_path);
  if (!in) return done;
  std::vector<std::string> keep;
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("path") || !j["path"].is_string()) continue;
    if (j.contains("caption") && !j.contains("error")) {
      done.insert(j["path"].get<std::string>());
      keep.push_back(line);
    }
  }
  in.close();
  const std::string tmp = out_path + ".tmp";
  {
    std::ofstream o(tmp, std::ios::trunc);
    if (!o) throw UsageError("cannot write '" + tmp + "'");
    for (const auto& l : keep) o << l << "\n";
    if (!o) throw UsageError("cannot write '" + tmp + "'");
  }
  std::error_code ec;
  fs::rename(tmp, out_path, ec);
  if (ec) throw UsageError("cannot replace '" + out_path + "': " + ec.message());
  return done;
}

class Progress {
 public:
  Progress(bool enabled, size_t total) : enabled_(enabled), total_(total), t0_(Clock::now()) {}
  void update(size_t done, size_t failed) {
    if (!enabled_) return;
    const double s = std::chrono::duration<double>(Clock::now() - t0_).count();
    const double rate = s > 0 ? done / s : 0;
    const int width = 24;
    const int fill = total_ ? static_cast<int>(width * done / total_) : width;
    std::string bar(static_cast<size_t>(fill), '=');
    if (fill < width) bar += '>';
    bar.resize(static_cast<size_t>(width), ' ');
    char buf[160];
    const double eta = rate > 0 ? (total_ - done) / rate : 0;
    std::snprintf(buf, sizeof(buf), "\r%zu/%zu [%s] %.2f img/s  ETA %d:%02d%s", done, total_, bar.c_str(), rate,
                  static_cast<int>(eta) / 60, static_cast<int>(eta) % 60,
                  failed ? ("  failed " + std::to_string(failed)).c_str() : "");
    std::cerr << buf << std::flush;
  }
  void finish() {
    if (enabled_) std::cerr << "\n";
  }

 private:
  bool enabled_;
  size_t total_;
  Clock::time_point t0_;
};

}  // namespace

Handler register_caption(CLI::App& app) {
  auto f = std::make_shared<CaptionFlags>();
  CLI::App* cmd = app.add_subcommand("caption", "Caption many images to JSON Lines (resumable, shardable)");
  cmd->footer(R"(Examples:
  xc2 caption examples/*.png
  xc2 caption --recursive photos/ --out captions.jsonl          # Ctrl-C, then the same with --resume
  xc2 caption --recursive photos/ --out captions.jsonl --resume
  find photos -name '*.jpg' | xc2 caption - --out part1.jsonl --shard 1/2
  xc2 caption --list images.txt --prompt "What is in this picture?" --batch-size 8

Each line: {"path", "caption", "prompt_tokens", "prompt_positions", "generated_tokens", "ms"}, or
{"path", "error"} for an image that fails; the batch goes on. Lines are flushed as they are done, so a
killed run loses only the images in flight (with --batch-size N, the N of the current batch, whose lines
are written together, in input order). --batch-size N runs N images through the vision tower together
and decodes their captions together, reading each weight once per step for all N: several times the
images/s of N = 1 when decoding is bandwidth-bound (see docs/perf.md); the captions are the same.
The next batch's images are read and preprocessed while the current one is captioned. Folders list their PNG/JPEG/BMP/GIF/WebP files (sorted;
--recursive descends). --shard K/N keeps items K, K+N, K+2N, ... (1-based) of the full list.
Decoding is greedy by default (reproducible); --sample uses the chat() sampling settings.
Exit status: 0 if every image succeeded, 1 if some failed.)");
  add_common_options(cmd, f->common);
  add_generation_options(cmd, f->gen);
  cmd->add_option("paths", f->paths, "Image files, folders, or - to read paths from stdin")->type_name("PATH");
  cmd->add_flag("-r,--recursive", f->recursive, "Descend into subfolders");
  cmd->add_option("--list", f->list, "File with one image path per line")->type_name("FILE");
  cmd->add_option("-o,--out", f->out, "Output JSONL file (default: stdout)")->type_name("FILE");
  cmd->add_flag("--resume", f->resume, "Skip images already captioned in --out (failed ones are retried)");
  cmd->add_option("-p,--prompt", f->prompt, "The question asked about each image")->capture_default_str();
  cmd->add_option("--system", f->system, "System prompt (default: the upstream chat() meta instruction)")
      ->each([f](const std::string&) { f->system_set = true; });
  cmd->add_flag("--no-system", f->no_system, "No system prompt");
  cmd->add_option("-b,--batch-size", f->batch_size,
                  "Images encoded together through the vision tower and decoded together")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--shard", f->shard, "Process shard K of N (K/N, 1-based)")->type_name("K/N");
  cmd->add_flag("--sample", f->sample, "Sample (chat() defaults) instead of greedy decoding");
  cmd->add_flag("--no-progress", f->no_progress, "No progress bar");

  return [f]() -> int {
    if (f->sample && f->gen.opts.num_beams > 1)
      throw UsageError("--sample and --beams cannot be used together (beam search is deterministic)");
    if (f->paths.empty() && f->list.empty()) throw UsageError("no images given (PATH..., --list FILE, or - for stdin)");
    if (f->resume && f->out.empty()) throw UsageError("--resume needs --out FILE");
    if (f->no_system && f->system_set) throw UsageError("--system and --no-system cannot be used together");
    std::pair<int, int> shard{1, 1};
    if (!f->shard.empty()) shard = parse_shard(f->shard);

    std::vector<std::string> inputs = collect_inputs(*f);
    std::vector<std::string> mine;
    for (size_t i = 0; i < inputs.size(); ++i)
      if (static_cast<int>(i % static_cast<size_t>(shard.second)) == shard.first - 1) mine.push_back(inputs[i]);

    std::set<std::string> done;
    if (f->resume && fs::exists(f->out)) done = load_done(f->out);
    std::vector<std::string> todo;
    for (auto& p : mine)
      if (!done.count(p)) todo.push_back(p);
    if (f->resume && !f->common.quiet && !done.empty())
      std::cerr << "xc2: resuming: " << (mine.size() - todo.size()) << " of " << mine.size()
                << " images already captioned\n";

    FILE* out = stdout;
    if (!f->out.empty()) {
      out = std::fopen(f->out.c_str(), f->resume ? "a" : "w");
      if (!out) throw UsageError("cannot write '" + f->out + "'");
    }
    struct Closer {
      FILE* f;
      ~Closer() {
        if (f && f != stdout) std::fclose(f);
      }
    } closer{out};
    auto emit = [&](const std::string& line) {
      std::fputs(line.c_str(), out);
      std::fputc('\n', out);
      std::fflush(out);
    };
    if (todo.empty()) return kExitOk;

    auto engine = load_engine(f->common);
    GenerationOptions opts = f->gen.resolve();
    if (!f->sample) opts.do_sample = false;
    const std::string system =
        f->no_system ? "" : f->system_set ? f->system : default_system_prompt();
    const std::string text = chat_prompt_text(system, {}, place_image_markers(f->prompt, 1));

    Progress progress(stderr_is_tty() && !f->common.quiet && !f->no_progress, todo.size());
    size_t n_done = 0, n_failed = 0;
    progress.update(0, 0);
    const size_t bs = static_cast<size_t>(f->batch_size);
    auto record = [](const std::string& path, const GenerationResult& r) {
      const double ms = r.timings.load_ms + r.timings.vision_ms + r.timings.prefill_ms + r.timings.decode_ms;
      char msbuf[32];
      std::snprintf(msbuf, sizeof(msbuf), "%.1f", ms);
      std::ostringstream os;
      os << "{\"path\": " << json_escape(path) << ", \"caption\": " << json_escape(r.text)
         << ", \"prompt_tokens\": " << r.prompt_tokens << ", \"prompt_positions\": " << r.prompt_positions
         << ", \"generated_tokens\": " << r.tokens.size() << ", \"ms\": " << msbuf << "}";
      return os.str();
    };
    auto error_record = [](const std::string& path, const std::string& error) {
      return "{\"path\": " + json_escape(path) + ", \"error\": " + json_escape(error) + "}";
    };
    // Images are read and preprocessed one batch ahead, on another thread, while the engine works.
    auto prepare = [&engine, &todo, bs](size_t b0) {
      std::vector<Engine::PreparedImage> v;
      for (size_t i = b0; i < std::min(todo.size(), b0 + bs); ++i) v.push_back(engine->prepare_image(todo[i]));
      return v;
    };
    std::future<std::vector<Engine::PreparedImage>> ahead = std::async(std::launch::async, prepare, size_t{0});
    for (size_t b0 = 0; b0 < todo.size(); b0 += bs) {
      std::vector<Engine::PreparedImage> batch = ahead.get();
      if (b0 + bs < todo.size()) ahead = std::async(std::launch::async, prepare, b0 + bs);
      const size_t n = batch.size();
      std::vector<std::string> lines(n);
      std::vector<bool> failed(n, false);
      auto fail = [&](size_t i, const std::string& error) {
        lines[i] = error_record(batch[i].path, error);
        failed[i] = true;
      };
      // The ViT on the good images together (one at a time if that fails, to isolate the culprit).
      std::vector<size_t> good;
      std::vector<Engine::PreparedImage> good_images;
      for (size_t i = 0; i < n; ++i) {
        if (!batch[i].error.empty()) {
          fail(i, batch[i].error);
        } else {
          good.push_back(i);
          good_images.push_back(std::move(batch[i]));
        }
      }
      std::vector<ImageHandle> handles(good.size());
      try {
        handles = engine->encode_prepared(good_images);
      } catch (const Error&) {
        for (size_t j = 0; j < good.size(); ++j) {
          try {
            handles[j] = engine->encode_prepared({good_images[j]}).at(0);
          } catch (const Error& e) {
            fail(good[j], e.what());
          }
        }
      }
      good_images.clear();
      std::vector<size_t> idx;
      std::vector<Request> requests;
      for (size_t j = 0; j < good.size(); ++j) {
        if (!handles[j]) continue;
        Request req;
        req.text = text;
        req.images = {handles[j]};
        req.style = PromptStyle::ChatImage;
        idx.push_back(good[j]);
        requests.push_back(std::move(req));
      }
      handles.clear();
      // One request: the single-sequence path (on a GPU, the graph-replayed decode). Several: decoded
      // together, each weight read once per step for the whole batch.
      if (requests.size() == 1) {
        try {
          lines[idx[0]] = record(todo[b0 + idx[0]], engine->generate(requests[0], opts));
        } catch (const Error& e) {
          fail(idx[0], e.what());
        }
      } else if (!requests.empty()) {
        try {
          std::vector<Engine::BatchResult> results = engine->generate_batch(requests, opts);
          for (size_t j = 0; j < idx.size(); ++j) {
            if (results[j].error.empty()) lines[idx[j]] = record(todo[b0 + idx[j]], results[j].result);
            else fail(idx[j], results[j].error);
          }
        } catch (const Error& e) {
          for (size_t i : idx) fail(i, e.what());
        }
      }
      requests.clear();
      for (size_t i = 0; i < n; ++i) {
        emit(lines[i]);
        if (failed[i]) ++n_failed;
        ++n_done;
      }
      progress.update(n_done, n_failed);
    }
    progress.finish();
    if (n_failed && !f->common.quiet)
      std::cerr << "xc2: " << n_failed << " of " << todo.size() << " images failed (see the \"error\" records)\n";
    return n_failed ? kExitPartial : kExitOk;
  };
}

}  // namespace xc2::cli
