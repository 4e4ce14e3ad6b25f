#!/usr/bin/env python3
"""The filter as an OCI image, without a Docker daemon (Python stdlib only).

    oci.py build  [--wasm FILE] [--out DIR] [--tag TAG]   # `make oci`
    oci.py digest [--out DIR]                             # manifest digest (hex)
    oci.py push   --registry HOST[:PORT][/PATH] [--tag TAG] [--insecure]  # `make push`

`build` writes an OCI image layout (`oci-layout`, `index.json`,
`blobs/sha256/...`) in the "compat" variant of the Wasm image format that
Istio's agent pulls for `WasmPlugin.url: oci://...` and for ECDS Wasm configs
with an `oci://` http_uri (istio/istio pkg/wasm/imagefetcher.go:
`extractOCIStandardImage`): one layer of media type
`application/vnd.oci.image.layer.v1.tar+gzip` holding `plugin.wasm`, the same
shape `docker build` gives for `FROM scratch` + `COPY plugin.wasm ./`
(image/Dockerfile). The "oci" artifact variant
(`application/vnd.module.wasm.content.layer.v1+wasm`) is not used: Istio's
fetcher (1.28 up to 1.31) accepts it only with exactly two layers.

The build is reproducible: tar entry and gzip header carry no time, so the
same .wasm always gives the same manifest digest. That manifest digest is
what Istio compares with `WasmPlugin.spec.sha256` / the ECDS
`remote.sha256` for oci:// URLs (pkg/wasm/imagefetcher.go `PrepareFetch`
returns `img.Digest()`; pkg/wasm/cache.go compares it), and what a
Kubernetes image reference `...@sha256:` pins.

It also writes `docker-context/` (image/Dockerfile + plugin.wasm) for
people who build with Docker instead; that image's digest differs (Docker
stamps times), so render the mesh manifests with its digest then.

`push` copies the layout to a registry with skopeo (`--preserve-digests`, so
the digest in the rendered manifests stays valid) and reads the manifest
back to check the digest. Without skopeo: `crane push DIR REF` or
`oras cp --from-oci-layout DIR:TAG REF` do the same.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "llm_gateway.wasm"
OUT = ROOT / "target" / "oci" / "llm-gateway"
REPOSITORY = "llm-gateway"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_NAME = "plugin.wasm"


def workspace_version() -> str:
    for line in (ROOT / "Cargo.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    raise SystemExit("oci.py: no version in Cargo.toml")


def canonical(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layer_tar(wasm: bytes) -> bytes:
    """An uncompressed tar with one entry, `plugin.wasm`, no time, owner root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(WASM_NAME)
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(data)
    return buf.getvalue()


def build(wasm_path: Path, out: Path, tag: str) -> str:
    wasm = wasm_path.read_bytes()
    if wasm[:4] != b"\0asm":
        raise SystemExit(f"oci.py: {wasm_path} is not a Wasm module")
    tar = layer_tar(wasm)
    layer = gzip_bytes(tar)
    config = canonical({
        # The platform Docker/containerd use for Wasm images (`wasip1/wasm`).
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256(tar)]},
    })
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": "sha256:" + sha256(config), "size": len(config)},
        "layers": [{"mediaType": MT_LAYER, "digest": "sha256:" + sha256(layer), "size": len(layer)}],
    })
    digest = sha256(manifest)
    if out.exists():
        shutil.rmtree(out)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in (layer, config, manifest):
        (blobs / sha256(blob)).write_bytes(blob)
    (out / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": "sha256:" + digest,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    (out / "index.json").write_bytes(canonical(index))
    # For `docker build` users: the same file under the same name.
    ctx = out.parent / "docker-context"
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)
    shutil.copy(ROOT / "image" / "Dockerfile", ctx / "Dockerfile")
    (ctx / WASM_NAME).write_bytes(wasm)
    return digest


def read_index(out: Path) -> dict:
    index = json.loads((out / "index.json").read_text())
    if len(index.get("manifests", [])) != 1:
        raise SystemExit(f"oci.py: {out}/index.json should name exactly one manifest")
    return index["manifests"][0]


def layout_digest(out: Path) -> str:
    return read_index(out)["digest"].split(":", 1)[1]


def layout_tag(out: Path) -> str:
    return read_index(out)["annotations"]["org.opencontainers.image.ref.name"]


def push(out: Path, registry: str, tag: str | None, insecure: bool) -> str:
    skopeo = shutil.which("skopeo")
    if not skopeo:
        raise SystemExit(
            "oci.py: skopeo not found (apt-get install skopeo). Without it, push the layout with\n"
            f"  crane push {out} {registry}/{REPOSITORY}:TAG\n"
            f"  oras cp --from-oci-layout {out}:{layout_tag(out)} {registry}/{REPOSITORY}:TAG")
    src_tag = layout_tag(out)
    tag = tag or src_tag
    ref = f"{registry}/{REPOSITORY}:{tag}"
    tls = [f"--dest-tls-verify={'false' if insecure else 'true'}"]
    subprocess.run([skopeo, "copy", "--preserve-digests", *tls,
                    f"oci:{out}:{src_tag}", f"docker://{ref}"], check=True)
    raw = subprocess.run([skopeo, "inspect", "--raw",
                          f"--tls-verify={'false' if insecure else 'true'}", f"docker://{ref}"],
                         check=True, capture_output=True).stdout
    want = layout_digest(out)
    got = sha256(raw)
    if got != want:
        raise SystemExit(f"oci.py: the registry holds manifest sha256:{got}, not sha256:{want}")
    print(f"pushed {ref} (sha256:{got})")
    return got


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the OCI image layout")
    b.add_argument("--wasm", type=Path, default=WASM)
    b.add_argument("--out", type=Path, default=OUT)
    b.add_argument("--tag", default=None, help="tag recorded in index.json (default: Cargo version)")
    d = sub.add_parser("digest", help="print the manifest digest (hex)")
    d.add_argument("--out", type=Path, default=OUT)
    u = sub.add_parser("push", help="copy the layout to REGISTRY/llm-gateway:TAG with skopeo")
    u.add_argument("--out", type=Path, default=OUT)
    u.add_argument("--registry", required=True)
    u.add_argument("--tag", default=None)
    u.add_argument("--insecure", action="store_true", help="plain HTTP / unverified TLS registry")
    a = p.parse_args(argv)
    if a.cmd == "build":
        if not a.wasm.exists():
            raise SystemExit(f"oci.py: {a.wasm} missing (make wasm)")
        digest = build(a.wasm, a.out, a.tag or workspace_version())
        print(f"{a.out}: {REPOSITORY}:{layout_tag(a.out)} sha256:{digest}")
    elif a.cmd == "digest":
        print(layout_digest(a.out))
    else:
        push(a.out, a.registry.rstrip("/"), a.tag, a.insecure)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
