"""The export cache's key and folder (bootstrap.exported); no export is made here (the real
exports: tests/integration/test_exported.py)."""

import os

import pytest

from bootstrap.config import ConfigError, DetectorOptions, load_pipeline_config, validate_config
from bootstrap.exported import (
    EXPORTS_ENV,
    choose_runtime,
    export_key,
    exports_folder,
    runtime_on_one_thread,
    torch_single_threaded,
)
from bootstrap.yolo import cpu_streams


@pytest.mark.parametrize(
    ("runtime", "device", "expected"),
    [
        ("auto", "cpu", "onnx"),
        ("auto", "cuda", "torch"),
        ("auto", "cuda:1", "torch"),
        ("torch", "cpu", "torch"),
        ("onnx", "cpu", "onnx"),
        ("openvino", "cuda:0", "openvino"),
    ],
)
def test_runtime_chosen_for_the_device(runtime, device, expected):
    assert choose_runtime(runtime, device) == expected


def test_unknown_runtime_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'; use auto, torch, openvino, onnx"):
        choose_runtime("tensorrt", "cpu")
    with pytest.raises(ConfigError, match="detector.runtime: Input should be 'auto', 'torch'"):
        validate_config({"dataset": "d", "detector": {"runtime": "tensorrt"}})


def test_runtime_reaches_the_config_from_flow_parameters_and_files():
    assert load_pipeline_config().detector.runtime == "auto"  # configs/default.yaml
    config = load_pipeline_config(detector=DetectorOptions(runtime="onnx"))
    assert config.detector.runtime == "onnx"
    # Each view is a copy of the config: it keeps the runtime (bootstrap.proposals).
    assert config.detector.single_view(image_size=1280).runtime == "onnx"


def test_key_changes_with_the_weights_bytes_not_their_name(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"first weights")
    first = export_key(weights, "openvino", 640, 1)
    assert export_key(weights, "openvino", 640, 1) == first  # memoised, same answer
    twin = tmp_path / "other" / "model.pt"
    twin.parent.mkdir()
    twin.write_bytes(b"first weights")
    assert export_key(twin, "openvino", 640, 1).folder_name == first.folder_name
    weights.write_bytes(b"other weights, same path")
    os.utime(weights, ns=(1, 1))  # even with an old modification time: the size differs
    changed = export_key(weights, "openvino", 640, 1)
    assert changed.digest != first.digest and changed.folder_name != first.folder_name


@pytest.mark.parametrize(
    ("change", "part"),
    [({"runtime": "onnx"}, "-onnx-"), ({"image_size": 1280}, "-1280px-"), ({"batch": 16}, "-b16-")],
)
def test_key_spells_runtime_size_and_batch(tmp_path, change, part):
    weights = tmp_path / "yolo.pt"
    weights.write_bytes(b"weights")
    base = {"runtime": "openvino", "image_size": 640, "batch": 1}
    key = export_key(weights, **(base | change))
    assert part in key.folder_name and key.folder_name != export_key(weights, **base).folder_name
    assert key.folder_name.startswith("yolo-") and "-ultralytics8." in key.folder_name
    assert key.model_name == ("yolo.onnx" if key.runtime == "onnx" else "yolo_openvino_model")


def test_an_unexported_runtime_has_no_key(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"w")
    with pytest.raises(ValueError, match="no export for runtime 'torch'"):
        export_key(tmp_path / "w.pt", "torch", 640, 1)


def test_exports_lie_beside_the_weights_unless_that_folder_is_read_only(tmp_path, monkeypatch):
    monkeypatch.delenv(EXPORTS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    writable = tmp_path / "mine"
    writable.mkdir()
    assert exports_folder(writable / "w.pt") == writable / ".exports"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o555)  # as ../shared/models: no write bit, even for root
    try:
        assert exports_folder(shared / "w.pt") == tmp_path / "cache" / "bootstrap" / "exports"
    finally:
        shared.chmod(0o755)
    monkeypatch.setenv(EXPORTS_ENV, str(tmp_path / "chosen"))
    assert exports_folder(writable / "w.pt") == tmp_path / "chosen"


def test_torch_single_threaded_gives_the_threads_back_also_after_an_error():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError):
            with torch_single_threaded():
                assert torch.get_num_threads() == 1
                raise RuntimeError("a failed predict")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("cores", "batch_size", "asked", "expected"),
                         [(2, 16, 0, 2), (16, 4, 0, 4), (1, 16, 0, 1), (2, 16, 3, 3), (8, 16, 1, 1)])
def test_cpu_streams_auto_is_one_per_usable_core_at_most_a_batch(monkeypatch, cores, batch_size,
                                                                  asked, expected):
    from bootstrap.config import DetectorConfig

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    config = DetectorConfig(batch_size=batch_size, cpu_streams=asked)
    assert cpu_streams(config) == expected


@pytest.mark.parametrize(("runtime", "module", "name"),
                         [("onnx", "onnxruntime", "InferenceSession"), ("openvino", "openvino", "Core")])
def test_runtime_on_one_thread_puts_the_runtime_back_also_after_an_error(runtime, module, name):
    import importlib

    plain = getattr(importlib.import_module(module), name)
    with pytest.raises(RuntimeError):
        with runtime_on_one_thread(runtime):
            assert getattr(importlib.import_module(module), name) is not plain
            raise RuntimeError("a failed load")
    assert getattr(importlib.import_module(module), name) is plain
    with pytest.raises(ValueError, match="torch"):
        with runtime_on_one_thread("torch"):
            pass
