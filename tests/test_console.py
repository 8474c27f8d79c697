"""The console says only what is new: MONAI's reader-fallback lines filtered at their source (the file still read,
an unreadable one still named), a nested workflow's INFO lines held back, stage times as a person reads them, and
the prompt back as soon as a command ends."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from monai.data import NibabelReader
from monai.transforms import LoadImage

from warm_python import run_python

from bundle.console import duration, only_warnings
from bundle.data import RadiographPNGReader, RadiographReader, write_radiograph

IMAGE_READERS = [NibabelReader(), RadiographReader(), RadiographPNGReader()]  # the order of the configs' LoadImaged


def test_a_dicom_read_after_two_readers_fail_logs_no_fallback_line(tmp_path, caplog):
    image = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48)
    write_radiograph(tmp_path / "a.dcm", image, "a")
    with caplog.at_level(logging.DEBUG - 1):
        loaded = LoadImage(reader=IMAGE_READERS, image_only=True)(str(tmp_path / "a.dcm"))
    assert loaded.shape == (64, 48)
    assert not [r for r in caplog.records if "unable to load" in r.getMessage() and r.levelno >= logging.INFO]


def test_a_file_no_reader_can_read_is_still_named(tmp_path):
    (tmp_path / "b.dcm").write_bytes(b"not a radiograph")
    with pytest.raises(RuntimeError, match="b.dcm"):
        LoadImage(reader=IMAGE_READERS, image_only=True)(str(tmp_path / "b.dcm"))


def test_only_warnings_holds_back_info_lines_and_lets_warnings_through(caplog):
    log = logging.getLogger("bundle.test_console")
    with caplog.at_level(logging.INFO):
        with only_warnings():
            log.info("held back")
            log.warning("shown")
        log.info("shown again")
    assert [r.getMessage() for r in caplog.records] == ["shown", "shown again"]


@pytest.mark.parametrize("seconds, said", [(0.04, "0.0 s"), (42.06, "42.1 s"), (245.4, "4 min 5 s"),
                                           (3780, "1 h 3 min")])
def test_a_stage_time_reads_as_a_person_says_it(seconds, said):
    assert duration(seconds) == said


def test_importing_bundle_freezes_what_the_imports_made_and_nothing_made_later():
    """A warm child unfreezes its parent's objects first, so the count is bundle's own."""
    check = ("import gc, weakref\ngc.unfreeze()\nimport bundle\nfrozen = gc.get_freeze_count()\n"
             "later = type('Later', (), {})()\nlater.itself = later\nalive = weakref.ref(later)\ndel later\n"
             "gc.collect()\nprint(frozen > 10**5, gc.get_freeze_count() == frozen, alive() is None)")
    result = run_python([sys.executable, "-c", check], timeout=300)
    assert result.stdout.split() == ["True", "True", "True"], result.stderr[-3000:]
