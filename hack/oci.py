#!/usr/bin/env python3
"""Writes OCI images without a container engine: layers as tar files and an image-layout tar for `ctr images import`.

Usage:
  oci.py layer --out LAYER.tar DIR [--owner UID:GID] [--mtime N] [--prefix PATH]
      Packs the tree under DIR as a layer (paths relative to DIR, entries sorted). Overlay whiteouts in DIR (character
      devices 0:0) become OCI ``.wh.`` entries, so an overlayfs upper directory is a valid layer as is.
  oci.py files --out LAYER.tar SRC=DEST[:MODE] ... [--link TARGET=DEST ...] [--dir DEST:MODE ...]
      Packs individual files, symlinks and directories into a layer, owned by root, with mtime 0.
  oci.py image --out IMAGE.tar --name REF --layer LAYER.tar ... [--entrypoint JSON] [--cmd JSON] [--user U]
               [--env K=V ...] [--workdir DIR] [--label K=V ...] [--omit-blobs FILE]
      Writes an OCI image layout (oci-layout, index.json, blobs/) as one tar. The index carries both
      ``io.containerd.image.name`` (the full reference containerd imports under) and
      ``org.opencontainers.image.ref.name`` (the tag, as the OCI spec wants it). --omit-blobs names a file of
      digests (one a line, e.g. from `ctr content ls -q`) whose layers the receiving store already holds: they are
      left out of the archive, so re-importing an image whose base layers did not change streams only the new ones.
      Such an archive is only good for that store.

Layers are left uncompressed: they are imported on this machine only, and compressing a few hundred megabytes costs
more time than it saves. Each layer's digest is cached beside it (LAYER.tar.sha256) and reused while the file's size
and modification time are unchanged, so rebuilding an image whose base layers did not change hashes only the new ones.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import time
from pathlib import Path

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CHUNK = 1 << 20


def _owner(spec: str | None) -> tuple[int, int] | None:
    if not spec:
        return None
    uid, _, gid = spec.partition(":")
    return int(uid), int(gid or uid)


def pack_dir(out: Path, root: Path, owner: tuple[int, int] | None, mtime: int | None, prefix: str) -> None:
    """Packs ROOT into OUT; hard links are kept (tarfile tracks inodes), sockets are skipped."""
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            for name in sorted(dirnames) + sorted(filenames):
                path = os.path.join(dirpath, name)
                arc = os.path.normpath(os.path.join(prefix, rel_dir, name)).lstrip("/")
                st = os.lstat(path)
                if stat.S_ISSOCK(st.st_mode):
                    continue
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    # An overlayfs whiteout: the file was deleted in this layer.
                    info = tarfile.TarInfo(os.path.join(os.path.dirname(arc), ".wh." + name))
                    info.mtime = mtime if mtime is not None else int(st.st_mtime)
                    tar.addfile(info)
                    continue
                info = tar.gettarinfo(path, arcname=arc)
                if owner is not None:
                    info.uid, info.gid = owner
                    info.uname = info.gname = ""
                if mtime is not None:
                    info.mtime = mtime
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
                if stat.S_ISDIR(st.st_mode) and _is_opaque(path):
                    opq = tarfile.TarInfo(os.path.join(arc, ".wh..wh..opq"))
                    opq.mtime = info.mtime
                    tar.addfile(opq)
    tmp.replace(out)


def _is_opaque(path: str) -> bool:
    """True for an overlayfs opaque directory (its lower contents are hidden)."""
    for attr in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, attr, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def pack_files(out: Path, files: list[str], links: list[str], dirs: list[str]) -> None:
    tmp = out.with_name(out.name + ".part")
    entries: dict[str, tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = {}

    def add_dirs(dest: str) -> None:
        parts = Path(dest).parent.parts
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in entries:
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                entries[d] = info

    for spec in files:
        src, _, rest = spec.partition("=")
        dest, _, mode = rest.partition(":")
        dest = dest.lstrip("/")
        add_dirs(dest)
        data = Path(src).read_bytes()
        info = tarfile.TarInfo(dest)
        info.size = len(data)
        info.mode = int(mode, 8) if mode else (os.stat(src).st_mode & 0o7777)
        entries[dest] = (info, data)
    for spec in dirs:
        dest, _, mode = spec.partition(":")
        dest = dest.strip("/")
        add_dirs(dest + "/x")
        entries[dest].mode = int(mode, 8) if mode else 0o755
    for spec in links:
        target, _, dest = spec.partition("=")
        dest = dest.lstrip("/")
        add_dirs(dest)
        info = tarfile.TarInfo(dest)
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        entries[dest] = info
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            entry = entries[name]
            if isinstance(entry, tuple):
                tar.addfile(entry[0], io.BytesIO(entry[1]))
            else:
                tar.addfile(entry)
    tmp.replace(out)


def layer_digest(path: Path) -> str:
    """sha256 of a layer file, cached beside it while its size and mtime are unchanged."""
    st = path.stat()
    key = f"{st.st_size} {st.st_mtime_ns}"
    cache = path.with_name(path.name + ".sha256")
    try:
        cached_key, digest = cache.read_text().split("\n")[:2]
        if cached_key == key:
            return digest
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    cache.write_text(f"{key}\n{digest}\n")
    return digest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def write_image(out: Path, name: str, layers: list[Path], entrypoint: list[str] | None, cmd: list[str] | None,
                user: str | None, env: list[str], workdir: str | None, labels: dict[str, str],
                omit: frozenset[str] = frozenset()) -> str:
    digests = [layer_digest(p) for p in layers]
    config: dict = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(0)),
        # containerd filters imported images by platform: without os/architecture nothing is unpacked.
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": digests},
        "history": [{"created_by": f"layer {p.name}"} for p in layers],
    }
    if entrypoint is not None:
        config["config"]["Entrypoint"] = entrypoint
    if cmd is not None:
        config["config"]["Cmd"] = cmd
    if user:
        config["config"]["User"] = user
    if workdir:
        config["config"]["WorkingDir"] = workdir
    if labels:
        config["config"]["Labels"] = labels
    config_digest, config_bytes = _blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config_bytes)},
        "layers": [
            {"mediaType": LAYER_MEDIA_TYPE, "digest": d, "size": p.stat().st_size} for d, p in zip(digests, layers)
        ],
    }
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest, sort_keys=True).encode())
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": len(manifest_bytes),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
        }],
    }
    # "-" streams the archive to stdout (e.g. into `ctr images import -`), so no copy of the layers is written.
    stream = str(out) == "-"
    tmp = out if stream else out.with_name(out.name + ".part")
    with (tarfile.open(fileobj=sys.stdout.buffer, mode="w|") if stream else tarfile.open(tmp, "w")) as tar:
        _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_bytes(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        _add_bytes(tar, f"blobs/sha256/{config_digest[7:]}", config_bytes)
        _add_bytes(tar, f"blobs/sha256/{manifest_digest[7:]}", manifest_bytes)
        seen = set(omit)
        for d, p in zip(digests, layers):
            if d in seen:
                continue
            seen.add(d)
            info = tarfile.TarInfo(f"blobs/sha256/{d[7:]}")
            info.size, info.mode = p.stat().st_size, 0o644
            with open(p, "rb") as f:
                tar.addfile(info, f)
    if not stream:
        tmp.replace(out)
    return manifest_digest


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_layer = sub.add_parser("layer")
    p_layer.add_argument("--out", required=True, type=Path)
    p_layer.add_argument("--owner")
    p_layer.add_argument("--mtime", type=int)
    p_layer.add_argument("--prefix", default="")
    p_layer.add_argument("dir", type=Path)
    p_files = sub.add_parser("files")
    p_files.add_argument("--out", required=True, type=Path)
    p_files.add_argument("--link", action="append", default=[])
    p_files.add_argument("--dir", action="append", default=[])
    p_files.add_argument("files", nargs="*")
    p_image = sub.add_parser("image")
    p_image.add_argument("--out", required=True, type=Path)
    p_image.add_argument("--name", required=True)
    p_image.add_argument("--layer", action="append", required=True, type=Path)
    p_image.add_argument("--entrypoint", type=json.loads)
    p_image.add_argument("--cmd", type=json.loads)
    p_image.add_argument("--user")
    p_image.add_argument("--env", action="append", default=[])
    p_image.add_argument("--workdir")
    p_image.add_argument("--label", action="append", default=[])
    p_image.add_argument("--omit-blobs", type=Path)
    args = parser.parse_args(argv)
    if args.command == "layer":
        pack_dir(args.out, args.dir, _owner(args.owner), args.mtime, args.prefix)
    elif args.command == "files":
        pack_files(args.out, args.files, args.link, args.dir)
    else:
        labels = dict(kv.split("=", 1) for kv in args.label)
        omit = frozenset(args.omit_blobs.read_text().split()) if args.omit_blobs else frozenset()
        digest = write_image(args.out, args.name, args.layer, args.entrypoint, args.cmd, args.user, args.env,
                             args.workdir, labels, omit)
        print(digest, file=sys.stderr if str(args.out) == "-" else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
