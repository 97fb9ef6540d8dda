"""`ganimator-review --serve`, connected to for real: both servers listen on the address asked for
(loopback by default) and nowhere else, the web viewer's page and code load over HTTP, Rerun's own
client (`rerun download`) reads every logged clip back from the gRPC data server, and SIGINT or
SIGTERM ends it with one line, exit 0, no traceback, no process left. Stdin is closed throughout
(it used to wait on `input()`). On 2 busy cores: ~45 s to train the tiny run, ~20 s a serve (most
of it importing torch and generating).
"""
import io
import re
import signal
import socket
import subprocess
import time
import urllib.request
import warnings

import numpy as np
import psutil
import pytest
from PIL import Image
from rerun.chunk import RrdReader

from ganimator.dataset import MotionDataset
from ganimator.recording import BONE, features_clip
from ganimator.review_server import ReviewServer, ServeError, _rerun_cli

from conftest import Page

LENGTH = 30  # generated frames: small, and not the clip's own length


@pytest.fixture(scope="module")
def run(walk_npz, walk_runs):
    """One tiny trained run on the Mixamo walk, and the walk."""
    return walk_runs[0], MotionDataset.load(walk_npz)


def ignore_sigint() -> None:
    """How a non-interactive shell starts `cmd &` (and some supervisors start services): SIGINT
    ignored, inherited through exec. The command must still stop on SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Served:
    """`ganimator-review --serve` in a subprocess started with SIGINT ignored; every process of it is
    killed by PID at the end."""

    def __init__(self, run_dir, tmp_path, *args):
        self.out, self.err = tmp_path / "serve.out", tmp_path / "serve.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(["ganimator-review", str(run_dir), "--serve", "--length", str(LENGTH), *args],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err, preexec_fn=ignore_sigint)
        self.procs = {self.proc.pid: psutil.Process(self.proc.pid)}

    def wait_served(self, timeout=240.0) -> tuple[int, int]:
        """(web port, gRPC port) once it prints that it serves."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.note_children()
            found = re.search(r"open http://[^:/]+:(\d+)/\?url=\S+\n\s+\(data: rerun\+http://[^:/]+:(\d+)/proxy\)",
                              self.out.read_text())
            if found:
                self.note_children()
                return int(found[1]), int(found[2])
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.err.read_text()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"not serving after {timeout:.0f} s:\n{self.err.read_text()[-3000:]}")

    @property
    def pids(self) -> set[int]:
        return set(self.procs)

    def note_children(self) -> None:
        try:
            self.procs.update({c.pid: c for c in self.procs[self.proc.pid].children(recursive=True)})
        except psutil.Error:
            pass

    def listening(self) -> set[tuple[str, int]]:
        """(address, port) of every LISTEN socket of the command and its children (the web viewer)."""
        found = set()
        for p in self.procs.values():
            try:
                found |= {(c.laddr.ip, c.laddr.port) for c in p.net_connections("inet")
                          if c.status == psutil.CONN_LISTEN}
            except psutil.NoSuchProcess:
                pass
        return found

    def kill(self):
        """SIGKILL each process recorded (psutil refuses a PID since reused by another process)."""
        self.note_children()
        for p in self.procs.values():
            try:
                p.kill()
            except psutil.Error:
                pass
        self.proc.wait(10)


@pytest.fixture
def serve(run, tmp_path):
    started = []

    def start(*args):
        started.append(Served(run[0], tmp_path, *args))
        return started[-1]

    yield start
    for s in started:  # whatever happened: no server left behind
        s.kill()


def rrd_entities(path) -> dict[str, int]:
    """entity path -> rows on the frame timeline, of a (possibly still growing) .rrd stream."""
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a streamed file has no footer
        for chunk in RrdReader(str(path)).stream().to_chunks():
            n = chunk.num_rows if "frame" in chunk.timeline_names else 0
            rows[chunk.entity_path] = rows.get(chunk.entity_path, 0) + n
    return rows


def download(grpc_port, out_dir, expect: dict[str, int], timeout=60.0) -> dict[str, int]:
    """Read the served recording with Rerun's own client until `expect` (entity -> frames) is all there."""
    out_dir.mkdir()
    client = subprocess.Popen([_rerun_cli(), "download", f"rerun+http://127.0.0.1:{grpc_port}/proxy", "-o",
                               str(out_dir)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    rows = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = list(out_dir.glob("*.rrd"))
            if files:
                try:
                    rows = rrd_entities(files[0])
                except Exception:  # caught mid-write
                    rows = rows
                if all(rows.get(k) == v for k, v in expect.items()):
                    break
            time.sleep(0.5)
    finally:
        client.kill()
        client.wait()
    return rows


def fetch(url, limit=None) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read(limit) if limit else r.read()


def refused(host, port) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return False
    except OSError:
        return True


def test_serve_on_loopback_until_sigint(run, serve, tmp_path):
    run_dir, data = run
    server = serve("--grpc-port", "0", "--web-port", "0")
    web, grpc = server.wait_served()
    assert web != grpc

    # Both servers, and nothing else, on loopback only.
    assert server.listening() == {("127.0.0.1", web), ("127.0.0.1", grpc)}, server.listening()

    # The web viewer: its page, its code and its wasm binary.
    status, page = fetch(f"http://127.0.0.1:{web}/")
    assert status == 200 and b"re_viewer.js" in page
    assert fetch(f"http://127.0.0.1:{web}/re_viewer.js")[0] == 200
    status, head = fetch(f"http://127.0.0.1:{web}/re_viewer_bg.wasm", limit=4)
    assert status == 200 and head == b"\0asm"

    # The data, read back over gRPC by Rerun's own client: the real clip and the generated sample.
    expect = {"/skeletons/real": data.clips[0].features.shape[-1], f"/skeletons/{run_dir.name}/sample-0": LENGTH}
    time.sleep(2)  # the old code dropped its data server at once: it must still be there
    rows = download(grpc, tmp_path / "download", expect)
    assert {k: rows.get(k) for k in expect} == expect, rows
    assert f"/skeletons/{run_dir.name}/sample-0/info" in rows and "/" in rows

    pids = set(server.pids)
    assert len(pids) == 2, pids  # the command and its web viewer
    assert _ignored(server.proc.pid, signal.SIGINT) is False  # it came ignored; the command handles it
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(20) == 0
    err = server.err.read_text()
    assert err.strip() == "stopped serving", err
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in server.procs.values()), pids
    assert refused("127.0.0.1", web) and refused("127.0.0.1", grpc)


def _ignored(pid: int, sig: int) -> bool:
    """Whether process `pid` ignores `sig` (its SigIgn mask in /proc)."""
    mask = next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("SigIgn:"))
    return bool(int(mask, 16) >> (sig - 1) & 1)


def test_serve_on_another_address_until_sigterm(serve):
    """--host: 127.0.0.2 (another address, still private) and nothing on 127.0.0.1 or 0.0.0.0."""
    server = serve("--host", "127.0.0.2", "--grpc-port", "0", "--web-port", "0")
    web, grpc = server.wait_served()
    assert server.listening() == {("127.0.0.2", web), ("127.0.0.2", grpc)}, server.listening()
    assert "http://127.0.0.2:" in server.out.read_text()
    assert fetch(f"http://127.0.0.2:{web}/")[0] == 200
    assert refused("127.0.0.1", web) and refused("127.0.0.1", grpc)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    assert server.err.read_text().strip() == "stopped serving"


def test_a_port_in_use_is_a_clear_error(run):
    data = run[1]
    clips = [features_clip(data, "real", data.clips[0].features, begin_xz=data.clips[0].begin_xz)]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for ports in ({"grpc_port": port, "web_port": 0}, {"grpc_port": 0, "web_port": port}):
            with pytest.raises(ServeError, match=f"port {port}: Address already in use"):
                ReviewServer(clips, **ports)


def test_a_port_our_last_serve_just_closed_is_free_again(run):
    """A served connection closed by the server leaves its port in TIME_WAIT for up to a minute; the
    servers bind it anyway (SO_REUSEADDR), so the port check must too, or `--serve` run again right
    after Ctrl-C fails with "Address already in use"."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Rerun's servers set it
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server closes first: its end of the connection waits in TIME_WAIT
        client.close()
    time.sleep(0.2)
    assert any(c.laddr.port == port and c.status == psutil.CONN_TIME_WAIT for c in psutil.net_connections("tcp"))
    data = run[1]
    real = features_clip(data, "real", data.clips[0].features, begin_xz=data.clips[0].begin_xz)
    with ReviewServer([real], grpc_port=port, web_port=0) as server:
        assert server.grpc_port == port
        assert not refused("127.0.0.1", port)


def coloured(png: bytes, colour, box) -> int:
    """Pixels within 40 of `colour` (RGB) in box (left, top, right, bottom) of a screenshot."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB").crop(box), dtype=int)
    return int((np.abs(image - np.array(colour[:3])).max(-1) < 40).sum())


def test_a_browser_shows_the_served_review(browser, run, serve, tmp_path):
    """Headless Chromium (WebGL on SwiftShader) opens the printed address: the viewer connects to the
    data server and draws both skeletons, the real clip's and the run's sample, each in its own view
    (the grid's two columns, left of the notes), and nothing of ours fails."""
    server = serve("--grpc-port", "0", "--web-port", "0")
    web, grpc = server.wait_served()
    url = re.search(r"open (http://\S+)", server.out.read_text())[1]
    tab = Page(browser)
    try:
        tab.page.goto(url)
        assert "Rerun" in tab.page.title()
        width, height = 1400, 800
        views = [(0, 40, int(0.4 * width), height - 100), (int(0.4 * width), 40, int(0.8 * width), height - 100)]
        deadline, seen = time.monotonic() + 90, 0
        while time.monotonic() < deadline and seen < 2:  # the viewer's wasm takes 5-25 s to load here
            time.sleep(1 if not seen else 5)  # once drawn, again a while later: the layout has settled
            shot = tab.page.screenshot(path=tmp_path / f"review-{seen}.png")
            bones = [coloured(shot, BONE, box) for box in views]
            seen = seen + 1 if min(bones) > 30 else 0
        assert seen == 2, f"skeleton pixels in the real clip's and the sample's views: {bones}"
        connected = [c for c in psutil.Process(server.proc.pid).net_connections("inet")
                     if c.laddr.port == grpc and c.status == psutil.CONN_ESTABLISHED]
        assert connected, "the viewer holds no connection to the data server"
        assert not tab.our_failures(), tab.our_failures()
    finally:
        tab.close()
