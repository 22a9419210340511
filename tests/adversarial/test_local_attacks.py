"""What another local user or process can do: not publish forged events on the embedded NATS, not pre-create the
folder of the System Service's socket, not read the token in the runtime's advertisement."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nats
import pytest
from nats.errors import NoServersError

from syntropism.config import Settings
from syntropism.infra.state_dir import read_runtime_info, socket_path_for
from tests.adversarial.conftest import Economy


async def test_the_embedded_nats_refuses_a_client_without_the_token(economy: Economy) -> None:
    assert economy.runtime.nats_server is not None and economy.runtime.nats_server.url
    with_token = economy.runtime.nats_server.url
    bare = "nats://" + with_token.rpartition("@")[2]
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        client = await nats.connect(bare, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
        await client.publish("system.economy.reward_issued", b"{}")  # a forged mint, were it let in
        await client.flush(timeout=2)
        await client.close()
    info_file = economy.state_dir / "runtime.json"
    assert stat.S_IMODE(info_file.stat().st_mode) == 0o600, "its NATS URL carries the token"
    info = read_runtime_info(economy.state_dir)
    assert info is not None and "@" in info.nats_url


def test_a_socket_folder_another_user_prepared_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90) / "state"  # too long for a socket path: the short folder under /tmp is used
    settings = Settings(state_dir=deep)
    path = socket_path_for(settings)
    folder = path.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.getuid()
    folder.rmdir()
    folder.symlink_to(tmp_path)  # planted by someone else: a link to a folder they control
    try:
        with pytest.raises(PermissionError, match="not a private folder"):
            socket_path_for(settings)
    finally:
        folder.unlink()
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)  # open to everyone: anyone could swap the socket inside
    try:
        with pytest.raises(PermissionError, match="not a private folder"):
            socket_path_for(settings)
    finally:
        folder.rmdir()
