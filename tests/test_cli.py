"""Every subcommand has working --help, and bad input ends with a one-line error (exit 2), not a traceback."""

import subprocess
import sys

import pytest

from faceturn.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: faceturn " + command in capsys.readouterr().out


def test_top_level_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nowhere")]) in (1, 2)
    err = capsys.readouterr()
    assert "nowhere" in err.out + err.err
    assert main(["probe", "--corpus", str(tmp_path), "--set", "folds=two"]) == 2
    assert "folds: expected an integer" in capsys.readouterr().err


def test_import_faceturn_needs_only_torch_and_numpy():
    code = (  # torch itself may load some of these (it imports tqdm); only what faceturn adds counts
        "import sys, torch, numpy; before = set(sys.modules);"
        "import faceturn, faceturn.schema, faceturn.timebase, faceturn.labels, faceturn.model, faceturn.store;"
        "heavy = {'scipy', 'sklearn', 'safetensors', 'tqdm', 'matplotlib', 'av', 'mediapipe', 'transformers'};"
        "print(sorted(heavy & (set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
