"""Hardware switches resolve to off on a CPU, and evaluation runs no augmentation."""

import numpy as np
import pytest
import yaml
from conftest import REPO

from bloodcells.gpus import has_gpu
from bloodcells.hardware import resolve_switch


def test_auto_is_off_without_a_gpu_and_on_with_one():
    assert resolve_switch("auto", has_gpu=False) is False
    assert resolve_switch("auto", has_gpu=True) is True


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True),
        (False, False),
        ("on", True),
        ("off", False),
        ("true", True),
        ("False", False),
        ("1", True),
        ("no", False),
    ],
)
def test_explicit_values_win_over_the_hardware(value, expected):
    assert resolve_switch(value, has_gpu=True) is expected
    assert resolve_switch(value, has_gpu=False) is expected


@pytest.mark.parametrize("value", ["maybe", None, 2, ""])
def test_unknown_values_are_errors_not_true(value):
    with pytest.raises(ValueError):
        resolve_switch(value, has_gpu=False)


def test_has_gpu_reads_the_device_nodes(tmp_path):
    assert has_gpu(tmp_path) is False
    (tmp_path / "nvidiactl").touch()  # the control node alone is no card
    assert has_gpu(tmp_path) is False
    (tmp_path / "nvidia0").touch()
    assert has_gpu(tmp_path) is True


@pytest.mark.parametrize("config", ["config.yaml", "config.demo.yaml"])
def test_mixed_precision_and_xla_are_off_on_this_cpu(config):
    if has_gpu():
        pytest.skip("this machine has a GPU")
    training = yaml.safe_load((REPO / config).read_text())["training"]
    for switch in ("mixed_precision", "xla"):  # each as the config sets it, resolved on this host
        assert resolve_switch(training[switch], has_gpu()) is False, (config, switch, training[switch])


def test_evaluation_runs_no_augmentation():
    import keras

    from bloodcells.model import Augmentation, build_model

    keras.utils.set_random_seed(0)
    model = build_model("resnet50", 32, 8, augmentation=Augmentation(), seed=0)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)

    first = model.predict(images, batch_size=4, verbose=0)
    second = model.predict(images, batch_size=4, verbose=0)
    np.testing.assert_array_equal(first, second)

    augment = model.get_layer("augment")
    as_float = images.astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(augment(images, training=False)), as_float)
    augmented = keras.ops.convert_to_numpy(augment(images, training=True))
    assert augmented.shape == images.shape
    assert not np.allclose(augmented, as_float)


def test_settings_resolve_every_auto_switch_on_the_host_that_trains():
    import yaml
    from conftest import REPO, SCHEMA

    from bloodcells.config import validate_config
    from bloodcells.training import TrainSettings

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate_config(config, SCHEMA)
    cpu = TrainSettings.from_config(config["training"], threads=2, gpu=False)
    gpu = TrainSettings.from_config(config["training"], threads=2, gpu=True)
    assert (cpu.mixed_precision, cpu.xla, cpu.grappler) == (False, False, False)
    assert (gpu.mixed_precision, gpu.xla, gpu.grappler) == (True, True, True)
    assert (cpu.lr_schedule, cpu.warmup_epochs, cpu.zero_init_residual, cpu.bn_momentum) == ("constant", 0, False, None)
    assert cpu.threads == 2 and cpu.max_epochs == config["training"]["max_epochs"]
