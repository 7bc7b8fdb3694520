"""The fault-injection point WSL_RAY_FAULT_HOLD (wsl_ray/utils/fault.py) on its own: off by
default, the K-th arrival claims held-K and waits for release-K, a release written first lets
it pass, and a wait that never ends fails loudly."""

import json
import os
import threading

import pytest
from fault_hold import FaultHold

from wsl_ray.utils import fault


def test_unset_or_another_epoch_never_waits(tmp_path, monkeypatch):
    monkeypatch.delenv(fault.FAULT_HOLD, raising=False)
    fault.hold(1)
    monkeypatch.setenv(fault.FAULT_HOLD, f"2:{tmp_path}")
    fault.hold(1)
    fault.hold(3)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("setting", ["2", "x:/tmp", "2:", ":/tmp"])
def test_a_malformed_setting_is_an_error(setting, monkeypatch):
    monkeypatch.setenv(fault.FAULT_HOLD, setting)
    with pytest.raises(fault.FaultHoldError, match="expected EPOCH:FOLDER"):
        fault.hold(2)


@pytest.mark.timeout(60)
def test_runs_are_held_one_claim_each_until_released(tmp_path, monkeypatch):
    hold = FaultHold(tmp_path / "hold", 2)
    monkeypatch.setenv(fault.FAULT_HOLD, hold.env[fault.FAULT_HOLD])
    hold.release(1)
    fault.hold(2)  # released beforehand: passes at once
    second = threading.Thread(target=fault.hold, args=(2,))
    second.start()
    claim = hold.wait_held(2, running=second.is_alive, timeout=30)
    assert claim == {"pid": os.getpid(), "host": claim["host"], "epoch": 2}
    second.join(timeout=1)
    assert second.is_alive()  # held until the release
    hold.release(2)
    second.join(timeout=30)
    assert not second.is_alive()
    names = sorted(p.name for p in hold.folder.iterdir())
    assert names == ["held-1", "held-2", "release-1", "release-2"]  # no claim left half-made
    assert json.loads((hold.folder / "held-1").read_text())["epoch"] == 2


def test_a_hold_never_released_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setenv(fault.FAULT_HOLD, f"1:{tmp_path}")
    monkeypatch.setattr(fault, "HOLD_LIMIT_S", 0.5)
    with pytest.raises(fault.FaultHoldError, match="release-1 did not appear within"):
        fault.hold(1)


def test_the_tests_side_fails_when_the_run_ends_unheld(tmp_path):
    hold = FaultHold(tmp_path, 1)
    with pytest.raises(AssertionError, match="ended before run 1 reached the held epoch"):
        hold.wait_held(1, running=lambda: False)
