"""The entry points print no third-party FutureWarning (fvcore's torch.jit call at import): each
script sets its own filter before its imports, and `import clipzss_d2` keeps its own import quiet
without touching the process's filters (tests/modeling/test_student_only.py checks that part)."""

import subprocess
import sys

import pytest

from tests.helpers import ROOT

COMMANDS = [
    ["train_net.py", "--help"],
    ["demo/demo.py", "--help"],
    ["tools/run_miniworld.py", "--help"],
    ["tools/export_model.py", "--help"],
    ["-m", "clipzss_d2.miniworld", "generate", "--help"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_help_prints_no_future_warning(command):
    proc = subprocess.run(
        [sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]
