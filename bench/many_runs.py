"""A results folder of many runs: how long `expkit list`, `compare`, `report --index` and
`expkit.runs()` take, how big index.html gets and how long headless Chromium takes to open it,
at N runs (synthetic copies of one real digits run with their ids, seeds and metrics varied).
Each command runs twice: first with no summary cache (RESULTS/.expkit/, as on a folder never
read before), then again (the cache from the first call; nothing changed between them); then
once more after one run's files changed (`one changed`).

    python bench/many_runs.py                    # 1,000, 4,000 and 16,000 runs
    python bench/many_runs.py --sizes 1000 4000

Writes bench/out/many_runs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_real_run(work: Path, env: dict[str, str]) -> Path:
    """A real 5-epoch digits run in `work`/results (the template every copy starts from)."""
    subprocess.run([sys.executable, str(REPO / "run.py"), "--experiment_id=mnist", "--dataset=digits",
                    "--epochs=5", "--seed=0"], cwd=work, env=env, check=True, capture_output=True)
    return next((work / "results" / "mnist").iterdir())


def copies(template: Path, results: Path, n: int) -> None:
    """`n` runs under results/mnist, each a copy of `template` with its own id, seed, start
    time and metrics (so that groups and tables are not all one row)."""
    rng = random.Random(0)
    record = json.loads((template / "run.json").read_text())
    config = json.loads((template / "config.json").read_text())
    metrics = json.loads((template / "metrics.json").read_text())
    folder = results / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        target = folder / f"20261201-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:06x}"
        shutil.copytree(template, target, ignore=shutil.ignore_patterns("checkpoints", "*.png"),
                        copy_function=_copy)
        seed = i % 5
        lr = (1e-3, 3e-3, 1e-2)[i // 5 % 3]
        (target / "config.json").write_text(json.dumps(
            {**config, "seed": seed, "optimizer": {**config["optimizer"], "lr": lr}}))
        (target / "run.json").write_text(json.dumps(
            {**record, "seed": {**record.get("seed", {}), "value": seed},
             "started_ns": 1_764_547_200_000_000_000 + i * 1_000_000_000}))
        scaled = {part: {k: (v * rng.uniform(0.9, 1.1) if isinstance(v, float) else v)
                         for k, v in values.items()} if isinstance(values, dict) else values
                  for part, values in metrics.items()}
        (target / "metrics.json").write_text(json.dumps(scaled))


def _copy(source: str, target: str) -> None:
    """report.html (130 kB, never rewritten) as a hard link; every other file as a copy."""
    if source.endswith("report.html"):
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def chromium_seconds(page: Path, rounds: int = 3) -> float | None:
    """Wall seconds of headless Chromium starting, loading `page` and running its scripts
    (--dump-dom), the fastest of `rounds` (the browser's own start is most of a small page's);
    None without a Chromium."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return None
    times = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as profile:
            started = time.perf_counter()
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                            f"--user-data-dir={profile}", "--dump-dom", page.as_uri()], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - started)
    return min(times)


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall seconds of one command (which must succeed)."""
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    """Build each size's folder, time each command twice, print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="expkit-many-"))
    env = {**os.environ, "EXPKIT_CONFIG": str(work / "config.yaml")}
    (work / "config.yaml").write_text(f"results_dir: {work / 'results'}\ncache_dir: {work / 'cache'}\n")
    template = one_real_run(work, env)
    expkit = [sys.executable, "-m", "expkit"]
    commands = {
        "list": [*expkit, "list"],
        "compare --format=csv": [*expkit, "compare", "--experiment_id=mnist", "--format=csv"],
        "report --index": [*expkit, "report", "--index"],
        "expkit.runs()": [sys.executable, "-c", f"import expkit; expkit.runs({str(work / 'results')!r})"],
    }
    figures: dict[str, dict[str, object]] = {}
    small = work / "results-9"  # the page's own cost: a 9-run index, opened the same way
    copies(template, small, 9)
    (work / "config.yaml").write_text(f"results_dir: {small}\ncache_dir: {work / 'cache'}\n")
    timed(commands["report --index"], work, env)
    base = chromium_seconds(small / "index.html")
    print(f"     9 runs  index.html opened in Chromium in {base:.2f} s" if base else "no Chromium")
    for n in options.sizes:
        results = work / f"results-{n}"
        copies(template, results, n)
        (work / "config.yaml").write_text(f"results_dir: {results}\ncache_dir: {work / 'cache'}\n")
        commands["expkit.runs()"][-1] = f"import expkit; expkit.runs({str(results)!r})"
        row: dict[str, object] = {}
        for name, cmd in commands.items():
            shutil.rmtree(results / ".expkit", ignore_errors=True)
            first, second = timed(cmd, work, env), timed(cmd, work, env)
            one = next((results / "mnist").iterdir()) / "run.json"
            one.write_text(one.read_text())  # one run changed since the last call
            changed = timed(cmd, work, env)
            row[name] = {"first_s": round(first, 2), "again_s": round(second, 2),
                         "one_changed_s": round(changed, 2)}
            print(f"{n:>6} runs  {name:<22} {first:6.2f} s, again {second:6.2f} s, "
                  f"one changed {changed:6.2f} s", flush=True)
        index = results / "index.html"
        row["index.html MB"] = round(index.stat().st_size / 1e6, 2)
        cache = results / ".expkit" / "summaries"
        row["cache MB"] = round(sum(p.stat().st_size for p in cache.iterdir()) / 1e6, 2)
        opened = chromium_seconds(index)
        row["chromium_s"] = round(opened, 2) if opened else None
        row["chromium_9_runs_s"] = round(base, 2) if base else None
        print(f"{n:>6} runs  index.html {row['index.html MB']} MB, opened in Chromium in "
              f"{opened:.2f} s (9 runs: {base:.2f} s); summary cache {row['cache MB']} MB"
              if opened and base else f"{n:>6} runs  index.html {row['index.html MB']} MB", flush=True)
        figures[str(n)] = row
        shutil.rmtree(results)
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "many_runs.json").write_text(json.dumps(figures, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out / 'many_runs.json'}")


if __name__ == "__main__":
    main()
