"""What the console shows: one line per stage with its time, a study-level progress bar on a terminal, and the
libraries' repeated noise filtered where it arises, so that a run's output says only what is new."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
import warnings
from collections.abc import Iterator

from bundle.progress import quiet

logger = logging.getLogger("bundle")


class _DropMessages(logging.Filter):
    """Drops the records whose message contains one of ``fragments``."""

    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in record.getMessage() for fragment in self.fragments)


class _Once(logging.Filter):
    """Lets each distinct message through once per process."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def freeze_imported_objects() -> None:
    """Move the objects the imports made so far (torch's, MONAI's, MLflow's: 5,000 modules) into the collector's
    permanent generation: Python's shutdown collections walked them all, 2 s of a command that stops at once (AMD
    EPYC), and so does every full collection during a run, to free nothing. Objects made later are collected and
    finalized as before."""
    gc.freeze()


def quiet_library_noise() -> None:
    """Filter, at their source, the lines that repeat without news: MONAI's ``LoadImage`` logs one INFO line for
    every reader that fails before the one that reads the file (each DICOM is offered to the PNG reader first, each
    PNG mask to NiBabel; a file no reader can read still raises, naming every reader's error); MONAI warns that the
    GPU decoder nvImageCodec is missing each time a DICOM reader is made (once is news); captum warns that each input
    did not require gradients, which our methods hand it on purpose."""
    logging.getLogger("LoadImage").addFilter(_DropMessages(": unable to load "))
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").addFilter(_Once())
    # the same news as the logger line above, as a warning; "once" would not hold: a module's once-registry is
    # cleared whenever any library changes the warning filters
    warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register")
    warnings.filterwarnings("ignore", message=r"Input Tensor \d+ did not already require gradients")


@contextlib.contextmanager
def only_warnings() -> Iterator[None]:
    """While inside, every logger passes warnings and errors only: a nested workflow (a training the study runs)
    is one line of the study's instead of its engines' every event. ``logging.disable`` rather than handler
    filters, since MONAI's loggers carry handlers of their own and a nested workflow re-applies logging.conf."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


def duration(seconds: float) -> str:
    """``42.1 s``, ``4 min 5 s``, ``1 h 3 min``: a stage's time as a person reads it."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    return f"{minutes // 60} h {minutes % 60} min"


class StudyProgress:
    """The study's stages (trainings, criteria, outputs) as one line each with its time, and on a terminal one
    progress bar over them naming the stage under way with an estimate of the time left (tqdm's, from the stages'
    mean time so far)."""

    def __init__(self, stages: int = 0) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=stages, desc="study", unit="stage", disable=quiet() or not stages, leave=False)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run one stage: the bar names it while it runs; one log line says ``<name>: <time>`` after."""
        self.bar.set_description(name)
        start = time.perf_counter()
        yield
        logger.info("%s: %s", name, duration(time.perf_counter() - start))
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
