"""`ganimator-review`: what to show (runs, exports, a sweep's exports, BVH files) and serving it
to a browser.

`ReviewServer` serves the clips: Rerun's gRPC data server inside this process (alive as long as
its recording stream is), and the web viewer's files from a `rerun --serve-web` child, both bound
to one address, loopback by default.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import rerun as rr

from .errors import UserError
from .generate import load_run
from .metrics import Quality
from .recording import ReviewClip, bvh_clip, log_clips, review_blueprint, sample_clips
from .rundir import RunDir

DEFAULT_HOST, DEFAULT_GRPC_PORT, DEFAULT_WEB_PORT = "127.0.0.1", 9876, 9090


class ServeError(UserError, RuntimeError):
    """The review could not be served (a port in use, the web viewer did not start or stopped)."""


class ReviewServer:
    """Clips served to the Rerun web viewer until `close()` (or the end of a `with` block).

    The gRPC data server runs in this process, owned by `self.rec`: Rerun shuts it down when that
    recording stream is dropped, so the server holds it. The SDK's own web-viewer server cannot be
    told an address (it binds 0.0.0.0), so the viewer's files come from the `rerun` CLI shipped
    with the SDK, `rerun --serve-web --bind HOST`, given the data server's URL (it then hosts no
    data server of its own). Port 0 picks a free port.
    """

    def __init__(self, clips: list[ReviewClip], host: str = DEFAULT_HOST, grpc_port: int = DEFAULT_GRPC_PORT,
                 web_port: int = DEFAULT_WEB_PORT, start_timeout: float = 30.0):
        self.host = host
        self.web: subprocess.Popen | None = None
        self.rec: rr.RecordingStream | None = None
        grpc_port, web_port = _free_port(host, grpc_port, "gRPC"), _free_port(host, web_port, "web viewer")
        if grpc_port == web_port:
            raise ServeError(f"the gRPC and web viewer ports must differ (both {grpc_port})")
        self.grpc_port, self.web_port = grpc_port, web_port
        shown = _url_host(host)
        self.grpc_url = f"rerun+http://{shown}:{grpc_port}/proxy"
        self.viewer_url = f"http://{shown}:{web_port}/?url={urllib.parse.quote(self.grpc_url, safe='')}"
        self._web_log = tempfile.TemporaryFile()  # the child's messages, read if it fails (a pipe could fill up)
        try:
            self.rec = rr.RecordingStream("ganimator-review")
            # The page comes from the web port; its requests to the gRPC port must pass CORS.
            origins = [f"http://{h}:{web_port}" for h in dict.fromkeys([shown, *_other_names(host)])]
            self.rec.set_sinks(rr.GrpcServerSink(host, grpc_port, cors_allow_origin=origins))
            _wait_listening(host, grpc_port, start_timeout, lambda: None, "the gRPC data server")
            self.rec.send_blueprint(review_blueprint(log_clips(self.rec, clips)))
            self.rec.flush()
            # Its own session: a Ctrl-C in the terminal reaches this process, which stops the child.
            self.web = subprocess.Popen(
                [_rerun_cli(), "--serve-web", "--bind", host, "--web-viewer-port", str(web_port), self.grpc_url],
                stdin=subprocess.DEVNULL, stdout=self._web_log, stderr=subprocess.STDOUT,
                start_new_session=True)
            _wait_listening(host, web_port, start_timeout, self._web_exited, "the web viewer")
        except BaseException:
            self.close()
            raise

    def _web_exited(self) -> None:
        if self.web is not None and self.web.poll() is not None:
            self._web_log.seek(0)
            err = self._web_log.read().decode(errors="replace").strip().splitlines()
            err = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in err]  # no terminal colours
            last = next((line for line in reversed(err) if "ERROR" in line), err[-1] if err else "")
            raise ServeError(f"the Rerun web viewer exited with code {self.web.returncode}"
                             + (f": {last.strip()}" if last else ""))

    def wait(self) -> None:
        """Block until the web viewer ends (an error: ServeError); Ctrl-C or a signal handler ends it sooner."""
        assert self.web is not None
        self.web.wait()
        self._web_exited()

    def close(self) -> None:
        """Stop the web viewer and the data server; safe to call twice."""
        web, self.web = self.web, None
        if web is not None:
            if web.poll() is None:
                web.terminate()
                try:
                    web.wait(5)
                except subprocess.TimeoutExpired:
                    web.kill()
                    web.wait()
        rec, self.rec = self.rec, None
        if rec is not None:
            rec.disconnect()
        self._web_log.close()

    def __enter__(self) -> ReviewServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rerun_cli() -> str:
    """The `rerun` executable shipped with the SDK (as `python -m rerun_cli` finds it), else on PATH."""
    if os.environ.get("RERUN_CLI_PATH"):
        return os.environ["RERUN_CLI_PATH"]
    try:
        import rerun_cli

        base = Path(rerun_cli.__file__).parent
        for candidate in (base / "Rerun.app" / "Contents" / "MacOS" / "Rerun", base / "rerun", base / "rerun.exe"):
            if candidate.is_file():
                return str(candidate)
    except ImportError:
        pass
    found = shutil.which("rerun", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        raise ServeError("the `rerun` command (from rerun-sdk) was not found: it serves the web viewer")
    return found


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _free_port(host: str, port: int, what: str) -> int:
    """`port` if it can be bound on `host`, a free one if it is 0; else ServeError."""
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as s:
            # As the servers bind: without it, a port our last --serve just closed (its connections in
            # TIME_WAIT for up to a minute) reads as taken although the servers could take it.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            return s.getsockname()[1]
    except OSError as e:
        hint = " (choose another with --grpc-port / --web-port, or 0 for a free one)" if e.errno == 98 else ""
        raise ServeError(f"cannot serve the {what} on {host} port {port}: {e.strerror}{hint}") from None


def _url_host(host: str) -> str:
    """How a URL names `host`: bound to every interface, this machine's name; IPv6 in brackets."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
        host = socket.gethostname() if host.startswith("localhost") else host
    return f"[{host}]" if ":" in host else host


def _other_names(host: str) -> list[str]:
    """Other names a browser may use for a wildcard `host` (the page's origin must be allowed)."""
    return [socket.gethostname(), "127.0.0.1", "localhost"] if host in ("", "0.0.0.0", "::") else []


def _wait_listening(host: str, port: int, timeout: float, check, what: str) -> None:
    target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    deadline = time.monotonic() + timeout
    while True:
        check()
        try:
            socket.create_connection((target, port), timeout=1).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServeError(f"{what} did not start listening on {host} port {port} within {timeout:.0f} s")
        time.sleep(0.1)


class ReviewError(UserError, FileNotFoundError):
    """A path given to review that is not a run, an export, a sweep's exports or BVH; it names the path.
    A FileNotFoundError too, as review reported such paths before."""


def review_dirs(paths: list[Path], samples: int, length: int, seed: int) -> list[ReviewClip]:
    """Clips for every path, in order: a run or export folder (its generated motions; the real clip
    comes before the first run's), a sweep's export folder (every rank in it), a BVH file (one clip
    named after the file) or a folder of BVH files that is not a run, e.g. a run's generated/ (every
    *.bvh in it, sorted, as `<folder>/<stem>`). Every path is checked, and every BVH read, before
    any run generates: a path that is none of these is a ReviewError, a BVH that does not parse a
    BVHError, each naming the file. Clips that would share a name get -2, -3, ... after it."""
    plan = [entry for path in map(Path, paths) for entry in _review_entries(path)]
    bvh = {k: bvh_clip(path, name) for k, (kind, path, name) in enumerate(plan) if kind == "bvh"}
    clips, first_run = [], True
    for k, (kind, run_dir, _) in enumerate(plan):
        if kind == "bvh":
            clips.append(bvh[k])
            continue
        run = load_run(run_dir)
        notes = _notes(run_dir, _metrics(run_dir))
        name = f"{run_dir.parent.name}-{run_dir.name}" if run_dir.name.isdigit() else run_dir.name
        features = run.generate(length or 2 * run.dataset.num_frames, samples, seed)
        clips += sample_clips(run.dataset, name, features, notes, with_real=first_run)
        first_run = False
    return _unique_names(clips)


def _review_entries(path: Path) -> list[tuple[str, Path, str]]:
    """What one review path holds: ("run", folder, "") for each run or export, ("bvh", file, clip
    name) for each BVH file."""
    if path.is_file():
        if path.suffix.lower() == ".bvh":
            return [("bvh", path, rr.escape_entity_path_part(path.stem))]
        raise ReviewError(f"{path} is not a .bvh file, a run or export folder, or a sweep's export folder")
    if not path.is_dir():
        raise ReviewError(f"{path}: no such file or folder")
    folder = RunDir(path)
    if folder.checkpoint.is_file():
        return [("run", path, "")]
    if folder.config.is_file():
        raise ReviewError(f"{path} is a run folder without {RunDir.CHECKPOINT} yet: nothing trained to review")
    ranks = sorted((p for p in path.iterdir() if RunDir(p).checkpoint.is_file()), key=lambda p: p.name)
    files = sorted((p for p in path.iterdir() if p.suffix.lower() == ".bvh" and p.is_file()), key=lambda p: p.name)
    if not ranks and not files:
        raise ReviewError(f"no trained run or export, and no .bvh file, in {path}")
    part = rr.escape_entity_path_part(path.resolve().name or "bvh")
    return [("run", p, "") for p in ranks] + [("bvh", p, f"{part}/{rr.escape_entity_path_part(p.stem)}")
                                              for p in files]


def _unique_names(clips: list[ReviewClip]) -> list[ReviewClip]:
    """Two clips of one name would draw into one entity: later ones get -2, -3, ... after it."""
    taken: set[str] = set()
    for clip in clips:
        name, n = clip.name, 1
        while name in taken:
            n += 1
            name = f"{clip.name}-{n}"
        clip.name = name
        taken.add(name)
    return clips


def _metrics(run_dir: Path) -> dict:
    """An export's metrics.json, else the newest ganimator-evaluate result, else nothing."""
    run = RunDir(run_dir)
    if run.metrics.is_file():
        return json.loads(run.metrics.read_text())
    lines = run.evaluations.read_text().splitlines() if run.evaluations.is_file() else []
    return json.loads(lines[-1]) if lines else {}


def _notes(run_dir: Path, metrics: dict) -> str:
    """The run's parameters and its scores, each block saying what measured it: an export's numbers
    come from the retrain's final evaluation, its sweep's from the trial's validation during the
    search (fewer samples, a shorter training), and the two differ for the same configuration."""
    lines = [f"**{run_dir}**", ""]
    lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}"
              for k, v in metrics.get("params", {}).items()]
    if any(isinstance(metrics.get(k), float) for k in Quality.NAMES):
        how = f", {metrics['samples']} samples of {metrics['length']} frames" if "samples" in metrics else ""
        what = (f"final evaluation (the retrain, seed {metrics.get('seed', '?')}{how})" if "sweep_metrics" in metrics
                else f"evaluation (ganimator-evaluate{how})")
        lines += ["", f"**{what}**", "", *_scores(metrics)]
    if metrics.get("sweep_metrics"):
        lines += ["", f"**the sweep's validation** (trial {metrics.get('trial_id', '?')}, during the search: the "
                  "score the study shows)", "", *_scores(metrics["sweep_metrics"])]
    return "\n".join(lines)


def _scores(metrics: dict) -> list[str]:
    return [f"- {k}: {metrics[k]:.4g}" for k in ("score", *Quality.NAMES) if isinstance(metrics.get(k), float)]
