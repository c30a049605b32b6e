"""Opening a file a user names costs nothing but the file: what is not a regular file is refused
from its stat, before it is opened, and a text file is read only up to its limit."""

import os

import pytest

from liquid_control.files import FileRefused, read_text
from liquid_control.runtime.parameters import read_params
from liquid_control.sim.track import Track, TrackError

pytestmark = pytest.mark.sim


def test_a_fifo_a_device_a_directory_and_a_dangling_link_are_refused_before_opening(tmp_path):
    fifo = tmp_path / "track.yaml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    link = tmp_path / "gone.yaml"
    link.symlink_to(tmp_path / "nowhere.yaml")
    for path, why in (
        (fifo, "FIFO"),
        ("/dev/zero", "character device"),
        (tmp_path, "directory"),
        (link, "does not exist"),
    ):
        with pytest.raises(FileRefused, match=why):
            read_text(path)
    with pytest.raises(TrackError, match=f"track file {fifo}: is a FIFO"):
        Track.load(fifo)
    with pytest.raises(ValueError, match=f"parameters file {fifo}: is a FIFO"):
        read_params(fifo)


def test_a_text_file_is_read_up_to_its_limit_and_no_further(tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text("a: 1\n")
    assert read_text(small) == "a: 1\n"
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 1001)
    with pytest.raises(FileRefused, match="1001 bytes, more than the 1000"):
        read_text(big, max_bytes=1000)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(FileRefused, match="not text"):
        read_text(binary)
