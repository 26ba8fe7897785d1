"""Docs that cannot lie: every shell and Python block in README.md and docs/ is run here, or
says why not; excerpts name what their file defines; shown output has the shape the command
prints; the tutorial runs as written; the site builds with --strict and reads in Chromium."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from browser import Browser
from conftest import REPO, Workspace

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
CODE = re.compile(r"^```(bash|python|console|sh|shell)\s*$")
MARK = re.compile(r"^<!-- (test|not run|excerpt|output): (.+?) -->$")


@dataclass
class Block:
    """One fenced block of a page, with the marker line above it (if any)."""

    page: Path
    line: int
    language: str
    code: str
    kind: str | None  # test, not run, excerpt, output
    what: str  # the test's name, the reason, the file, the output's name

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks() -> list[Block]:
    """Every fenced block of every page."""
    found = []
    for page in PAGES:
        lines = page.read_text().split("\n")
        i = 0
        while i < len(lines):
            if lines[i].lstrip().startswith("```"):  # also indented, in a list item
                language = lines[i].lstrip()[3:].strip()
                end = next(j for j in range(i + 1, len(lines)) if lines[j].lstrip().startswith("```"))
                above = next((x for x in reversed(lines[:i]) if x.strip()), "").strip()
                mark = MARK.match(above)
                found.append(Block(page, i + 1, language, textwrap.dedent("\n".join(lines[i + 1:end])),
                                   mark.group(1) if mark else None, mark.group(2) if mark else ""))
                i = end
            i += 1
    return found


#: the names of the tests below that run blocks (a marker naming another is an error)
RUN_BY = {"get-started seed", "tutorial", "tutorial build_data", "tutorial reproduce",
          "tutorial python", "transcript", "fine-tune"}


def named(name: str) -> list[Block]:
    """The blocks marked `test: name`, in page order."""
    return [b for b in blocks() if b.kind == "test" and b.what == name]


def test_every_shell_and_python_block_is_run_or_says_why() -> None:
    unmarked, unknown = [], []
    for block in blocks():
        transcript = block.language in ("", "text") and block.code.startswith("$ ")
        if (CODE.match(f"```{block.language}") or transcript) \
                and block.kind not in ("test", "not run", "excerpt"):
            unmarked.append(str(block))
        if block.kind == "test" and block.what not in RUN_BY:
            unknown.append(f"{block}: {block.what}")
        if block.kind == "not run":
            assert len(block.what) > 15, f"{block}: say why it is not run"
    assert not unmarked, f"blocks neither run nor saying why (<!-- not run: REASON -->): {unmarked}"
    assert not unknown, f"blocks marked for a test that does not exist: {unknown}"
    assert all(named(name) for name in RUN_BY), "each docs test has its blocks"


def _defined(source: str) -> set[str]:
    """Names of classes, functions and annotated fields a piece of Python defines."""
    names = set()
    for line in source.splitlines():
        match = re.match(r"\s*(?:class|def)\s+(\w+)|\s*(\w+)\s*:\s*[\w\[]", line)
        if match:
            names.add(match.group(1) or match.group(2))
    return names


def test_excerpts_show_what_their_file_defines() -> None:
    """A block marked `excerpt: FILE` may shorten, but each class, function and field it shows
    is in FILE, and it is valid Python (once dedented)."""
    excerpts = [b for b in blocks() if b.kind == "excerpt"]
    assert excerpts
    for block in excerpts:
        source = (REPO / block.what).read_text()
        missing = _defined(block.code) - _defined(source)
        assert not missing, f"{block}: {block.what} defines no {sorted(missing)}"
        ast.parse(textwrap.dedent(block.code))


def _shape(text: str) -> list[str]:
    """Output lines with what changes from run to run made alike: paths, numbers, times, and
    runs of spaces (a column's width follows its numbers)."""
    out = []
    for line in text.strip().splitlines():
        if line.strip() == "...":
            continue
        if line.startswith("time: "):  # the parts under 5% come and go with the machine
            parts, _, rest = line[6:].partition(";")
            line = "time: " + ", ".join(part for part in parts.split(", ")
                                        if int(part.rsplit(" ", 1)[1].rstrip("%")) >= 5) \
                + (f";{rest}" if rest else "")
        line = re.sub(r"(/[\w.-]+)+/results/", "RESULTS/", line)
        line = re.sub(r"\d{8}-\d{6}-[0-9a-f]{6}", "RUN", line)
        line = re.sub(r"[-+]?\d+(\.\d+)?(e[-+]\d+)?", "N", line)
        out.append(re.sub(r"\s+", " ", line).strip())
    return out


def _same_line(shown: str, printed: str) -> bool:
    """A shown line (shaped) is the printed one, word for word. The `time:` line's parts
    depend on the machine: the parts shown (of 5% or more) must be printed, in order."""
    if shown.startswith("time: ") and printed.startswith("time: "):
        names = [part.rsplit(" ", 1)[0] for part in shown[6:].split(", ")]
        printed_names = [part.rsplit(" ", 1)[0] for part in printed[6:].split(", ")]
        at = [printed_names.index(n) for n in names if n in printed_names]
        return len(at) == len(names) and at == sorted(at)
    return shown == printed


def assert_shown_is_printed(where: str, shown: str, printed: str) -> None:
    """Every line of `shown` (but `...`) is a line of `printed`, word for word with numbers,
    paths and spacing aside, in the order printed."""
    lines, out = _shape(shown), _shape(printed)
    at, start = [], 0
    for line in lines:
        found = next((i for i in range(start, len(out)) if _same_line(line, out[i])), None)
        assert found is not None, f"{where}: a line the command does not print (or not in " \
            f"this order): {line!r}\nit printed:\n" + "\n".join(out)
        at.append(found)
        start = found + 1


@dataclass
class Shown:
    """An output the pages show, with the commands that print it (the last one's output)."""

    page: Path
    line: int
    commands: list[list[str]]
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


OUTPUT = re.compile(r"^<!-- output: (python run\.py .+) -->$")


def shown_outputs() -> list[Shown]:
    """Each output a page shows under `<!-- output: COMMAND [&& COMMAND ...] -->`: the fenced
    block or the table right below the marker."""
    found = []
    for page in PAGES:
        lines = page.read_text().split("\n")
        for i, line in enumerate(lines):
            mark = OUTPUT.match(line.strip())
            if not mark:
                continue
            commands = [shlex.split(c) for c in mark.group(1).split(" && ")]
            body = lines[i + 1:]
            if body[0].lstrip().startswith("```"):
                end = next(j for j in range(1, len(body)) if body[j].lstrip().startswith("```"))
                text = "\n".join(body[1:end])
            else:
                text = "\n".join(next(iter([body[:k] for k in range(len(body))
                                              if not body[k].startswith("|")]), body))
            assert text.strip(), f"{page}:{i + 1}: an output marker with nothing shown below it"
            found.append(Shown(page, i + 1, commands, textwrap.dedent(text)))
    return found


def test_every_shown_output_names_the_command_that_prints_it() -> None:
    """A block that shows what a command printed is marked with that command (and checked by
    the test below), or shows a session (`$ COMMAND`, the transcript test)."""
    marked = {(s.page, s.line + 1) for s in shown_outputs()}
    unmarked = [str(b) for b in blocks() if b.language in ("", "text")
                and not b.code.startswith(("$ ", "results/"))
                and b.kind is None and (b.page, b.line - 1) not in marked
                and not re.match(r"^\s*(your code|on_fit_start|run\.py )", b.code)]
    assert not unmarked, f"output blocks that no command is named for: {unmarked}"
    assert len(shown_outputs()) >= 6


@pytest.mark.slow
def test_shown_outputs_are_what_their_commands_print(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Each shown output, its commands run for real in a fresh workspace (real data: Debian's
    Fashion-MNIST, scikit-learn's sets; MNIST's mirrors are closed ports on 127.0.0.1, so that
    nothing is downloaded): every line shown is printed, word for word, numbers aside."""
    from conftest import _clean_env
    from lab.datasets import mnist as mnist_data

    if not mnist_data._existing(mnist_data.SYSTEM_DIRS["fashion_mnist"][0], mnist_data.FILES[0]):
        if os.environ.get("CI"):
            pytest.fail("CI must run this test: .ci/run installs Debian's dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    from conftest import free_port

    closed = [f"http://127.0.0.1:{free_port()}/" for _ in range(3)]
    monkeypatch.setitem(mnist_data.SOURCES, "mnist", (closed, mnist_data.SOURCES["mnist"][1]))
    printed: dict[str, str] = {}
    workspaces: dict[str, Workspace] = {}  # outputs whose commands share all but the last
    for k, shown in enumerate(shown_outputs()):
        key = repr(shown.commands)
        if key not in printed:
            before = repr(shown.commands[:-1])
            if before not in workspaces:
                root = tmp_path / f"ws{k}"
                root.mkdir()
                workspaces[before] = Workspace(root, _clean_env(tmp_path / f"env{k}"))
                for argv in shown.commands[:-1]:
                    assert argv[:2] == ["python", "run.py"], shown
                    assert workspaces[before].run(*argv[2:]).returncode == 0, (shown, argv)
            argv = shown.commands[-1]
            assert argv[:2] == ["python", "run.py"], shown
            done = workspaces[before].run(*argv[2:])
            printed[key] = done.stdout + done.stderr
        assert_shown_is_printed(str(shown), shown.text, printed[key])


@pytest.mark.slow
def test_the_seed_command_runs_as_the_pages_write_it(data_workspace: Workspace) -> None:
    """The seed's command as the pages write it, verbatim (on generated MNIST): it trains and
    prints the lines the pages show for it on Fashion-MNIST, but for the epochs left out and
    which weights were tested (best or last) and where the time went: those depend on the
    data."""
    (block,) = [b for b in named("get-started seed") if b.page.name == "README.md"]
    argv = shlex.split(block.code)
    assert argv[:2] == ["python", "run.py"]
    result = data_workspace.fork(*argv[2:])
    assert result.returncode == 0, result.stderr
    (shown,) = [s for s in shown_outputs() if s.page.name == "README.md"]
    assert shown.commands[0][:len(argv)] == argv, "the output shown is of the seed's command"
    words = re.sub(r"with the (best|last) weights", "with the W weights", "\n".join(
        line for line in shown.text.splitlines() if not line.startswith("time: ")))
    assert_shown_is_printed(str(shown), words,
                            re.sub(r"with the (best|last) weights", "with the W weights",
                                   result.stdout))


def test_transcripts_print_what_they_show(data_workspace: Workspace) -> None:
    """A shown session (`$ COMMAND` and what it printed) prints that, run for real."""
    for block in named("transcript"):
        command, *shown = block.code.splitlines()
        argv = shlex.split(command.removeprefix("$ "))
        assert argv[:2] == ["python", "run.py"], block
        result = data_workspace.fork(*argv[2:])
        assert (result.stdout + result.stderr).strip().splitlines() == shown, \
            f"{block} shows:\n" + "\n".join(shown) + "\nit prints:\n" + result.stdout + result.stderr


@pytest.mark.slow
def test_the_fine_tuning_how_to_runs_as_written(workspace: Workspace) -> None:
    """The how-to's commands in order (`<pretrained>`: the first run's folder); the lines it
    shows a fine-tuned run printing, and its table, are what the commands printed."""
    (block,) = named("fine-tune")
    page = block.page.read_text()
    out = ""
    printed = []
    for line in block.code.splitlines():
        pretrained = workspace.run_dirs()[0].name if workspace.run_dirs() else "?"
        argv = shlex.split(line.replace("<pretrained>", pretrained))
        assert argv[:2] == ["python", "run.py"], line
        done = workspace.run(*argv[2:])
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        printed.append(done.stdout)
        out = done.stdout
    (shown,) = [b for b in blocks() if b.kind == "output" and b.what == "fine-tune"]
    assert_shown_is_printed(str(shown), shown.code, "\n".join(printed))
    table = "\n".join(line for line in page[page.index("The comparison"):].splitlines()
                      if line.startswith("|"))
    assert_shown_is_printed(f"{block.page.name}: the table", table, out)


@pytest.mark.slow
def test_the_tutorial_runs_as_written(workspace: Workspace, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command of the tutorial, in order, in a project of its own (a registry that
    starts empty, as `new` finds it), with its build_data pasted into the file `new` wrote."""
    project = tmp_path / "project"
    (project / "tutlab").mkdir(parents=True)
    (project / "tutlab" / "__init__.py").write_text("")
    (project / "tutlab" / "registry.py").write_text(
        '"""The tutorial\'s registry."""\n\nEXPERIMENTS: dict[str, str] = {\n}\n')
    monkeypatch.syspath_prepend(str(project))
    registry = "tutlab.registry"
    from expkit.config.registry import Registry

    monkeypatch.setattr(Registry, "from_entry_points",  # the tutorial's project is the installed one
                        classmethod(lambda cls: Registry.from_module(registry)))
    runs: list[Path] = []
    for block in blocks():
        if block.kind != "test" or not block.what.startswith("tutorial"):
            continue
        if block.what == "tutorial build_data":
            target = project / "tutlab" / "experiments" / "wine.py"
            source = target.read_text()
            start, end = source.index("    def build_data"), source.index("    def build_model")
            method = textwrap.indent(block.code, "    ")  # a method of the experiment class
            target.write_text(source[:start] + method + "\n\n" + source[end:])
        elif block.what == "tutorial python":  # in the project's folder, as a notebook would be
            monkeypatch.chdir(workspace.root)
            for key, value in workspace.env.items():
                monkeypatch.setenv(key, value)
            namespace: dict[str, object] = {}
            exec(compile(block.code, str(block), "exec"), namespace)
            assert namespace["run"].status == "finished"  # type: ignore[attr-defined]
        else:
            for line in block.code.splitlines():
                argv = shlex.split(line.replace("<a run>", runs[0].name if runs else "?"))
                assert argv[:2] == ["python", "run.py"], line
                for module in [m for m in sys.modules if m.startswith("tutlab.")]:
                    del sys.modules[module]  # each command is a process of its own
                done = workspace.run(*argv[2:], registry=registry)
                assert done.returncode == 0, f"{block}: {line}\n{done.stdout}\n{done.stderr}"
                runs = workspace.run_dirs("wine")
    assert len(workspace.run_dirs("wine")) == 1 + 6 + 1 + 1  # train, repeat x2, reproduce, Python


def test_the_reference_names_every_public_name_and_the_loop_as_the_code_says() -> None:
    import expkit

    api = (REPO / "docs" / "reference" / "api.md").read_text()
    missing = [name for name in expkit.__all__ if f".{name}\n" not in api and f"`{name}`" not in api
               and f"`expkit.{name}`" not in api]
    assert not missing, f"docs/reference/api.md lacks {missing}"
    loop = (REPO / "src" / "expkit" / "training" / "loop.py").read_text().split('"""')[1]
    shown = textwrap.dedent(loop.split("Where each hook fires::\n\n", 1)[1]).strip()
    assert f"```text\n{shown}\n```" in (REPO / "docs" / "concepts.md").read_text(), \
        "docs/concepts.md's loop is the loop's docstring"


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mkdocs build --strict` of docs/ (once per module): a broken link, a missing page or a
    bad reference fails it."""
    site = tmp_path_factory.mktemp("docs") / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "--site-dir", str(site)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr
    return site


def test_site_builds_strictly_with_the_generated_reference(built_site: Path) -> None:
    assert (built_site / "index.html").is_file()
    assert (built_site / "search" / "search_index.json").is_file()
    cli = (built_site / "reference" / "cli.html").read_text()
    assert "expkit sweep" in cli and "--slurm_partition" in cli and "--hidden_sizes" in cli
    config = (built_site / "how-to" / "configs.html").read_text()
    assert "EXPKIT_RESULTS_DIR" in config or "results_dir" in config
    assert not (built_site / "hooks.py").exists()


def test_every_link_of_the_site_opens_a_file_from_disk(built_site: Path) -> None:
    """Opened from disk (file://) a link to a folder shows a listing, not the page: every
    link of every page that stays in the site names a file that is there."""
    folders, missing, checked = [], [], 0
    for page in built_site.rglob("*.html"):
        if page.name == "404.html":  # a web server's page for a missing path, absolute links
            continue
        for href in re.findall(r'href="([^"]*)"', page.read_text()):
            if href.startswith(("http:", "https:", "mailto:", "#", "data:", "javascript:")):
                continue
            target = (page.parent / href.split("#")[0].split("?")[0]).resolve()
            checked += 1
            if target.is_dir() or href.split("#")[0].endswith("/"):
                folders.append(f"{page.relative_to(built_site)}: {href}")
            elif not target.exists():
                missing.append(f"{page.relative_to(built_site)}: {href}")
    assert checked > 500
    assert not folders, f"{len(folders)} of {checked} links name a folder: {folders[:5]}"
    assert not missing, f"links to nothing: {missing[:5]}"
    assert (built_site / "search" / "search_index.js").is_file()
    shim = (built_site / "assets" / "iframe-worker" / "shim.js").read_bytes()
    assert hashlib.sha256(shim).hexdigest() == \
        "e8e412dbcfea9b7e31b5ffa288d7b6035915e714c542f4176a0cdbe262fc9609", \
        "the shim is npm's iframe-worker 1.0.4 shim/index.js, as mkdocs.yml says"


@pytest.mark.slow
def test_the_site_opened_from_disk_navigates_and_searches_offline(built_site: Path,
                                                                  browser: Browser) -> None:
    """As the README says: open site/index.html from disk. The menu's links open pages, search
    finds a word, code blocks render, and no request leaves the disk."""
    home = (built_site / "index.html").as_uri()
    requested = browser.open(home)
    assert browser.evaluate("document.title").startswith("expkit")
    links = browser.evaluate("[...document.querySelectorAll('nav a')].map(a => a.href)")
    assert any(link.endswith("/tutorial/first-experiment.html") for link in links), links
    browser.evaluate("document.querySelector('a[href$=\"tutorial/first-experiment.html\"]').click()")
    browser.wait_for("Page.loadEventFired")  # navigation by the menu, as a reader would
    requested += browser.requests()
    assert browser.evaluate("location.href").endswith("/tutorial/first-experiment.html")
    assert browser.evaluate("document.querySelectorAll('pre code').length") >= 5
    assert browser.evaluate("document.querySelector('h1').textContent").startswith("Your first")
    found = browser.evaluate("""new Promise(done => {
        const input = document.querySelector('input[data-md-component=search-query]');
        input.focus();
        input.value = 'resume'; input.dispatchEvent(new Event('input', {bubbles: true}));
        const look = (n) => {
            const items = document.querySelectorAll('.md-search-result__item a');
            if (items.length || n > 150) done([...items].map(a => a.href));
            else setTimeout(() => look(n + 1), 100);
        };
        look(0);
    })""")
    assert any("resume-and-reproduce.html" in link for link in found), found
    browser.evaluate(f"location.href = {json.dumps(found[0])}")
    browser.wait_for("Page.loadEventFired")
    assert browser.evaluate("document.querySelector('h1').textContent")
    outside = [url for url in requested + browser.requests()
               if not url.startswith(("file://", "data:", "blob:", "about:"))]
    assert not outside, f"requests that leave the disk: {outside}"
    assert not browser.errors()
    failed = [e["params"] for e in browser.events if e.get("method") == "Network.loadingFailed"]
    assert not failed, failed
