"""The summary cache: what `expkit list`, `compare`, `repeat`, `report --index` and
`expkit.runs()` read of each run, kept beside the results so that a folder of thousands of runs
is read in a second and a repeated call reads only the runs that changed.

    RESULTS/.expkit/summaries/<experiment>.json    one file per experiment folder

Each entry holds a run's config.json, run.json and metrics.json as read (the top-level values
that differ from the file's base entry: most are the same in every run of an experiment), the
last row of its history.csv and its progress, under the stamp (modification time in ns, size,
inode) of each of those four files. The files are the truth: an entry is used only while every stamp still
matches, so a run that finishes, resumes, is deleted or has its metrics rewritten is read again
on the next call. A file changed in the last two seconds is never cached (a second write in
the same clock tick could keep its stamp). The cache is written whole to a temporary file and
renamed over the old one: two sweeps writing at once leave one of their caches, never a mix,
and what either left out is read from the run folders next time. A cache that cannot be read
is rebuilt, with one warning; one that cannot be written (a read-only folder) is skipped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from expkit.utils.files import replace_text

#: the folder of the cache, under the results folder
CACHE_DIR = ".expkit"
#: bumped when an entry's shape changes: an older cache is then rebuilt without a warning
VERSION = 2
#: the files whose stamps an entry is kept under (run.json is what makes a folder a run)
FILES = ("config.json", "run.json", "metrics.json", "history.csv")
#: files changed more recently than this are read again next time, never cached
RACY_NS = 2_000_000_000

Stamp = list[list[int] | None]


class Summarized(Protocol):
    """What the cache keeps of a run (expkit.rundir.results.Run is the one implementation)."""

    config: dict[str, Any]
    record: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def derived(self) -> dict[str, Any]:
        """The history in brief: its last row and the run's progress."""


R = TypeVar("R", bound=Summarized)
#: a run read from its folder's files
Reader = Callable[[Path], R]
#: a run made from what the cache kept: (folder, config, record, metrics, derived)
Maker = Callable[[Path, dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]], R]


def shard_path(experiment_folder: Path) -> Path:
    """The cache file of one experiment folder (results/mnist -> results/.expkit/summaries/mnist.json)."""
    return experiment_folder.parent / CACHE_DIR / "summaries" / f"{experiment_folder.name}.json"


def experiment_folders(results_dir: Path) -> list[Path]:
    """The experiment folders under a results folder (not sweeps/, not hidden ones), by name."""
    try:
        with os.scandir(results_dir) as entries:
            names = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")
                     and e.name != "sweeps"]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [Path(results_dir) / name for name in sorted(names)]


def experiment_runs(folder: Path, read: Reader[R], make: Maker[R]) -> list[R]:
    """Every run directory of one experiment folder (each one holding a run.json), by folder
    name, from the cache where its files have not changed (`make`) and from the files where
    they have (`read`)."""
    try:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    shard = shard_path(folder)
    base, cached = _load(shard)
    kept: dict[str, Any] = {}
    changed = False
    racy_after = time.time_ns() - RACY_NS
    out = []
    for name in names:
        run_dir = folder / name
        stamp = _stamp(f"{folder}{os.sep}{name}{os.sep}")
        if stamp[1] is None:  # no run.json: not a run (yet)
            continue
        entry = cached.get(name)
        run = _decode(run_dir, base, entry, make) if isinstance(entry, dict) \
            and entry.get("stamp") == stamp else None
        if run is not None:
            kept[name] = entry
        else:
            run = read(run_dir)
            if all(s is None or s[0] < racy_after for s in stamp):
                base = base or {"c": run.config, "r": run.record, "m": run.metrics}
                kept[name] = {"stamp": stamp, **_encode(run, base)}
                changed = True
        out.append(run)
    if changed or kept.keys() != cached.keys():
        _save(shard, base, kept)
    return out


_PARTS = (("c", "config"), ("r", "record"), ("m", "metrics"))


def _encode(run: Summarized, base: dict[str, Any]) -> dict[str, Any]:
    """A run's entry: per part (config, record, metrics) only the top-level keys whose values
    differ from the shard's base, the base's keys it lacks, and its key order where a merge
    would not give it back; and its derived facts."""
    entry: dict[str, Any] = {"d": run.derived}
    for short, name in _PARTS:
        mine: dict[str, Any] = getattr(run, name)
        theirs: dict[str, Any] = base[short]
        diff = {k: v for k, v in mine.items()
                if k not in theirs or type(theirs[k]) is not type(v) or theirs[k] != v}
        removed = [k for k in theirs if k not in mine]
        entry[short] = diff
        if removed:
            entry[f"{short}-"] = removed
        merged = [k for k in theirs if k in mine] + [k for k in diff if k not in theirs]
        if merged != list(mine):
            entry[f"{short}#"] = list(mine)
    return entry


def _decode(run_dir: Path, base: dict[str, Any], entry: dict[str, Any], make: Maker[R]) -> R | None:
    """The Run an entry holds (None when the entry is not one this version wrote)."""
    try:
        parts = []
        for short, _ in _PARTS:
            values = {**base[short], **entry[short]}
            for key in entry.get(f"{short}-", ()):
                del values[key]
            if f"{short}#" in entry:
                values = {k: values[k] for k in entry[f"{short}#"]}
            parts.append(values)
        return make(run_dir, parts[0], parts[1], parts[2], entry["d"])
    except (KeyError, TypeError, AttributeError):
        return None


def all_runs(results_dir: Path, read: Reader[R], make: Maker[R]) -> list[R]:
    """Every run under a results folder, experiment folder by experiment folder."""
    return [run for folder in experiment_folders(results_dir)
            for run in experiment_runs(folder, read, make)]


def _stamp(prefix: str) -> Stamp:
    """(mtime in ns, size, inode) of each of FILES in the folder `prefix` names (ending in a
    separator), None for a missing one."""
    out: Stamp = []
    for name in FILES:
        try:
            st = os.stat(prefix + name)
        except OSError:
            out.append(None)
            continue
        out.append([st.st_mtime_ns, st.st_size, st.st_ino])
    return out


_warned: set[Path] = set()


def _load(shard: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shard's base and its entries by run folder name (empty when there is no cache; a
    broken one is rebuilt after one warning)."""
    try:
        text = shard.read_bytes()
    except FileNotFoundError:
        return {}, {}
    except OSError as e:
        _warn(shard, e.strerror or str(e))
        return {}, {}
    try:
        data = json.loads(text)
        if isinstance(data, dict) and data.get("version") != VERSION:
            return {}, {}  # another version's cache: rebuilt without a word
        if not isinstance(data, dict) or not isinstance(data.get("runs"), dict) \
                or not isinstance(data.get("base"), dict):
            raise ValueError("not an object with a base and runs")
    except (ValueError, UnicodeDecodeError) as e:
        _warn(shard, str(e).splitlines()[0][:120])
        return {}, {}
    return data["base"], data["runs"]


def _warn(shard: Path, why: str) -> None:
    if shard not in _warned:
        _warned.add(shard)
        print(f"warning: the summary cache {shard} could not be read ({why}); rebuilt it from "
              "the run folders", file=sys.stderr)


def _save(shard: Path, base: dict[str, Any], entries: dict[str, Any]) -> None:
    """Write the cache whole and rename it into place; skipped where the folder is read-only."""
    try:
        shard.parent.mkdir(parents=True, exist_ok=True)
        replace_text(shard, json.dumps({"version": VERSION, "base": base, "runs": entries},
                                       separators=(",", ":"), default=str))
    except OSError:
        return
    _warned.discard(shard)
