"""The deployment files under deploy/ say only what the code does.

- The Kubernetes overlays render (``kubectl kustomize``) and every object is valid against the
  Kubernetes schemas (``kubernetes-validate``, strict: an unknown field fails), then the facts
  operators rely on: non-root and read-only containers, the probes on the real health paths,
  preStop + grace period covering the gateway's drain, the DNS rule first in every
  NetworkPolicy, PDBs and the HPA aimed at real objects, every Secret/ConfigMap reference
  resolvable.
- compose.yaml: its services, their health checks and start order, the URLs between them.
- The Dockerfile: multi-stage, non-root, a HEALTHCHECK, the PACKAGES build argument.
- Every environment variable the files set is read by the code.

tests/test_deploy_run.py checks the probe paths against running processes and builds the image
where a Docker engine answers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from deploy_files import (
    DEPLOY,
    GATEWAY_SECRETS,
    OVERLAYS,
    ROOT,
    compose,
    compose_variables,
    containers,
    dockerfile_env,
    dockerfile_stages,
    named,
    of_kind,
    plain_env,
    render,
)

import tollway
from tollway.config import ServerSettings

#: The Kubernetes versions the manifests must be valid for: the oldest we claim, the newest known.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())

#: Health paths each component serves (tests/test_deploy_run.py asks the real processes).
GATEWAY_PATHS = {"/healthz", "/readyz", "/startupz"}
CONTROL_PLANE_PATHS = {"/api/health"}

#: ``tollway control-plane`` stops within this long after SIGTERM (its Hypercorn
#: ``graceful_timeout`` in tollway_control_plane.server.run).
CONTROL_PLANE_GRACE_SECONDS = 5


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, tree: Path) -> list[dict[str, Any]]:
    return render(request.param, tree)


def test_both_overlays_exist() -> None:
    assert OVERLAYS == ["embedded", "standalone"]


# --- Kubernetes: schemas ---------------------------------------------------------------------


def test_every_object_is_valid_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]],
) -> None:
    assert rendered
    for obj in rendered:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(
                    f"{obj['kind']} {obj['metadata']['name']} is not valid Kubernetes "
                    f"{version}: {exc.message} at {'.'.join(map(str, exc.path))}"
                ) from None


def test_the_validator_refuses_an_unknown_field(tree: Path) -> None:
    """The strict schemas do catch a misspelled field (so the test above can fail)."""
    deployment = named(render("embedded", tree), "Deployment", "tollway-gateway")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


# --- Kubernetes: the deployments ----------------------------------------------------------------


def _component(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"])


def test_containers_run_as_non_root_on_a_read_only_root(rendered: list[dict[str, Any]]) -> None:
    for deployment, container in containers(rendered):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", plain_env(container)["TOLLWAY_DATA_DIR"]} <= mounts


def test_every_container_runs_the_image_of_this_version(rendered: list[dict[str, Any]]) -> None:
    for _, container in containers(rendered):
        assert container["image"] == f"tollway:{tollway.__version__}"


def test_probes_hit_the_components_health_paths(rendered: list[dict[str, Any]]) -> None:
    expected = {
        "tollway-gateway": {
            "startupProbe": "/startupz",
            "readinessProbe": "/readyz",
            "livenessProbe": "/healthz",
        },
        "tollway-control-plane": dict.fromkeys(
            ("startupProbe", "readinessProbe", "livenessProbe"), "/api/health"
        ),
    }
    for deployment, container in containers(rendered):
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in expected[_component(deployment)].items():
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{_component(deployment)} {probe}"
            assert get["port"] in ports
        if _component(deployment) == "tollway-gateway":
            addr = plain_env(container)["SERVER_ADDR"]
            assert addr.rsplit(":", 1)[1] == str(ports["http"])
        else:
            args = container["args"]
            assert args[0] == "control-plane"
            assert args[args.index("--port") + 1] == str(ports["http"])


def _prestop_sleep(container: dict[str, Any]) -> int:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return int(command[1])


def test_grace_period_covers_prestop_and_the_drain(rendered: list[dict[str, Any]]) -> None:
    """Kubernetes kills the pod terminationGracePeriodSeconds after it starts the preStop hook:
    that must leave the gateway its whole drain (SERVER_DRAIN_DELAY_SECONDS, then
    SERVER_GRACEFUL_SECONDS for the streams in progress)."""
    defaults = ServerSettings()
    for deployment, container in containers(rendered):
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        sleep = _prestop_sleep(container)
        assert sleep >= 1
        if _component(deployment) == "tollway-gateway":
            env = plain_env(container)
            drain = float(env.get("SERVER_DRAIN_DELAY_SECONDS", defaults.drain_delay_seconds))
            graceful = float(env.get("SERVER_GRACEFUL_SECONDS", defaults.graceful_seconds))
            assert grace >= sleep + drain + graceful, (grace, sleep, drain, graceful)
        else:
            assert grace >= sleep + CONTROL_PLANE_GRACE_SECONDS


def test_references_resolve(rendered: list[dict[str, Any]]) -> None:
    """Every Secret / ConfigMap a pod names is in the render, with the key it asks for."""
    secrets = {s["metadata"]["name"]: s for s in of_kind(rendered, "Secret")}
    config_maps = {c["metadata"]["name"]: c for c in of_kind(rendered, "ConfigMap")}
    for deployment, container in containers(rendered):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] in secrets, f"{env['name']}: no Secret {ref['name']}"
                assert ref["key"] in secrets[ref["name"]]["data"], f"{env['name']}: no key"
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        names = {v["name"] for v in volumes}
        assert {m["name"] for m in container["volumeMounts"]} <= names
        for volume in volumes:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                named(rendered, "PersistentVolumeClaim", claim)


def test_the_three_gateway_secrets_come_from_one_secret(rendered: list[dict[str, Any]]) -> None:
    for _, container in containers(rendered):
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert set(GATEWAY_SECRETS) <= set(refs)
        assert len({refs[n]["name"] for n in GATEWAY_SECRETS}) == 1
        assert all(refs[n]["key"] == n for n in GATEWAY_SECRETS)
        assert refs[GATEWAY_SECRETS[0]]["name"].startswith("tollway-gateway-secrets")


def test_the_config_file_is_the_mounted_configmap(rendered: list[dict[str, Any]]) -> None:
    (config_map,) = of_kind(rendered, "ConfigMap")
    assert set(config_map["data"]) == {"tollway.toml"}
    for deployment, container in containers(rendered):
        path = Path(plain_env(container)["TOLLWAY_CONFIG"])
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
        (volume,) = [
            v
            for v in deployment["spec"]["template"]["spec"]["volumes"]
            if v["name"] == mount["name"]
        ]
        assert volume["configMap"]["name"] == config_map["metadata"]["name"]


def test_services_select_pods_and_name_their_ports(rendered: list[dict[str, Any]]) -> None:
    for service in of_kind(rendered, "Service"):
        selector = service["spec"]["selector"]
        matches = [
            (d, c)
            for d, c in containers(rendered)
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matches, f"Service {service['metadata']['name']} selects no pod"
        for _, container in matches:
            names = {p["name"] for p in container["ports"]}
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in names


# --- Kubernetes: network policies, disruption, scaling ------------------------------------------


def _is_dns(rule: dict[str, Any]) -> bool:
    ports = {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])}
    return ports == {(53, "UDP"), (53, "TCP")}


def test_network_policies_put_dns_first_and_cover_every_pod(
    rendered: list[dict[str, Any]],
) -> None:
    policies = of_kind(rendered, "NetworkPolicy")
    for policy in policies:
        assert "Egress" in policy["spec"]["policyTypes"]
        egress = policy["spec"]["egress"]
        assert _is_dns(egress[0]), f"{policy['metadata']['name']}: the first egress rule is not DNS"
        assert not any(_is_dns(rule) for rule in egress[1:])
    for deployment in of_kind(rendered, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(
            p["spec"]["podSelector"]["matchLabels"].items() <= labels.items() for p in policies
        ), f"no NetworkPolicy selects {deployment['metadata']['name']}"


def _egress_ports(objects: list[dict[str, Any]], name: str) -> set[int]:
    policy = named(objects, "NetworkPolicy", name)
    return {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}


def test_embedded_is_one_replica_on_a_persistent_volume(tree: Path) -> None:
    objects = render("embedded", tree)
    gateway = named(objects, "Deployment", "tollway-gateway")
    assert gateway["spec"]["replicas"] == 1
    assert gateway["spec"]["strategy"] == {"type": "Recreate"}
    assert not of_kind(objects, "HorizontalPodAutoscaler")
    (data,) = [v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert set(data) == {"name", "persistentVolumeClaim"}
    assert "LW_GATEWAY_BASE_URL" not in plain_env(
        gateway["spec"]["template"]["spec"]["containers"][0]
    )
    assert _egress_ports(objects, "tollway-gateway") == {53, 443}


def test_standalone_gateways_reach_the_control_plane_service(tree: Path) -> None:
    objects = render("standalone", tree)
    gateway = named(objects, "Deployment", "tollway-gateway")
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    url = urlsplit(plain_env(container)["LW_GATEWAY_BASE_URL"])
    service = named(objects, "Service", str(url.hostname))
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    refs = {e["name"] for e in container["env"] if "valueFrom" in e}
    assert "GATEWAY_REDIS_URL" in refs
    assert {5560, 6379} <= _egress_ports(objects, "tollway-gateway")
    cp = named(objects, "Deployment", "tollway-control-plane")
    (cp_container,) = cp["spec"]["template"]["spec"]["containers"]
    assert {"TOLLWAY_DATABASE_URL", "TOLLWAY_ADMIN_TOKEN"} <= {
        e["name"] for e in cp_container["env"]
    }
    assert 5432 in _egress_ports(objects, "tollway-control-plane")


def test_standalone_has_disruption_budgets_and_an_autoscaler(tree: Path) -> None:
    objects = render("standalone", tree)
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    # The autoscaler owns its Deployment's count: a replicas field would reset it on each apply.
    assert "replicas" not in deployments[hpa["spec"]["scaleTargetRef"]["name"]]["spec"]
    replicas = {
        name: d["spec"].get("replicas", hpa["spec"]["minReplicas"])
        for name, d in deployments.items()
    }
    covered = set()
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        for name, d in deployments.items():
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items():
                assert pdb["spec"]["minAvailable"] < replicas[name]
                covered.add(name)
    assert covered == set(deployments)
    target = hpa["spec"]["scaleTargetRef"]
    scaled = deployments[target["name"]]
    assert target["kind"] == "Deployment" and target["name"] == "tollway-gateway"
    assert hpa["spec"]["minReplicas"] >= 2
    (container,) = scaled["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"]  # the HPA's utilisation needs a request


# --- compose.yaml --------------------------------------------------------------------------------


def test_compose_services_health_checks_and_start_order() -> None:
    services = compose()["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "simulator",
        "control-plane",
        "gateway-1",
        "gateway-2",
    }
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        for dep, how in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert how == {"condition": "service_healthy"}
    assert set(services["control-plane"]["depends_on"]) == {"postgres"}
    for gateway in ("gateway-1", "gateway-2"):
        assert set(services[gateway]["depends_on"]) == {"control-plane", "redis", "simulator"}


def _listen_port(service: dict[str, Any]) -> int:
    command = service["command"]
    return int(command[command.index("--port") + 1])


def _health_url(service: dict[str, Any]) -> str:
    found = re.search(r"http://127\.0\.0\.1:\d+\S*?(?=')", " ".join(service["healthcheck"]["test"]))
    assert found, service["healthcheck"]
    return found.group(0)


def test_compose_health_checks_and_urls_match_the_services() -> None:
    services = compose()["services"]
    cp = services["control-plane"]
    assert cp["command"][0] == "control-plane"
    assert urlsplit(_health_url(cp)).port == _listen_port(cp)
    assert urlsplit(_health_url(cp)).path in CONTROL_PLANE_PATHS
    assert urlsplit(_health_url(services["simulator"])).port == _listen_port(services["simulator"])
    # As compose interpolates it (the password from deploy/.env).
    db_url = urlsplit(re.sub(r"\$\{[^}]*\}", "password", cp["environment"]["TOLLWAY_DATABASE_URL"]))
    assert db_url.hostname == "postgres" and db_url.port == 5432
    assert db_url.path == "/" + services["postgres"]["environment"]["POSTGRES_DB"]
    for name in ("gateway-1", "gateway-2"):
        gateway = services[name]
        assert gateway["command"][0] == "serve"
        env = gateway["environment"]
        base = urlsplit(env["LW_GATEWAY_BASE_URL"])
        assert base.hostname == "control-plane" and base.port == _listen_port(cp)
        assert urlsplit(env["GATEWAY_REDIS_URL"]).hostname == "redis"
        health = urlsplit(_health_url(gateway))
        assert health.path in GATEWAY_PATHS
        assert [p.split(":")[-1] for p in gateway["ports"]] == [str(health.port)]
        assert set(GATEWAY_SECRETS) <= set(env)
        mounts = dict(reversed(v.split(":")[:2]) for v in gateway["volumes"])
        assert mounts["/etc/tollway/tollway.toml"] == "./tollway.toml"
        data = mounts[dockerfile_env()["TOLLWAY_DATA_DIR"]]
        assert data == f"{name}-data" and data in compose()["volumes"]
        grace = int(gateway["stop_grace_period"].rstrip("s"))
        drain = float(env["SERVER_DRAIN_DELAY_SECONDS"]) + float(env["SERVER_GRACEFUL_SECONDS"])
        assert grace >= drain
    assert set(GATEWAY_SECRETS) <= set(cp["environment"])


def test_compose_gateways_config_points_at_the_simulator(tmp_path: Path) -> None:
    """deploy/tollway.toml loads as the gateways would load it, and its providers are the
    simulator service."""
    env = {
        "PATH": "/usr/bin:/bin",
        "TOLLWAY_CONFIG": str(DEPLOY / "tollway.toml"),
        "TOLLWAY_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tollway", "config", "show", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=DEPLOY.parent,
    )
    assert done.returncode == 0, done.stderr
    providers = json.loads(done.stdout)["providers"]
    sim = compose()["services"]["simulator"]
    assert providers
    for p in providers:
        url = urlsplit(p["base_url"])
        assert (url.hostname, url.port) == ("simulator", _listen_port(sim))


def test_compose_variables_are_all_made_by_secrets_sh() -> None:
    """Every ``${NAME:?…}`` compose needs comes out of ``deploy/secrets.sh``."""
    done = subprocess.run(
        ["sh", str(DEPLOY / "secrets.sh")], capture_output=True, text=True, timeout=30
    )
    made = {line.split("=", 1)[0] for line in done.stdout.splitlines()}
    assert compose_variables() - {"TOLLWAY_IMAGE"} == made
    assert all(len(line.split("=", 1)[1]) == 64 for line in done.stdout.splitlines())
    gateway_only = subprocess.run(
        ["sh", str(DEPLOY / "secrets.sh"), "gateway"], capture_output=True, text=True, timeout=30
    )
    assert [line.split("=")[0] for line in gateway_only.stdout.splitlines()] == list(
        GATEWAY_SECRETS
    )


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    build = stages[0][0][1]
    assert re.search(r"\bAS build$", build, re.I)
    final = stages[-1]
    words = [word for word, _ in final]
    assert ("COPY", "--from=build /opt/tollway /opt/tollway") in final
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    (healthcheck,) = [rest for word, rest in final if word == "HEALTHCHECK"]
    path = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", healthcheck)
    assert path and path.group(2) in GATEWAY_PATHS
    assert dockerfile_env()["SERVER_ADDR"] == f":{path.group(1)}"
    assert words.index("USER") > words.index("COPY")  # nothing after runs as root
    assert [rest for word, rest in final if word == "ENTRYPOINT"] == ['["tollway"]']


def _package_script() -> str:
    """The build stage's package selection, up to (not including) the install."""
    (run,) = [rest for word, rest in dockerfile_stages()[0] if word == "RUN"]
    script = run.split("python -m venv", 1)[0]
    return script + ' echo "$dirs"'


def _select(packages: str | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if packages is not None:
        env["PACKAGES"] = packages
    else:
        (arg,) = [rest for word, rest in dockerfile_stages()[0] if word == "ARG"]
        name, _, default = arg.partition("=")
        assert name == "PACKAGES"
        env["PACKAGES"] = default.strip('"')
    return subprocess.run(
        ["sh", "-c", _package_script()], env=env, cwd=ROOT, capture_output=True, text=True
    )


def test_dockerfile_packages_default_to_every_plugin_and_provider() -> None:
    done = _select(None)
    assert done.returncode == 0, done.stderr
    chosen = {d.removeprefix("./") for d in done.stdout.split()}
    every = {
        str(p.parent.relative_to(ROOT))
        for p in [*ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("providers/*/pyproject.toml")]
    }
    assert chosen == every


def test_dockerfile_packages_build_argument_selects_and_refuses() -> None:
    done = _select("providers/openai plugins/vk-auth/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["./providers/openai", "./plugins/vk-auth"]
    wrong = _select("providers/openai plugins/nope")
    assert wrong.returncode != 0
    assert "PACKAGES: 'plugins/nope' is not a package directory" in wrong.stderr


# --- environment variables ----------------------------------------------------------------------

#: Variables the files set that no Tollway package reads, each with its reason.
NOT_TOLLWAYS = {
    "PATH": "the image's venv first",
    "PYTHONUNBUFFERED": "Python's own: log lines leave at once",
    "PYTHONDONTWRITEBYTECODE": "Python's own: the root filesystem is read-only",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip's own (build stage)",
    "PIP_NO_CACHE_DIR": "pip's own (build stage)",
    "POSTGRES_USER": "the postgres image's",
    "POSTGRES_DB": "the postgres image's",
    "POSTGRES_PASSWORD": "the postgres image's",
}


def _env_names_set(tree: Path) -> dict[str, str]:
    names: dict[str, str] = {}
    for name in dockerfile_env():
        names[name] = "deploy/Dockerfile"
    for service_name, service in compose()["services"].items():
        for name in service.get("environment", {}):
            names[name] = f"deploy/compose.yaml ({service_name})"
    for overlay in OVERLAYS:
        objects = render(overlay, tree)
        for deployment, container in containers(objects):
            for env in container.get("env", []):
                names[env["name"]] = (
                    f"deploy/kubernetes {overlay} ({deployment['metadata']['name']})"
                )
        for secret in of_kind(objects, "Secret"):
            for name in secret["data"]:
                names[name] = f"deploy/kubernetes {overlay} (Secret {secret['metadata']['name']})"
    return names


def _sources() -> str:
    parts = []
    for top in ("core/src", "plugins", "providers"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "tests" not in path.relative_to(ROOT).parts and "template" not in path.parts:
                parts.append(path.read_text())
    return "\n".join(parts)


def test_every_environment_variable_set_is_read_by_the_code(tree: Path) -> None:
    names = _env_names_set(tree)
    assert {"LW_GATEWAY_BASE_URL", "TOLLWAY_DATABASE_URL", "SERVER_GRACEFUL_SECONDS"} <= set(names)
    sources = _sources()
    for name, where in sorted(names.items()):
        if name in NOT_TOLLWAYS:
            continue
        assert re.search(rf"\b{name}\b", sources), (
            f"{where} sets {name}, which no Tollway package reads: fix the file, or add it to "
            "NOT_TOLLWAYS in tests/test_deploy.py with the reason"
        )


def test_deploy_files_are_ignored_where_secret() -> None:
    ignored = (ROOT / ".gitignore").read_text()
    assert "deploy/.env" in ignored and "deploy/kubernetes/**/*.env" in ignored
