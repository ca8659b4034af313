"""README.md's code blocks, run as a reader runs them, so the README cannot drift from the code.

Every fenced block tagged ```bash, ```python or ```text is one test (its id is its first line's number):
- python: a fresh subprocess of the environment's python; a block of `>>>` lines runs as a doctest
  (`python -m doctest`), so its shown values and exceptions are checked too.
- bash: `bash -e` with the block as its script.
- text: each `$ COMMAND` line runs with bash. The lines after it, up to the next `$` line, are what the README
  shows it printing: with no `...` line among them they must equal the output (these are meta-device results:
  deterministic); with `...` (elided, or timings that vary) each shown line's label, its text before the first
  digit, must begin a line of the output. The text block without a command is the profile's json shape, compared
  with the keys `cnnzoo summary --format json` writes.
Commands run from a temporary folder holding `.venv`, a link to the environment running these tests, and
`benchmarks`, a link to the repository's, so `.venv/bin/cnnzoo` resolves as it does in a checkout and any file a
command writes lands in the temporary folder.

Skipped, and shown as skipped with the reason (`pytest -ra`):
- the block after `<!-- test-command -->`, and any block running pytest: CI's own command, which runs this file;
- blocks that install (`pip install`, `-m venv`): they change the environment and need the network;
- blocks after a `<!-- readme-test: skip: REASON -->` line: network or minutes of work; the README states why.
A fenced block in another language fails `test_every_block_is_one_the_tests_know`, so none goes unchecked; an
untagged block is the layout, whose paths must exist.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ENV = Path(sys.prefix)  # the environment running the tests stands in for the README's .venv
LANGUAGES = ("bash", "python", "text")
TIMEOUT = 300  # seconds per command: generous, for a machine busy with other work
SKIP_MARK = re.compile(r"<!--\s*readme-test:\s*skip:\s*(.+?)\s*-->")
INSTALLS = re.compile(r"\bpip3? install\b|-m venv\b")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    before: str  # the last non-blank line above the fence

    def skip_reason(self) -> str | None:
        if self.before.strip() == "<!-- test-command -->" or "pytest" in self.text:
            return "CI's own test command: it runs this file"
        if INSTALLS.search(self.text):
            return "installs packages (changes the environment, needs the network)"
        marked = SKIP_MARK.search(self.before)
        return marked.group(1) if marked else None


def readme_blocks() -> list[Block]:
    blocks, lines = [], README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        blocks.append(Block(i + 1, fence.group(1), "\n".join(lines[i + 1:end]) + "\n", before))
        i = end + 1
    return blocks


def params(lang: str) -> list:
    """The README's blocks in `lang` as pytest params, each skipped block marked with its reason."""
    out = []
    for block in readme_blocks():
        if block.lang == lang:
            reason = block.skip_reason()
            marks = [pytest.mark.skip(reason=f"README line {block.line}: {reason}")] if reason else []
            out.append(pytest.param(block, id=f"line{block.line}", marks=marks))
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    if not (ENV / "bin" / "cnnzoo").exists():
        pytest.skip(f"{ENV} has no bin/cnnzoo: install the package into the environment running the tests")
    folder = tmp_path_factory.mktemp("readme")
    (folder / ".venv").symlink_to(ENV, target_is_directory=True)
    (folder / "benchmarks").symlink_to(REPO / "benchmarks", target_is_directory=True)
    return folder


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def ran(argv: list[str], cwd: Path, what: str) -> str:
    result = run(argv, cwd)
    assert result.returncode == 0, (f"{what} failed (exit status {result.returncode})\n--- stdout\n"
                                    f"{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")
    return result.stdout


def test_every_block_is_one_the_tests_know():
    unknown = [f"line {b.line}: ```{b.lang}" for b in readme_blocks() if b.lang not in (*LANGUAGES, "")]
    assert not unknown, f"README blocks in a language this file does not run: {unknown}"


def test_layout_paths_exist():
    paths = [line.split()[0] for b in readme_blocks() if b.lang == "" for line in b.text.splitlines() if line.strip()]
    assert paths, "README: no layout block found"
    missing = [path for path in paths if not (REPO / path).exists()]
    assert not missing, f"README's layout names paths that do not exist: {missing}"


@pytest.mark.parametrize("block", params("python"))
def test_python_block(block: Block, workdir: Path):
    python = str(workdir / ".venv" / "bin" / "python")
    if block.text.lstrip().startswith(">>>"):
        path = workdir / f"block_{block.line}.txt"
        path.write_text(block.text)
        ran([python, "-m", "doctest", path.name], workdir, f"README line {block.line} (doctest)")
    else:
        path = workdir / f"block_{block.line}.py"
        path.write_text(block.text)
        ran([python, path.name], workdir, f"README line {block.line}")


@pytest.mark.parametrize("block", params("bash"))
def test_bash_block(block: Block, workdir: Path):
    ran(["bash", "-e", "-c", block.text], workdir, f"README line {block.line}")


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """The block's `$ COMMAND` lines, each with the output lines the README shows after it."""
    out: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def label(line: str) -> str:
    """A shown line's text before its first digit: what stays when the numbers change."""
    return re.split(r"\d", line, maxsplit=1)[0]


@pytest.mark.parametrize("block", params("text"))
def test_text_block(block: Block, workdir: Path):
    steps = commands(block)
    if not steps:
        assert block.text.lstrip().startswith('{"model"'), \
            f"README line {block.line}: a text block with no `$` command that this file does not know"
        check_json_shape(block, workdir)
        return
    for command, shown in steps:
        output = ran(["bash", "-c", command], workdir, f"README line {block.line}: $ {command}")
        got = [line.rstrip() for line in output.splitlines()]
        if "..." not in (line.strip() for line in shown):
            assert got == [line.rstrip() for line in shown], \
                f"README line {block.line}: `{command}` prints something else now:\n" + "\n".join(got)
            continue
        missing = [line for line in shown if line.strip() != "..." and
                   not any(g.startswith(label(line)) for g in got)]
        assert not missing, (f"README line {block.line}: `{command}` no longer prints lines like {missing}; "
                             f"it printed:\n{output}")


def json_keys(shape: str) -> dict:
    """The README's json outline as a dict: a bare "key" becomes "key": null, [...] an empty list."""
    text = re.sub(r'"(\w+)"(?=\s*[,}])', r'"\1": null', shape.replace("[...]", "[]"))
    return json.loads(text)


def check_json_shape(block: Block, workdir: Path) -> None:
    shown = json_keys(block.text)
    real = json.loads(ran([str(workdir / ".venv" / "bin" / "cnnzoo"), "summary", "resnet18", "--format", "json"],
                          workdir, "cnnzoo summary resnet18 --format json"))
    assert list(real) == list(shown), f"README line {block.line}: top-level keys are {list(real)}"
    assert list(real["totals"]) == list(shown["totals"]), f"README line {block.line}: totals are {list(real['totals'])}"
    assert list(real["layers"][0]) == list(shown["layers"][0]), \
        f"README line {block.line}: a layer's keys are {list(real['layers'][0])}"
