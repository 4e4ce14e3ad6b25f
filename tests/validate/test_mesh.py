"""The mesh and Kubernetes deliverables, offline:

- `make oci`: the OCI image layout holds the built .wasm the way Istio's
  agent unpacks it, reproducibly; `make push` keeps the digest (against a
  local registry when `docker-registry` and `skopeo` are installed);
- `make mesh`: the rendered manifests carry the digest `make oci` produced;
- every Istio resource against Istio's CRD schemas (strict: unknown fields
  fail), every kustomization rendered by `kubectl kustomize` and checked by
  `kubernetes-validate --strict` (Kubernetes 1.34), every Envoy config by
  `envoy --mode validate`, every plugin config by `llmgw config check`;
- the pieces agree with each other: cluster names, ServiceEntries,
  DestinationRules, Secret mounts, environment variables.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
ENVOY = VENV_BIN / "envoy"
KUBECTL = VENV_BIN / "kubectl"
KUBE_VALIDATE = VENV_BIN / "kubernetes-validate"
CLI = ROOT / "target" / "release" / "llmgw"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "llm_gateway.wasm"
ISTIO_SCHEMAS = ROOT.parent / "shared" / "schemas" / "istio"
#: Kubernetes version the core objects are validated against (Istio 1.28
#: supports 1.30 to 1.34; image volumes need 1.33+ with ImageVolume).
K8S_VERSION = "1.34.0"
PY = sys.executable

sys.path.insert(0, str(ROOT / "scripts"))
import mesh  # noqa: E402
import oci  # noqa: E402
from netutil import free_port  # noqa: E402

OVERLAYS = ["k8s/overlays/standalone", "k8s/overlays/standalone-wasm-init",
            "k8s/overlays/standalone-global-ratelimit", "k8s/overlays/istio-ingress"]
ISTIO_KUSTOMIZATIONS = ["istio/gateway", "istio/sidecar", "istio/egress"]
ENV = {"AZURE_OPENAI_API_KEY": "x", "BEDROCK_ACCESS_KEY_ID": "x", "BEDROCK_SECRET_ACCESS_KEY": "x"}


def run(args, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 180)
    return subprocess.run([str(a) for a in args], cwd=ROOT, **kw)


def docs_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def kustomize(path: str | Path) -> list[dict]:
    r = run([KUBECTL, "kustomize", path])
    assert r.returncode == 0, r.stderr
    return docs_of(r.stdout)


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------ OCI image

@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    if not WASM.exists():
        pytest.fail("build first (make build): no .wasm")
    out = tmp_path_factory.mktemp("oci") / "llm-gateway"
    r = run([PY, "scripts/oci.py", "build", "--out", out, "--tag", "1.2.3"])
    assert r.returncode == 0, r.stderr
    return out


def read_image(get_blob, manifest_bytes: bytes) -> bytes:
    """What Istio's agent does with an image (pkg/wasm/imagefetcher.go):
    not a Docker manifest, so the last layer must be an OCI tar+gzip layer
    holding a file whose base name is plugin.wasm."""
    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == oci.MT_MANIFEST
    assert manifest["config"]["mediaType"] == oci.MT_CONFIG
    assert len(manifest["layers"]) == 1
    layer = manifest["layers"][-1]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    blob = get_blob(layer["digest"])
    assert len(blob) == layer["size"] and "sha256:" + sha256(blob) == layer["digest"]
    config = json.loads(get_blob(manifest["config"]["digest"]))
    tar_bytes = gzip.decompress(blob)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + sha256(tar_bytes)]
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
        assert [os.path.basename(m.name) for m in members] == ["plugin.wasm"]
        return tar.extractfile(members[0]).read()


def test_oci_layout_holds_the_built_wasm(layout):
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["mediaType"] == oci.MT_INDEX and len(index["manifests"]) == 1
    desc = index["manifests"][0]
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "1.2.3"
    algo, digest = desc["digest"].split(":")
    manifest = (layout / "blobs" / algo / digest).read_bytes()
    assert sha256(manifest) == digest and len(manifest) == desc["size"]

    def blob(d):
        a, h = d.split(":")
        return (layout / "blobs" / a / h).read_bytes()

    wasm = read_image(blob, manifest)
    assert sha256(wasm) == sha256(WASM.read_bytes())
    assert wasm[:4] == b"\0asm"
    # Nothing in the layout but what the index reaches.
    m = json.loads(manifest)
    reachable = {digest, m["config"]["digest"].split(":")[1], m["layers"][0]["digest"].split(":")[1]}
    assert {p.name for p in (layout / "blobs" / "sha256").iterdir()} == reachable


def test_oci_build_is_reproducible(layout, tmp_path):
    r = run([PY, "scripts/oci.py", "build", "--out", tmp_path / "again", "--tag", "1.2.3"])
    assert r.returncode == 0, r.stderr
    assert oci.layout_digest(tmp_path / "again") == oci.layout_digest(layout)
    # ... and the tag is in the index, not in the manifest: another tag, same digest.
    r = run([PY, "scripts/oci.py", "build", "--out", tmp_path / "other", "--tag", "2.0.0"])
    assert oci.layout_digest(tmp_path / "other") == oci.layout_digest(layout)


def test_oci_docker_context_matches(layout):
    ctx = layout.parent / "docker-context"
    assert (ctx / "plugin.wasm").read_bytes() == WASM.read_bytes()
    lines = [ln for ln in (ctx / "Dockerfile").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines == ["FROM scratch", "COPY plugin.wasm ./"]


@pytest.fixture
def registry(tmp_path):
    exe = shutil.which("docker-registry")
    if not exe or not shutil.which("skopeo"):
        pytest.skip("docker-registry and skopeo not installed (make setup installs them as root)")
    port = free_port()
    cfg = tmp_path / "registry.yml"
    cfg.write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"}}))
    p = subprocess.Popen([exe, "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_push_keeps_the_digest_istio_checks(layout, registry):
    """`make push` (skopeo) to a local registry, then the image read back
    over the registry API the way Istio's agent reads it."""
    r = run(["make", "-s", "push", f"REGISTRY={registry}", "INSECURE=1", f"OCI_DIR={layout}", "TAG=1.2.3"],
            timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    base = f"http://{registry}/v2/{oci.REPOSITORY}"
    req = urllib.request.Request(f"{base}/manifests/1.2.3", headers={
        "Accept": f"{oci.MT_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        manifest = resp.read()
        assert resp.headers["Docker-Content-Digest"] == "sha256:" + oci.layout_digest(layout)
    assert sha256(manifest) == oci.layout_digest(layout)

    def blob(d):
        with urllib.request.urlopen(f"{base}/blobs/{d}", timeout=10) as resp:
            return resp.read()

    assert sha256(read_image(blob, manifest)) == sha256(WASM.read_bytes())


def test_make_oci_and_make_mesh(tmp_path):
    """The README's commands: `make oci`, then `make mesh REGISTRY=... TAG=...`
    renders the manifests with the digest `make oci` produced."""
    layout_dir, out = tmp_path / "oci", tmp_path / "mesh"
    r = run(["make", "-s", "oci", f"OCI_DIR={layout_dir}", "TAG=3.4.5"], timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(["make", "-s", "mesh", "REGISTRY=registry.acme.test/platform", "TAG=3.4.5",
             f"OCI_DIR={layout_dir}", f"MESH_OUT={out}"], timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    digest = oci.layout_digest(layout_dir)
    text = (out / "istio/gateway/llm-gateway-envoyfilter.yaml").read_text()
    assert f"sha256: {digest}" in text or f"sha256: '{digest}'" in text
    assert "oci://registry.acme.test/platform/llm-gateway:3.4.5" in text
    # A Docker-built image: its own digest, no OCI build needed.
    r = run(["make", "-s", "mesh", "REGISTRY=r.test", "TAG=1", "DIGEST=" + "ab" * 32, f"MESH_OUT={out}2"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ab" * 32 in (out.parent / "mesh2/istio/gateway/llm-gateway-envoyfilter.yaml").read_text()


def test_make_push_needs_a_registry():
    r = run(["make", "-s", "push"])
    assert r.returncode != 0
    assert "REGISTRY" in r.stdout + r.stderr


# ------------------------------------------------------------------ generated files, rendering

def test_generated_files_are_current():
    r = run([PY, "scripts/mesh.py", "generate", "--check"])
    assert r.returncode == 0, r.stderr


def test_mesh_models_are_envoy_yaml_models():
    """The cluster config serves the shipped models of its providers, same
    names, upstream models and prices (copied by `mesh.py generate`); a
    model with deployments when it has every deployment's provider, and
    then the shipped `routing` too."""
    cfg = json.loads((ROOT / "k8s" / "plugin-config.json").read_text())
    shipped = mesh.shipped_plugin_config()
    names = {p["name"] for p in cfg["providers"]}

    def served(m):
        if "deployments" in m:
            return all(d["provider"] in names for d in m["deployments"])
        return m["provider"] in names

    assert cfg["models"] == [m for m in shipped["models"] if served(m)]
    assert len(cfg["models"]) >= 6
    assert [m for m in cfg["models"] if "deployments" in m]
    assert cfg["routing"] == shipped["routing"]


#: Files that embed the cluster plugin config without the routed models.
ISTIO_PLUGIN_FILES = ["istio/sidecar/llm-gateway-envoyfilter.yaml", "istio/wasmplugin/gateway.yaml",
                      "istio/wasmplugin/namespace.yaml"]
#: The ingress gateway's: the whole config (routing patched in).
GATEWAY_PLUGIN_FILES = ["istio/gateway/llm-gateway-envoyfilter.yaml", "tests/e2e/ingress/ecds.yaml",
                        "tests/e2e/ingress/ecds-upstream.yaml"]


def embedded_plugin_configs(path: str) -> list[dict]:
    """Every plugin config in a file: WasmPlugin pluginConfig, and the
    configuration of every Wasm filter config (EnvoyFilter patch, ECDS)."""
    out = []
    for doc in docs_of((ROOT / path).read_text()):
        if doc.get("kind") == "WasmPlugin":
            out.append(doc["spec"]["pluginConfig"])
        mesh.walk(doc, lambda d: out.append(json.loads(d["config"]["configuration"]["value"]))
                  if d.get("@type") == mesh.WASM_TYPE else None)
    return out


@pytest.mark.parametrize("path", ISTIO_PLUGIN_FILES)
def test_istio_plugin_config_has_no_routing(path):
    """Sidecars get no routing cluster nor deployment listeners (see
    mesh.istio_plugin_config), so their plugin config is the cluster config
    without the models that have deployments and without `routing`; nothing
    else differs."""
    cfg = json.loads((ROOT / "k8s" / "plugin-config.json").read_text())
    want = {**cfg, "models": [m for m in cfg["models"] if "deployments" not in m]}
    del want["routing"]
    routed = {m["name"] for m in cfg["models"] if "deployments" in m}
    # The cluster config refers to its routed models only from routed models.
    assert not any(set(m.get("fallbacks", [])) & routed or m.get("context_window_fallback") in routed
                   for m in want["models"])
    found = embedded_plugin_configs(path)
    assert found
    for got in found:
        assert got == want


@pytest.mark.parametrize("path", GATEWAY_PLUGIN_FILES)
def test_gateway_plugin_config_is_the_whole_cluster_config(path):
    cfg = json.loads((ROOT / "k8s" / "plugin-config.json").read_text())
    assert any("deployments" in m for m in cfg["models"]) and "routing" in cfg
    found = embedded_plugin_configs(path)
    assert found
    for got in found:
        assert got == cfg


def test_istio_plugin_config_drops_references_to_routed_models():
    cfg = json.loads((ROOT / "k8s" / "plugin-config.json").read_text())
    routed = next(m["name"] for m in cfg["models"] if "deployments" in m)
    cfg["models"].append({"name": "big", "provider": "openai", "context_window_fallback": routed})
    cfg["quotas"]["teams"]["team-b"]["models"] = {routed: {"requests_per_minute": 1},
                                                 "gpt-4o-mini": {"requests_per_minute": 2}}
    out = mesh.istio_plugin_config(cfg)
    assert routed not in {m["name"] for m in out["models"]} and "routing" not in out
    assert "context_window_fallback" not in next(m for m in out["models"] if m["name"] == "big")
    assert out["quotas"]["teams"]["team-b"]["models"] == {"gpt-4o-mini": {"requests_per_minute": 2}}
    cfg["default_model"] = routed
    with pytest.raises(SystemExit):
        mesh.istio_plugin_config(cfg)


@pytest.fixture(scope="module")
def rendered(layout, tmp_path_factory):
    out = tmp_path_factory.mktemp("render") / "mesh"
    r = run([PY, "scripts/mesh.py", "render", "--out", out, "--image", "reg.test:5000/team/llm-gateway:1.2.3",
             "--layout", layout])
    assert r.returncode == 0, r.stderr
    return out


def test_render_puts_the_built_digest_everywhere(rendered, layout):
    digest = oci.layout_digest(layout)
    texts = {p: p.read_text() for p in rendered.rglob("*") if p.is_file()}
    for p, t in texts.items():
        assert mesh.DIGEST_PLACEHOLDER not in t, p
        assert "registry.example.com" not in t, p
    ef = docs_of((rendered / "istio/gateway/llm-gateway-envoyfilter.yaml").read_text())[0]
    ext = next(c for c in ef["spec"]["configPatches"] if c["applyTo"] == "EXTENSION_CONFIG")
    remote = ext["patch"]["value"]["typed_config"]["config"]["vm_config"]["code"]["remote"]
    assert remote["sha256"] == digest
    assert remote["http_uri"]["uri"] == "oci://reg.test:5000/team/llm-gateway:1.2.3"
    for wp in (rendered / "istio/wasmplugin").glob("*.yaml"):
        spec = docs_of(wp.read_text())[0]["spec"]
        assert spec["sha256"] == digest and spec["url"] == "oci://reg.test:5000/team/llm-gateway:1.2.3"
    # Kubernetes pins repository@digest (image volume and init container).
    dep = next(d for d in kustomize(rendered / "k8s/overlays/standalone") if d["kind"] == "Deployment")
    wasm_vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "wasm")
    assert wasm_vol["image"]["reference"] == f"reg.test:5000/team/llm-gateway@sha256:{digest}"
    dep = next(d for d in kustomize(rendered / "k8s/overlays/standalone-wasm-init") if d["kind"] == "Deployment")
    init = dep["spec"]["template"]["spec"]["initContainers"][0]
    assert {e["name"]: e.get("value") for e in init["env"]}["WASM_IMAGE"] == \
        f"reg.test:5000/team/llm-gateway@sha256:{digest}"


@pytest.mark.parametrize("kustomization", OVERLAYS + ISTIO_KUSTOMIZATIONS)
def test_rendered_kustomizations_render(rendered, kustomization):
    """What the README applies: `kubectl apply -k target/mesh/...`."""
    docs = kustomize(rendered / kustomization)
    assert docs and "registry.example.com" not in yaml.safe_dump_all(docs)


def test_make_mesh_generate_is_idempotent():
    r = run(["make", "-s", "mesh-generate"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert run([PY, "scripts/mesh.py", "generate", "--check"]).returncode == 0


def test_render_rejects_a_bad_digest(tmp_path):
    r = run([PY, "scripts/mesh.py", "render", "--out", tmp_path / "m", "--image", "r/llm-gateway:1",
             "--digest", "abc"])
    assert r.returncode != 0 and "64 hex" in r.stderr


# ------------------------------------------------------------------ Istio resources

def istio_schema(doc: dict) -> dict:
    group, version = doc["apiVersion"].split("/")
    path = ISTIO_SCHEMAS / f"{doc['kind'].lower()}-{group.split('.')[0]}-{version}.json"
    assert path.exists(), f"no schema for {doc['apiVersion']} {doc['kind']}"
    return json.loads(path.read_text())


def is_istio(doc: dict) -> bool:
    return doc.get("apiVersion", "").split("/")[0].endswith(".istio.io")


def validate_istio(doc: dict) -> None:
    schema = istio_schema(doc)
    jsonschema.validators.validator_for(schema)(schema).validate(doc)


def istio_files() -> list[Path]:
    return sorted(p for p in (ROOT / "istio").rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", istio_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_istio_resources_match_the_crd_schemas(path):
    docs = docs_of(path.read_text())
    assert docs
    for doc in docs:
        if is_istio(doc):
            validate_istio(doc)


def test_rendered_istio_resources_match_the_crd_schemas(rendered):
    n = 0
    for k in ISTIO_KUSTOMIZATIONS:
        for doc in kustomize(rendered / k):
            if is_istio(doc):
                validate_istio(doc)
                n += 1
    for wp in (rendered / "istio/wasmplugin").glob("*.yaml"):
        for doc in docs_of(wp.read_text()):
            validate_istio(doc)
            n += 1
    assert n > 20


def test_istio_schema_validation_is_strict():
    doc = docs_of((ROOT / "istio/gateway/gateway.yaml").read_text())[0]
    doc["spec"]["servers"][0]["tls"]["credentialNmae"] = "typo"
    with pytest.raises(jsonschema.ValidationError):
        validate_istio(doc)
    wp = docs_of((ROOT / "istio/wasmplugin/gateway.yaml").read_text())[0]
    wp["spec"]["allowOnHeadersStopIteration"] = True  # the field Istio lacks
    with pytest.raises(jsonschema.ValidationError):
        validate_istio(wp)


def envoyfilter_patches(path: str) -> list[dict]:
    return docs_of((ROOT / path).read_text())[0]["spec"]["configPatches"]


@pytest.mark.parametrize("path", ["istio/gateway/llm-gateway-envoyfilter.yaml",
                                  "istio/sidecar/llm-gateway-envoyfilter.yaml"])
def test_envoyfilter_installs_the_filter_so_it_can_hold_headers(path):
    patches = envoyfilter_patches(path)
    ext = [p for p in patches if p["applyTo"] == "EXTENSION_CONFIG"
           and p["patch"]["value"]["name"] == mesh.FILTER]
    assert len(ext) == 1 and ext[0]["patch"]["operation"] == "ADD"
    config = ext[0]["patch"]["value"]["typed_config"]["config"]
    assert config["allow_on_headers_stop_iteration"] is True
    assert config["failure_policy"] in ("FAIL_RELOAD", "FAIL_CLOSED")
    assert "oci://" in config["vm_config"]["code"]["remote"]["http_uri"]["uri"]
    hf = next(p for p in patches if p["applyTo"] == "HTTP_FILTER")
    assert hf["patch"]["operation"] == "INSERT_BEFORE"
    assert hf["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
    value = hf["patch"]["value"]
    assert value["name"] == ext[0]["patch"]["value"]["name"]
    assert value["config_discovery"]["type_urls"] == [mesh.WASM_TYPE]
    assert value["config_discovery"]["config_source"]["initial_fetch_timeout"] == "0s"


def test_audit_access_log_provider_is_envoy_yaml_format():
    values = yaml.safe_load((ROOT / "istio/istiod-values-llm-audit.yaml").read_text())
    provider = values["meshConfig"]["extensionProviders"][0]
    shipped = mesh.shipped_hcm(mesh.shipped_envoy())["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert provider["envoyFileAccessLog"]["logFormat"]["labels"] == shipped
    assert "%FILTER_STATE(wasm.llmgw_caller:PLAIN)%" in shipped.values()
    tel = docs_of((ROOT / "istio/gateway/telemetry.yaml").read_text())[0]
    assert tel["spec"]["accessLogging"][0]["providers"] == [{"name": provider["name"]}]


def test_wasmplugin_reference_is_marked_and_never_applied():
    for p in (ROOT / "istio/wasmplugin").glob("*.yaml"):
        text = p.read_text()
        assert "DO NOT APPLY" in text and "HANG" in text, p
    for k in (ROOT / "istio").rglob("kustomization.yaml"):
        assert "wasmplugin" not in k.read_text(), k
    for k in ISTIO_KUSTOMIZATIONS:
        assert not [d for d in kustomize(ROOT / k) if d["kind"] == "WasmPlugin"]


def test_wasmplugin_reference_fields():
    gw = docs_of((ROOT / "istio/wasmplugin/gateway.yaml").read_text())[0]["spec"]
    ns = docs_of((ROOT / "istio/wasmplugin/namespace.yaml").read_text())[0]["spec"]
    cfg = json.loads((ROOT / "k8s/plugin-config.json").read_text())
    for spec in (gw, ns):
        assert spec["phase"] == "STATS" and spec["failStrategy"] == "FAIL_RELOAD"
        assert spec["imagePullPolicy"] == "IfNotPresent" and spec["url"].startswith("oci://")
        assert spec["pluginConfig"] == mesh.istio_plugin_config(cfg)
        assert {e["name"] for e in spec["vmConfig"]["env"]} == set(mesh.env_names(cfg))
        assert all(e["valueFrom"] == "HOST" for e in spec["vmConfig"]["env"])
    assert gw["selector"]["matchLabels"] == mesh.GATEWAY_LABELS
    assert ns["match"] == [{"mode": "CLIENT", "ports": [{"number": 80}]}]


def test_every_provider_cluster_is_an_istio_service_entry():
    """The filter routes to `cluster`; Istio generates outbound|443||HOST for
    a ServiceEntry host on port 443, and the DestinationRule originates TLS
    with that SNI."""
    cfg = json.loads((ROOT / "k8s/plugin-config.json").read_text())
    docs = kustomize(ROOT / "istio/egress")
    se = {d["spec"]["hosts"][0]: d for d in docs if d["kind"] == "ServiceEntry"}
    dr = {d["spec"]["host"]: d for d in docs if d["kind"] == "DestinationRule"}
    assert len(se) == len(cfg["providers"]) == len(dr)
    for p in cfg["providers"]:
        assert p["cluster"] == f"outbound|443||{p['host']}"
        s = se[p["host"]]["spec"]
        assert [port["number"] for port in s["ports"]] == [443] and s["resolution"] == "DNS"
        tls = dr[p["host"]]["spec"]["trafficPolicy"]["portLevelSettings"][0]
        assert tls["port"]["number"] == 443
        assert tls["tls"] == {"mode": "SIMPLE", "sni": p["host"]}
    hosts = {p["host"] for p in cfg["providers"]}
    assert "api.openai.com" in hosts and "generativelanguage.googleapis.com" in hosts
    assert any(h.endswith(".openai.azure.com") for h in hosts)
    assert any(h.endswith("-aiplatform.googleapis.com") for h in hosts)
    assert any(h.startswith("bedrock-runtime.") and h.endswith(".amazonaws.com") for h in hosts)
    # The providers' virtual host holds each host, so the forwarded request
    # (its :authority rewritten to the provider's host) finds the route.
    vh = next(p for p in envoyfilter_patches("istio/gateway/llm-gateway-envoyfilter.yaml")
              if p["applyTo"] == "VIRTUAL_HOST" and p["patch"]["operation"] == "ADD")["patch"]["value"]
    assert hosts <= set(vh["domains"])
    assert vh["routes"][0]["route"]["cluster_header"] == cfg["cluster_header"]


def test_credentials_reach_the_proxies():
    """Each injector provider's cluster reads its key from
    /etc/llm-secrets/NAME/, and both the gateway Deployments mount the
    Secret llm-provider-NAME there; each variable the filter reads comes
    from a Secret in both."""
    cfg = json.loads((ROOT / "k8s/plugin-config.json").read_text())
    injectors = {p["name"]: p for p in mesh.injector_providers(cfg)}
    patches = envoyfilter_patches("istio/gateway/llm-gateway-credentials.yaml")
    by_host = {p["match"]["cluster"]["service"]: p for p in patches}
    assert set(by_host) == {p["host"] for p in injectors.values()}
    for name, p in injectors.items():
        pcs = json.dumps(by_host[p["host"]])
        assert f'"path": "/etc/llm-secrets/{name}/{name}.yaml"' in pcs
        assert f'"watched_directory": {{"path": "/etc/llm-secrets/{name}"}}' in pcs
    for overlay, container in (("k8s/overlays/istio-ingress", "istio-proxy"),
                               ("k8s/overlays/standalone", "envoy")):
        dep = next(d for d in kustomize(ROOT / overlay) if d["kind"] == "Deployment")
        spec = dep["spec"]["template"]["spec"]
        c = next(c for c in spec["containers"] if c["name"] == container)
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in spec["volumes"]}
        for name in injectors:
            vol = vols[mounts[f"/etc/llm-secrets/{name}"]]
            assert vol["secret"]["secretName"] == f"llm-provider-{name}"
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
        assert set(env) == set(mesh.env_names(cfg))
        for var, ref in env.items():
            assert ref["key"] == var and ref["name"].startswith("llm-provider-")


def test_secret_helper_output(tmp_path):
    r = run([PY, "scripts/mesh.py", "secret", "--provider", "anthropic"], input="sk-ant-test\n")
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    sds = yaml.safe_load(doc["stringData"]["anthropic.yaml"])["resources"][0]
    assert sds["name"] == "anthropic-key" and sds["generic_secret"]["secret"]["inline_string"] == "sk-ant-test"
    r = run([PY, "scripts/mesh.py", "secret", "--provider", "openai"], input="sk-x\n")
    assert "Bearer sk-x" in r.stdout
    r = run([PY, "scripts/mesh.py", "secret", "--provider", "bedrock"], input="AKID\nSECRET\n")
    assert yaml.safe_load(r.stdout)["stringData"] == {"BEDROCK_ACCESS_KEY_ID": "AKID",
                                                      "BEDROCK_SECRET_ACCESS_KEY": "SECRET"}
    r = run([PY, "scripts/mesh.py", "secret", "--provider", "bedrock"], input="only-one\n")
    assert r.returncode != 0 and "only-one" not in r.stderr
    (tmp_path / "azure.key").write_text("az\n")
    f = tmp_path / "s.yaml"
    f.write_text(run([PY, "scripts/mesh.py", "secret", "--provider", "azure", "--key-file",
                      tmp_path / "azure.key"]).stdout)
    assert yaml.safe_load(f.read_text())["stringData"] == {"AZURE_OPENAI_API_KEY": "az"}
    v = run([KUBE_VALIDATE, "--strict", "-k", K8S_VERSION, f])
    assert v.returncode == 0, v.stdout + v.stderr


def test_tls_secret_command_renders(tmp_path):
    """README: `kubectl create secret tls llm-gateway-tls ...` for the Gateway."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, mesh.PUBLIC_HOST)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    r = run([KUBECTL, "create", "secret", "tls", "llm-gateway-tls", "-n", "llm-gateway",
             f"--cert={tmp_path / 'tls.crt'}", f"--key={tmp_path / 'tls.key'}", "--dry-run=client", "-o", "yaml"])
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    gateway = docs_of((ROOT / "istio/gateway/gateway.yaml").read_text())[0]
    assert doc["metadata"]["name"] == gateway["spec"]["servers"][0]["tls"]["credentialName"]
    assert doc["metadata"]["namespace"] == gateway["metadata"]["namespace"]


# ------------------------------------------------------------------ Kubernetes objects

@pytest.mark.parametrize("overlay", OVERLAYS + ["istio/sidecar"])
def test_kustomize_renders_valid_kubernetes_objects(overlay, tmp_path):
    docs = kustomize(ROOT / overlay)
    core = [d for d in docs if not is_istio(d)]
    assert core
    f = tmp_path / "core.yaml"
    f.write_text(yaml.safe_dump_all(core))
    r = run([KUBE_VALIDATE, "--strict", "--quiet", "-k", K8S_VERSION, f])
    assert r.returncode == 0, r.stdout + r.stderr


def test_kubernetes_validate_is_strict(tmp_path):
    doc = next(d for d in kustomize(ROOT / "k8s/overlays/standalone") if d["kind"] == "Deployment")
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(doc))
    assert run([KUBE_VALIDATE, "--strict", "--quiet", "-k", K8S_VERSION, f]).returncode != 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(overlay):
    docs = kustomize(ROOT / overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        spec = dep["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False, dep["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]
            if not c.get("initContainers"):
                assert "readinessProbe" in c or c["name"] == "fetch-wasm", c["name"]
    gw = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "llm-gateway")
    c = gw["spec"]["template"]["spec"]["containers"][0]
    probe = c["readinessProbe"]["httpGet"]
    assert probe["path"] in ("/ready", "/healthz/ready")
    np = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "llm-gateway")
    ports = {(p["port"]) for rule in np["spec"]["egress"] for p in rule["ports"]}
    allowed = {53, 443} | ({15012} if "istio" in overlay else set()) | \
        ({8081} if "ratelimit" in overlay else set())
    assert ports == allowed
    assert next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "llm-gateway"


def test_standalone_configmap_is_the_generated_envoy_config():
    cm = next(d for d in kustomize(ROOT / "k8s/overlays/standalone") if d["kind"] == "ConfigMap")
    assert cm["data"]["envoy.yaml"] == (ROOT / "k8s/overlays/standalone/envoy.yaml").read_text()


def test_ratelimit_component():
    """envoyproxy/ratelimit + Redis, its config generated from the cluster
    plugin config's quotas with the descriptors the gateway sends in global
    mode (scripts/gen_ratelimit_config.py), and the gateway's Envoy config
    asking the ratelimit Service."""
    import gen_ratelimit_config as grc
    docs = kustomize(ROOT / "k8s/overlays/standalone-global-ratelimit")
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("llm-gateway-ratelimit"))
    rl = yaml.safe_load(cm["data"]["config.yaml"])
    assert rl == yaml.safe_load((ROOT / "k8s/components/global-ratelimit/ratelimit-config.yaml").read_text())
    assert rl["domain"] == grc.DOMAIN == "llm-gateway"
    assert {d["value"] for d in rl["descriptors"]} <= set(grc.KINDS)
    assert {"caller", "team"} <= {c["key"] for d in rl["descriptors"] for c in d["descriptors"]}
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "ratelimit"), ("Deployment", "ratelimit-redis"), ("Service", "ratelimit"),
            ("Service", "ratelimit-redis")} <= names
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ratelimit")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REDIS_URL"] == "ratelimit-redis:6379"
    mount = dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
    assert mount == f"{env['RUNTIME_ROOT']}/{env['RUNTIME_SUBDIRECTORY']}/config"
    envoy_cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("llm-gateway-envoy"))
    assert envoy_cm["data"]["envoy.yaml"] == \
        (ROOT / "k8s/overlays/standalone-global-ratelimit/envoy.yaml").read_text()
    boot = yaml.safe_load(envoy_cm["data"]["envoy.yaml"])
    rls = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "ratelimit")
    addr = rls["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "ratelimit")
    assert addr == {"address": "ratelimit.llm-gateway.svc.cluster.local", "port_value": svc["spec"]["ports"][0]["port"]}
    plugin = json.loads(mesh.shipped_wasm_filter(boot)["typed_config"]["config"]["configuration"]["value"])
    assert plugin["quotas"]["global"] == {"descriptor_headers": True}


def test_gateway_envoyfilter_patches_in_routing_as_the_ingress_e2e_runs_it():
    """The ingress gateway's routing patches are the objects that
    tests/e2e/ingress/envoy.yaml runs in a real Envoy (only the upstream
    filter's ECDS source differs: ADS there, a file here), and they agree one
    to one with the plugin config's deployments."""
    import envoy_doc as ed
    cfg = json.loads((ROOT / "k8s" / "plugin-config.json").read_text())
    patches = envoyfilter_patches("istio/gateway/llm-gateway-envoyfilter.yaml")
    ingress = yaml.safe_load((ROOT / "tests/e2e/ingress/envoy.yaml").read_text())

    # The upstream role: its own ECDS resource, the same VM and plugin config.
    ext = {p["patch"]["value"]["name"]: p["patch"]["value"]["typed_config"]["config"]
           for p in patches if p["applyTo"] == "EXTENSION_CONFIG"}
    assert set(ext) == {mesh.FILTER, mesh.UPSTREAM_FILTER}
    down, up = ext[mesh.FILTER], ext[mesh.UPSTREAM_FILTER]
    assert (down["root_id"], up["root_id"]) == (mesh.FILTER, ed.UPSTREAM_ROOT_ID)
    assert up["vm_config"] == down["vm_config"] and up["configuration"] == down["configuration"]
    assert up["allow_on_headers_stop_iteration"] is True
    ecds_up = yaml.safe_load((ROOT / "tests/e2e/ingress/ecds-upstream.yaml").read_text())
    (res,) = ecds_up["resources"]
    assert res["name"] == mesh.UPSTREAM_FILTER
    assert res["typed_config"]["config"]["root_id"] == ed.UPSTREAM_ROOT_ID

    # The routing cluster: as in the e2e, its upstream filter from ADS.
    (rc_patch,) = [p for p in patches if p["applyTo"] == "CLUSTER"]
    assert rc_patch["patch"]["operation"] == "ADD" and rc_patch["match"] == {"context": "GATEWAY"}
    rc = copy.deepcopy(rc_patch["patch"]["value"])
    run = copy.deepcopy(ed.cluster(ingress, rc["name"]))
    filters = rc["typed_extension_protocol_options"][ed.PROTOCOL_OPTIONS]["http_filters"]
    assert [f["name"] for f in filters] == [mesh.UPSTREAM_FILTER, "envoy.filters.http.upstream_codec"]
    src = filters[0]["config_discovery"].pop("config_source")
    assert src == mesh.ADS_SOURCE
    assert filters[0]["config_discovery"]["type_urls"] == [mesh.WASM_TYPE]
    run_filters = run["typed_extension_protocol_options"][ed.PROTOCOL_OPTIONS]["http_filters"]
    assert run_filters[0]["config_discovery"].pop("config_source")["path_config_source"]["path"] == \
        mesh.INGRESS_ECDS_UPSTREAM
    assert rc == run
    deps = sorted((d["endpoint"], d["name"]) for _, d in ed.deployments(cfg))
    assert sorted((ed.endpoint_of(e), e["metadata"]["filter_metadata"]["llm"]["deployment"])
                  for g in rc["load_assignment"]["endpoints"] for e in g["lb_endpoints"]) == deps

    # A loopback listener per deployment, to its provider's Istio cluster.
    added = [p for p in patches if p["applyTo"] == "LISTENER" and p["patch"]["operation"] == "ADD"]
    listeners = [p["patch"]["value"] for p in added]
    assert listeners == [lst for lst in ingress["static_resources"]["listeners"]
                         if lst["name"].startswith("deployment_")]
    assert sorted(ed.listener_address(lst) for lst in listeners) == [e for e, _ in deps]
    providers = {p["name"]: p["cluster"] for p in cfg["providers"]}
    for _, d in ed.deployments(cfg):
        lst = next(x for x in listeners if ed.listener_address(x) == d["endpoint"])
        (route,) = [r for h in ed.hcms(lst) for vh in h["route_config"]["virtual_hosts"] for r in vh["routes"]]
        assert route["route"]["cluster"] == providers[d["provider"]]
        assert route["route"]["cluster"].startswith("outbound|443||")

    # The routed route: first in the public host, as envoy/envoy.yaml's.
    (rp,) = [p for p in patches if p["applyTo"] == "HTTP_ROUTE"]
    assert rp["patch"]["operation"] == "INSERT_FIRST"
    assert rp["match"]["routeConfiguration"]["vhost"] == {"name": f"{mesh.PUBLIC_HOST}:443"}
    assert "route" not in rp["match"]["routeConfiguration"]["vhost"]  # no route match: goes first
    route = rp["patch"]["value"]
    (hcm,) = ed.hcms(ingress["static_resources"]["listeners"][0])
    public = next(vh for vh in hcm["route_config"]["virtual_hosts"]
                  if vh["name"] == f"{mesh.PUBLIC_HOST}:443")
    assert public["routes"][0] == route
    shipped = mesh.shipped_routing_route(mesh.shipped_envoy(), cfg)
    assert route["route"] == shipped["route"] and route["match"] == shipped["match"]
    assert route["route"]["cluster"] == rc["name"]


# ------------------------------------------------------------------ Envoy configs

def localize(text: str, tmp: Path) -> str:
    """Container paths → local files: the built .wasm, SDS secrets made by
    `mesh.py secret` (what an admin would create)."""
    text = text.replace(f"{mesh.WASM_MOUNT}/plugin.wasm", "@WASM@")
    text = text.replace("target/wasm32-wasip1/release/llm_gateway.wasm", "@WASM@")
    text = text.replace("@WASM@", str(WASM))
    text = text.replace("tests/e2e/ingress/ecds.yaml", str(tmp / "ecds.yaml"))
    text = text.replace("tests/e2e/ingress/ecds-upstream.yaml", str(tmp / "ecds-upstream.yaml"))
    cfg = json.loads((ROOT / "k8s/plugin-config.json").read_text())
    for p in mesh.injector_providers(cfg):
        d = tmp / "llm-secrets" / p["name"]
        d.mkdir(parents=True, exist_ok=True)
        sec = mesh.secret_manifest(p["name"], "test-key")
        for k, v in sec["stringData"].items():
            (d / k).write_text(v)
    return text.replace(mesh.SECRETS_DIR + "/", f"{tmp}/llm-secrets/")


@pytest.mark.parametrize("cfg", ["k8s/overlays/standalone/envoy.yaml",
                                 "k8s/overlays/standalone-global-ratelimit/envoy.yaml",
                                 "tests/e2e/ingress/envoy.yaml"])
def test_envoy_validate(cfg, tmp_path):
    for ecds in ("ecds.yaml", "ecds-upstream.yaml"):
        (tmp_path / ecds).write_text(localize((ROOT / "tests/e2e/ingress" / ecds).read_text(), tmp_path))
    local = tmp_path / "envoy.yaml"
    local.write_text(localize((ROOT / cfg).read_text(), tmp_path))
    r = run([ENVOY, "--mode", "validate", "-c", local, "-l", "warning"], env={**os.environ, **ENV}, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout + r.stderr


@pytest.mark.parametrize("path", ["k8s/overlays/standalone/envoy.yaml",
                                  "k8s/overlays/standalone-global-ratelimit/envoy.yaml"])
def test_standalone_envoy_config_is_envoy_yaml_with_real_providers(path):
    doc = yaml.safe_load((ROOT / path).read_text())
    shipped = mesh.shipped_envoy()
    cfg = json.loads((ROOT / "k8s/plugin-config.json").read_text())
    if "global" not in path:
        assert mesh.shipped_hcm(doc)["route_config"] == mesh.shipped_hcm(shipped)["route_config"]
    w = mesh.shipped_wasm_filter(doc)["typed_config"]["config"]
    assert w["allow_on_headers_stop_iteration"] is True
    plugin = json.loads(w["configuration"]["value"])
    plugin.get("quotas", {}).pop("global", None)
    assert plugin == cfg
    assert doc["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    for p in cfg["providers"]:
        c = clusters[p["cluster"]]
        assert c["transport_socket"]["typed_config"]["sni"] == p["host"]
    # Routing across deployments works as in envoy/envoy.yaml: the routing
    # cluster, the upstream filter on the same VM and plugin config, and a
    # loopback listener per deployment that goes to its provider's cluster.
    rc = clusters[cfg["routing"]["cluster"]]
    up = [f for f in mesh.envoy_doc.wasm_filters(rc) if mesh.envoy_doc.is_upstream(f)]
    assert len(up) == 1
    assert up[0]["typed_config"]["config"]["configuration"] == w["configuration"]
    assert up[0]["typed_config"]["config"]["vm_config"] == w["vm_config"]
    eps = {mesh.envoy_doc.endpoint_of(e): e["metadata"]["filter_metadata"]["llm"]["deployment"]
           for g in rc["load_assignment"]["endpoints"] for e in g["lb_endpoints"]}
    providers = {p["name"]: p for p in cfg["providers"]}
    deps = mesh.envoy_doc.deployments(cfg)
    assert eps == {d["endpoint"]: d["name"] for _, d in deps}
    listeners = {mesh.envoy_doc.listener_address(lst): lst for lst in doc["static_resources"]["listeners"]}
    for _, d in deps:
        assert d["endpoint"].startswith("127.0.0.1:")
        hcm, = mesh.envoy_doc.hcms(listeners[d["endpoint"]])
        route, = hcm["route_config"]["virtual_hosts"][0]["routes"]
        assert route["route"]["cluster"] == providers[d["provider"]]["cluster"]
        assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]


# ------------------------------------------------------------------ plugin configs

PLUGIN_FILES = ["k8s/plugin-config.json", "istio/gateway/llm-gateway-envoyfilter.yaml",
                "istio/sidecar/llm-gateway-envoyfilter.yaml", "k8s/overlays/standalone/envoy.yaml",
                "k8s/overlays/standalone-global-ratelimit/envoy.yaml",
                "tests/e2e/ingress/ecds.yaml", "istio/wasmplugin/gateway.yaml", "istio/wasmplugin/namespace.yaml"]


@pytest.mark.parametrize("path", PLUGIN_FILES)
def test_plugin_configs_pass_the_filters_own_check(path):
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    r = run([CLI, "config", "check", path, "--assume-env"], env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK ")
    if "wasmplugin" in path:
        assert "cannot set allow_on_headers_stop_iteration" in r.stderr


def test_plugin_config_check_finds_the_configmap(tmp_path):
    f = tmp_path / "rendered.yaml"
    f.write_text(yaml.safe_dump_all(kustomize(ROOT / "k8s/overlays/standalone")))
    r = run([CLI, "config", "check", f, "--assume-env"], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ConfigMap" in r.stdout


def test_plugin_config_check_catches_a_missing_env_in_the_envoyfilter(tmp_path):
    doc = docs_of((ROOT / "istio/gateway/llm-gateway-envoyfilter.yaml").read_text())[0]
    ext = next(p for p in doc["spec"]["configPatches"] if p["applyTo"] == "EXTENSION_CONFIG")
    env = ext["patch"]["value"]["typed_config"]["config"]["vm_config"]["environment_variables"]
    env["host_env_keys"].remove("AZURE_OPENAI_API_KEY")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    r = run([CLI, "config", "check", bad, "--assume-env"], timeout=60)
    assert r.returncode == 1
    assert "AZURE_OPENAI_API_KEY" in r.stdout + r.stderr
