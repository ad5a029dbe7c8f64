"""Image sources: the article's first-N subset rule, both CIFAR-10 layouts, the bundled sample, others."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from erf.data import CIFAR10_MEAN, CIFAR10_STD, load_source, subset_count
from erf.data.sources import BUNDLED_SAMPLE, normalize
from erf.errors import DataError, InputError
from erf.training import augment_batch

FIRST_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
FIRST_TRAIN_LABELS = [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]


# ----------------------------------------------------------------------------- subset rule
def test_subset_fraction_of_the_official_split():
    assert subset_count(0.1, "train", 50000) == (5000, None)
    assert subset_count(0.1, "test", 10000) == (1000, None)
    assert subset_count("0.1", "train", 50000) == (5000, None)
    assert subset_count(1.0, "test", 10000) == (10000, None)
    assert subset_count(None, "test", 932) == (932, None)


def test_subset_counts():
    assert subset_count("500", "train", 50000) == (500, None)
    assert subset_count(500, "test", 10000) == (500, None)
    assert subset_count("1", "test", 10000) == (1, None)  # a count, not 100 %


def test_subset_clamped_with_a_note():
    n, note = subset_count(0.1, "train", 4660)
    assert n == 4660 and "5000" in note and "4660" in note
    n, note = subset_count(0.1, "test", 932)
    assert n == 932 and "1000" in note


@pytest.mark.parametrize("bad", ["x", "-0.1", "0", "2.5"])
def test_subset_rejects_bad_values(bad):
    with pytest.raises(InputError, match="^subset "):
        subset_count(bad, "train", 50000)


# ----------------------------------------------------------------------------- official layout
def _fake_release(root, per_batch=7, test=6, protocol=2):
    """A tiny ``cifar-10-batches-py`` folder: pixel (0,0,0) of image i of batch b encodes (b, i)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    expected = {"train": [], "test": []}

    def write(name, batch_id, n):
        data = np.zeros((n, 3072), dtype=np.uint8)
        data[:, 0] = batch_id  # red channel, top-left pixel
        data[:, 1] = np.arange(n)  # red channel, pixel (0, 1)
        data[:, 1024] = 200  # green channel, top-left pixel: checks the CHW -> HWC layout
        labels = [(batch_id * 3 + i) % 10 for i in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", b"data": data, b"labels": labels, b"filenames": [b"a"] * n}, f,
                        protocol=protocol)
        return [(batch_id, i, lab) for i, lab in enumerate(labels)]

    for b in range(1, 6):
        expected["train"] += write(f"data_batch_{b}", b, per_batch)
    expected["test"] += write("test_batch", 9, test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": per_batch}, f)
    return expected


@pytest.mark.parametrize("point_at,protocol", [("root", 2), ("folder", 2), ("root", 4), ("root", 5)])
def test_official_layout_first_n_across_batches(tmp_path, point_at, protocol):
    expected = _fake_release(tmp_path, protocol=protocol)
    root = tmp_path if point_at == "root" else tmp_path / "cifar-10-batches-py"
    train = load_source(f"cifar10:{root}", "train", subset="10")
    assert len(train) == 10 and train.raw
    pixels = (train.images[:, 0, 0, :2] * 255).round().long()
    got = [(int(p[0]), int(p[1]), int(lab)) for p, lab in zip(pixels, train.labels)]
    assert got == expected["train"][:10]  # 7 of batch 1, then the first 3 of batch 2: file order
    assert torch.allclose(train.images[:, 1, 0, 0], torch.full((10,), 200 / 255))
    test = load_source(f"cifar10:{root}", "test")
    assert [int(v) for v in test.labels] == [lab for _, _, lab in expected["test"]]
    assert "official" in test.description


def test_official_layout_subset_clamped_with_note(tmp_path):
    _fake_release(tmp_path)
    train = load_source(f"cifar10:{tmp_path}", "train", subset=0.1)
    assert len(train) == 35 and any("5000" in n for n in train.notes)


def test_official_layout_missing_batch_names_file(tmp_path):
    _fake_release(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_source(f"cifar10:{tmp_path}", "train")


def test_official_layout_refuses_code_in_batches(tmp_path):
    _fake_release(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f)
    with pytest.raises(DataError, match="test_batch"):
        load_source(f"cifar10:{tmp_path}", "test")
    assert not marker.exists()


def test_missing_root():
    with pytest.raises(DataError, match="no such"):
        load_source("cifar10:/nonexistent/cifar", "test")


# ----------------------------------------------------------------------------- the shared real prefix
def test_npz_prefix_real_labels(cifar10_prefix):
    test = load_source(f"cifar10:{cifar10_prefix}", "test")
    assert len(test) == 932 and test.raw
    assert test.labels[:10].tolist() == FIRST_TEST_LABELS
    assert test.images.dtype == torch.float32 and test.images.shape == (932, 3, 32, 32)
    assert 0.0 <= float(test.images.min()) and float(test.images.max()) <= 1.0
    train = load_source(f"cifar10:{cifar10_prefix}", "train", count=10)
    assert train.labels.tolist() == FIRST_TRAIN_LABELS
    assert train.classes[3] == "cat"
    # exact pixels: CHW float = HWC uint8 / 255
    raw = np.load(cifar10_prefix)["x_test"][:2]
    assert torch.equal(test.images[:2], torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255)


def test_npz_prefix_subset_clamps_with_note(cifar10_prefix):
    train = load_source(f"cifar10:{cifar10_prefix}", "train", subset=0.1)
    assert len(train) == 4660 and any("5000" in n for n in train.notes)
    test = load_source(f"cifar10:{cifar10_prefix}", "test", subset="100")
    assert len(test) == 100 and not test.notes


def test_bundled_sample_is_real_cifar10(cifar10_prefix):
    sample = load_source("bundled")
    assert len(sample) == 300 and sample.raw and sample.images.shape[1:] == (3, 32, 32)
    assert sample.labels[:10].tolist() == FIRST_TEST_LABELS
    prefix = load_source(f"cifar10:{cifar10_prefix}", "test", count=300)
    assert torch.equal(sample.labels, prefix.labels)
    assert torch.equal(sample.images, prefix.images)


def test_bundled_sample_subset_rule():
    assert len(load_source("bundled", subset="100")) == 100
    clamped = load_source("bundled", subset=0.1)
    assert len(clamped) == 300 and any("1000" in n for n in clamped.notes)


def test_bundled_sample_shape_and_size():
    assert BUNDLED_SAMPLE.stat().st_size < 2_000_000
    sample = load_source("bundled", count=5)
    assert len(sample) == 5 and sample.labels.tolist() == FIRST_TEST_LABELS[:5]
    assert sorted(set(load_source("bundled").labels.tolist())) == list(range(10))


# ----------------------------------------------------------------------------- normalisation, augmentation
def test_normalisation_is_the_articles():
    data = load_source("bundled", count=4)
    x = data.normalized()
    mean = torch.tensor(CIFAR10_MEAN)[:, None, None]
    std = torch.tensor(CIFAR10_STD)[:, None, None]
    torch.testing.assert_close(x, (data.images - mean) / std)
    assert CIFAR10_MEAN == (0.4914, 0.4822, 0.4465) and CIFAR10_STD == (0.2023, 0.1994, 0.2010)
    assert torch.allclose(normalize(mean.expand(3, 2, 2)[None].clone()), torch.zeros(1, 3, 2, 2))


def test_augmentation_is_a_padded_crop_or_flip():
    images = torch.rand(16, 3, 32, 32)
    out = augment_batch(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(16):  # every output is some 32x32 window of the padded image, maybe flipped
        windows = padded[i].unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 9, 9, 32, 32)
        hits = [(dy, dx) for dy in range(9) for dx in range(9)
                if torch.equal(windows[:, dy, dx], out[i]) or torch.equal(windows[:, dy, dx].flip(-1), out[i])]
        assert hits
    again = augment_batch(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(out, augment_batch(images, torch.Generator().manual_seed(1)))


# ----------------------------------------------------------------------------- other sources
def test_noise_source_seeded():
    a = load_source("noise:3", count=5, image_size=20)
    b = load_source("noise:3", count=5, image_size=20)
    assert a.images.shape == (5, 3, 20, 20) and torch.equal(a.images, b.images)
    assert not a.raw and torch.equal(a.normalized(), a.images)
    assert (a.labels == -1).all()
    assert not torch.equal(a.images, load_source("noise:4", count=5, image_size=20).images)
    big = load_source("noise", count=64)
    assert abs(float(big.images.mean())) < 0.02 and abs(float(big.images.std()) - 1) < 0.02
    assert load_source("noise", channels=1, count=2).images.shape == (2, 1, 32, 32)


def test_constant_source():
    c = load_source("constant:0.5", count=3)
    assert c.images.shape == (3, 3, 32, 32) and torch.all(c.images == 0.5)
    assert torch.all(load_source("constant", count=1).images == 0)
    with pytest.raises(InputError, match="not a number"):
        load_source("constant:abc")


def test_tensor_source(tmp_path):
    arr = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", arr)
    data = load_source(f"tensor:{tmp_path / 'x.npy'}")
    assert torch.equal(data.images, torch.from_numpy(arr)) and not data.raw
    np.save(tmp_path / "bad.npy", arr[0])
    with pytest.raises(DataError, match="bad.npy"):
        load_source(f"tensor:{tmp_path / 'bad.npy'}")
    arr[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", arr)
    with pytest.raises(DataError, match="NaN"):
        load_source(f"tensor:{tmp_path / 'nan.npy'}")


def test_folder_source_with_pngs(tmp_path):
    from PIL import Image

    for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (40, 64), color).save(tmp_path / cls / "a.png")
    data = load_source(f"folder:{tmp_path}", image_size=32)
    assert data.images.shape == (2, 3, 32, 32) and data.raw
    assert data.classes == ("cat", "dog") and data.labels.tolist() == [0, 1]
    assert torch.allclose(data.images[0, 0], torch.ones(32, 32)) and float(data.images[0, 2].max()) == 0
    assert torch.allclose(data.images[1, 2], torch.ones(32, 32))
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_source(f"folder:{tmp_path}")


def test_bad_specs(tmp_path):
    with pytest.raises(InputError, match="unknown data source"):
        load_source("imagenet:foo")
    with pytest.raises(InputError, match="split"):
        load_source("bundled", split="val")
    with pytest.raises(DataError, match="channels"):
        load_source("bundled", channels=1)
    with pytest.raises(DataError, match="no image files"):
        load_source(f"folder:{tmp_path}")


# ----------------------------------------------------------------------------- the registry of kinds
def test_the_kinds_messages_and_help_come_from_the_registry(run_cli):
    from erf.data.registry import SOURCES

    syntaxes = [s.syntax for s in SOURCES.values()]
    assert [s.name for s in SOURCES.values()] == ["bundled", "cifar10", "folder", "noise", "constant", "tensor"]
    with pytest.raises(InputError) as unknown:
        load_source("imagenet:foo")
    assert str(unknown.value).endswith(f"use {', '.join(syntaxes[:-1])} or {syntaxes[-1]}")
    with pytest.raises(InputError, match=r"empty; give bundled, .* or tensor:FILE$"):
        load_source("")
    _, stdout, _ = run_cli("measure", "--help")
    listed = stdout.split("data sources (--data):")[1]
    assert all(f"  {s.syntax} " in listed and s.description in listed for s in SOURCES.values())


def test_a_bare_folder_path_is_a_folder_source(tmp_path):
    from PIL import Image

    from erf.data.registry import source_of

    Image.new("RGB", (40, 40), (255, 0, 0)).save(tmp_path / "a.png")
    assert source_of(str(tmp_path))[0].name == "folder" and source_of(f"folder:{tmp_path}")[1] == str(tmp_path)
    assert source_of("sample")[0].name == "bundled" and source_of("imagenet:x") is None
    assert load_source(str(tmp_path), image_size=8).description == f"1 images from {tmp_path}"


def test_a_new_data_source_is_one_loader_and_its_registration():
    """A kind as a user would add it: a loader ``(arg, spec, options) -> ImageSet`` and one register_source call;
    the shared checks (channels, count) apply to it."""
    from erf.data.registry import SOURCES, DataSource, listing, register_source

    register_source(DataSource("ones", "ones[:N]", "images of ones", "test_data:_load_ones", sized=True))
    try:
        data = load_source("ones:2", count=3, image_size=4)
        assert data.images.shape == (3, 3, 4, 4) and float(data.images.sum()) == 3 * 3 * 16 * 2
        assert listing().endswith("tensor:FILE.npy or ones[:N]")
        with pytest.raises(DataError, match="channels"):
            load_source("ones", channels=1)
        with pytest.raises(ValueError, match="registered twice"):
            register_source(DataSource("x", "x", "", "test_data:_load_ones", aliases=("ones",)))
    finally:
        del SOURCES["ones"]


def _load_ones(arg, spec, options):
    from erf.data import ImageSet

    n = options.count or 5
    return ImageSet(torch.full((n, 3, options.image_size, options.image_size), float(arg or 1)),
                    torch.full((n,), -1), f"{n} images of ones")
