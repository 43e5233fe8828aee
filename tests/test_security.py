"""Key folders checked at start: every key parsed, a bad file named in one line, private modes."""

import stat
import subprocess
import sys

import pytest
import zmq

from common import security
from common.errors import FatalError
from tests.conftest import REPO, env


def keys(tmp_path, *workers):
    folder = tmp_path / "keys"
    for w in workers or ("w1",):
        security.make_keys(folder, w)
    return folder


def serve(folder, endpoint="tcp://127.0.0.1:0"):
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.ROUTER)
        auth = security.server(ctx, sock, endpoint, folder)
        auth.stop()
    finally:
        ctx.destroy(0)


def test_good_folder_is_accepted_and_names_the_workers(tmp_path):
    folder = keys(tmp_path, "laptop", "desktop")
    k = security.server_keys(folder)
    assert k.workers == ("desktop", "laptop")
    serve(folder)


@pytest.mark.parametrize(
    "content",
    [b"", b"\xff\xfe\x00garbage", b"public-key = 'tooshort'\n", b"# only a comment\n"],
    ids=["empty", "binary", "short key", "no key"],
)
def test_one_bad_authorized_key_is_one_line_naming_it(tmp_path, content):
    folder = keys(tmp_path, "laptop")
    bad = folder / "authorized" / "broken.key"
    bad.write_bytes(content)
    with pytest.raises(FatalError) as e:
        serve(folder)
    msg = str(e.value)
    assert str(bad) in msg and "\n" not in msg


def test_a_bad_compositor_secret_key_names_the_file(tmp_path):
    folder = keys(tmp_path)
    (folder / "compositor.key_secret").write_text("public-key = 'x'\n")
    with pytest.raises(FatalError, match="compositor.key_secret"):
        security.server_keys(folder)


def test_keys_pointing_at_a_file_or_nothing(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(FatalError, match="is a file"):
        security.server_keys(f)
    with pytest.raises(FatalError, match="no such folder"):
        security.client_keys("tcp://192.0.2.1:1", tmp_path / "missing")
    with pytest.raises(FatalError, match="is a file"):
        security.make_keys(f, "w")


def test_no_authorized_keys(tmp_path):
    folder = keys(tmp_path)
    (folder / "authorized" / "w1.key").unlink()
    with pytest.raises(FatalError, match="no authorized worker keys"):
        security.server_keys(folder)


def test_folders_are_private_and_secrets_0600(tmp_path):
    folder = keys(tmp_path, "w1")
    for d in (folder, folder / "authorized", folder / "worker-w1"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for f in (folder / "compositor.key_secret", folder / "worker-w1" / "worker.key_secret"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_client_keys_plain_on_loopback_required_off_it(tmp_path):
    assert security.client_keys("tcp://127.0.0.1:5551", None) is None
    with pytest.raises(FatalError, match="--keys"):
        security.client_keys("tcp://192.0.2.1:5551", None)
    bundle = keys(tmp_path) / "worker-w1"
    k = security.client_keys("tcp://192.0.2.1:5551", bundle)
    assert k is not None and len(k.secret) == 40 and k.folder == bundle


def test_keys_command_on_an_unwritable_place_is_one_line(tmp_path):
    target = tmp_path / "f" / "keys"
    (tmp_path / "f").write_text("a file where a folder should be")
    r = subprocess.run(
        [sys.executable, "-m", "inference", "keys", str(target)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_compositor_with_a_bad_authorized_key_exits_with_one_line(tmp_path, port_base):
    folder = keys(tmp_path, "laptop")
    (folder / "authorized" / "typo.key").write_text("not a key\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "compositor",
            "--infer-bind",
            f"tcp://127.0.0.1:{port_base}",
            "--keys",
            str(folder),
        ],  # fmt: skip
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = [x for x in r.stderr.splitlines() if "error" in x]
    assert len(errors) == 1 and str(folder / "authorized" / "typo.key") in errors[0]


def test_link_key_is_private_and_checked(tmp_path):
    folder = security.make_link_key(tmp_path / "run" / "link-keys")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "link.key_secret").stat().st_mode) == 0o600
    key = security.link_key(folder)
    assert key is not None and len(key.public) == 40 and len(key.secret) == 40
    assert security.link_key(None) is None
    with pytest.raises(FatalError, match="no such folder"):
        security.link_key(tmp_path / "nope")
    (folder / "link.key_secret").write_text("not a key\n")
    with pytest.raises(FatalError, match="link key"):
        security.link_key(folder)


def test_a_link_with_the_run_key_talks_and_one_without_gets_nothing(tmp_path, port_base):
    """Real sockets on loopback TCP: the binding side serves this run's key; a client that knows
    its public half gets the frame, a plain client and one with another key get nothing."""
    from common import sockets

    key = security.link_key(security.make_link_key(tmp_path / "k"))
    other = security.link_key(security.make_link_key(tmp_path / "other"))
    ep = f"tcp://127.0.0.1:{port_base}"
    ctx = zmq.Context()
    try:
        server = sockets.make_socket(ctx, zmq.PUSH, bind=ep, link=key, hwm=10)
        good = sockets.make_socket(ctx, zmq.PULL, connect=ep, link=key, hwm=10)
        plain = sockets.make_socket(ctx, zmq.PULL, connect=ep, hwm=10)
        wrong = sockets.make_socket(ctx, zmq.PULL, connect=ep, link=other, hwm=10)
        assert server.poll(5000, zmq.POLLOUT)  # IMMEDIATE: writable once a handshake completed
        for i in range(3):
            server.send(b"frame %d" % i)
        assert good.poll(5000) and good.recv().startswith(b"frame")
        assert not plain.poll(500) and not wrong.poll(500)
    finally:
        ctx.destroy(0)
