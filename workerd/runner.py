"""Starts the Worker in `workerd serve --experimental` and stops it again.

Used by `make dev-workerd` (workerd/dev.py), `make test-workerd` and the bench. The bundle
is built (or found cached) first, then a worker.capnp is written for this run, and workerd
is started with a control descriptor: it reports the port it bound once the Worker is
loaded, so port 0 works and "ready" means ready, not "the process exists".

Start-up snapshot: the first start for a given set of modules saves one
(`--python-save-snapshot`, Python state after importing entry.py), later starts load it
(`--python-load-snapshot`), which skips Python's initialisation and the imports. The
snapshot is keyed by every module's content, the bundle and the compatibility flags, so
an edit of src/ is never served from a stale snapshot.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from workerd import bundle
from workerd.config import ROOT, WorkerConfig, modules, wrangler_toml, write


class StartError(RuntimeError):
    """workerd did not come up; the message carries the end of its log."""


def snapshot_key(main: Path | None = None) -> str:
    h = hashlib.sha256()
    for name, kind, path in modules(main=main):
        h.update(f"{name}\0{kind}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    stamp = bundle.BUNDLE_DIR / "pyodide_dev.stamp"
    h.update(stamp.read_bytes() if stamp.exists() else b"")
    toml = wrangler_toml()
    h.update(json.dumps([toml["compatibility_date"], toml.get("compatibility_flags")]).encode())
    return h.hexdigest()[:20]


@dataclass
class Workerd:
    database_url: str
    settings: dict[str, str] = field(default_factory=dict)  # Worker vars, over [vars]
    secrets: dict[str, str] = field(default_factory=dict)  # e.g. SUPABASE_JWT_SECRET
    host: str = "127.0.0.1"
    port: int = 0
    snapshot: bool = True  # False: a cold start, every time
    main: Path | None = None  # another main module (see WorkerConfig.main)
    log_path: Path | None = None  # default: a file in this run's directory
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    started_in: float = 0.0  # seconds from spawn to the control descriptor's "listen"
    saved_in: float = 0.0  # seconds the start that saved the snapshot took (0: none saved)
    snapshot_mode: str = "none"  # "saved" (this start saved it, then loaded it), "loaded", "none"

    def start(self, timeout: float = 90.0) -> str:
        bundle_dir = bundle.build(say=lambda _line: None)
        _prune(bundle.CACHE, keep=20, pattern="run-*")
        self.run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=_ensure(bundle.CACHE)))
        config = write(
            WorkerConfig(self.database_url, self.host, self.port, self.settings, self.main),
            self.run_dir / "worker.capnp",
        )
        args = [
            str(bundle.workerd_binary()),
            "serve",
            "--experimental",
            f"--pyodide-bundle-disk-cache-dir={bundle_dir}",
        ]
        if self.snapshot:
            snap_dir = _ensure(bundle.CACHE / "snapshots" / snapshot_key(self.main))
            os.utime(snap_dir)  # the newest use keeps it from being pruned
            _prune(bundle.CACHE / "snapshots", keep=4)  # ~40 MB each; src/ edits add more
            args.append(f"--python-snapshot-dir={snap_dir}")
            self.snapshot_mode = "loaded"
            if not (snap_dir / "snapshot.bin").exists():
                # The start that saves a snapshot goes on serving from the isolate that
                # made it, where some JS globals raise when read (`crypto`: seen as a
                # JsException on the first ES256 check). Workers never serves from that
                # isolate (a deploy restores every isolate from its snapshot), so neither
                # do we: save, stop, and serve from a restored one.
                began = time.monotonic()
                self._spawn([*args, "--python-save-snapshot"], config, timeout)
                self.stop_process()
                self.saved_in = time.monotonic() - began
                self.snapshot_mode = "saved"
            args.append("--python-load-snapshot=snapshot.bin")
        began = time.monotonic()
        port = self._spawn(args, config, timeout)
        self.started_in = time.monotonic() - began
        self.url = f"http://{self.host}:{port}"
        return self.url

    def _spawn(self, args: list[str], config: Path, timeout: float) -> int:
        """Starts workerd with `args` and the config; the port once it listens."""
        read_end, write_end = os.pipe()
        args = [*args, f"--control-fd={write_end}", str(config)]
        self.log_path = self.log_path or self.run_dir / "workerd.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, **self.secrets}
        began = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(write_end,),
                preexec_fn=_die_with_parent,
            )
        finally:
            os.close(write_end)
            log.close()
        try:
            return self._await_listen(read_end, began + timeout)
        except BaseException:
            self.stop()
            raise

    def _await_listen(self, fd: int, deadline: float) -> int:
        """Reads workerd's control messages until the http socket is listening."""
        import selectors

        buffer = b""
        with os.fdopen(fd, "rb", buffering=0) as control, selectors.DefaultSelector() as sel:
            sel.register(control, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StartError(f"workerd did not listen in time:\n{self.log_tail()}")
                if not sel.select(min(remaining, 0.5)):
                    if self.proc is not None and self.proc.poll() is not None:
                        raise StartError(
                            f"workerd exited ({self.proc.returncode}):\n{self.log_tail()}"
                        )
                    continue
                chunk = control.read(4096)
                if not chunk:
                    raise StartError(f"workerd closed its control channel:\n{self.log_tail()}")
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    event = json.loads(line)
                    if event.get("event") == "listen" and event.get("socket") == "http":
                        return int(event["port"])

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:] if self.log_path else ""
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop_process(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        self.stop_process()
        run_dir = getattr(self, "run_dir", None)
        if run_dir is not None and self.log_path and run_dir not in self.log_path.parents:
            shutil.rmtree(run_dir, ignore_errors=True)
        elif run_dir is not None:
            # Keep the log (for a failing test's report); the config holds a password.
            (run_dir / "worker.capnp").unlink(missing_ok=True)

    def __enter__(self) -> Workerd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _prune(directory: Path, keep: int, pattern: str = "*") -> None:
    """Keeps the newest `keep` entries: run directories (each keeps its log, worth reading
    after a crash) and snapshots (one per version of the modules)."""
    entries = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)


# Resolved before any fork: the child between fork and exec must not import or allocate
# much (other threads may hold locks it would wait on forever).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills workerd when the process that started
    it dies (a killed test run or bench leaves no workerd behind to eat a shared CPU)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, _SIGKILL)


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


__all__ = ["ROOT", "StartError", "Workerd", "snapshot_key"]
