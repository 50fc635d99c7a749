"""The README and docs/ stay true: every relative link resolves, the quickstart is what CI runs."""

from __future__ import annotations

import shlex

from tests.docs_pages import broken_links, code_blocks, pages, section, slug
from tests.harness import REPO

README = (REPO / "README.md").read_text()
BUILD = ".venv/bin/inspyrenet build --mode fast --checkpoint synthetic --out artifacts/fast"


def test_every_relative_link_resolves():
    problems = [problem for page in pages() for problem in broken_links(page)]
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Cloud Storage: `inspyrenet pull`\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n[fine](other.md#cloud-storage-inspyrenet-pull), [here](#page), [web](https://example.com)\n"
        "[gone](missing.md) and [no heading](other.md#nowhere), [out](../../outside.md)\n"
        "```bash\n[not a link in code](nothing.md)\n```\n"
    )
    problems = broken_links(page, root=tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "missing.md does not exist",
        "other.md#nowhere names no heading of other.md",
        "../../outside.md leaves the repository",
    ]


def test_headings_become_github_anchors():
    assert slug("CI: `.ci/run`") == "ci-cirun"
    assert slug("int8 on the CPU: `model.int8.onnx` against `model.onnx`") == (
        "int8-on-the-cpu-modelint8onnx-against-modelonnx"
    )


def test_every_docs_page_is_linked_from_the_readme():
    linked = {target.split("#")[0] for target in __import__("re").findall(r"\]\((docs/[^)#]+)", README)}
    assert {f"docs/{page.name}" for page in pages()[1:]} <= linked


def test_the_readme_reads_in_minutes():
    assert len(README.splitlines()) <= 250


def test_quickstart_has_two_commands_and_ci_runs_them():
    commands = code_blocks(section(README, "Quickstart"))
    assert len(commands) == 2, commands
    install_and_build, test = (block.strip() for block in commands)
    assert install_and_build.startswith("python3 -m venv .venv && ")
    assert install_and_build.endswith(" && " + BUILD)
    assert test == "./scripts/test.sh"
    ci = (REPO / ".ci" / "run").read_text()
    assert BUILD.replace(" ", "") in ci.replace(" ", "").replace("\\\n", "")
    assert "phase tests ./scripts/test.sh" in ci
    conftest = (REPO / "tests" / "conftest.py").read_text()  # a run without CI's bundle builds it alike
    assert '"build", "--mode", "fast", "--checkpoint", "synthetic", "--out"' in conftest
    assert shlex.split(BUILD)[1:-1] == ["build", "--mode", "fast", "--checkpoint", "synthetic", "--out"]
