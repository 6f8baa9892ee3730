"""Class 4: exposure. Listening beyond loopback is said in the profile and shown in plan."""

from __future__ import annotations

import json

import pytest

from tests.hostile import GOOD, PODMAN, VLLM, Case, Cli, add, bad, cli, edit, ids

__all__ = ["cli"]

SMUGGLED = (
    "would publish the server or change its network behind orch's back; set publish.host / "
    "publish.port (and runtime.network), which orch shows in plan"
)
LISTEN = "is orch's to set: where the server listens comes from publish.host and publish.port"


def podman_args(name: str, args: str, flag: str) -> Case:
    return bad(
        name,
        add("runtime", f"extra_args = {args}", PODMAN),
        f"runtime.extra_args[0]: {flag} {SMUGGLED}",
    )


CASES = [
    podman_args("podman -p", '["-p", "0.0.0.0:9000:8080"]', "-p"),
    podman_args("podman --publish=", '["--publish=9000:8080"]', "--publish"),
    podman_args("podman -P", '["-P"]', "-P"),
    podman_args("podman --publish-all", '["--publish-all"]', "--publish-all"),
    podman_args("podman -dp cluster", '["-dp", "9000:8080"]', "-dp"),
    podman_args("podman --network=host", '["--network=host"]', "--network"),
    podman_args("podman --net", '["--net", "host"]', "--net"),
    podman_args("podman --pod", '["--pod", "shared"]', "--pod"),
    podman_args("podman --expose", '["--expose", "8080"]', "--expose"),
    bad(
        "podman --name",
        add("runtime", 'extra_args = ["--name", "other"]', PODMAN),
        "runtime.extra_args[0]: --name is orch's to set (the container's name, labels and "
        "environment)",
    ),
    bad(
        "engine --host",
        add("engine", 'extra_args = ["--host", "0.0.0.0"]'),
        f"engine.extra_args[0]: --host {LISTEN}",
    ),
    bad(
        "engine --port=",
        add("engine", 'extra_args = ["--port=9000"]'),
        f"engine.extra_args[0]: --port {LISTEN}",
    ),
    bad(
        "vllm --host",
        add("engine", 'extra_args = ["--host", "0.0.0.0"]', VLLM),
        f"engine.extra_args[0]: --host {LISTEN}",
    ),
    bad(
        "network none",
        add("runtime", 'network = "none"', PODMAN),
        "runtime.network: 'none': nothing could reach the server (health checks included)",
    ),
    bad(
        "network of another container",
        add("runtime", 'network = "container:db"', PODMAN),
        "runtime.network: 'container:db' is not a network name (e.g. host, bridge, pasta, "
        "slirp4netns or a podman network); joining another namespace (container:, ns:) is "
        "refused",
    ),
    bad(
        "publish.host a name",
        edit("port = 8001", 'host = "my.lan"\nport = 8001'),
        "publish.host: 'my.lan' is not an IP address (e.g. 127.0.0.1, 0.0.0.0 for every "
        "interface, ::1) or localhost",
    ),
    bad(
        "publish.host with options",
        edit("port = 8001", 'host = "0.0.0.0 --api-key x"\nport = 8001'),
        "publish.host: '0.0.0.0 --api-key x' is not an IP address (e.g. 127.0.0.1, 0.0.0.0 "
        "for every interface, ::1) or localhost",
    ),
    bad(
        "orch-wide default beyond loopback",
        GOOD,
        "publish.host: not set, and orch's default_bind_host (0.0.0.0) is reachable from other "
        'machines; say so in the profile: publish.host = "0.0.0.0"',
        env={"ORCH_DEFAULT_BIND_HOST": "0.0.0.0"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_hidden_exposure_is_refused(cli: Cli, case: Case) -> None:
    cli.check(case)


def plan(cli: Cli, text: str) -> tuple[list[str], dict[str, object], str]:
    cli.write({"models/p.toml": text})
    as_json = cli.run("plan", "--dry-run", "--json", "p")
    shown = cli.run("plan", "--dry-run", "p")
    assert as_json.code == shown.code == 0, as_json.err + shown.err
    data = json.loads(as_json.out)
    listens = [line.strip() for line in shown.out.splitlines() if "listens on" in line]
    assert len(listens) == 1
    return data["argv"], data["listen"], listens[0]


def after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_host_network_listens_where_publish_says(cli: Cli) -> None:
    argv, listen, line = plan(cli, add("runtime", 'network = "host"', PODMAN))
    assert "-p" not in argv
    assert (after(argv, "--host"), after(argv, "--port")) == ("127.0.0.1", "8001")
    assert listen == {"host": "127.0.0.1", "port": 8001, "exposed": False}
    assert line == "listens on 127.0.0.1:8001 (loopback only)"


def test_host_network_on_every_interface_is_shown(cli: Cli) -> None:
    text = add("runtime", 'network = "host"', PODMAN).replace(
        "port = 8001", 'host = "0.0.0.0"\nport = 8001'
    )
    argv, listen, line = plan(cli, text)
    assert "-p" not in argv and after(argv, "--host") == "0.0.0.0"
    assert listen == {"host": "0.0.0.0", "port": 8001, "exposed": True}
    assert line == "listens on 0.0.0.0:8001: reachable from other machines (publish.host)"


def test_container_network_publishes_on_loopback(cli: Cli) -> None:
    argv, listen, line = plan(cli, PODMAN)
    assert after(argv, "-p") == "127.0.0.1:8001:8080"
    assert after(argv, "--host") == "0.0.0.0"  # inside the container's own network
    assert listen == {"host": "127.0.0.1", "port": 8001, "exposed": False}
    assert line == "listens on 127.0.0.1:8001 (loopback only)"


def test_process_on_ipv6_any_is_shown(cli: Cli) -> None:
    argv, listen, line = plan(cli, edit("port = 8001", 'host = "::"\nport = 8001'))
    assert after(argv, "--host") == "::"
    assert listen == {"host": "::", "port": 8001, "exposed": True}
    assert line == "listens on [::]:8001: reachable from other machines (publish.host)"


def test_a_value_after_a_short_flag_is_not_a_cluster(cli: Cli) -> None:
    text = add("runtime", 'extra_args = ["-v/srv/p:/p:ro", "-it"]', PODMAN)
    cli.write({"models/p.toml": text})
    assert cli.run("plan", "--dry-run", "p").code == 0


def test_declared_host_wins_over_the_orch_default(cli: Cli) -> None:
    cli.write({"models/p.toml": edit("port = 8001", 'host = "127.0.0.1"\nport = 8001')})
    result = cli.run("plan", "--dry-run", "p", env={"ORCH_DEFAULT_BIND_HOST": "0.0.0.0"})
    assert result.code == 0, result.err
