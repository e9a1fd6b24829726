"""Every subcommand has working --help, one spelling per shared flag, and bad input ends with a one-line error
(exit 2), not a traceback."""

import subprocess
import sys

import pytest

from faceturn.cli import COMMANDS, main
from faceturn.errors import FaceturnError


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
    assert main(["inspect", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"faceturn inspect: error: {tmp_path / 'nowhere'}: corpus folder not found\n"
    assert main(["probe", "--corpus", str(tmp_path), "--set", "folds=two"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("faceturn probe: error: ") and "folds: expected an integer" in err
    assert len(err.splitlines()) == 1


def test_an_os_error_on_a_user_file_is_one_line_naming_the_file(tmp_path, capsys):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    folder = tmp_path / "config.json"  # a folder where a file is expected: IsADirectoryError, not a FaceturnError
    folder.mkdir()
    assert main(["import-moshi", "--weights", str(weights), "--config", str(folder), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == f"faceturn import-moshi: error: {folder}: Is a directory\n"


def test_debug_keeps_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("FACETURN_DEBUG", "1")
    with pytest.raises(FaceturnError, match="corpus folder not found"):
        main(["inspect", str(tmp_path / "nowhere")])


def test_one_spelling_per_shared_flag(capsys):
    """--jobs, --no-progress and --set mean the same everywhere; the old spellings are gone."""
    spellings = {}
    for name in COMMANDS:
        for argv in ([name, "--help"], *([name, sub, "--help"] for sub in _subcommands(name))):
            with pytest.raises(SystemExit):
                main(argv)
            spellings[" ".join(argv[:-1])] = capsys.readouterr().out
    for command, text in spellings.items():
        assert "--workers" not in text and "--quiet" not in text, command
    assert "--jobs" in spellings["synth"] and "--no-progress" in spellings["synth"] and "--set" in spellings["synth"]
    assert all("--no-progress" in spellings[c] for c in ("demo", "study", "attribute plan", "attribute run", "stream"))


def _subcommands(name: str) -> list[str]:
    return {"attribute": ["plan", "run", "collect"], "plot": ["timeline", "roc"],
            "prepare": ["seamless", "multidialog", "livelink"]}.get(name, [])  # fmt: skip


def test_import_faceturn_loads_nothing_and_no_module_loads_an_optional_dependency():
    """`import faceturn` loads nothing heavy; core dependencies (numpy, torch, scipy, safetensors, tqdm) are imported at
    the top of the modules that use them, optional ones (the viz, prep and lora extras) only inside functions."""
    modules = ("schema", "timebase", "labels", "store", "stats", "model", "cli", "viz.viewer", "viz.video",
               "commands.prepare", "commands.render", "commands.plot", "commands.inspect",
               "commands.import_moshi")  # fmt: skip
    optional = ("matplotlib", "av", "mediapipe", "transformers", "peft", "soundfile", "silero_vad", "sentencepiece",
                "cv2", "playwright")  # fmt: skip
    code = (
        "import sys; before = set(sys.modules); import faceturn;"
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before}));"
        f"import {', '.join(f'faceturn.{m}' for m in modules)};"
        f"print(sorted(set({optional!r}) & {{m.split('.')[0] for m in set(sys.modules) - before}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["['faceturn']", "[]"]


def test_commands_that_write_results_take_force(capsys):
    """--force (replace an earlier output of the same command) is spelled the same wherever it exists."""
    for argv in (["predict"], ["evaluate"], ["plot", "timeline"], ["plot", "roc"], ["render"], ["view"], ["probe"],
                 ["analyze"]):  # fmt: skip
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        assert "--force" in capsys.readouterr().out, argv
