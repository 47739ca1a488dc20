// xc2 caption: batch captioning to JSON Lines, one record per image, written and flushed as soon as
// it is done. A bad image gets an {"path", "error"} record and the batch goes on; --resume skips the
// images already captioned in the output file; --shard K/N splits one list across N processes.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>

#include "cli_common.h"
#include "xc2/scheduler.h"

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
  bool overwrite = false;
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
    if (fs::is_directory(f.list)) throw UsageError("--list '" + f.list + "' is a folder, expected a file of paths");
    std::ifstream in(f.list);
    if (!in) throw UsageError("cannot read --list file '" + f.list + "': " + std::strerror(errno));
    read_lines(in, all);
    if (in.bad()) throw UsageError("cannot read --list file '" + f.list + "'");
  }
  // Drop repeats ("./a.png" and "a.png" are one image), keeping the first occurrence (order matters for --shard).
  std::set<std::string> seen;
  std::vector<std::string> unique;
  for (auto& p : all)
    if (seen.insert(path_key(p)).second) unique.push_back(p);
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

// The records already in an output opened with --resume. Nothing finished is rewritten: complete lines stay
// as they are (a line that is not a valid record is reported and left alone) and new records are appended.
// Only an incomplete last line (no newline: a run killed while writing it) is cut off, or given its newline
// when it is a complete record. Returns the path keys of the images captioned successfully.
std::set<std::string> load_done(OutputFile& out, bool quiet) {
  std::set<std::string> done;
  const std::string data = out.read_all();
  size_t pos = 0, line_no = 0, n_bad = 0;
  while (pos < data.size()) {
    const size_t nl = data.find('\n', pos);
    const bool complete = nl != std::string::npos;
    const std::string line = data.substr(pos, complete ? nl - pos : std::string::npos);
    ++line_no;
    const std::optional<JsonRecord> rec = parse_json_record(line);
    const std::string* path = rec ? rec->string("path") : nullptr;
    if (!complete) {
      if (path != nullptr) {
        out.seek_end();
        out.write("\n");
      } else {
        if (!quiet)
          std::cerr << "xc2: warning: '" << out.path() << "': removing an incomplete last line (" << line.size()
                    << " bytes, left by an interrupted run)\n";
        out.truncate(pos);
        break;
      }
    } else if (path == nullptr) {
      if (line.find_first_not_of(" \t\r") != std::string::npos) {
        ++n_bad;
        if (!quiet)
          std::cerr << "xc2: warning: '" << out.path() << "' line " << line_no
                    << " is not a caption record; it is kept as is and ignored\n";
      }
    }
    if (path != nullptr && rec->string("caption") != nullptr && !rec->has("error")) done.insert(path_key(*path));
    pos = complete ? nl + 1 : data.size();
  }
  if (n_bad > 1 && !quiet) std::cerr << "xc2: warning: " << n_bad << " lines of '" << out.path() << "' ignored\n";
  out.seek_end();
  return done;
}

// --out must not be one of the images (it would be emptied before being read).
void check_out_is_not_an_input(const std::string& out, const std::vector<std::string>& inputs) {
  struct stat so {};
  if (::stat(out.c_str(), &so) != 0) return;
  for (const std::string& p : inputs) {
    struct stat si {};
    if (::stat(p.c_str(), &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino)
      throw UsageError("--out '" + out + "' is one of the input images ('" + p + "')");
  }
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
{"path", "error"} for an image that fails; the batch goes on. An existing --out needs --resume (its
records are kept, new ones appended) or --overwrite; --out is locked while written. Every write is
checked; lines are synced as they are done, in input order, so a killed run loses only the images in
flight (with --batch-size N, at most 2N). --batch-size N captions N images at once with continuous batching
(a new image takes a slot as soon as one is free), reading each weight once per decode step for all of
them: several times the images/s of N = 1 when decoding is bandwidth-bound (see docs/perf.md); the
captions are the same. The next images are read and preprocessed while the others are captioned. Folders list their PNG/JPEG/BMP/GIF/WebP files (sorted;
--recursive descends). --shard K/N keeps items K, K+N, K+2N, ... (1-based) of the full list.
Decoding is greedy by default (reproducible); --sample uses the chat() sampling settings.
Exit status: 0 if every image succeeded, 1 if some failed.)");
  add_common_options(cmd, f->common);
  add_parse_special_option(cmd, f->common);
  add_generation_options(cmd, f->gen);
  cmd->add_option("paths", f->paths, "Image files, folders, or - to read paths from stdin")->type_name("PATH");
  cmd->add_flag("-r,--recursive", f->recursive, "Descend into subfolders");
  cmd->add_option("--list", f->list, "File with one image path per line")->type_name("FILE");
  cmd->add_option("-o,--out", f->out, "Output JSONL file (default: stdout)")->type_name("FILE");
  cmd->add_flag("--resume", f->resume,
                "Continue --out: skip the images already captioned there (failed ones are retried), append the rest");
  cmd->add_flag("--overwrite", f->overwrite, "Replace an existing --out file");
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

  return [f, cmd]() -> int {
    if (f->sample && f->gen.opts.num_beams > 1)
      throw UsageError("--sample and --beams cannot be used together (beam search is deterministic)");
    if (f->paths.empty() && f->list.empty()) throw UsageError("no images given (PATH..., --list FILE, or - for stdin)");
    if (f->resume && f->out.empty()) throw UsageError("--resume needs --out FILE");
    if (f->overwrite && f->out.empty()) throw UsageError("--overwrite needs --out FILE");
    if (f->resume && f->overwrite) throw UsageError("--resume and --overwrite cannot be used together");
    if (f->no_system && f->system_set) throw UsageError("--system and --no-system cannot be used together");
    std::pair<int, int> shard{1, 1};
    if (cmd->count("--shard") > 0) shard = parse_shard(f->shard);

    std::vector<std::string> inputs = collect_inputs(*f);
    if (inputs.empty())
      throw UsageError("no images to caption: the folders hold no PNG, JPEG, BMP, GIF or WebP files and no path was "
                       "listed");
    std::vector<std::string> mine;
    for (size_t i = 0; i < inputs.size(); ++i)
      if (static_cast<int>(i % static_cast<size_t>(shard.second)) == shard.first - 1) mine.push_back(inputs[i]);

    // The output: locked for this run, never emptied unless asked (--overwrite), appended to with --resume.
    std::unique_ptr<OutputFile> out_file;
    std::set<std::string> done;
    if (!f->out.empty()) {
      check_out_is_not_an_input(f->out, inputs);
      const OutputFile::Mode mode = f->resume      ? OutputFile::Mode::ReadWrite
                                    : f->overwrite ? OutputFile::Mode::Truncate
                                                   : OutputFile::Mode::Create;
      struct stat st {};
      if (mode == OutputFile::Mode::Create && ::stat(f->out.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        throw UsageError("--out '" + f->out + "' already exists: pass --resume to continue it (its records are kept) " +
                         "or --overwrite to replace it");
      try {
        out_file = std::make_unique<OutputFile>(f->out, mode, true);
      } catch (const UsageError& e) {
        if (mode != OutputFile::Mode::Create) throw;
        throw UsageError(std::string(e.what()) + ": pass --resume to continue it or --overwrite to replace it");
      }
      if (f->resume) done = load_done(*out_file, f->common.quiet);
    }
    std::vector<std::string> todo;
    for (auto& p : mine)
      if (!done.count(path_key(p))) todo.push_back(p);
    if (f->resume && !f->common.quiet && !done.empty())
      std::cerr << "xc2: resuming: " << (mine.size() - todo.size()) << " of " << mine.size()
                << " images already captioned\n";

    // One batch's lines in one write; a failed write is cut back off so the file keeps whole records only.
    auto emit = [&](const std::string& lines) {
      if (!out_file) return write_stdout(lines);
      const off_t before = out_file->is_regular() ? ::lseek(out_file->fd(), 0, SEEK_CUR) : -1;
      try {
        out_file->write(lines);
        out_file->sync();  // on the disk before the next batch starts
      } catch (const WriteError&) {
        if (before >= 0 && ::ftruncate(out_file->fd(), before) == 0) ::lseek(out_file->fd(), before, SEEK_SET);
        throw;
      }
    };
    if (todo.empty()) {
      if (out_file) out_file->close();
      return kExitOk;
    }

    auto engine = load_engine(f->common);
    GenerationOptions opts = f->gen.resolve();
    if (!f->sample) opts.do_sample = false;
    const std::string system =
        f->no_system ? "" : f->system_set ? f->system : default_system_prompt();
    const ChatPrompt prompt = chat_prompt(system, {}, place_image_markers(f->prompt, 1));

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
    // --batch-size N (N > 1, no beams): the continuous-batching scheduler; an image takes a slot as soon as one
    // is free. Lines are written in input order as soon as every earlier one is done.
    if (bs > 1 && opts.num_beams == 1) {
      SchedulerOptions so;
      so.max_batch = f->batch_size;
      so.max_queue = 4 * f->batch_size;  // more than the images in flight below: submit() never refuses
      so.max_images_per_step = f->batch_size;
      std::mutex mu;
      std::condition_variable cv;
      std::vector<std::string> lines(todo.size());
      std::vector<char> ready(todo.size(), 0), failed(todo.size(), 0);
      size_t finished = 0, in_flight = 0, next_emit = 0;
      auto complete = [&](size_t i, std::string line, bool bad) {
        std::lock_guard<std::mutex> lk(mu);
        lines[i] = std::move(line);
        failed[i] = bad;
        ready[i] = 1;
        ++finished;
        cv.notify_all();
      };
      auto emit_ready = [&]() {
        std::string chunk;
        {
          std::lock_guard<std::mutex> lk(mu);
          while (next_emit < todo.size() && ready[next_emit]) {
            chunk += lines[next_emit] + "\n";
            lines[next_emit].clear();
            if (failed[next_emit]) ++n_failed;
            ++n_done;
            ++next_emit;
          }
        }
        if (!chunk.empty()) {
          emit(chunk);
          progress.update(n_done, n_failed);
        }
      };
      Scheduler sched(*engine, so);  // after the state its callbacks use: it ends first
      try {
        for (size_t i = 0; i < todo.size(); ++i) {
          Engine::PreparedImage img = engine->prepare_image(todo[i]);  // while the scheduler computes
          if (!img.error.empty()) {
            complete(i, error_record(todo[i], img.error), true);
            emit_ready();
            continue;
          }
          {
            // At most 2 N images in flight: N running, N waiting for the next free slot.
            std::unique_lock<std::mutex> lk(mu);
            cv.wait(lk, [&] { return in_flight < 2 * bs; });
          }
          emit_ready();
          SchedulerJob job;
          job.request.text = prompt.text;
          job.request.user_spans = prompt.user_spans;
          job.request.style = PromptStyle::ChatImage;
          job.images.push_back(std::move(img));
          job.options = opts;
          job.on_done = [&, i](const GenerationResult& r, const std::string& error, ErrorCode) {
            {
              std::lock_guard<std::mutex> lk(mu);
              --in_flight;
            }
            if (error.empty()) complete(i, record(todo[i], r), false);
            else complete(i, error_record(todo[i], error), true);
          };
          {
            std::lock_guard<std::mutex> lk(mu);
            ++in_flight;
          }
          bool queued = false;
          try {
            queued = sched.submit(std::move(job)).has_value();
            if (!queued) complete(i, error_record(todo[i], "internal error: the caption queue refused the image"), true);
          } catch (const Error& e) {
            complete(i, error_record(todo[i], e.what()), true);
          }
          if (!queued) {
            std::lock_guard<std::mutex> lk(mu);
            --in_flight;
          }
          emit_ready();
        }
        for (;;) {
          {
            std::unique_lock<std::mutex> lk(mu);
            cv.wait(lk, [&] { return finished == todo.size() || (next_emit < todo.size() && ready[next_emit]); });
          }
          emit_ready();
          std::lock_guard<std::mutex> lk(mu);
          if (next_emit == todo.size()) break;
        }
      } catch (...) {
        sched.cancel_all();  // a failed write: stop the others before the scheduler goes
        throw;
      }
      progress.finish();
      if (out_file) out_file->close();
      if (n_failed && !f->common.quiet)
        std::cerr << "xc2: " << n_failed << " of " << todo.size() << " images failed (see the \"error\" records)\n";
      return n_failed ? kExitPartial : kExitOk;
    }
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
        req.text = prompt.text;
        req.user_spans = prompt.user_spans;
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
      std::string batch_lines;
      for (size_t i = 0; i < n; ++i) {
        batch_lines += lines[i] + "\n";
        if (failed[i]) ++n_failed;
        ++n_done;
      }
      emit(batch_lines);
      progress.update(n_done, n_failed);
    }
    progress.finish();
    if (out_file) out_file->close();
    if (n_failed && !f->common.quiet)
      std::cerr << "xc2: " << n_failed << " of " << todo.size() << " images failed (see the \"error\" records)\n";
    return n_failed ? kExitPartial : kExitOk;
  };
}

}  // namespace xc2::cli
