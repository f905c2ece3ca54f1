"""tools/: every .py file is a command; the benchmark modules live in the tools/benchmarking
package, which neither edits sys.path nor rewrites sys.argv (one command runs another by calling
its main with arguments)."""

import re
import sys

import pytest

from tests.helpers import ROOT

TOOLS = ROOT / "tools"


@pytest.fixture
def benchmarking(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))  # what running a command in tools/ gives
    import benchmarking

    return benchmarking


def test_every_file_in_tools_is_a_command_listed_in_its_readme():
    readme = (TOOLS / "README.md").read_text()
    for path in sorted(TOOLS.glob("*.py")):
        assert 'if __name__ == "__main__":' in path.read_text(), f"{path.name} is not a command"
        assert f"`{path.name}`" in readme, f"tools/README.md has no entry for {path.name}"


def test_benchmark_modules_neither_edit_sys_path_nor_rewrite_argv():
    modules = sorted((TOOLS / "benchmarking").glob("*.py"))
    assert {p.stem for p in modules} >= {"measure", "baseline", "sections", "report", "train"}
    for path in modules:
        text = path.read_text()
        assert not re.search(r"sys\.path|sys\.argv\s*=|sys\.argv\[", text), path.name


def test_kmeans_main_takes_its_arguments(benchmarking, monkeypatch, capsys):
    from benchmarking import kmeans

    monkeypatch.setattr(sys, "argv", ["pytest", "--not-an-option"])
    kmeans.main(
        ["--batch", "1", "--grid", "4", "--dim", "8", "--windows", "2", "--iters", "1",
         "--repeats", "1", "--device", "cpu", "--skip-sklearn"]
    )  # fmt: skip
    assert "workload: 1 images, 4x4 tokens" in capsys.readouterr().out


def test_train_kmeans_flag_calls_the_kmeans_benchmark(benchmarking, monkeypatch, capsys):
    from benchmarking import kmeans, train

    calls = []
    monkeypatch.setattr(train, "run_variant", lambda args, variant: (2.0, {"teacher": 0.5}, 0.0))
    monkeypatch.setattr(kmeans, "main", lambda argv=None: calls.append(argv))
    argv = ["pytest", "--not-an-option"]
    monkeypatch.setattr(sys, "argv", argv)
    train.main(["--device", "cpu", "--kmeans"])
    assert calls == [["--device", "all"]]
    assert sys.argv == ["pytest", "--not-an-option"]
    assert "full / baseline step time: 1.00x" in capsys.readouterr().out
