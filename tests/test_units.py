"""systemd units: golden text per shipped profile, real `systemd-analyze verify`, install."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import OrchError
from orchestrator.plan import Plan
from orchestrator.profiles.loader import Catalog
from orchestrator.render import make_environment
from orchestrator.systemd import SystemdError, install, user_unit_dir
from orchestrator.units import (
    UnitError,
    UnitHost,
    environment_line,
    quote_word,
    render_unit,
    start_timeout_s,
    unit_name,
)
from tests.conftest import GOLDEN, PROFILES, TEMPLATES, shipped_plan

UNITS = GOLDEN / "units"
NAMES = Catalog(PROFILES).model_names()
GOLDEN_ENV = {
    "ORCH_PROFILES_DIR": "/opt/orch/profiles",
    "ORCH_TEMPLATES_DIR": "/opt/orch/templates",
    "ORCH_STATE_DIR": "/var/lib/orch",
    "ORCH_PODMAN_BINARY": "podman",
    "ORCH_DEFAULT_BIND_HOST": "127.0.0.1",
    "PATH": "/opt/llama/bin:/usr/local/bin:/usr/bin:/bin",
}


def plan_for(name: str) -> Plan:
    return shipped_plan(name)


def unit_for(name: str, orch: str = "/opt/orch/bin/orch", *, user: bool = False) -> str:
    host = UnitHost(orch, GOLDEN_ENV, user=user)
    return render_unit(plan_for(name), host, make_environment(TEMPLATES))


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: apt-get install systemd"
    return found


def fake_executable(path: Path, script: str = "exit 0\n") -> Path:
    path.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    path.chmod(0o755)
    return path


# ---------------------------------------------------------------- golden


@pytest.mark.parametrize("name", NAMES)
def test_golden_unit(name: str, update_golden: bool) -> None:
    path = UNITS / unit_name(name)
    text = unit_for(name)
    if update_golden:
        UNITS.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no golden unit for {name}: run pytest --update-golden"
    assert path.read_text(encoding="utf-8") == text


def test_no_golden_unit_is_left_over(update_golden: bool) -> None:
    expected = {unit_name(n) for n in NAMES}
    if update_golden:
        for old in UNITS.iterdir():
            if old.name not in expected:
                old.unlink()
    assert {p.name for p in UNITS.iterdir()} == expected


# ---------------------------------------------------------------- systemd-analyze


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
@pytest.mark.parametrize("name", NAMES)
def test_unit_passes_systemd_analyze_verify(name: str, user: bool, tmp_path: Path) -> None:
    analyze = systemd_analyze()
    orch = fake_executable(tmp_path / "orch with space")
    unit = tmp_path / unit_name(name)
    unit.write_text(unit_for(name, str(orch), user=user), encoding="utf-8")
    env = dict(os.environ)
    argv = [analyze, "verify", str(unit)]
    if user:
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(runtime)
        argv.insert(1, "--user")
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_really_reports_problems(tmp_path: Path) -> None:
    """The check above is only worth something if verify prints on a bad unit."""
    orch = fake_executable(tmp_path / "orch")
    unit = tmp_path / "orch-bad.service"
    unit.write_text(unit_for("demo", str(orch)).replace("Type=notify", "Type=bogus"))
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert "Failed to parse service type" in result.stdout + result.stderr


# ---------------------------------------------------------------- contents


def test_demo_unit_shape() -> None:
    text = unit_for("demo")
    lines = text.splitlines()
    assert "Type=notify" in lines
    assert "NotifyAccess=main" in lines
    assert "ExecStart=/opt/orch/bin/orch up --foreground demo" in lines
    assert "ExecStop=/opt/orch/bin/orch down demo" in lines
    assert "Restart=on-failure" in lines
    assert "Wants=network-online.target" in lines
    assert "After=network-online.target" in lines
    assert 'Environment="ORCH_STATE_DIR=/var/lib/orch"' in lines
    assert "WantedBy=multi-user.target" in lines
    assert "LimitMEMLOCK=infinity" not in lines
    assert not any(line.startswith("RequiresMountsFor=") for line in lines)
    plan = plan_for("demo")
    expected = int(plan.load_timeout_s) + 30 + 60 * plan.profile.warmup.requests
    assert f"TimeoutStartSec={expected}" in lines
    assert start_timeout_s(plan) == expected


def test_mlock_profile_lifts_memlock_and_podman_needs_its_runtime_dir() -> None:
    lines = unit_for("llama4-scout-q6k-cpu").splitlines()
    assert "LimitMEMLOCK=infinity" in lines
    assert "RequiresMountsFor=%t/containers" in lines


def test_user_unit_has_no_system_targets() -> None:
    text = unit_for("demo", user=True)
    assert "network-online.target" not in text
    assert "WantedBy=default.target" in text.splitlines()


def test_start_timeout_grows_with_model_size() -> None:
    small = start_timeout_s(plan_for("demo"))
    big = start_timeout_s(plan_for("qwen35-397b-iq4"))
    assert big > small + 300


def test_relative_orch_path_is_refused() -> None:
    with pytest.raises(UnitError, match="not absolute"):
        render_unit(plan_for("demo"), UnitHost("orch"), make_environment(TEMPLATES))


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("/usr/bin/orch", "/usr/bin/orch"),
        ("/opt/my orch/orch", '"/opt/my orch/orch"'),
        ("/a%b", "/a%%b"),
        ("/a$b", '"/a$$b"'),
        ('/a"b', '"/a\\"b"'),
    ],
)
def test_quote_word(word: str, expected: str) -> None:
    assert quote_word(word) == expected


def test_environment_line_escapes() -> None:
    assert environment_line("X", 'a "b" %h\\') == '"X=a \\"b\\" %%h\\\\"'
    with pytest.raises(UnitError):
        environment_line("1BAD", "x")
    with pytest.raises(UnitError):
        environment_line("X", "a\nb")


# ---------------------------------------------------------------- install


def fake_systemctl(folder: Path, log: Path, exit_code: int = 0) -> Path:
    folder.mkdir(exist_ok=True)
    return fake_executable(
        folder / "systemctl",
        f'echo "$@" >> "{log}"\necho "systemctl says no" >&2\nexit {exit_code}\n'
        if exit_code
        else f'echo "$@" >> "{log}"\nexit 0\n',
    )


def test_install_writes_and_runs_systemctl(tmp_path: Path) -> None:
    log = tmp_path / "log"
    systemctl = fake_systemctl(tmp_path / "bin", log)
    done = install(
        "[Unit]\n",
        "orch-demo.service",
        user=True,
        directory=tmp_path / "units",
        systemctl=str(systemctl),
    )
    assert done.path == tmp_path / "units" / "orch-demo.service"
    assert done.path.read_text() == "[Unit]\n"
    assert log.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable orch-demo.service",
    ]
    assert [list(c[1:]) for c in done.commands] == [
        ["--user", "daemon-reload"],
        ["--user", "enable", "orch-demo.service"],
    ]


def test_install_system_scope_has_no_user_flag(tmp_path: Path) -> None:
    log = tmp_path / "log"
    systemctl = fake_systemctl(tmp_path / "bin", log)
    install("x", "orch-demo.service", user=False, directory=tmp_path, systemctl=str(systemctl))
    assert log.read_text().splitlines() == ["daemon-reload", "enable orch-demo.service"]


def test_install_reports_a_failing_systemctl(tmp_path: Path) -> None:
    systemctl = fake_systemctl(tmp_path / "bin", tmp_path / "log", exit_code=1)
    with pytest.raises(SystemdError, match="daemon-reload failed \\(exit 1\\): systemctl says no"):
        install("x", "orch-demo.service", user=True, directory=tmp_path, systemctl=str(systemctl))


def test_install_reports_a_missing_systemctl(tmp_path: Path) -> None:
    with pytest.raises(SystemdError, match="not found"):
        install("x", "u.service", user=True, directory=tmp_path, systemctl=str(tmp_path / "no"))
    assert not (tmp_path / "u.service").exists()


def test_install_reports_an_unwritable_folder(tmp_path: Path) -> None:
    systemctl = fake_systemctl(tmp_path / "bin", tmp_path / "log")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemdError, match="cannot write"):
        install("x", "u.service", user=True, directory=blocker / "sub", systemctl=str(systemctl))


def test_user_unit_dir_follows_xdg() -> None:
    assert user_unit_dir({"XDG_CONFIG_HOME": "/x"}) == Path("/x/systemd/user")
    assert user_unit_dir({}, home=Path("/h")) == Path("/h/.config/systemd/user")


# ---------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray orch.toml
    for var in list(os.environ):
        if var.startswith("ORCH_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def test_cli_prints_the_unit(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orch = fake_executable(cli_env / "orch")
    assert main(["systemd", "demo", "--orch-path", str(orch)]) == 0
    out = capsys.readouterr().out
    assert f"ExecStart={orch} up --foreground demo" in out.splitlines()
    # no ORCH_PROFILES_DIR: the unit looks where this shell looks ($XDG_CONFIG_HOME/orch, ...)
    assert f'Environment="XDG_CONFIG_HOME={os.environ["XDG_CONFIG_HOME"]}"' in out.splitlines()
    assert "ORCH_PROFILES_DIR" not in out
    assert f'Environment="ORCH_STATE_DIR={cli_env / "state"}"' in out.splitlines()


def test_cli_unit_keeps_an_explicit_profiles_dir(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_PROFILES_DIR", str(PROFILES))
    orch = fake_executable(cli_env / "orch")
    assert main(["systemd", "demo", "--orch-path", str(orch)]) == 0
    out = capsys.readouterr().out
    assert f'Environment="ORCH_PROFILES_DIR={PROFILES}"' in out.splitlines()
    assert "XDG_CONFIG_HOME" not in out


def test_cli_output_file_verifies(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orch = fake_executable(cli_env / "orch")
    target = cli_env / "orch-demo.service"
    assert main(["systemd", "demo", "--orch-path", str(orch), "--output", str(target)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {target}"
    result = subprocess.run(
        [systemd_analyze(), "verify", str(target)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_cli_user_install(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = cli_env / "log"
    bin_dir = cli_env / "bin"
    fake_systemctl(bin_dir, log)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cli_env / "config"))
    orch = fake_executable(cli_env / "orch")
    assert main(["systemd", "demo", "--user", "--install", "--orch-path", str(orch)]) == 0
    unit = cli_env / "config" / "systemd" / "user" / "orch-demo.service"
    assert "WantedBy=default.target" in unit.read_text()
    assert log.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable orch-demo.service",
    ]
    assert "systemctl --user start orch-demo.service" in capsys.readouterr().out


def test_cli_missing_systemctl_is_a_clean_error(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(cli_env / "empty"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cli_env / "config"))
    orch = fake_executable(cli_env / "orch")
    code = main(["systemd", "demo", "--user", "--install", "--orch-path", str(orch)])
    assert code == SystemdError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("orch: error: systemctl not found")
    assert "Traceback" not in err


def test_cli_unknown_profile(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["systemd", "nope", "--orch-path", "/bin/sh"]) == 2
    assert "no profile 'nope'" in capsys.readouterr().err


def test_cli_bad_orch_path(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["systemd", "demo", "--orch-path", str(cli_env / "missing")])
    assert code != 0
    assert "pass --orch-path" in capsys.readouterr().err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("systemd", "detect", "new"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "examples:" in capsys.readouterr().out


def test_unit_error_is_an_orch_error() -> None:
    assert issubclass(UnitError, OrchError)
    assert issubclass(SystemdError, OrchError)
