"""Settings out of range are refused when they are read (preset or command line), each error
naming where the value was set, the key, the value and what is allowed; the model config
refuses the same values when it is built or loaded."""

import pytest
import yaml

from modeling_userllm import UserLLMConfig
from modeling_userllm.toy_model import tiny_llama_config
from modeling_userllm.training import PresetError, parse_arguments
from modeling_userllm.training.arguments import DataArguments, ModelArguments, ScheduleArguments


def write_preset(folder, sections: dict):
    path = folder / "preset.yaml"
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")
    return path


def tiny_config(**kwargs) -> UserLLMConfig:
    return UserLLMConfig(text_config=tiny_llama_config(100, 32), **kwargs)


# ----------------------------------------------------------------------------- the cases found by hand


def test_negative_max_history_items_is_refused_by_the_settings_and_the_config():
    with pytest.raises(PresetError, match=r"^command line --max_history_items: max_history_items=-1: expected an "
                                          r"integer >= 1, or null \(the data set's history length\)$"):
        parse_arguments(["--max_history_items", "-1"])
    with pytest.raises(ValueError, match=r"max_history_items=-1: expected an integer >= 0"):
        tiny_config(max_history_items=-1)


def test_zero_item_token_budget_is_refused_not_read_as_no_limit():
    with pytest.raises(PresetError, match=r"--max_item_tokens: max_item_tokens=0: expected an integer >= 1$"):
        parse_arguments(["--max_item_tokens", "0"])
    with pytest.raises(ValueError, match=r"max_item_tokens=0: expected an integer >= 1"):
        tiny_config(max_item_tokens=0)


def test_steps_in_the_wrong_order_are_refused(tmp_path):
    preset = write_preset(tmp_path, {"schedule": {"steps": ["encoders", "lora"]}})
    with pytest.raises(PresetError, match=r"preset .*preset\.yaml: steps=\['encoders', 'lora'\]: expected these in "
                                          r"the order \['lora', 'encoders', 'joint'\], each at most once"):
        parse_arguments(["--preset", str(preset)])


def test_negative_learning_rate_is_refused():
    with pytest.raises(PresetError, match=r"--step1_learning_rate: step1_learning_rate=-0\.001: expected a number > 0"):
        parse_arguments(["--step1_learning_rate=-1e-3"])


def test_zero_batch_size_is_refused():
    with pytest.raises(PresetError, match=r"step2_per_device_train_batch_size=0: expected an integer >= 1"):
        parse_arguments(["--step2_per_device_train_batch_size", "0"])


def test_zero_lora_rank_is_refused_by_the_settings_and_the_config():
    with pytest.raises(PresetError, match=r"--lora_r: lora_r=0: expected an integer >= 1"):
        parse_arguments(["--lora_r", "0"])
    with pytest.raises(ValueError, match=r"lora_r=0: expected an integer >= 1"):
        tiny_config(lora_r=0)


def test_lora_dropout_above_one_is_refused_by_the_settings_and_the_config():
    with pytest.raises(PresetError, match=r"lora_dropout=1\.5: expected a number >= 0 and < 1"):
        parse_arguments(["--lora_dropout", "1.5"])
    with pytest.raises(ValueError, match=r"lora_dropout=1\.5: expected a number >= 0 and < 1"):
        tiny_config(lora_dropout=1.5)


def test_hidden_size_not_divisible_by_the_heads_is_refused():
    with pytest.raises(PresetError, match=r"toy_hidden_size=50: .*not a multiple of the number of attention heads \(3\)"):
        parse_arguments(["--toy_hidden_size", "50"])


@pytest.mark.parametrize("key", ["max_train_rows", "max_eval_rows"])
def test_zero_row_limits_are_refused(key):
    with pytest.raises(PresetError, match=rf"--{key}: {key}=0: expected an integer >= 1, or null"):
        parse_arguments([f"--{key}", "0"])


def test_eval_splits_written_as_a_yaml_string_is_refused_not_read_letter_by_letter(tmp_path):
    preset = write_preset(tmp_path, {"data": {"eval_splits": "test"}})
    with pytest.raises(PresetError, match=r"preset .*preset\.yaml: eval_splits='test': expected a list such as "
                                          r"\[valid, test, test_short, test_long\]"):
        parse_arguments(["--preset", str(preset)])
    assert parse_arguments(["--eval_splits", "test"]).data.eval_splits == ["test"]


# ----------------------------------------------------------------------------- every field


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--description_source", "generate"], r"unknown description_source 'generate' \(did you mean 'generated'\?\)"),
        (["--max_train_rows", "-5"], r"max_train_rows=-5: expected an integer >= 1"),
        (["--eval_splits", "valid", "valid"], r"eval_splits=\['valid', 'valid'\]: expected a non-empty list of distinct"),
        (["--eval_splits", "tset"], r"'tset' \(did you mean 'test'\?\) is not one of"),
        (["--toy_seed", "-1"], r"toy_seed=-1: expected an integer >= 0"),
        (["--toy_num_users", "0"], r"toy_num_users=0: expected an integer >= 1"),
        (["--toy_num_items", "0"], r"toy_num_items=0: expected an integer >= 1"),
        (["--toy_hidden_size", "0"], r"toy_hidden_size=0: expected an integer >= 1"),
        (["--toy_hidden_size", "80"], r"toy_hidden_size=80: .*5 attention heads are not a multiple of its 2 key/value"),
        (["--toy_num_layers", "0"], r"toy_num_layers=0: expected an integer >= 1"),
        (["--max_history_items", "0"], r"max_history_items=0: expected an integer >= 1"),
        (["--item_noun", " "], r"item_noun=' ': expected a non-empty word"),
        (["--history_hidden_size", "0"], r"history_hidden_size=0: expected an integer >= 1"),
        (["--lora_alpha", "0"], r"lora_alpha=0: expected a number > 0"),
        (["--lora_dropout", "-0.1"], r"lora_dropout=-0\.1: expected a number >= 0 and < 1"),
        (["--lora_dropout", "1"], r"lora_dropout=1\.0: expected a number >= 0 and < 1"),
        (["--lora_target_modules", "q_proj", "q_proj"], r"lora_target_modules=\['q_proj', 'q_proj'\]"),
        (["--num_threads", "0"], r"num_threads=0: expected an integer >= 1"),
        (["--steps", "lora", "lora"], r"steps=\['lora', 'lora'\]: expected a non-empty list of distinct"),
        (["--steps", "joint", "encoders"], r"steps=\['joint', 'encoders'\]: expected these in the order"),
        (["--steps", "lora", "encoder"], r"'encoder' \(did you mean 'encoders'\?\) is not one of"),
        (["--step3_learning_rate", "0"], r"step3_learning_rate=0\.0: expected a number > 0"),
        (["--step1_learning_rate", "nan"], r"step1_learning_rate=nan: expected a number > 0"),
        (["--step1_gradient_accumulation_steps", "0"], r"step1_gradient_accumulation_steps=0: expected an integer >= 1"),
        (["--step2_max_steps", "0"], r"step2_max_steps=0: expected an integer >= 1, or -1"),
        (["--step2_max_steps", "-2"], r"step2_max_steps=-2: expected an integer >= 1, or -1"),
        (["--step1_max_steps", "-1", "--step1_num_train_epochs", "0"], r"step1_num_train_epochs=0\.0: expected a number > 0"),
        (["--step1_warmup_steps", "-0.5"], r"step1_warmup_steps=-0\.5: expected a fraction"),
        (["--step2_warmup_steps", "2.5"], r"step2_warmup_steps=2\.5: expected a fraction .* or a whole number of steps"),
        (["--per_device_eval_batch_size", "0"], r"per_device_eval_batch_size=0: expected an integer >= 1"),
        (["--seed", "-1"], r"seed=-1: expected an integer >= 0"),
        (["--weight_decay", "-0.01"], r"weight_decay=-0\.01: expected a number >= 0"),
        (["--adam_beta2", "1.0"], r"adam_beta2=1\.0: expected a number >= 0 and < 1"),
        (["--adam_epsilon", "0"], r"adam_epsilon=0\.0: expected a number > 0"),
        (["--save_steps", "0"], r"save_steps=0\.0: expected a number > 0"),
        (["--save_total_limit", "0"], r"save_total_limit=0: expected an integer >= 1"),
        (["--dataloader_num_workers", "-1"], r"dataloader_num_workers=-1: expected an integer >= 0"),
    ],
)
def test_out_of_range_command_line_values_are_refused_naming_key_value_and_range(argv, message):
    with pytest.raises(PresetError, match=message):
        parse_arguments(argv)


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("model", "lora_r", 8.5, r"lora_r=8\.5: expected an integer >= 1"),
        ("model", "max_item_tokens", True, r"max_item_tokens=True: expected an integer >= 1"),
        ("model", "lora_target_modules", "q_proj", r"lora_target_modules='q_proj': expected a list"),
        ("model", "lora_target_modules", [], r"lora_target_modules=\[\]: expected a non-empty list"),
        ("schedule", "steps", "lora", r"steps='lora': expected a list such as \[lora, encoders, joint\]"),
        ("schedule", "steps", [], r"steps=\[\]: expected a non-empty list"),
        ("data", "eval_splits", [], r"eval_splits=\[\]: expected a non-empty list"),
        ("data", "max_eval_rows", 0, r"max_eval_rows=0: expected an integer >= 1, or null \(the full splits\)"),
    ],
)
def test_out_of_range_preset_values_are_refused_naming_the_preset(tmp_path, section, key, value, message):
    preset = write_preset(tmp_path, {section: {key: value}})
    with pytest.raises(PresetError, match=rf"^preset {tmp_path}/preset\.yaml: .*{message}"):
        parse_arguments(["--preset", str(preset)])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_history_items", -1, "expected an integer >= 0"),
        ("max_item_tokens", 0, "expected an integer >= 1"),
        ("lora_r", 0, "expected an integer >= 1"),
        ("lora_r", 2.0, "expected an integer >= 1"),
        ("lora_alpha", -16, "expected a number > 0"),
        ("lora_dropout", 1.5, "expected a number >= 0 and < 1"),
        ("lora_target_modules", [], "expected a non-empty list of module names"),
        ("vision_feature_size", 0, "expected an integer >= 1"),
        ("collaborative_size", 0, "expected an integer >= 1"),
        ("num_users", -1, "expected an integer >= 0"),
        ("num_items", -1, "expected an integer >= 0"),
        ("projector_hidden_size", 0, "expected an integer >= 1 or None"),
        ("history_hidden_size", -8, "expected an integer >= 1 or None"),
    ],
)
def test_config_refuses_out_of_range_values_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=rf"^{field}={value!r}: {message}".replace("[", r"\[").replace("]", r"\]")):
        tiny_config(**{field: value})


def test_config_out_of_range_in_a_saved_checkpoint_fails_at_load(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config_file.write_text(config_file.read_text().replace('"max_item_tokens": 96', '"max_item_tokens": 0'))
    with pytest.raises(ValueError, match="max_item_tokens=0: expected an integer >= 1"):
        UserLLMConfig.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------- what stays accepted


@pytest.mark.parametrize(
    "argv",
    [
        ["--steps", "joint"],
        ["--steps", "lora", "joint"],
        ["--steps", "encoders"],
        ["--step1_warmup_steps", "10", "--step2_warmup_steps", "0.5"],
        ["--step1_max_steps", "-1", "--step1_num_train_epochs", "0.5"],
        ["--step1_max_steps", "5", "--step1_num_train_epochs", "0"],
        ["--max_train_rows", "1", "--max_eval_rows", "1", "--max_history_items", "1", "--max_item_tokens", "1"],
        ["--lora_dropout", "0", "--toy_hidden_size", "48"],
    ],
)
def test_edge_values_in_range_are_accepted(argv):
    parse_arguments(argv)


def test_sections_built_in_code_are_checked_too():
    with pytest.raises(PresetError, match="max_eval_rows=0"):
        DataArguments(max_eval_rows=0)
    with pytest.raises(PresetError, match="lora_r=-1"):
        ModelArguments(lora_r=-1)
    with pytest.raises(PresetError, match="step1_per_device_train_batch_size=0"):
        ScheduleArguments(step1_per_device_train_batch_size=0)
