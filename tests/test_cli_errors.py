"""Bad input to the CLI fails in one ``error:`` line (no traceback), before any work is done."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vcat.cli import app
from vcat.settings import get_settings
from worker.train.config import TrainConfig, TrainError
from worker.tsm.checkpoints import CheckpointError, read_state_dict

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
# A well-formed URL on which nothing listens: refused at once, no timeout.
UNREACHABLE = "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/x"


def one_error_line(code: int, stderr: str, stdout: str = "") -> str:
    """The single ``error:`` line a failed command printed, after checking the rules."""
    assert code != 0
    assert "Traceback" not in stderr + stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:"), stderr
    return lines[0]


def invoke_error(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return one_error_line(res.exit_code, res.stderr, res.stdout)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No VCAT_* from the caller; state under tmp_path; settings re-read per test."""
    for key in list(os.environ):
        if key.startswith("VCAT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("VCAT_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def run_python(
    args: list[str], cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in a child, with this checkout importable and no VCAT_* of ours."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VCAT_")}
    clean.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_main(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m vcat.cli`` in a child: only that goes through ``main()``'s handlers."""
    return run_python(["-m", "vcat.cli", *args], cwd, VCAT_DATA_DIR=str(cwd / "var"), **env)


# ------------------------------------------------------------------------- 1: VCAT_* settings


def test_bad_setting_is_one_line(tmp_path: Path) -> None:
    res = run_main(["models", "list"], tmp_path, VCAT_BATCH_SIZE="abc")
    line = one_error_line(res.returncode, res.stderr, res.stdout)
    assert line.startswith("error: VCAT_BATCH_SIZE: Input should be a valid integer")


@pytest.mark.parametrize(
    ("variable", "value", "args", "says"),
    [
        ("VCAT_PRECISION", "fp8", ["worker"], "'fp16'"),
        ("VCAT_BATCH_SIZE", "-1", ["migrate"], "greater than or equal to 0"),
        ("VCAT_RECONCILE_SECONDS", "inf", ["audit"], "finite"),
        ("VCAT_URL_ALLOW_HOSTS", "not json", ["models", "list"], "cannot parse"),
        ("VCAT_PORT", "70000", ["apikey", "list"], "less than or equal to 65535"),
    ],
)
def test_bad_setting_in_main(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    args: list[str],
    says: str,
) -> None:
    """``main()`` in this process (faster than a child per case): its handler, not click's."""
    from vcat.cli import main

    env.setenv(variable, value)
    env.setattr(sys, "argv", ["vcat", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    line = one_error_line(int(exit_.value.code or 0), out.err, out.out)
    assert line.startswith(f"error: {variable}: ") and says in line


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["index", "--top-k", "abc", "x.mp4"], "error: Invalid value for '--top-k'"),
        (["nosuchcommand"], "error: No such command 'nosuchcommand'."),
        (["index"], "error: Missing argument 'videos'. (see `vcat index --help`)"),
    ],
)
def test_usage_errors_are_one_line(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    """Click's own usage errors too: they were a boxed panel under a usage line."""
    from vcat.cli import main

    env.setattr(sys, "argv", ["vcat", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    assert exit_.value.code == 2
    assert one_error_line(2, out.err, out.out).startswith(says)


def test_main_passes_exit_statuses_through(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vcat.cli import main

    for args, code in ((["version"], 0), (["models", "show", "nosuch"], 1)):
        env.setattr(sys, "argv", ["vcat", *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        assert exit_.value.code == code, args
    capsys.readouterr()


def test_settings_bounds(env: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from vcat.settings import Settings

    for variable, value in [
        ("VCAT_BATCH_SIZE", "-1"),
        ("VCAT_PORT", "70000"),
        ("VCAT_RETENTION_DAYS", "99999999"),
        ("VCAT_JOB_STALE_SECONDS", "nan"),
        ("VCAT_URL_TIMEOUT_SECONDS", "0"),
        ("VCAT_MAX_UPLOAD_BYTES", "-5"),
    ]:
        env.setenv(variable, value)
        with pytest.raises(ValidationError):
            Settings()
        env.delenv(variable)
    env.setenv("VCAT_BATCH_SIZE", "0")  # 0 still means "pick by device"
    assert Settings().batch_size == 0


# ------------------------------------------------------------------- 2, 3: the database URL


def test_migrate_unreachable_is_one_line(env: pytest.MonkeyPatch) -> None:
    env.setenv("VCAT_DATABASE_URL", UNREACHABLE)
    line = invoke_error(["migrate"])
    assert line.startswith("error: database unreachable: ") and "s3cret" not in line


def test_migrate_real_database(env: pytest.MonkeyPatch, database_url: str) -> None:
    env.setenv("VCAT_DATABASE_URL", database_url)
    res = runner.invoke(app, ["migrate"])  # already at head: a no-op
    assert res.exit_code == 0 and "upgraded to head" in res.output, res.output
    assert "Can't locate revision" in invoke_error(["migrate", "no-such-revision"])


@pytest.mark.parametrize("args", [["migrate"], ["apikey", "list"], ["audit"]])
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "Could not parse"),
        ("mysql://root:s3cret@127.0.0.1/x", "needs PostgreSQL"),
        ("postgresql+psycopg2://root:s3cret@127.0.0.1/x", "driver is not installed"),
        ("postgresql+psycopg://root:s3cret@127.0.0.1:port/x", "invalid literal"),
    ],
)
def test_bad_database_url_is_one_line(
    env: pytest.MonkeyPatch, args: list[str], url: str, says: str
) -> None:
    env.setenv("VCAT_DATABASE_URL", url)
    line = invoke_error(args)
    assert line.startswith("error: invalid VCAT_DATABASE_URL: ") and says in line
    assert "s3cret" not in line


def test_redacts_password() -> None:
    from vcat.cli.dbsession import _redacted

    url = "postgresql://u:p%40ss@h/db"
    assert _redacted("bad p@ss and p%40ss", url) == "bad *** and ***"


# ---------------------------------------------------------------------------- 4: vcat audit


@pytest.mark.parametrize("args", [["--since", "99999999d"], ["--prune-days", "99999999"]])
def test_audit_overflow_is_one_line(env: pytest.MonkeyPatch, args: list[str]) -> None:
    env.setenv("VCAT_DATABASE_URL", UNREACHABLE)  # checked before any connection
    assert "too far back" in invoke_error(["audit", *args])


# ---------------------------------------------------------------------------- 5: vcat synth


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--timeline", "t.mp4", "--seconds", "nan"], "finite"),
        (["--timeline", "t.mp4", "--seconds", "inf"], "finite"),
        (["--timeline", "t.mp4", "--seconds", "1e308"], "at most"),
        (["--timeline", "t.mp4", "--seed", "-1"], "--seed"),
        (["outd", "--seed", "-1"], "--seed"),
        (["outd", "--per-class", "0"], "--per-class"),
    ],
)
def test_synth_bad_numbers(env: pytest.MonkeyPatch, tmp_path: Path, args: list[str], says: str):
    res = runner.invoke(app, ["synth", *args])
    assert says in one_error_line(res.exit_code, res.stderr, res.stdout)
    assert res.stdout == ""  # no progress bar or spinner drawn first
    assert not (tmp_path / "outd").exists() and not (tmp_path / "t.mp4").exists()


def test_synth_library_checks(tmp_path: Path) -> None:
    from worker.synth import SynthError, generate_dataset, generate_timeline

    with pytest.raises(SynthError, match="finite"):
        generate_timeline(tmp_path / "never.mp4", 0, seconds=math.nan)
    with pytest.raises(SynthError, match="seed"):
        generate_dataset(tmp_path / "never", 1, -1)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- 6: models import


def test_junk_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_text("junk\n")
    with pytest.raises(CheckpointError, match=r"junk\.pth: not a readable checkpoint"):
        read_state_dict(junk)
    with pytest.raises(CheckpointError, match="not a file"):
        read_state_dict(tmp_path)
    with pytest.raises(CheckpointError, match="no such file"):
        read_state_dict(tmp_path / "nope.pth")


def test_models_import_junk_is_one_line(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_text("junk\n")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    line = invoke_error(["models", "import", "junk.pth", "--labels", "labels.txt"])
    assert "not a readable checkpoint" in line
    line = invoke_error(["models", "import", str(tmp_path), "--labels", "labels.txt"])
    assert "not a file" in line


# ---------------------------------------------------------------------------- 7: vcat worker


@pytest.fixture
def worker_env(env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    env.setenv("VCAT_DATABASE_URL", UNREACHABLE)
    env.setenv("VCAT_BROKER_URL", "redis://127.0.0.1:1/0")
    return env


@pytest.mark.parametrize("value", ["-3", "0"])
def test_worker_concurrency_is_checked(worker_env: pytest.MonkeyPatch, value: str) -> None:
    res = runner.invoke(app, ["worker", "--concurrency", value])
    assert res.exit_code == 2 and "--concurrency" in res.output  # click's usage error
    assert "Traceback" not in res.output


def test_worker_loglevel_is_checked(
    worker_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vcat import supervisor

    spawned: list[dict[str, Any]] = []

    class FakeStack:
        def __init__(self, *_: object, **__: object) -> None: ...

        def spawn(self, name: str, argv: list[str], **options: Any) -> None:
            spawned.append({"argv": argv, **options})

        def wait(self) -> int:
            return 0

        def stop(self) -> None: ...

    monkeypatch.setattr(supervisor, "Stack", FakeStack)
    assert "--loglevel" in invoke_error(["worker", "--loglevel", "loud"])
    assert spawned == []
    res = runner.invoke(app, ["worker", "--loglevel", "debug"])
    assert res.exit_code == 0, res.output
    [child] = spawned
    assert child["argv"][-2:] == ["--loglevel", "DEBUG"]
    assert child["fatal"] == (2,) and child["restart"]


def test_worker_child_with_bad_arguments_is_not_restarted(tmp_path: Path) -> None:
    # The real supervisor and child: status 2 (usage error) stops it; no restart loop.
    code = (
        "from vcat.cli.worker import _supervise;"
        "raise SystemExit(_supervise([('worker', 'cpu', {})], -3, 'INFO'))"
    )
    res = run_python(
        ["-c", code], tmp_path, 60, VCAT_DATABASE_URL=UNREACHABLE, VCAT_BROKER_URL="redis://x"
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "restarting" not in res.stdout


@pytest.mark.parametrize(("ran_for", "delay"), [(5.0, 30), (120.0, 1)])
def test_worker_backoff_starts_over_after_a_healthy_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ran_for: float, delay: int
) -> None:
    # A child that crashed often (4 restarts so far) waits the longest backoff while it keeps
    # crashing; one that then ran for minutes before its next crash starts at the first.
    from vcat import supervisor
    from vcat.settings import Settings

    logs: list[str] = []
    stack = supervisor.Stack(Settings(data_dir=tmp_path), log=logs.append)
    stack.spawn("worker", [sys.executable, "-c", "raise SystemExit(3)"], restart=True)
    child = stack.children[0]
    assert child.proc is not None and child.proc.wait(timeout=60) == 3
    child.restarts, now = 4, time.monotonic()
    child.started_at = now - ran_for
    monkeypatch.setattr(supervisor.time, "monotonic", lambda: now)
    assert stack.poll() is None
    assert logs == [f"worker exited with status 3; restarting in {delay}s"]
    assert child.restart_at == now + delay


# ----------------------------------------------------------------------------- 8: vcat train


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--out", "../bad name"], "invalid model name"),
        (["--out", "ok", "--lr", "nan"], "--lr must be a finite number > 0"),
        (["--out", "ok", "--lr", "inf"], "--lr"),
        (["--out", "ok", "--dropout", "1.5"], "--dropout"),
        (["--out", "ok", "--window-seconds", "nan"], "--window-seconds"),
    ],
)
def test_train_options_checked_up_front(
    env: pytest.MonkeyPatch, tmp_path: Path, args: list[str], says: str
) -> None:
    # The data folder does not exist: the option error must come before any data is read.
    res = runner.invoke(app, ["train", str(tmp_path / "missing"), *args])
    assert says in one_error_line(res.exit_code, res.stderr, res.stdout)
    assert not (tmp_path / "var").exists()


def test_train_config_validate(tmp_path: Path) -> None:
    TrainConfig(data=tmp_path, out="fine-1.0").validate()
    bads: list[dict[str, Any]] = [
        {"out": "../escape"},
        {"out": "a/b"},
        {"lr": math.nan},
        {"lr": 0.0},
        {"weight_decay": -1.0},
        {"weight_decay": math.inf},
        {"warmup_epochs": math.nan},
        {"val_fraction": 1.0},
        {"dropout": math.nan},
        {"stride_seconds": 0.0},
        {"window_seconds": 601.0},
        {"seed": -1},
        {"max_steps": 0},
    ]
    for bad in bads:
        config = TrainConfig(data=tmp_path, out="fine")
        for key, value in bad.items():
            setattr(config, key, value)
        with pytest.raises(TrainError):
            config.validate()


def test_train_catches_store_error(env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch):
    """A StoreError from saving (or --init) is one line too, not a traceback."""
    from worker.train import loop
    from worker.tsm.store import StoreError

    def fails(*_: object, **__: object) -> None:
        raise StoreError("cannot save")

    monkeypatch.setattr(loop, "train", fails)
    assert invoke_error(["train", "data", "--out", "ok"]) == "error: cannot save"
