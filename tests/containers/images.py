"""The images a run needs where no registry is reachable: a Debian base made by debootstrap
(cached between runs), the qun image from ``deploy/Dockerfile`` on it, and a PostgreSQL
stand-in (``postgres.Containerfile``: Debian's PostgreSQL on the same base)."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
from pathlib import Path

from tests.containers.podman import HERE, Podman
from tests.containers.shell import log, remove_tree, run, tail

ROOT = HERE.parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

# What goes into the base image; its hash names the cached tarball, so a change here rebuilds it.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
BASE_RECIPE_VERSION = 1


def debian_mirror() -> str:
    """The mirror this machine's apt uses for Debian itself (not the security archive)."""
    if os.environ.get("QUN_E2E_DEBIAN_MIRROR"):
        return os.environ["QUN_E2E_DEBIAN_MIRROR"]
    candidates: list[str] = []
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        candidates += [
            line.split(None, 1)[1].split()[0] for line in path.read_text().splitlines() if line.startswith("URIs:")
        ]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt").glob("sources.list.d/*.list"))]:
        if path.is_file():
            candidates += [line.split()[1] for line in path.read_text().splitlines() if line.startswith("deb ")]
    for uri in candidates:
        if "debian" in uri and "security" not in uri and "[" not in uri:
            return uri
    return "http://deb.debian.org/debian"


def cache_dir() -> Path:
    configured = os.environ.get("QUN_E2E_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qun" / "compose-e2e"


def base_image(podman: Podman, workdir: Path) -> str:
    """The Debian base image with Python, from the cache or made by debootstrap (about a minute)."""
    recipe = json.dumps([BASE_SUITE, BASE_PACKAGES, BASE_RECIPE_VERSION])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    cache = cache_dir()
    tarball = cache / f"base-{key}.tar"
    if tarball.is_file():
        log(f"base image from the cache ({tarball})")
    else:
        mirror = debian_mirror()
        log(f"no cached base image: debootstrap {BASE_SUITE} from {mirror}")
        rootfs = workdir / "rootfs"
        debootstrap_log = workdir / "debootstrap.log"
        with open(debootstrap_log, "wb") as out:
            made = run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    BASE_SUITE,
                    str(rootfs),
                    mirror,
                ],
                check=False,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if made.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{tail(debootstrap_log)}")
        # Downloaded packages and package lists are not part of an image.
        for leftover in [*rootfs.glob("var/cache/apt/archives/*.deb"), *rootfs.glob("var/lib/apt/lists/*_*")]:
            leftover.unlink()
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f".base-{key}.{os.getpid()}.tar"
        run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
        os.replace(partial, tarball)  # whole or not at all, also with concurrent runs
        remove_tree(rootfs)
        for old in cache.glob("base-*.tar"):
            if old != tarball:
                old.unlink(missing_ok=True)
    name = f"localhost/qun-e2e-base:{key}"
    try:
        podman("import", str(tarball), name)
    except RuntimeError:
        tarball.unlink(missing_ok=True)  # a damaged cache entry: the next run makes it anew
        raise
    return name


def ca_bundle() -> str | None:
    """The machine's CA bundle: pip inside a build needs it where TLS is re-signed on the way out."""
    for candidate in (
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def build_images(podman: Podman, base: str, project: str) -> tuple[str, str]:
    """The qun image from deploy/Dockerfile and the PostgreSQL stand-in, built side by side."""
    qun, postgres = f"localhost/qun-e2e:{project}", f"localhost/qun-e2e-postgres:{project}"
    # No layer cache: the storage lives for this run only, and committing every step costs time.
    common = ["build", "--network=host", "--pull=never", "--layers=false", "--build-arg", f"BASE_IMAGE={base}"]
    bundle = ca_bundle()
    mount = ["--volume", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"] if bundle else []
    ignore = ["--ignorefile", f"{DOCKERFILE}.dockerignore"]
    builds = {
        qun: [*common, *mount, "--file", str(DOCKERFILE), *ignore, "--tag", qun, str(ROOT)],
        postgres: [*common, "--file", str(HERE / "postgres.Containerfile"), "--tag", postgres, str(HERE)],
    }
    log(f"podman build {qun} and {postgres}")
    running = {}
    for name, args in builds.items():
        log_path = podman.workdir / f"build-{name.rsplit('/', 1)[1].split(':')[0]}.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                ["podman", *args], env=podman.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        running[name] = (process, log_path)
    failed = []
    try:
        for name, (process, log_path) in running.items():
            if process.wait() != 0:
                failed.append(f"podman build {name} failed:\n{tail(log_path)}")
    finally:
        for process, _ in running.values():  # interrupted: no build outlives the run
            if process.poll() is None:
                process.terminate()
                process.wait()
    if failed:
        raise RuntimeError("\n".join(failed))
    return qun, postgres
