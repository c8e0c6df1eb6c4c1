"""The command line's parsing: flags derived from the config (``cli.options``), errors before
any work (no database, no Prefect, no model)."""

from typer.testing import CliRunner

from bootstrap.config import DetectorConfig
from cli.main import app

runner = CliRunner()
WIDE = {"COLUMNS": "200"}  # rich wraps error boxes at the terminal width


def test_annotate_has_a_flag_for_every_detector_field():
    result = runner.invoke(app, ["annotate", "--help"], env=WIDE)
    assert result.exit_code == 0
    for name, field in DetectorConfig.model_fields.items():
        assert f"--{name.replace('_', '-')}" in result.output, name
        assert field.description.split(" (")[0][:30] in result.output, name
    assert "--imgsz" in result.output  # the Ultralytics spelling stays an alias


def test_flag_values_are_validated_as_config_fields(tmp_path):
    # Before any work (no database, no Prefect): the error names the config field.
    result = runner.invoke(app, ["annotate", str(tmp_path), "--image-size", "100"])
    assert result.exit_code == 2 and "detector.image_size: " in result.output
    assert "multiple of 32" in result.output
    result = runner.invoke(app, ["annotate", str(tmp_path), "--tta", "hflip", "--tta", "zoom"])
    assert result.exit_code == 2 and "detector.tta.1" in result.output
    result = runner.invoke(app, ["annotate", str(tmp_path), "--runtime", "tensorrt"], env=WIDE)
    assert result.exit_code == 2 and "detector.runtime: " in result.output


def test_bad_config_fails_before_any_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: x\ndetector: {batch_size: -1}\n")
    result = runner.invoke(app, ["annotate", str(tmp_path), "--config", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: detector.batch_size" in result.output


def test_no_sources_is_an_error():
    result = runner.invoke(app, ["annotate", "--dataset", "x"])
    assert result.exit_code == 2 and "no sources" in result.output


def test_review_subcommands_need_their_dataset():
    # `review apply` alone is a usage error, not a dataset called "apply".
    missing = runner.invoke(app, ["review", "apply"], env=WIDE)
    assert missing.exit_code == 2 and "Missing argument" in missing.output
    unknown = runner.invoke(app, ["review", "approve", "x"], env=WIDE)
    assert unknown.exit_code == 2 and "No such command 'approve'" in unknown.output
