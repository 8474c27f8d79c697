"""The tests' ``python -m monai.bundle ...`` and ``python scripts/...`` commands, each run in a child forked from one
warm interpreter that has already imported ``monai.bundle``, as ``python -m monai.bundle`` does before it runs
anything.

A cold start spends 8-9 s of a core importing torch, MONAI, MLflow and Ignite (AMD EPYC, 2 cores), and the default
suite starts some twenty such commands. The child runs the command as ``python`` would: from its own folder, with
the caller's environment, ``sys.argv`` and ``sys.path[0]``, in a new ``__main__``, with its own random state,
stdout, stderr and exit status, a traceback for an uncaught error and the interpreter's exit handlers. Only what
the preloaded modules read from the environment at import time is the warm interpreter's, so the tests that set
thread counts or malloc settings, the quick study (tests/conftest.py) and the torchrun tests start cold, and
``WARM_PYTHON=0`` starts every command cold; tests/test_warm_python.py compares a warm run with a cold one."""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import random
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import types
from pathlib import Path

PRELOADED = "monai.bundle"


def _read_line(fd: int) -> bytes:
    """One line from a pipe, unbuffered (a buffered reader would hand a forked child what it read ahead)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            return line
        line += chunk
    return line


def _fresh_random_state() -> None:
    """Draws from the OS, as a cold interpreter's imports make them: a child would otherwise repeat the server's."""
    import numpy as np
    import torch
    from monai.transforms import Randomizable

    random.seed()
    np.random.seed()
    torch.seed()
    Randomizable.R = np.random.RandomState()


def _become(request: dict, channel: tuple[int, int]) -> None:
    """In the forked child: the command's folder, environment, standard streams, argv and ``__main__``, then the
    command itself, as ``python`` runs it; ends by raising ``SystemExit`` so that the interpreter exits as a cold one
    would."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    streams = [os.open(os.devnull, os.O_RDONLY), os.open(request["stdout"], os.O_WRONLY | os.O_TRUNC),
               os.open(request["stderr"], os.O_WRONLY | os.O_TRUNC)]
    for target, fd in enumerate(streams):
        os.dup2(fd, target)
        os.close(fd)
    for fd in channel:
        os.close(fd)
    _fresh_random_state()
    sys.modules["__main__"] = main = types.ModuleType("__main__")
    main.__annotations__ = {}
    args = request["args"]
    if args[0] == "-m":  # `python -m module`: sys.path[0] is the working folder, argv[0] becomes the module's file
        sys.path[0] = os.getcwd()
        sys.argv = ["-m", *args[2:]]
        runpy._run_module_as_main(args[1])  # what `python -m` itself calls
    else:  # `python -c code` (sys.path[0] empty) or `python script.py` (the script's folder, argv[0] as typed)
        if args[0] == "-c":
            sys.path[0], sys.argv, source, name = "", ["-c", *args[2:]], args[1], "<string>"
        else:
            name = os.path.abspath(args[0])
            sys.path[0], sys.argv, source = os.path.dirname(name), list(args), Path(name).read_bytes()
            main.__file__, main.__cached__ = name, None
        exec(compile(source, name, "exec"), main.__dict__)
    raise SystemExit(0)


def serve(requests: int, replies: int) -> None:
    """The warm interpreter's loop: for each request, fork, reply the child's pid, then its exit code. Ctrl-C
    reaches the client, which stops the child and this server."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    del sys.path[0]  # this module's folder, which a cold command does not have
    importlib.import_module(PRELOADED)
    gc.freeze()  # the children's collections skip what the imports made (Python's advice before forking)
    while request := _read_line(requests):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.setpgrp()  # its own group, so that stopping it stops whatever it started
            _become(json.loads(request), (requests, replies))
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a child already gone or in its group
            os.setpgid(pid, pid)  # set on both sides of the fork: the group exists before the client hears the pid
        os.write(replies, f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        os.write(replies, f"{os.waitstatus_to_exitcode(status)}\n".encode())


class WarmPython:
    """The client end: starts the warm interpreter, sends it one command at a time. A command that fails to finish
    (its timeout, Ctrl-C) is stopped with everything it started, and so is the server, which a next command starts
    again."""

    def __init__(self) -> None:
        to_server, self._requests = os.pipe()
        self._replies, from_server = os.pipe()
        start = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import warm_python; "
                 f"warm_python.serve({to_server}, {from_server})")
        self._log = tempfile.TemporaryFile()
        self._server = subprocess.Popen([sys.executable, "-c", start], pass_fds=(to_server, from_server),
                                        stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        os.close(to_server)
        os.close(from_server)
        self.running = True

    def _reply(self, timeout: float | None) -> int:
        ready, _, _ = select.select([self._replies], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = _read_line(self._replies)
        if not line:
            self._log.seek(0)
            raise RuntimeError(f"the warm interpreter stopped: {self._log.read().decode()[-3000:]}")
        return int(line)

    def run(self, command: list[str], cwd: str | Path, timeout: float | None) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            out.touch()
            err.touch()
            request = {"args": command[1:], "cwd": str(cwd), "env": dict(os.environ), "stdout": str(out),
                       "stderr": str(err)}
            os.write(self._requests, (json.dumps(request) + "\n").encode())
            pid = None
            try:
                pid = self._reply(600)  # the first command waits for the imports
                code = self._reply(timeout)
            except BaseException as stopped:
                self.close(pid)
                if isinstance(stopped, TimeoutError):
                    raise subprocess.TimeoutExpired(command, timeout, out.read_text(), err.read_text()) from None
                raise
            return subprocess.CompletedProcess(command, code, out.read_text(), err.read_text())

    def close(self, pid: int | None = None) -> None:
        """Stop the server, first killing the group of the command ``pid`` where one is running."""
        if not self.running:
            return
        self.running = False
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self._server.kill()
        os.close(self._requests)
        self._server.wait(30)
        os.close(self._replies)


_warm: WarmPython | None = None


def run_python(command: list[str], cwd: str | Path | None = None,
               timeout: float | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)`` for a
    ``[sys.executable, ...]`` command, warm unless ``WARM_PYTHON=0``."""
    global _warm
    assert command[0] == sys.executable, command
    if os.environ.get("WARM_PYTHON") == "0":
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if _warm is None or not _warm.running:
        _warm = WarmPython()
        atexit.register(_warm.close)
    return _warm.run(command, cwd or os.getcwd(), timeout)
