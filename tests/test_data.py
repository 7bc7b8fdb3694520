"""Each source reads small fixture files written here in the real formats."""

import gzip
import pickle

import numpy as np
import pytest
import torch
from torchvision.io import ImageReadMode, decode_image, write_jpeg, write_png

from wsl_ray.data import iterate_batches, load_dataset, shapes
from wsl_ray.data.sources import IMAGENET100_CLASSES, ImageFiles


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WSL_RAY_CACHE", str(tmp_path / "cache"))


def rng_images(n, c=3, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


def write_cifar(root, num_classes):
    folder = root / ("cifar-10-batches-py" if num_classes == 10 else "cifar-100-python")
    folder.mkdir(parents=True)
    key = "labels" if num_classes == 10 else "fine_labels"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if num_classes == 100:
        names = ["train", "test"]
    written = {}
    for i, name in enumerate(names):
        x = rng_images(4, seed=i)
        y = [(i + j) % num_classes for j in range(4)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x.reshape(4, -1), key: y}, f)
        written[name] = (x, y)
    return written


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_pickles(tmp_path, num_classes):
    written = write_cifar(tmp_path, num_classes)
    data = load_dataset(f"cifar{num_classes}", data_dir=tmp_path)
    n_train = 20 if num_classes == 10 else 4
    assert data.train_x.shape == (n_train, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (4, 3, 32, 32) and data.test_y.dtype == torch.int64
    test_name = "test_batch" if num_classes == 10 else "test"
    np.testing.assert_array_equal(data.test_x.numpy(), written[test_name][0])
    assert data.test_y.tolist() == written[test_name][1]
    assert torch.equal(data.clf_x, data.train_x) and data.num_classes == num_classes


def test_stl10_binaries(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = {}
    for name, n in (("train", 3), ("test", 2), ("unlabeled", 4)):
        x = rng_images(n, h=96, w=96, seed=n)
        images[name] = x
        x.transpose(0, 1, 3, 2).tofile(folder / f"{name}_X.bin")  # stored column-major
        if name != "unlabeled":
            np.arange(1, n + 1, dtype=np.uint8).tofile(folder / f"{name}_y.bin")
    data = load_dataset("stl10", data_dir=tmp_path)
    assert data.train_x.shape == (7, 3, 96, 96)  # train + unlabeled for SSL
    np.testing.assert_array_equal(data.train_x[:3].numpy(), images["train"])
    assert data.clf_x.shape == (3, 3, 64, 64) and data.test_x.shape == (2, 3, 64, 64)
    assert data.clf_y.tolist() == [0, 1, 2] and data.crop_size == 64


def test_tiny_imagenet_folders(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n001", "n002"]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids))
    for i, wnid in enumerate(wnids):
        (base / "train" / wnid / "images").mkdir(parents=True)
        for j in range(2):
            img = torch.full((3, 64, 64), 40 * i + j, dtype=torch.uint8)
            write_png(img, str(base / "train" / wnid / "images" / f"{wnid}_{j}.png"))
    write_png(torch.zeros(3, 64, 64, dtype=torch.uint8), str(base / "val/images/val_0.png"))
    (base / "val" / "val_annotations.txt").write_text("val_0.png\tn002\t0\t0\t64\t64\n")
    data = load_dataset("tiny_in", data_dir=tmp_path)
    assert data.train_x.shape == (4, 3, 64, 64) and data.train_y.tolist() == [0, 0, 1, 1]
    assert data.train_x[2, 0, 0, 0] == 40 and data.test_y.tolist() == [1]
    again = load_dataset("tiny_in", data_dir=tmp_path)  # from the cache
    assert torch.equal(again.train_x, data.train_x)


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files(tmp_path):
    x = rng_images(5, c=1, h=28, w=28)[:, 0]
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x[:2])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(2))
    data = load_dataset("fashion_mnist", data_dir=tmp_path)
    assert data.train_x.shape == (5, 3, 28, 28)
    np.testing.assert_array_equal(data.train_x[:, 1].numpy(), x)
    assert data.train_y.tolist() == [0, 1, 2, 3, 4] and len(data.mean) == 3


def test_imagenet100_streams_the_100_classes(tmp_path):
    for split in ("train", "val"):
        for wnid in [*IMAGENET100_CLASSES, "n99999999"]:  # an extra class is ignored
            (tmp_path / split / wnid).mkdir(parents=True)
            img = torch.full((3, 300, 260), 7, dtype=torch.uint8)
            write_png(img, str(tmp_path / split / wnid / "a.png"))
    data = load_dataset("imagenet100", data_dir=tmp_path)
    assert isinstance(data.train_x, ImageFiles) and len(data.train_x) == 100
    batches = iterate_batches(data.train_x, data.train_y, 8, num_workers=0, with_sizes=True)
    x, y, sizes = next(batches)
    assert x.shape == (8, 3, 500, 500) and x.dtype == torch.uint8 and y.shape == (8,)
    assert sizes.tolist() == [[300, 260]] * 8  # the whole image, at full resolution
    assert (x[:, :, :300, :260] == 7).all() and x.sum() == 7 * x[:, :, :300, :260].numel()
    assert data.test_x[0][0].shape == (3, 224, 224) and data.blur
    assert "at most 500 px" in data.summary()


@pytest.mark.parametrize("name", ["cifar10", "stl10", "tiny_in", "fashion_mnist", "imagenet100"])
def test_missing_files_name_the_path(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_dataset(name, data_dir=tmp_path)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match="shapes"):
        load_dataset("mnist")


def test_shapes_is_deterministic_balanced_and_cached():
    a = shapes.generate(num_train=200, num_test=50, seed=3)
    b = shapes.generate(num_train=200, num_test=50, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["train_x"], shapes.generate(200, 50, seed=4)["train_x"])
    assert torch.bincount(a["train_y"]).tolist() == [20] * 10
    assert a["train_x"].shape == (200, 3, 32, 32) and a["train_x"].dtype == torch.uint8
    data = load_dataset("shapes", num_train=200, num_test=50, seed=3)
    assert torch.equal(data.train_x, a["train_x"]) and data.num_classes == 10


def test_raw_pixels_are_a_poor_feature_for_shapes():
    from wsl_ray.training.evaluate import knn_accuracy

    data = shapes.generate(num_train=4000, num_test=1000, seed=1)
    flat = {k: data[k].flatten(1).float() / 255 for k in ("train_x", "test_x")}
    raw = knn_accuracy(flat["train_x"], data["train_y"], flat["test_x"], data["test_y"], k=5)
    assert 0.1 < raw < 0.4  # 10 classes; 32% with the full 10k training images


def test_iterate_batches_shuffles_and_drops_the_last_partial_batch():
    x = torch.arange(10).view(10, 1, 1, 1).to(torch.uint8)
    y = torch.arange(10)
    batches = list(iterate_batches(x, y, 4, generator=torch.Generator().manual_seed(0)))
    assert [len(b[0]) for b in batches] == [4, 4]
    seen = torch.cat([b[1] for b in batches])
    assert len(set(seen.tolist())) == 8 and seen.tolist() != list(range(8))
    assert all(torch.equal(bx.flatten().long(), by) for bx, by in batches)
    ordered = list(iterate_batches(x, y, 4, shuffle=False, drop_last=False))
    assert [b[1].tolist() for b in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    sizes = [s for *_, s in iterate_batches(torch.zeros(10, 3, 2, 5), y, 4, with_sizes=True)]
    assert [s.tolist() for s in sizes] == [[[2, 5]] * 4] * 2  # a tensor's images fill it


def test_training_files_stream_whole_images_within_500_px_and_keep_their_shape(tmp_path):
    """Each training item is the whole image, scaled down only when its longer side passes
    500, top-left on a zero 500 x 500 canvas; its size travels with it."""
    shapes_in = {"wide": (300, 600), "small": (90, 120), "tall": (700, 333)}  # (h, w)
    shapes_out = {"wide": (250, 500), "small": (90, 120), "tall": (500, 238)}
    paths = [tmp_path / f"{name}.jpg" for name in shapes_in]
    for path, (h, w) in zip(paths, shapes_in.values(), strict=True):
        ramp = torch.linspace(0, 255, w).round().to(torch.uint8)  # grey, left to right
        write_jpeg(ramp.expand(3, h, w).contiguous(), str(path), quality=95)
    files = ImageFiles(paths, [0, 1, 2], max_side=500)
    for i, name in enumerate(shapes_in):
        x, label, size = files[i]
        (h, w), w0 = shapes_out[name], shapes_in[name][1]
        assert x.shape == (3, 500, 500) and label == i and size.tolist() == [h, w]
        assert x[:, h:].sum() == 0 and x[:, :, w:].sum() == 0  # padding
        image = x[:, :h, :w]
        if name == "small":  # never upscaled, never resampled
            assert torch.equal(image, decode_image(str(paths[i]), mode=ImageReadMode.RGB))
        # the whole ramp, scaled: column j samples the original at (j + 1/2) w0 / w - 1/2
        at = ((torch.arange(w) + 0.5) * w0 / w - 0.5).clamp(0, w0 - 1)
        profile = image.float().mean(dim=(0, 1))
        assert (profile - 255 * at / (w0 - 1))[3:-3].abs().max() < 2
    eval_item = ImageFiles(paths, [0, 1, 2], resize=256, crop=224)[1]
    assert eval_item[0].shape == (3, 224, 224) and eval_item[2].tolist() == [224, 224]
    with pytest.raises(ValueError, match="max_side"):
        ImageFiles(paths, [0, 1, 2], resize=256)


def _cifar_batch(path, x, labels):
    with open(path, "wb") as f:
        pickle.dump({"data": x.reshape(len(x), -1), "labels": labels}, f)


@pytest.mark.parametrize(
    "labels,phrase",
    [
        ([0, 1, 49, 3], "batch has labels from 0 to 49, outside [0, 10)"),
        ([0, -1, -5, 3], "batch has labels from -5 to 3"),
        ([0, 1, 2], "batch has 3 labels for 4 images"),
    ],
)
def test_labels_that_do_not_fit_the_images_name_the_file(tmp_path, labels, phrase):
    """CIFAR-10 batches with labels beyond the 10 classes, negative ones, or fewer labels
    than images: refused when loaded, naming the files, not trained on."""
    write_cifar(tmp_path, 10)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    _cifar_batch(bad, rng_images(4), labels)
    with pytest.raises(ValueError, match=f"^{bad}: this CIFAR-10 batch") as err:
        load_dataset("cifar10", data_dir=tmp_path)
    assert phrase in str(err.value), err.value


@pytest.mark.parametrize(
    "role,change,phrase",
    [
        ("test", lambda x, y: (x[:, :1], y), "not uint8 [N, 3, H, W]"),
        ("test", lambda x, y: (x.float(), y), "holds torch.float32 images"),
        ("test", lambda x, y: (x[..., :16], y), "holds 32x16 images, not 32x32"),
        ("clf", lambda x, y: (x, y.float()), "not one integer per image"),
        ("clf", lambda x, y: (x, y[:0]), "has 0 labels for"),
        ("test", lambda x, y: (x[:0], y[:0]), "has no images"),
    ],
)
def test_every_role_is_checked_whatever_the_reader(role, change, phrase):
    from wsl_ray.data.checks import DataError, check_roles

    x, y = torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1, 2, 3])
    raw = {f"{r}_{k}": v for r in ("train", "clf", "test") for k, v in (("x", x), ("y", y))}
    raw[f"{role}_x"], raw[f"{role}_y"] = change(x, y)
    with pytest.raises(DataError, match=f"/data: the cifar10 {role} set") as err:
        check_roles("cifar10", raw, 10, 32, "/data")
    assert phrase in str(err.value), err.value
    raw[f"{role}_x"], raw[f"{role}_y"] = x, y
    raw["train_y"] = torch.tensor([-1, 0, 9, -1])  # unlabeled training images are fine
    check_roles("cifar10", raw, 10, 32, "/data")


def test_an_empty_batch_has_no_label_problem_and_a_wrong_label_still_has_one():
    """The GPU call's CIFAR-10 subset (benchmarks/jpeg_subset.py) decodes to data_batch_2..5
    without images: their empty labels are fine; a label out of range is still reported."""
    from wsl_ray.data.checks import labels_problem

    assert labels_problem(torch.empty(0, dtype=torch.int64), 0, 10) is None
    assert "outside [0, 10)" in labels_problem(torch.tensor([3, 10]), 2, 10)
