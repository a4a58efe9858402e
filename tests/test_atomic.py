"""genoseg.io.atomic: atomic outputs, cleanup on signals, refusing to overwrite inputs."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from genoseg.errors import GenosegError
from genoseg.io.atomic import atomic_output, atomic_path, check_not_input, temporary_name

REPO = Path(__file__).resolve().parents[1]


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".tmp-" in p.name)


# ----------------------------------------------------------------------------- in process


def test_text_and_binary_outputs_are_renamed_into_place(tmp_path):
    out = tmp_path / "a.txt"
    with atomic_output(out) as fh:
        fh.write("hello\n")
        assert temporary_name(out).exists() and not out.exists()
    assert out.read_text() == "hello\n"
    with atomic_output(out, mode="wb") as fh:
        fh.write(b"\x00\x01")
    assert out.read_bytes() == b"\x00\x01"
    with atomic_path(tmp_path / "b.bin") as tmp:
        assert tmp == temporary_name(tmp_path / "b.bin") and not tmp.exists()
        tmp.write_bytes(b"xyz")
    assert (tmp_path / "b.bin").read_bytes() == b"xyz"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("use_path", [False, True])
def test_exception_leaves_the_old_output_and_no_temporary(tmp_path, use_path):
    out = tmp_path / "a.txt"
    out.write_text("old\n")
    with pytest.raises(RuntimeError, match="boom"):
        if use_path:
            with atomic_path(out) as tmp:
                tmp.write_text("partial")
                raise RuntimeError("boom")
        else:
            with atomic_output(out) as fh:
                fh.write("partial")
                raise RuntimeError("boom")
    assert out.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_mode_bits_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_output(tmp_path / "a.txt") as fh:
            fh.write("x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"x")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


def test_dash_is_stdout(capsys):
    with atomic_output("-") as fh:
        fh.write("to stdout\n")
    assert capsys.readouterr().out == "to stdout\n"
    with pytest.raises(GenosegError, match="stdout"):
        with atomic_path("-"):
            pass


def test_symlink_is_followed_and_stays_a_link(tmp_path):
    target = tmp_path / "real.gff3"
    target.write_text("old\n")
    link = tmp_path / "link.gff3"
    link.symlink_to(target.name)
    with atomic_output(link) as fh:
        fh.write("new\n")
    assert link.is_symlink() and target.read_text() == "new\n"
    with atomic_path(link) as tmp:
        tmp.write_bytes(b"bin")
    assert link.is_symlink() and target.read_bytes() == b"bin"
    assert _leftovers(tmp_path) == []


def test_device_or_pipe_is_written_in_place(tmp_path):
    """-o /dev/stdout (a symlink to /proc/self/fd/1, a pipe), /dev/null or a named pipe:
    written to, never replaced by a regular file (as root that would replace /dev nodes)."""
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "stdout"  # like /dev/stdout -> /proc/self/fd/1
    link.symlink_to(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    with atomic_output(link, inputs={"--fasta": tmp_path / "g.fa"}) as fh:
        fh.write("through the pipe\n")
    reader.join(10)
    assert got == [b"through the pipe\n"]
    assert link.is_symlink() and stat.S_ISFIFO(fifo.stat().st_mode)
    assert _leftovers(tmp_path) == []
    with pytest.raises(GenosegError, match="not a regular file"):  # HDF5, PNG, checkpoints
        with atomic_path(link):
            pass


def test_full_disk_is_a_one_line_error(tmp_path, monkeypatch):
    """ENOSPC / EDQUOT while writing: GenosegError naming the output, nothing left behind
    (regular files, devices such as /dev/full, and stdout)."""
    import errno
    import io

    out = tmp_path / "a.txt"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        with pytest.raises(GenosegError, match=rf"^--bed {out}: cannot write: No space left"):
            with atomic_output(out, option="--bed") as fh:
                fh.write("x")
    assert not out.exists() and _leftovers(tmp_path) == []
    if os.path.exists("/dev/full"):
        with pytest.raises(GenosegError, match="^-o /dev/full: cannot write: No space left"):
            with atomic_output("/dev/full") as fh:
                fh.write("x" * 100_000)

    class FullStdout(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys, "stdout", FullStdout())
    with pytest.raises(GenosegError, match="^-o -: cannot write: No space left"):
        with atomic_output("-") as fh:
            fh.write("x")


def test_missing_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(GenosegError, match="output directory .*nope does not exist"):
        with atomic_output(tmp_path / "nope" / "a.txt"):
            pass


def test_refuses_to_overwrite_an_input(tmp_path, monkeypatch):
    fa = tmp_path / "genome.fa"
    fa.write_text(">c\nACGT\n")
    with pytest.raises(GenosegError) as e:
        with atomic_output(fa, inputs={"--fasta": fa}):
            pass
    assert str(e.value) == (
        f"-o {fa} is the same file as the input --fasta {fa}; refusing to overwrite an input"
    )
    assert fa.read_text() == ">c\nACGT\n" and _leftovers(tmp_path) == []
    # relative vs absolute, symlink, hard link
    monkeypatch.chdir(tmp_path)
    link = tmp_path / "link.fa"
    link.symlink_to(fa)
    hard = tmp_path / "hard.fa"
    os.link(fa, hard)
    for out in ("genome.fa", "./sub/../genome.fa", link, hard):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(GenosegError, match="refusing to overwrite an input"):
            check_not_input({"-o": out}, {"--gff3": None, "--fasta": fa})
    # outputs that do not exist yet compare by resolved path
    with pytest.raises(GenosegError, match="--bam"):
        check_not_input({"--out": "x.bam"}, {"--bam": tmp_path / "x.bam"})
    check_not_input({"-o": "-"}, {"--fasta": "-"})
    check_not_input({"-o": tmp_path / "other.fa", "-x": None}, {"--fasta": fa, "--bam": None})


# ----------------------------------------------------------------------------- signals

_WRITER = """
import os, signal, sys, time
from pathlib import Path
from genoseg.io.atomic import atomic_output, atomic_path, install_signal_cleanup, exit_by_signal
out = Path(sys.argv[1]); kind = sys.argv[2]
{setup}
def ready():
    print("ready", flush=True)
if kind == "output":
    with atomic_output(out) as fh:
        fh.write("partial"); fh.flush(); ready(); {body}
else:
    with atomic_path(out) as tmp:
        with open(tmp, "w") as fh:
            fh.write("partial"); fh.flush(); ready(); {body}
{after}
"""


def _default_signals() -> None:
    """The writer starts with default signal dispositions: under ``nohup`` (SIGHUP
    ignored) or a shell that ignores SIGINT, an ignored signal stays ignored in children,
    and genoseg rightly keeps it ignored (tested below)."""
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, signal.SIG_DFL)


def _run(tmp_path: Path, kind: str, sig: int, setup: str = "", body: str = "time.sleep(30)",
         after: str = "", wait_for: Path | None = None):  # fmt: skip
    script = _WRITER.format(setup=textwrap.dedent(setup), body=body, after=textwrap.dedent(after))
    out = tmp_path / "out.txt"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen(
        [sys.executable, "-c", script, str(out), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        preexec_fn=_default_signals,
    )
    assert p.stdout.readline().strip() == "ready", p.stderr.read()
    assert _leftovers(tmp_path), "the temporary exists while writing"
    p.send_signal(sig)
    try:
        stdout, stderr = p.communicate(timeout=30)
    finally:
        p.kill()
    return p.returncode, out, stdout, stderr


@pytest.mark.parametrize("kind", ["output", "path"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_removes_the_temporary_and_dies_by_the_signal(tmp_path, kind, sig):
    rc, out, _, stderr = _run(tmp_path, kind, sig)
    assert rc == -sig, stderr  # shell exit status 128 + signum
    assert "Traceback" not in stderr
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_a_prior_handler_that_returns_lets_the_write_finish(tmp_path):
    # the training pattern: the handler sets a flag, the loop checkpoints and exits
    setup = """
    stop = []
    signal.signal(signal.SIGTERM, lambda s, f: stop.append(s))
    """
    body = "[time.sleep(0.01) for _ in range(3000) if not stop]; fh.write(' done')"
    after = """
    assert stop == [signal.SIGTERM]
    print(open(out).read(), flush=True)
    exit_by_signal(stop[0])
    """
    rc, out, stdout, stderr = _run(tmp_path, "output", signal.SIGTERM, setup, body, after)
    assert rc == -signal.SIGTERM, stderr
    assert stdout.strip() == "partial done"
    assert out.read_text() == "partial done"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["output", "path"])
def test_a_prior_handler_that_exits_gets_the_cleanup(tmp_path, kind):
    # handler checkpoints (an atomic write of its own) and calls sys.exit
    setup = """
    def on_term(s, f):
        with atomic_output(out.with_name("ckpt.txt")) as c:
            c.write("checkpoint")
        sys.exit(99)
    signal.signal(signal.SIGTERM, on_term)
    """
    rc, out, _, stderr = _run(tmp_path, kind, signal.SIGTERM, setup)
    assert rc == 99, stderr
    assert not out.exists()
    assert (tmp_path / "ckpt.txt").read_text() == "checkpoint"
    assert _leftovers(tmp_path) == []


def test_a_handler_installed_later_that_chains_back_does_not_loop(tmp_path):
    # first use installs the cleanup; then a handler is installed that calls its
    # predecessor (ours); the next write re-wraps it. One signal: marker, then death.
    setup = """
    with atomic_output(out.with_name("first.txt")) as f0:
        f0.write("1")
    prev = signal.getsignal(signal.SIGTERM)
    def later(s, f):
        open(out.with_name("marker"), "w").write("ran")
        prev(s, f)
    signal.signal(signal.SIGTERM, later)
    """
    rc, out, _, stderr = _run(tmp_path, "path", signal.SIGTERM, setup)
    assert rc == -signal.SIGTERM, stderr
    assert (tmp_path / "marker").read_text() == "ran"
    assert not out.exists() and _leftovers(tmp_path) == []


def test_an_ignored_sighup_stays_ignored(tmp_path):
    # nohup: SIGHUP is ignored; the write must survive it and complete
    setup = "signal.signal(signal.SIGHUP, signal.SIG_IGN)"
    body = "time.sleep(0.5)"
    rc, out, _, stderr = _run(tmp_path, "output", signal.SIGHUP, setup, body)
    assert rc == 0, stderr
    assert out.read_text() == "partial" and _leftovers(tmp_path) == []


def test_a_forked_child_does_not_remove_the_parents_temporary(tmp_path):
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from genoseg.io.atomic import atomic_output
        out = sys.argv[1]
        with atomic_output(out) as fh:
            fh.write("parent"); fh.flush()
            pid = os.fork()
            if pid == 0:
                time.sleep(30); os._exit(0)
            time.sleep(0.2)
            os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
        print("ok")
        """
    )
    out = tmp_path / "out.txt"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True,
                       env=env, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "parent"  # the rename found the temporary
    assert _leftovers(tmp_path) == []
