"""Bad labels never pass silently: the whole catalogue, each with its message, from read_labels, from
``deltaprop data check`` (every bad line as file:line: reason) and from loading (refuses, or skips and counts)."""
import numpy as np
import pytest
from PIL import Image

from deltaprop.cli import main
from deltaprop.data.detection import DetectionDataset, read_labels
from deltaprop.data.labels import check_images, parse_labels
from deltaprop.errors import LabelError

# (line, the reason's text) — classes = 3
CATALOGUE = [
    ("1 0.5 0.5 0.2", "expected 5 fields 'class x_center y_center width height', got 4"),
    ("1 0.5 0.5 0.2 0.2 0.9", "expected 5 fields 'class x_center y_center width height', got 6"),
    ("a 0.5 0.5 0.2 0.2", "class id 'a' is not an integer"),
    ("1.0 0.5 0.5 0.2 0.2", "class id '1.0' is not an integer"),
    ("1 half 0.5 0.2 0.2", "x_center 'half' is not a number"),
    ("1 0.5 0.5 wide 0.2", "width 'wide' is not a number"),
    ("1 0.5 nan 0.2 0.2", "y_center 'nan' is not a finite number"),
    ("1 0.5 0.5 0.2 inf", "height 'inf' is not a finite number"),
    ("3 0.5 0.5 0.2 0.2", "class id 3 outside 0..2 (classes = 3)"),
    ("-1 0.5 0.5 0.2 0.2", "class id -1 outside 0..2 (classes = 3)"),
    ("1 1.5 0.5 0.2 0.2", "centre (1.5, 0.5) outside [0, 1]"),
    ("1 0.5 -0.01 0.2 0.2", "centre (0.5, -0.01) outside [0, 1]"),
    ("1 0.5 0.5 0 0.2", "size 0 x 0.2 is zero or negative"),
    ("1 0.5 0.5 0.2 -0.3", "size 0.2 x -0.3 is zero or negative"),
    ("1 0.5 0.5 1.2 0.2", "size 1.2 x 0.2 larger than the image (above 1)"),
    ("1 0.5 0.5 1e-50 0.2", "size 1e-50 x 0.2 below 0.001 of the image (Darknet drops such boxes)"),
    ("1 0.5 0.5 0.2 0.0009", "size 0.2 x 0.0009 below 0.001 of the image (Darknet drops such boxes)"),
    ("1_0 0.5 0.5 0.2 0.2", "class id '1_0' is not an integer"),
    ("9" * 5000 + " 0.5 0.5 0.2 0.2", f"class id '{'9' * 32}'... (5,000 characters) outside 0..2 (classes = 3)"),
    ("x" * 5000 + " 0.5 0.5 0.2 0.2", f"class id '{'x' * 32}'... (5,000 characters) is not an integer"),
    ("1 " + "1" * 5000 + " 0.5 0.2 0.2", f"x_center '{'1' * 32}'... (5,000 characters) is not a finite number"),
]


@pytest.mark.parametrize("line, reason", CATALOGUE, ids=[c[1][:30] for c in CATALOGUE])
def test_each_bad_line_has_its_message(tmp_path, line, reason):
    f = tmp_path / "a.txt"
    f.write_text("0 0.5 0.5 0.1 0.1\n\n" + line + "\n")       # the bad line is line 3
    with pytest.raises(LabelError) as e:
        read_labels(f, 3)
    assert str(e.value) == f"{f}:3: {reason}"


def test_good_lines_parse_and_blank_lines_pass():
    rows, problems = parse_labels("2 0.5 0.25 0.1 1\n  \n0 0 1 0.5 0.5\n", 3)
    assert problems == []
    assert rows.dtype == np.float32 and rows.shape == (2, 5)
    np.testing.assert_array_equal(rows, np.array([[2, 0.5, 0.25, 0.1, 1], [0, 0, 1, 0.5, 0.5]], np.float32))
    empty, problems = parse_labels("", 3)
    assert empty.shape == (0, 5) and problems == []


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(path)
    return path


def _bad_set(root):
    """A .data set with every kind of problem; returns the .data path and the problem lines expected."""
    imgs = root / "images"
    labels = root / "labels"
    good = _image(imgs / "good.png")
    labels.mkdir(parents=True)
    (labels / "good.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    bad = _image(imgs / "bad.png")
    (labels / "bad.txt").write_text("\n".join(line for line, _ in CATALOGUE) + "\n")
    nolabel = _image(imgs / "nolabel.png")
    (labels / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "train.txt").write_text("images/good.png\nimages/bad.png\nimages/nolabel.png\nimages/gone.png\n")
    (root / "set.names").write_text("a\nb\nc\n")
    data = root / "set.data"
    data.write_text("classes = 3\ntrain = train.txt\nvalid = train.txt\nnames = set.names\n")
    expected = [f"{labels / 'bad.txt'}:{n}: {reason}" for n, (_, reason) in enumerate(CATALOGUE, 1)]
    expected.append(f"{imgs / 'gone.png'}: listed image does not exist")
    expected.append(f"{labels / 'orphan.txt'}: label file without an image")
    return data, expected, [good, bad, nolabel, imgs / "gone.png"]


def test_data_check_lists_every_problem(tmp_path, capsys):
    data, expected, _ = _bad_set(tmp_path)
    assert main(["data", "check", str(data)]) == 1
    out = capsys.readouterr().out.splitlines()
    for line in expected:
        assert line in out
    assert out[-1] == f"{len(expected)} problem(s) in {data}"
    # the image without a label file is a background image (Darknet's rule): counted, not a problem
    assert not any("nolabel" in line for line in out)
    assert f"train: 4 images (1 background: no label file), {len(expected) - 1} problem(s)" in out


def test_data_check_passes_a_clean_set_and_names_a_wrong_names_file(tmp_path, capsys):
    data, _, _ = _bad_set(tmp_path)
    (tmp_path / "train.txt").write_text("images/good.png\n")
    (tmp_path / "labels" / "orphan.txt").unlink()
    assert main(["data", "check", str(data)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{data}: no problems"
    (tmp_path / "set.names").write_text("a\nb\n")
    assert main(["data", "check", str(data)]) == 1
    assert f"{tmp_path / 'set.names'}: 2 names for classes = 3 in {data}" in capsys.readouterr().out


def test_data_check_user_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "none.data")]) == 1
    assert main(["data", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"deltaprop data: error: {tmp_path / 'none.data'}: no such data file",
                   f"deltaprop data: error: {tmp_path}: not a .data file; give --classes N for a list file or folder"]


def test_loading_refuses_naming_the_first_bad_lines(tmp_path):
    _, expected, images = _bad_set(tmp_path)
    with pytest.raises(LabelError) as e:
        DetectionDataset(images, 3, 16, 16)
    msg = str(e.value)
    assert msg.startswith(f"{len(expected) - 1} bad label line(s) or file(s): {expected[0]}; {expected[1]}; "
                          f"{expected[2]} (and ")
    assert "deltaprop data check" in msg and "skip_bad=True" in msg


def test_skip_bad_keeps_good_lines_and_counts(tmp_path):
    _, expected, images = _bad_set(tmp_path)
    (tmp_path / "labels" / "bad.txt").write_text("0 0.5 0.5 0.2 0.2\n" + CATALOGUE[0][0] + "\n"
                                                 "1 0.25 0.5 0.1 0.1\n" + CATALOGUE[8][0] + "\n")
    ds = DetectionDataset(images, 3, 16, 16, skip_bad=True)
    assert len(ds) == 3 and ds.skipped_lines == 2 and ds.skipped_images == 1 and ds.background_images == 1
    assert ds.labels(2).shape == (0, 5)                             # nolabel.png: a background image
    assert ds.describe() == ("3 images, 3 boxes, 1 background images (no label file), skipped 1 missing images "
                             "and 2 bad label lines or files")
    np.testing.assert_array_equal(ds.labels(1)[:, 0], [0, 1])
    assert [str(p) for p in ds.problems][:2] == [f"{tmp_path / 'labels' / 'bad.txt'}:2: {CATALOGUE[0][1]}",
                                                  f"{tmp_path / 'labels' / 'bad.txt'}:4: {CATALOGUE[8][1]}"]


def test_check_images_without_orphan_search(tmp_path):
    _, expected, images = _bad_set(tmp_path)
    found = [str(p) for p in check_images(images, 3, orphans=False)]
    assert found == expected[:-1]


def test_any_text_gives_rows_or_problems_never_an_exception():
    """Fuzz: whatever a label file holds, each non-blank line is either a good row or one named problem."""
    from hypothesis import given, settings, strategies as st
    token = st.one_of(st.integers(-5, 12).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                      st.text(max_size=4))
    line = st.lists(token, max_size=7).map(" ".join)

    @settings(max_examples=50, deadline=None, database=None)
    @given(st.lists(line, max_size=6))
    def check(lines):
        text = "\n".join(lines)
        rows, problems = parse_labels(text, 10, "f.txt")
        nonblank = [n for n, s in enumerate(text.splitlines(), 1) if s.split()]
        assert len(rows) + len(problems) == len(nonblank)
        assert [p.line for p in problems] == sorted(p.line for p in problems)
        assert all(str(p).startswith(f"f.txt:{p.line}: ") for p in problems)
        if len(rows):
            assert np.all((rows[:, 0] >= 0) & (rows[:, 0] < 10) & (rows[:, 3:] > 0) & (rows[:, 3:] <= 1))
            assert np.all((rows[:, 1:3] >= 0) & (rows[:, 1:3] <= 1))
    check()
