#!/usr/bin/env python3
"""Writes the registry benchmark's images as one OCI image layout.

Tags: `app` (busybox + a small file), `libs` (busybox + a layer of LIBS_MIB MiB, default
100, of shared libraries), `big` (one layer holding a file of BIG_MIB MiB of random bytes, gzip level 0:
valid gzip and tar without costing compression time). Runnable images use /bin/busybox
(busybox-static).

usage: make_images.py LAYOUT_DIR BIG_MIB [LIBS_MIB]
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

layout, big_mib = sys.argv[1], int(sys.argv[2])
libs_mib = int(sys.argv[3]) if len(sys.argv) > 3 else 100
blobs = os.path.join(layout, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)


def put(data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(blobs, digest)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def tar_layer(files, level=1) -> tuple:
    """files: list of (name, bytes or None for dir, mode, linkname). Returns (gz, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data, mode, link in files:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.mode = mode
            if link:
                info.type = tarfile.SYMTYPE
                info.linkname = link
                t.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    raw = raw.getvalue()
    gz = gzip.compress(raw, compresslevel=level, mtime=0)
    return gz, "sha256:" + hashlib.sha256(raw).hexdigest()


def image(layers, cmd) -> dict:
    descs, diff_ids = [], []
    for gz, diff in layers:
        d = put(gz)
        d["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        descs.append(d)
        diff_ids.append(diff)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    c = put(json.dumps(config, sort_keys=True).encode())
    c["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": c, "layers": descs}
    m = put(json.dumps(manifest, sort_keys=True).encode())
    m["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    return m


busybox = open("/bin/busybox", "rb").read()
base = tar_layer([("bin", None, 0o755, None), ("bin/busybox", busybox, 0o755, None),
                  ("bin/sh", None, 0o777, "busybox"), ("bin/cat", None, 0o777, "busybox")])
msg = tar_layer([("message.txt", b"airlock bench\n", 0o644, None)])

libs_files, total = [], 0
libdir = "/usr/lib/x86_64-linux-gnu"
for name in sorted(os.listdir(libdir)):
    p = os.path.join(libdir, name)
    if os.path.isfile(p) and not os.path.islink(p) and total < libs_mib << 20:
        data = open(p, "rb").read()
        libs_files.append(("libs/" + name, data, 0o644, None))
        total += len(data)
libs = tar_layer([("libs", None, 0o755, None)] + libs_files)

big = tar_layer([("big.bin", os.urandom(big_mib << 20), 0o644, None)], level=0)
big_gz = big[0]

refs = {
    "app": image([base, msg], ["/bin/cat", "/message.txt"]),
    "libs": image([base, libs, msg], ["/bin/cat", "/message.txt"]),
    "big": image([big], ["/bin/true"]),
}
index = {"schemaVersion": 2, "manifests": []}
for tag, m in refs.items():
    m = dict(m)
    m["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index["manifests"].append(m)
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump(index, f)
with open(os.path.join(layout, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
big_layer = hashlib.sha256(big_gz).hexdigest()
print(f"sha256:{big_layer} {len(big_gz)}")
