#!/usr/bin/env python3
"""Puts the scale family (figure 7) of a run of its own into bench/results.

A run with ONLY=scale writes a results.md with only that family. This keeps
every other family of bench/results/results.md as it is and replaces its
"7 scale*" rows of the main table, its "## 7 Scale" section (headed by when,
how and on what machine load the scale run ran) and the scale charts; in
results.json, the same rows and section.

    python3 bench/splice_scale.py <OUT of the scale run> [bench/results]
"""
import glob
import json
import os
import shutil
import sys

src = sys.argv[1]
dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "results")
run = json.load(open(os.path.join(src, "results.json")))
new_md = open(os.path.join(src, "results.md")).read().splitlines()


def is_scale_row(line):
    return line.startswith("| 7 scale")


def section(lines, title):
    """The lines of section `## title` (heading excluded) and its bounds."""
    start = lines.index(f"## {title}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return start, end


# results.md: rows, then the section.
old = open(os.path.join(dst, "results.md")).read().splitlines()
rows = [l for l in new_md if is_scale_row(l)]
first = next((i for i, l in enumerate(old) if is_scale_row(l)), None)
kept = [l for l in old if not is_scale_row(l)]
if first is None:
    # After the last row of the main table.
    first = max(i for i, l in enumerate(kept) if l.startswith("| ") and not l.startswith("| figure")) + 1
kept[first:first] = rows
s, e = section(new_md, "7 Scale")
body = new_md[s + 1 : e]
head = [
    "",
    f"A run of this family alone, {run['started']} → {run['finished']}, commit "
    f"{run['versions'].get('ours_git_rev', '?')}; the other families are from the run named at the top.",
    "",
    "Commands: " + "; ".join(f"`{c}`" for c in run["commands"][:1]),
    "",
]
if run.get("problems"):
    head += ["Problems in this run:", ""] + [f"- {p}" for p in run["problems"]] + [""]
s, e = section(kept, "7 Scale")
kept[s + 1 : e] = head + body
open(os.path.join(dst, "results.md"), "w").write("\n".join(kept) + "\n")

# results.json: the same rows and section.
data = json.load(open(os.path.join(dst, "results.json")))
data["rows"] = [r for r in data["rows"] if not r["figure"].startswith("7 scale")] + [
    r for r in run["rows"] if r["figure"].startswith("7 scale")
]
data["sections"] = [x for x in data["sections"] if x[0] != "7 Scale"] + [
    [t, "\n".join(head) + "\n" + b] for t, b in run["sections"] if t == "7 Scale"
]
json.dump(data, open(os.path.join(dst, "results.json"), "w"), indent=2, ensure_ascii=False)
open(os.path.join(dst, "results.json"), "a").write("\n")

# Charts: the scale run's replace every scale chart.
for f in glob.glob(os.path.join(dst, "scale-*.png")):
    os.remove(f)
for f in glob.glob(os.path.join(src, "scale-*.png")):
    shutil.copy2(f, dst)
print(f"spliced {len(rows)} rows, the 7 Scale section and the charts of {src} into {dst}")
