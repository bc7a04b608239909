"""Packaging: the runtime-only install, the Docker image and the systemd unit.

Static checks read the files for the properties an operator relies on (a user without
privileges, a health check on /healthz, state under a volume, the unit's keys, stop
timeouts that cover the drain). The runtime install is proven in a fresh virtual
environment; the image is built and run only where a Docker engine answers.
"""

from __future__ import annotations

import ast
import base64
import configparser
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from engine.config import Settings, load_config, split_host_port
from engine.listener import SHUTDOWN_TIMEOUT_S
from engine.smpp.server import UNBIND_WAIT_S

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
IMAGE_CONFIG = ROOT / "packaging" / "docker" / "septet.toml"
COMPOSE = ROOT / "packaging" / "docker" / "compose.yml"
UNIT = ROOT / "packaging" / "systemd" / "septet.service"
# Runtime distribution name -> the module it is imported as, where they differ.
IMPORT_NAMES = {"prometheus-client": "prometheus_client"}
DEV_AND_BENCH = ("pytest", "mypy", "ruff", "hypothesis", "matplotlib", "psutil", "smpplib")
# Modules that serve an optional extra (pyproject.toml [project.optional-dependencies]): they
# may import that extra's packages, and are imported only when the configuration asks for
# them (engine.bridge_limits imports engine.cluster_limits only with `[cluster] redis`).
EXTRA_MODULES = {
    "engine/cluster_limits.py": "cluster",
    # The PostgreSQL journal backend: imported only for [journal] backend = "postgresql".
    "engine/journal/postgres.py": "postgresql",
    "engine/journal/postgres_schema.py": "postgresql",
    "engine/journal/postgres_reader.py": "postgresql",
    "engine/smpp/store_postgres.py": "postgresql",
}


def drain_s() -> float:
    """The daemon's default drain: `[shutdown] drain_s`."""
    return Settings().shutdown.drain_s


def stop_needs_s() -> float:
    """What a stop takes at most: the drain, the SMPP unbind wait, the listeners' own
    shutdown, and two seconds for the journal's last commit and the exit."""
    return drain_s() + UNBIND_WAIT_S + SHUTDOWN_TIMEOUT_S + 2.0


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage(dockerfile: str) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


# ── the Docker image, read ───────────────────────────────────────────────────────────


def test_the_image_runs_as_a_user_without_privileges_with_state_under_a_volume() -> None:
    stage = final_stage(DOCKERFILE.read_text())
    users = [rest for word, rest in stage if word == "USER"]
    assert users, "the image must switch to a user of its own"
    assert users[-1] not in ("root", "0", "0:0")
    settings = load_config(IMAGE_CONFIG).settings
    state_dir = str(Path(settings.journal.path).parent)
    volumes = [rest for word, rest in stage if word == "VOLUME"]
    assert any(state_dir in volume for volume in volumes), (state_dir, volumes)
    assert settings.ingress.unix is not None
    assert settings.ingress.unix.startswith(state_dir + "/")
    copied = [rest for word, rest in stage if word == "COPY"]
    assert any(rest.endswith("/etc/septet/septet.toml") for rest in copied)


def test_the_images_health_check_asks_healthz_on_the_configured_listener() -> None:
    stage = final_stage(DOCKERFILE.read_text())
    (health,) = [rest for word, rest in stage if word == "HEALTHCHECK"]
    settings = load_config(IMAGE_CONFIG).settings
    assert settings.http.listen is not None
    _, port = split_host_port(settings.http.listen, "http.listen")
    assert f"127.0.0.1:{port}/healthz" in health
    assert "--interval=" in health
    assert "--timeout=" in health
    entry = [rest for word, rest in stage if word in ("ENTRYPOINT", "CMD")]
    assert entry == ['["septet"]', '["run", "--config", "/etc/septet/septet.toml"]']


def test_the_image_installs_the_runtime_only() -> None:
    steps = instructions(DOCKERFILE.read_text())
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "-c constraints.txt" in runs
    assert "[dev" not in runs
    assert "bench" not in runs


def test_compose_provisions_prometheus_and_grafana_and_waits_for_the_drain() -> None:
    compose = COMPOSE.read_text()
    for service in ("septet:", "prometheus:", "grafana:"):
        assert f"\n  {service}" in compose
    for mounted in ("grafana/alerts.yml", "grafana/dashboards", "grafana/provisioning"):
        assert mounted in compose
    for mounted in re.findall(r"- (\.\.?/[^:]+):", compose):
        assert (COMPOSE.parent / mounted).resolve().exists(), mounted
    (grace,) = re.findall(r"stop_grace_period: (\d+)s", compose)
    assert int(grace) >= stop_needs_s()
    prometheus = (COMPOSE.parent / "prometheus.yml").read_text()
    settings = load_config(IMAGE_CONFIG).settings
    assert settings.http.metrics_listen is not None
    _, port = split_host_port(settings.http.metrics_listen, "http.metrics_listen")
    assert f'"septet:{port}"' in prometheus


# ── the systemd unit, read ───────────────────────────────────────────────────────────


def read_unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    unit.read_string(UNIT.read_text())
    return unit


def test_the_unit_keeps_state_secrets_and_a_stop_timeout_that_covers_the_drain() -> None:
    service = read_unit()["Service"]
    assert service["StateDirectory"] == "septet"
    assert service["WorkingDirectory"] == "/var/lib/septet"
    assert service["EnvironmentFile"] == "/etc/septet/septet.env"
    assert service["User"] not in ("root", "0")
    assert service["ExecStart"].endswith(" run --config /etc/septet/septet.toml")
    assert service["KillSignal"] == "SIGTERM"
    timeout = float(service["TimeoutStopSec"])
    # Long enough that systemd never kills a drain, short enough to match it.
    assert stop_needs_s() <= timeout <= stop_needs_s() + 10
    assert service["UMask"] == "0077"
    assert read_unit()["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_analyze_finds_nothing_wrong_but_the_binary_not_installed_here() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(UNIT)], capture_output=True, text=True, check=False
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and "/opt/septet/bin/septet is not executable" not in line
    ]
    assert not problems


# ── the runtime-only install ─────────────────────────────────────────────────────────


def runtime_imports(extra: str | None = None) -> set[str]:
    """Names the runtime dependencies are imported as (pyproject.toml [project]), with
    those of the optional `extra` when one is named."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    if extra is not None:
        requirements += project["optional-dependencies"][extra]
    names: set[str] = set()
    for requirement in requirements:
        name = re.split(r"[<>=;!~ \[]", requirement, maxsplit=1)[0].strip().lower()
        names.add(IMPORT_NAMES.get(name, name.replace("-", "_")))
    return names


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_engine_and_bridges_import_only_the_standard_library_and_runtime_dependencies() -> None:
    ours = set(sys.stdlib_module_names) | {"engine", "bridges"}
    strays = {
        f"{relative}: {name}"
        for package in ("engine", "bridges")
        for path in (ROOT / package).rglob("*.py")
        if (relative := path.relative_to(ROOT).as_posix())
        for name in imported_top_levels(path) - ours - runtime_imports(EXTRA_MODULES.get(relative))
    }
    assert not strays, sorted(strays)


def runtime_requirements() -> list[str]:
    """pyproject.toml's [project] dependencies, as written."""
    import tomllib

    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def installed_closure(requirements: list[str]) -> list[importlib.metadata.Distribution]:
    """The distributions installed here that `requirements` need, transitively: markers
    evaluated for this interpreter, a dependency's optional requirements only for the
    extras asked of it."""
    found: dict[str, importlib.metadata.Distribution] = {}
    extras_of: dict[str, set[str]] = {}
    pending = [(Requirement(text), frozenset({""})) for text in requirements]
    while pending:
        requirement, parent_extras = pending.pop()
        marker = requirement.marker
        if marker is not None and not any(marker.evaluate({"extra": e}) for e in parent_extras):
            continue
        name = canonicalize_name(requirement.name)
        wanted = {"", *requirement.extras}
        if name in found and wanted <= extras_of[name]:
            continue
        found[name] = importlib.metadata.distribution(name)
        extras_of[name] = extras_of.get(name, set()) | wanted
        asked = frozenset(extras_of[name])
        pending += [(Requirement(text), asked) for text in found[name].requires or []]
    return list(found.values())


def wheel_of_installed(distribution: importlib.metadata.Distribution, directory: Path) -> Path:
    """A wheel of an installed distribution: the files pip unpacked from its wheel (those
    under site-packages; pip makes console scripts again from entry_points.txt), its
    .dist-info as the wheel had it, a new RECORD. Stored, not compressed: it is unpacked
    at once."""
    files = [
        file
        for file in distribution.files or []
        if file.parts[0] != ".." and "__pycache__" not in file.parts
    ]
    info = next(file.parts[0] for file in files if file.parts[0].endswith(".dist-info"))
    pip_wrote = {f"{info}/{name}" for name in ("RECORD", "INSTALLER", "REQUESTED")}
    pip_wrote.add(f"{info}/direct_url.json")
    # The file name's compressed tag set (PEP 425), from the tags the wheel declared.
    tags = [
        line.split(":", 1)[1].strip().split("-")
        for line in (distribution.read_text("WHEEL") or "").splitlines()
        if line.startswith("Tag:")
    ]
    tag = "-".join(".".join(dict.fromkeys(parts)) for parts in zip(*tags, strict=True))
    name = re.sub(r"[-_.]+", "_", distribution.metadata["Name"]).lower()
    path = directory / f"{name}-{distribution.version}-{tag}.whl"
    records = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        for file in files:
            if file.as_posix() in pip_wrote:
                continue
            data = Path(str(distribution.locate_file(file))).read_bytes()
            wheel.writestr(file.as_posix(), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{file.as_posix()},sha256={digest.decode()},{len(data)}")
        wheel.writestr(f"{info}/RECORD", "\n".join([*records, f"{info}/RECORD,,"]) + "\n")
    return path


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the runtime-only install, made as the Dockerfile
    makes it but without downloading: septet's wheel built from the tracked sources, the
    wheels of its runtime dependencies made from the distributions installed here (the
    files their own wheels brought), then pip resolving septet's requirements with
    `-c constraints.txt` among those wheels alone (`--no-index`), so each dependency is
    there at its pinned version and nothing else is installed. The new environment has
    no pip of its own: this one installs into it (`pip --python`), without compiling
    bytecode ahead of the imports."""
    tmp_path = tmp_path_factory.mktemp("runtime")
    # A copy of the tracked sources, so the build leaves nothing in the checkout.
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    source = tmp_path / "source"
    for name in filter(None, listing.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "-q"]
    constraints = str(source / "constraints.txt")
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(source)], check=True
    )
    (septet,) = wheels.glob("septet-*.whl")
    for distribution in installed_closure(runtime_requirements()):
        wheel_of_installed(distribution, wheels)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = ["install", "--no-index", "--find-links", str(wheels), "-c", constraints]
    subprocess.run([*pip, "--python", python, *install, "--no-compile", str(septet)], check=True)
    return venv


def runtime_env() -> dict[str, str]:
    """The environment the runtime install's programs run in: this one, but writing
    bytecode whatever PYTHONDONTWRITEBYTECODE says (the install compiled none: each module
    is compiled when first imported, once, not again by every process)."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


@pytest.mark.slow
def test_a_runtime_only_install_runs_in_a_fresh_environment(
    runtime_venv: Path, tmp_path: Path
) -> None:
    septet = str(runtime_venv / "bin" / "septet")
    help_text = subprocess.run(
        [septet, "run", "--help"], capture_output=True, text=True, check=True, env=runtime_env()
    )
    assert "--config" in help_text.stdout
    segment = subprocess.run(
        [septet, "segment", "--json", "Привіт"],
        capture_output=True,
        text=True,
        check=True,
        env=runtime_env(),
    )
    assert '"UCS-2"' in segment.stdout
    # Every module of the package imports with the runtime dependencies alone (but those
    # of an optional extra, which this install does not have).
    extras = sorted(name.removesuffix(".py").replace("/", ".") for name in EXTRA_MODULES)
    every_module = (
        "import importlib, pkgutil, engine, bridges\n"
        "for package in (engine, bridges):\n"
        "    for module in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        # __main__ runs the CLI\n"
        f"        if not module.name.endswith('.__main__') and module.name not in {extras!r}:\n"
        "            importlib.import_module(module.name)\n"
    )
    python = str(runtime_venv / "bin" / "python")
    subprocess.run([python, "-c", every_module], check=True, cwd=tmp_path, env=runtime_env())
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    for package in DEV_AND_BENCH:
        assert f"\n{package}==" not in f"\n{installed}", package


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
def test_the_images_command_config_and_health_check_work_outside_docker(
    runtime_venv: Path, tmp_path: Path
) -> None:
    """What the image runs, run from the runtime-only install: its CMD with its config
    (state moved to a temporary directory, listeners to free ports on 127.0.0.1), until
    its HEALTHCHECK command passes; then SIGTERM drains it to exit 0 within the stop
    timeout the unit and compose give it."""
    stage = final_stage(DOCKERFILE.read_text())
    (health,) = [rest for word, rest in stage if word == "HEALTHCHECK"]
    check_command = json.loads(health.split(" CMD ", 1)[1])
    settings = load_config(IMAGE_CONFIG).settings
    assert settings.http.listen is not None
    http_port = free_port()
    config = IMAGE_CONFIG.read_text().replace("/var/lib/septet", str(tmp_path))
    config = config.replace(f'"{settings.http.listen}"', f'"127.0.0.1:{http_port}"')
    config = re.sub(r'"0\.0\.0\.0:\d+"', '"127.0.0.1:0"', config)
    (tmp_path / "septet.toml").write_text(config)
    check_command = [
        str(runtime_venv / "bin" / "python") if part == "python" else part for part in check_command
    ]
    check_command[-1] = check_command[-1].replace(
        f":{split_host_port(settings.http.listen, 'http.listen')[1]}/", f":{http_port}/"
    )
    command = [str(runtime_venv / "bin" / "septet"), "run", "--config", "septet.toml"]
    with subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=runtime_env()
    ) as daemon:
        try:
            healthy = False
            for _ in range(100):  # as Docker would: the check, until it passes (bounded)
                checked = subprocess.run(
                    check_command, capture_output=True, check=False, env=runtime_env()
                )
                if checked.returncode == 0:
                    healthy = True
                    break
                assert daemon.poll() is None, daemon.communicate()[1].decode()[-2000:]
                time.sleep(0.2)
            assert healthy
            assert (tmp_path / "septet.db").exists()
            daemon.send_signal(signal.SIGTERM)
            timeout = float(read_unit()["Service"]["TimeoutStopSec"])
            assert daemon.wait(timeout=timeout) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()


# ── the image, built and run (only where a Docker engine answers) ────────────────────


def docker_engine() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    answer = subprocess.run([docker, "info"], capture_output=True, check=False)
    return docker if answer.returncode == 0 else None


@pytest.mark.slow
def test_the_image_builds_runs_and_reports_healthy() -> None:
    docker = docker_engine()
    if docker is None:
        pytest.skip("no Docker engine answers `docker info` on this machine: image not built")
    tag = "septet-test:packaging"
    subprocess.run([docker, "build", "-t", tag, str(ROOT)], check=True)
    container = subprocess.run(
        [docker, "run", "-d", "-p", "127.0.0.1::9750", tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        port = (
            subprocess.run(
                [docker, "port", container, "9750/tcp"], capture_output=True, text=True, check=True
            )
            .stdout.split(":")[-1]
            .strip()
        )
        health = ""
        for _ in range(60):  # the HEALTHCHECK's own verdict, bounded
            health = subprocess.run(
                [docker, "inspect", "-f", "{{.State.Health.Status}}", container],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            if health == "healthy":
                break
            time.sleep(1)
        assert health == "healthy"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            assert reply.status == 200
        user = subprocess.run(
            [docker, "exec", container, "id", "-u"], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert user != "0"
        timeout = read_unit()["Service"]["TimeoutStopSec"]
        stopped = subprocess.run([docker, "stop", "-t", timeout, container], check=False)
        assert stopped.returncode == 0
        code = subprocess.run(
            [docker, "inspect", "-f", "{{.State.ExitCode}}", container],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert code == "0"
    finally:
        subprocess.run([docker, "rm", "-f", container], capture_output=True, check=False)


def test_the_unit_reloads_with_sighup_and_does_not_retry_a_start_that_cannot_work() -> None:
    service = read_unit()["Service"]
    # SIGHUP reopens the log file (engine.daemon); exit 2 is a start that cannot work.
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["RestartPreventExitStatus"] == "2"
