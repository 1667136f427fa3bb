"""``train --cfg --data FOLDER``: the pictures of an image folder go through ``data.images.load_image`` (the checks
and decoding of every picture deltaprop reads) and Darknet's ``resize_image``."""
import numpy as np
import pytest

from deltaprop.darknet.trainer_cli import load_image_folder
from deltaprop.data.images import load_image
from deltaprop.errors import DataError
from deltaprop.geometry.letterbox import resize_image

PIL = pytest.importorskip("PIL", reason="image folders are pictures (Pillow, the images extra)")


def _folder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for k, name in enumerate(["a", "b"]):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    return tmp_path / "imgs"


def test_sixteen_bit_pictures_keep_their_values(tmp_path):
    """A 16-bit grey PNG of values 3598..58339 (Pillow's convert clipped it to white) loads within 1/255 of its
    8-bit twin."""
    from PIL import Image
    root = _folder(tmp_path)
    values = np.linspace(3598, 58339, 63).reshape(9, 7).astype(np.uint16)
    Image.fromarray(values).save(root / "a" / "z16.png")
    Image.fromarray((values / 257).round().astype(np.uint8)).save(root / "b" / "z8.png")
    x, y, classes = load_image_folder(root, (1, 9, 7))
    assert classes == ["a", "b"] and x.shape == (6, 1, 9, 7) and list(y) == [0, 0, 0, 1, 1, 1]
    sixteen, eight = x[2, 0], x[5, 0]
    np.testing.assert_allclose(sixteen, values / 65535, atol=1e-6)
    np.testing.assert_allclose(sixteen, eight, atol=1 / 255)
    assert sixteen.mean() < 0.6                                        # not a white picture


def test_pictures_are_resized_by_darknets_resize_image(tmp_path):
    root = _folder(tmp_path)
    x, _, _ = load_image_folder(root, (3, 5, 4))
    np.testing.assert_array_equal(x[0], resize_image(load_image(root / "a" / "0.png", 3), 4, 5))


@pytest.mark.parametrize("bad", ["directory", "empty", "damaged"])
def test_a_picture_that_is_not_one_is_named(tmp_path, bad):
    from cli_testutil import cli
    root = _folder(tmp_path)
    target = root / "b" / "x.png"
    if bad == "directory":
        target.mkdir()
    elif bad == "empty":
        target.write_bytes(b"")
    else:
        target.write_bytes((root / "a" / "0.png").read_bytes()[:60])
    with pytest.raises(DataError, match=str(target)):
        load_image_folder(root, (3, 9, 7))
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text("[net]\nbatch=2\nwidth=7\nheight=9\nchannels=3\nlearning_rate=0.1\nmax_batches=1\n\n"
                   "[connected]\noutput=2\nactivation=linear\n\n[softmax]\n")
    rc, out, err = cli("train", "--cfg", cfg, "--data", root, "--out", tmp_path / "run", "--no-progress")
    assert rc == 1 and err.count("\n") == 1 and str(target) in err and "Traceback" not in err, err
