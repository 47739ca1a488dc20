#!/usr/bin/env bash
# Merges the parts of a sharded `xc2 caption` run into one JSON Lines stream on stdout: one record per image
# path, a caption record preferred over an error record (a part may hold an error and, after a rerun, the
# caption of the same image), the first of several captions kept. Fails when a line is not a JSON object with
# a "path".
#   tools/deploy/merge-captions.sh OUTDIR/part-*-of-N.jsonl > captions.jsonl
set -euo pipefail
if [[ $# -eq 0 ]]; then
  echo "usage: $0 PART.jsonl... > merged.jsonl" >&2
  exit 2
fi
exec python3 - "$@" <<'PY'
import json, sys
best = {}  # path -> (line, is_caption)
order = []
for part in sys.argv[1:]:
    with open(part, encoding="utf-8", errors="surrogateescape") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            try:
                rec = json.loads(line)
                path = rec["path"]
            except (ValueError, KeyError, TypeError):
                sys.exit(f"{part}:{n}: not a caption record")
            ok = "caption" in rec
            if path not in best:
                order.append(path)
                best[path] = (line, ok)
            elif ok and not best[path][1]:
                best[path] = (line, ok)
out = sys.stdout
for path in order:
    out.write(best[path][0] + "\n")
errors = sum(1 for p in order if not best[p][1])
print(f"merge-captions: {len(order)} images, {errors} with errors", file=sys.stderr)
PY
