"""``keras-coordatt port``: PyTorch checkpoint -> .weights.h5, and the CLI's command registry."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_coordatt import cli

from helpers import CHECKPOINTS_DIR, FIXTURES_DIR

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = CHECKPOINTS_DIR
FIXTURES = FIXTURES_DIR
MBV2_CA = CHECKPOINTS / "mbv2_ca_w0.5.pth"


def _port(*args: str) -> list[str]:
    return ["port", *map(str, args)]


def test_port_then_load_gives_the_fixture_logits(tmp_path, capsys):
    out = tmp_path / "mbv2_ca_050.weights.h5"
    code = cli.main(_port(MBV2_CA, out, "--model", "mobilenet_v2_ca", "--alpha", "0.5"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "ported 490 checkpoint tensors into MobileNetV2CA(alpha=0.5" in captured.out
    assert "parameters ->" in captured.out and str(out) in captured.out
    assert out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    from keras_coordatt.applications import MobileNetV2CA

    model = MobileNetV2CA(alpha=0.5, weights=None, classifier_activation=None)
    model.load_weights(out)
    images = np.load(FIXTURES / "input_img_2x224x224x3_nhwc.npy")
    np.testing.assert_allclose(
        model.predict_on_batch(images), np.load(FIXTURES / "mbv2_ca_w0.5_logits.npy"), atol=1e-4
    )


def test_port_without_top_of_a_legacy_checkpoint(tmp_path, capsys):
    out = tmp_path / "features.weights.h5"
    code = cli.main(_port(CHECKPOINTS / "dli14_mobilenetv2_w0.35_legacy.pth", out, "--model",
                          "mobilenet_v2", "--alpha", "0.35", "--no-include-top"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "include_top=False" in captured.out and "2 classifier tensors skipped" in captured.out
    assert out.exists()


def _assert_clean_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_wrong_alpha_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x.weights.h5"
    code = cli.main(_port(MBV2_CA, out, "--model", "mobilenet_v2_ca", "--alpha", "0.75"))
    _assert_clean_error(code, capsys.readouterr().err, "keras-coordatt port: error:",
                        "does not fit MobileNetV2CA(alpha=0.75", "shape mismatches")
    assert not out.exists()


def test_wrong_family_is_a_one_line_error(tmp_path, capsys):
    code = cli.main(_port(MBV2_CA, tmp_path / "x.weights.h5", "--model", "mobilenet_v2",
                          "--alpha", "0.5"))
    _assert_clean_error(code, capsys.readouterr().err, "does not fit MobileNetV2(alpha=0.5")


def test_wrong_class_count_is_a_one_line_error(tmp_path, capsys):
    code = cli.main(_port(MBV2_CA, tmp_path / "x.weights.h5", "--model", "mobilenet_v2_ca",
                          "--alpha", "0.5", "--classes", "10"))
    _assert_clean_error(code, capsys.readouterr().err, "1000 classes")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--model", "resnet50", "--alpha", "0.5"], "invalid choice: 'resnet50'"),
        (["--model", "mobilenet_v2", "--alpha", "wide"], "invalid alpha 'wide'"),
        (["--model", "mobilenet_v2", "--alpha", "-1"], "alpha must be > 0"),
        (["--alpha", "0.5"], "the following arguments are required: --model"),
    ],
)
def test_bad_arguments(tmp_path, capsys, argv, fragment):
    code = cli.main(_port(MBV2_CA, tmp_path / "x.weights.h5", *argv))
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("checkpoint", "output", "fragment"),
    [
        ("missing.pth", "x.weights.h5", "does not exist"),
        (MBV2_CA, "x.h5", "must end in .weights.h5"),
        (MBV2_CA, "no_dir/x.weights.h5", "output directory"),
        (FIXTURES / "mbv2_ca_w0.5_logits.npy", "x.weights.h5", "is not a PyTorch file"),
    ],
)
def test_bad_paths(tmp_path, capsys, checkpoint, output, fragment):
    checkpoint = checkpoint if os.path.isabs(str(checkpoint)) else tmp_path / checkpoint
    code = cli.main(_port(checkpoint, tmp_path / output, "--model", "mobilenet_v2"))
    _assert_clean_error(code, capsys.readouterr().err, fragment)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_hostile_checkpoint_is_refused(tmp_path, capsys):
    import zipfile

    marker = tmp_path / "marker"
    hostile = tmp_path / "hostile.pth"
    with zipfile.ZipFile(hostile, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"state_dict": _Payload(marker)}))
        archive.writestr("archive/version", "3\n")
    code = cli.main(_port(hostile, tmp_path / "x.weights.h5", "--model", "mobilenet_v2"))
    _assert_clean_error(code, capsys.readouterr().err, "cannot read", "refusing")
    assert not marker.exists() and not (tmp_path / "x.weights.h5").exists()


def test_commands_can_be_registered(capsys):
    calls = []

    def add_arguments(parser):
        parser.add_argument("value", type=int)

    def run(args):
        calls.append(args.value)
        if args.value < 0:
            raise cli.CliError("negative value\nsecond line", exit_code=3)
        return 0

    cli.register_command("test-echo", help="test command", add_arguments=add_arguments, run=run)
    try:
        with pytest.raises(ValueError, match="already registered"):
            cli.register_command("test-echo", help="x", add_arguments=add_arguments, run=run)
        assert "test-echo" in cli.registered_commands() and "port" in cli.registered_commands()
        assert cli.main(["test-echo", "5"]) == 0 and calls == [5]
        assert cli.main(["test-echo", "-4"]) == 3
        assert capsys.readouterr().err.strip() == (
            "keras-coordatt test-echo: error: negative value; second line"
        )
        assert cli.main(["--help"]) == 0
        assert "test-echo" in capsys.readouterr().out
        assert cli.main([]) == 2  # a command is required
    finally:
        cli._COMMANDS.pop("test-echo", None)


def test_module_entry_point_in_a_subprocess(tmp_path):
    out = tmp_path / "x.weights.h5"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-m", "keras_coordatt.cli", "port", str(MBV2_CA), str(out),
         "--model", "mobilenet_v2_ca", "--alpha", "0.75"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "keras-coordatt port:" in line]
    assert len(errors) == 1 and "does not fit MobileNetV2CA(alpha=0.75" in errors[0]
    assert not out.exists()


# ------------------------------------------------------------------------------------------
# One table of models: the catalog, read by the CLI, the registry and the exporters


def _choices(command: str) -> list[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    model = next(a for a in sub.choices[command]._actions if a.dest == "model")  # noqa: SLF001
    return list(model.choices)


def test_catalog_is_the_one_table_of_models():
    from keras_coordatt import applications
    from keras_coordatt.applications import CATALOG, find_model_entry, get_model_entry
    from keras_coordatt.weights import registry

    names = ["mobilenet_v2", "mobilenet_v2_ca", "mobilenext", "mobilenext_ca"]
    assert [entry.name for entry in CATALOG] == names
    for entry in CATALOG:
        # The CLI name is {family}[_{attention}]; the builder is the public one.
        assert entry.name == entry.family + (f"_{entry.attention}" if entry.attention else "")
        assert getattr(applications, entry.builder_name) is entry.builder
        assert get_model_entry(entry.name) is entry is get_model_entry(entry.builder_name)
        assert find_model_entry(entry.family, entry.attention) is entry
        assert registry.BUILDERS[(entry.family, entry.attention)] == entry.builder_name
        # The default preset is the registry's ImageNet default for alpha 1.0 at 224x224.
        found = registry.find_imagenet_preset(entry.family, 1.0, entry.attention, 224)
        assert (found.name if found else None) == entry.default_preset
    assert len(registry.BUILDERS) == len(CATALOG)
    assert find_model_entry("mobilenet_v2", "se") is None
    with pytest.raises(ValueError, match="Unknown model 'resnet50'.*mobilenet_v2_ca"):
        get_model_entry("resnet50")
    for command in ("port", "export-hub", "export-tflite"):
        assert _choices(command) == names, command


def test_old_cli_names_still_work_with_a_deprecation_warning():
    from keras_coordatt.applications import CATALOG
    from keras_coordatt.export import hub

    expected = {entry.name: entry.builder_name for entry in CATALOG}
    with pytest.warns(DeprecationWarning, match="CATALOG"):
        assert cli.PORT_MODELS == expected
    with pytest.warns(DeprecationWarning, match="CATALOG"):
        assert hub.CLI_MODELS == expected
    with pytest.warns(DeprecationWarning, match="keras_coordatt.cli.export_hub.run"):
        from keras_coordatt.cli import export_hub as command

        assert hub.run_cli is command.run
    with pytest.warns(DeprecationWarning):
        import keras_coordatt.export.tflite_cli as tflite_cli

        tflite_cli = __import__("importlib").reload(tflite_cli)
    from keras_coordatt.cli import export_tflite

    assert tflite_cli.run_cli is export_tflite.run
    from keras_coordatt import demo
    from keras_coordatt.cli import demo as demo_command

    with pytest.warns(DeprecationWarning, match="keras_coordatt.cli.demo"):
        assert demo.add_arguments is demo_command.add_arguments
    assert tflite_cli.calibration_images is export_tflite.calibration_images
