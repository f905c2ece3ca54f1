"""clipzss_d2.entry: the config and vocabulary arguments and the exit-2 rule every command shares,
checked through real commands (in-process main(argv), one subprocess) and the parser itself."""

import argparse
import os
import subprocess
import sys

import pytest

from clipzss_d2.entry import (
    EXIT_USAGE,
    add_config_arguments,
    add_vocabulary_arguments,
    config_name,
    load_config,
    run_main,
    vocabulary_from_args,
)
from clipzss_d2.errors import UserInputError
from tests.helpers import ROOT, TOY_CLASSES, TOY_COLORS, load_script, register_toy_dataset

BASE = str(ROOT / "configs" / "Base-CLIPZSS.yaml")


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t")
    add_config_arguments(p, **kw)
    add_vocabulary_arguments(p)
    return p


# -- the rule: one line, exit status 2 ------------------------------------------------------------
def test_run_main_turns_user_errors_into_one_line_and_status_2(capsys):
    def fails(message):
        raise UserInputError(message)

    assert run_main(fails, "bad thing.", prog="tool.py") == EXIT_USAGE
    assert one_line(capsys.readouterr().err) == "tool.py: error: bad thing."
    assert run_main(fails, "bad thing.") == EXIT_USAGE
    assert one_line(capsys.readouterr().err) == "error: bad thing."
    assert run_main(lambda: 0) == 0
    with pytest.raises(ZeroDivisionError):  # bugs keep their traceback
        run_main(lambda: 1 / 0)


@pytest.mark.parametrize(
    "opts, message",
    [
        (["SOLVER.NOPE", "1"], "make_model_folder.py: error: Config overrides (KEY VALUE): "
                               "Non-existent key: SOLVER.NOPE."),
        (["SOLVER.MAX_ITER"], "make_model_folder.py: error: Config overrides (KEY VALUE) come in "
                              "KEY VALUE pairs; got 1 words (SOLVER.MAX_ITER)."),
    ],
)  # fmt: skip
def test_make_model_folder_bad_overrides(capsys, opts, message):
    tool = load_script("tools/make_model_folder.py", "clipzss_entry_mmf")
    assert tool.main(["--config-file", BASE, *opts]) == 2
    assert one_line(capsys.readouterr().err) == message


def test_eval_open_vocab_bad_config_file(tmp_path, capsys):
    tool = load_script("tools/eval_open_vocab.py", "clipzss_entry_eval")
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL: !!python/object/apply:os.system ['true']\n")
    assert tool.main(["--config-file", str(bad)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: --config-file {bad} is not a valid config YAML")


def test_demo_command_missing_config_file(tmp_path):
    """A real process: what a shell sees."""
    missing = tmp_path / "nope.yaml"
    run = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "demo.py"), "--config-file", str(missing),
         "--input", "x.jpg", "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert run.returncode == 2
    assert one_line(run.stderr) == f"demo.py: error: --config-file {missing}: no such file."
    assert not (tmp_path / "out").exists()


# -- the arguments --------------------------------------------------------------------------------
def test_config_arguments_and_overrides_name_in_messages():
    args = parser().parse_args(["--config-file", BASE, "--opts", "SOLVER.NOPE", "1"])
    with pytest.raises(UserInputError, match=r"^Config --opts: Non-existent key: SOLVER.NOPE\.$"):
        load_config(args)
    args = parser(trailing_opts=True).parse_args(["--config-file", BASE, "SEED", "7"])
    assert load_config(args).SEED == 7 and config_name(args) == BASE
    with pytest.raises(SystemExit):  # --config-file is required
        parser().parse_args([])


def test_model_folder_is_an_alternative_to_the_config_file(tmp_path, capsys):
    p = parser(model_folder=True, required=False)
    assert p.parse_args([]).config_file is None
    with pytest.raises(SystemExit):
        p.parse_args(["--config-file", BASE, "--model-folder", str(tmp_path)])
    assert "not allowed with" in capsys.readouterr().err
    args = p.parse_args(["--model-folder", str(tmp_path / "gone")])
    assert config_name(args) == os.path.join(str(tmp_path / "gone"), "config.yaml")
    with pytest.raises(UserInputError, match="no such folder"):
        load_config(args)


def test_vocabulary_arguments(tmp_path):
    p = parser()

    def vocab(*argv):
        return vocabulary_from_args(p.parse_args(["--config-file", BASE, *argv]))

    assert vocab() is None  # no flag: the config's vocabulary
    typed = vocab("--vocab", "cat, sofa|couch")
    assert (typed.entries, typed.class_names, typed.colors) == (["cat", "sofa|couch"],
                                                                ["cat", "sofa"], None)  # fmt: skip
    listed = tmp_path / "classes.txt"
    listed.write_text("# mine\ncat\n\ndog\n")
    assert vocab("--vocab-file", str(listed)).entries == ["cat", "dog"]
    toy = vocab("--vocab-dataset", register_toy_dataset())
    assert toy.class_names == TOY_CLASSES and [tuple(c) for c in toy.colors] == TOY_COLORS
    for argv, message in [
        (["--vocab", " "], "--vocab is empty"),
        (["--vocab", "a,,b"], "item 2 is blank"),
        (["--vocab-file", str(tmp_path / "none.txt")], "no such file"),
        (["--vocab-dataset", "nope"], "not a registered dataset"),
    ]:
        with pytest.raises(UserInputError, match=message):
            vocab(*argv)
    with pytest.raises(SystemExit):
        vocab("--vocab", "a", "--vocab-file", str(listed))
