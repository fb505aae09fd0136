from __future__ import annotations

import pytest

from polypseg.config import TrainConfig, config_from_dict, load_config, save_config, to_dict
from polypseg.errors import PolypsegError


def test_presets_and_overrides(tmp_path):
    fast = load_config(preset="fast")
    assert fast.model.width == 8 and (fast.data.height, fast.data.width) == (64, 80)
    full = load_config(
        preset="full", overrides=["optim.lr=1e-3", "model.name=unet", "loss.head_weights=[1,2,3,4]"]
    )
    assert full.model.width == 32 and full.optim.lr == 1e-3 and full.model.name == "unet"
    assert full.loss.head_weights == [1.0, 2.0, 3.0, 4.0]
    (tmp_path / "c.yaml").write_text("optim:\n  epochs: 7\nseed: 5\n")
    c = load_config(tmp_path / "c.yaml", overrides=["seed=6"])
    assert (c.optim.epochs, c.seed) == (7, 6)


def test_round_trip(tmp_path):
    cfg = load_config(preset="full")
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert to_dict(again) == to_dict(cfg) and config_from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'"),
        ("optim.epochs=abc", "expected an integer"),
        ("amp=maybe", "expected true/false"),
        ("nokey", "key=value"),
        ("model=3", "expected a mapping"),
        ("data.split_by=random", "data.split_by: expected one of group, kfold, frame, none; got 'random'"),
        ("compile_mode=fastest", "compile_mode: expected one of default, reduce-overhead"),
        # Right type, unusable value: refused before any work (these used to be tracebacks mid-run).
        ("data.height=70", r"data.height must be a positive multiple of 16 \(four poolings\), got 70"),
        ("optim.batch_size=0", "optim.batch_size must be >= 1, got 0"),
        ("data.fold=5", r"data.fold must be in 0..4, got 5"),
        (
            "loss.head_weights=[1,1]",
            r"loss.head_weights must be one weight >= 0 per head \(L1..L4, model.depth\)",
        ),
        (
            "model.depth=5",
            r"model.depth must be 1..4 \(levels below the first; 4 is the seed's network\), got 5",
        ),
        ("ema=1", r"ema must be in 0..1 \(0 = off\), got 1"),
        ("augment.flip=2", r"augment.flip must be a probability"),
        (
            "loss.bce_weight=.nan",
            r"loss.bce_weight/dice_weight must be >= 0 and not both 0, got \(nan, 1.0\)",
        ),
    ],
)
def test_bad_overrides_rejected_by_name(override, message):
    with pytest.raises(PolypsegError, match=message):
        load_config(overrides=[override])


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "optim: [1,\n",
            "not valid YAML (expected the node content, but found '<stream end>' at line 2, column 1)",
        ),
        ("a: b: c\n", "not valid YAML (mapping values are not allowed here at line 1, column 5)"),
        ("- a\n- b\n", "a config is a mapping of keys to values"),
    ],
)
def test_a_config_file_that_is_not_a_config_is_one_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(PolypsegError) as e:
        load_config(path)
    assert str(e.value).endswith(message) and "\n" not in str(e.value)


def test_encoder_needs_unetpp_and_sizes_divisible_by_32():
    cfg = load_config(overrides=["model.encoder=efficientnet-lite0", "data.height=64", "data.width=96"])
    assert cfg.model.encoder_weights == "imagenet"
    with pytest.raises(PolypsegError, match=r"data.width must be a positive multiple of 32 \(the encoder's"):
        load_config(overrides=["model.encoder=efficientnet-lite0", "data.width=80"])
    with pytest.raises(PolypsegError, match="model.encoder must be none for model.name=unet"):
        load_config(overrides=["model.name=unet", "model.encoder=efficientnet-lite0"])
    with pytest.raises(PolypsegError, match="model.encoder: expected one of none, efficientnet-lite0"):
        load_config(overrides=["model.encoder=resnet50"])


def test_defaults_are_the_seed_network():
    c = TrainConfig()
    assert (c.model.name, c.model.width, c.model.deep_supervision) == ("unetpp", 32, True)


def test_train_checks_a_config_built_in_python(tmp_path):
    from polypseg.train import train

    cfg = TrainConfig()
    cfg.data.height = 70
    with pytest.raises(PolypsegError, match="data.height must be a positive multiple of 16"):
        train(cfg, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing written


def test_print_config_is_a_config_file_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from polypseg.cli import main

    monkeypatch.chdir(tmp_path)
    args = [
        "train",
        "--preset",
        "fast",
        "--set",
        "optim.lr=5e-4",
        "--set",
        "tensorboard=true",
        "--print-config",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # no run folder, no file
    (tmp_path / "my.yaml").write_text(printed)
    expected = load_config(preset="fast", overrides=["optim.lr=5e-4", "tensorboard=true"])
    assert load_config(tmp_path / "my.yaml") == expected
    assert "encoder_lr: 1.0" in printed and "train_fraction: 1.0" in printed
    assert main(["train", "--resume", "runs/x", "--print-config"]) == 2
    assert capsys.readouterr().err.strip() == (
        "polypseg: error: --print-config shows a new run's config; a run's own is runs/x/config.yaml"
    )


def test_depth_sets_the_input_multiple_and_the_head_weights():
    c = load_config(overrides=["model.depth=3", "data.height=56", "data.width=72"])  # multiples of 8
    assert c.model.depth == 3 and c.loss.head_weights == [1.0] * 4  # equal weights serve any depth
    load_config(overrides=["model.depth=3", "data.height=56", "data.width=72", "loss.head_weights=[1,2,3]"])
    for overrides, message in [
        (
            ["model.depth=3", "data.height=60"],
            r"data.height must be a positive multiple of 8 \(three poolings\)",
        ),
        (["model.depth=1", "data.width=71"], r"data.width must be a positive multiple of 2 \(one pooling\)"),
        (
            ["model.depth=3", "model.encoder=efficientnet-lite0", "data.height=72", "data.width=96"],
            r"data.height must be a positive multiple of 16 \(the encoder's four down-samplings\)",
        ),
        (
            ["model.depth=3", "data.height=56", "data.width=72", "loss.head_weights=[1,2,3,4]"],
            r"loss.head_weights must be one weight >= 0 per head \(L1..L3, model.depth\)",
        ),
    ]:
        with pytest.raises(PolypsegError, match=message):
            load_config(overrides=overrides)


@pytest.mark.parametrize(
    "command",
    [["data"], ["data", "check"], ["data", "download"], ["train"], ["cv"], ["evaluate"], ["predict"]]
    + [["export"], ["benchmark"], ["serve"]],
)
def test_every_command_has_help_with_an_example(command, capsys):
    from polypseg.cli import main

    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and "  polypseg " + command[0] in out.split("example", 1)[1]


def test_every_option_says_what_it_does():
    """Each option of each command has a help line (argparse shows a bare flag otherwise)."""
    import argparse

    from polypseg.cli import _parser

    def options(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from options(sub, f"{path} {name}")
            elif action.option_strings and action.dest != "help":
                yield f"{path} {action.option_strings[-1]}", action.help

    bare = [name for name, text in options(_parser(), "polypseg") if not text]
    assert not bare, bare
