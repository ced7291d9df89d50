"""What a new user meets first: command-line errors, help, and error messages about paths."""

import pytest

from modeling_userllm import UserLLMConfig, UserLLMForRecommendation
from modeling_userllm.training import parse_arguments
from modeling_userllm.training.arguments import STEP_SETTINGS


def test_misspelt_flag_is_a_usage_error_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(["--varaint", "collm"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "unrecognized arguments: --varaint (did you mean '--variant'?)" in error
    assert "Traceback" not in error and len(error.splitlines()) <= 3


def test_help_shows_preset_and_step_flags_first_and_marks_the_ignored_generic_ones(capsys):
    with pytest.raises(SystemExit):
        parse_arguments(["--help"])
    text = capsys.readouterr().out
    assert text.index("--preset") < text.index("--step1_learning_rate") < text.index("--variant") < text.index("--output_dir")
    for name in STEP_SETTINGS:
        option = text.index(f"\n  --{name} ")
        assert "IGNORED" in text[option : option + 300], name
    assert "OUTPUT/toy/data" in text and "OUTPUT/toy/features" in text


@pytest.mark.parametrize("path", ["outputs/nowhere/model", "./model", "/no/such/folder"])
def test_missing_local_folder_says_no_such_folder(path):
    for load in (UserLLMConfig.from_pretrained, UserLLMForRecommendation.from_pretrained):
        with pytest.raises(OSError, match="no such folder"):
            load(path)
