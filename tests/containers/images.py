"""The images a run needs where no registry is reachable: a Debian base made by debootstrap
(cached between runs), the qun image from ``deploy/Dockerfile`` on it, and a PostgreSQL
stand-in (``postgres.Containerfile``: Debian's PostgreSQL on the same base).

Both harnesses (``make e2e-compose``, ``make e2e-k8s``) get their images from
``prepared_images``: built once, then saved to the cache under a key of everything that goes
into them (the base's recipe, both build files, every file of the build contexts as the
ignore file admits them). Each run's podman storage is private and removed at its end, so the
cache is what lets the second run of ``.ci/run`` — and a developer's next run — load the images
in seconds instead of building them for one to two minutes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import subprocess
from pathlib import Path

from tests.containers.podman import HERE, Podman
from tests.containers.shell import log, remove_tree, run, tail

ROOT = HERE.parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
POSTGRES_CONTEXT = HERE
POSTGRES_FILES = ("postgres.Containerfile", "postgres-entrypoint.sh")
QUN_IMAGE = "localhost/qun-e2e"
POSTGRES_IMAGE = "localhost/qun-e2e-postgres"
# Built-image archives kept in the cache (a few source states: branches, a run in progress).
KEEP_ARCHIVES = 2
IMAGES_RECIPE_VERSION = 1

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


def base_key() -> str:
    """What names the cached base image: its suite, packages and recipe version."""
    recipe = json.dumps([BASE_SUITE, BASE_PACKAGES, BASE_RECIPE_VERSION])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def base_image(podman: Podman, workdir: Path) -> str:
    """The Debian base image with Python, from the cache or made by debootstrap (about a minute)."""
    key = base_key()
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


def build_images(podman: Podman, base: str, tag: str) -> tuple[str, str]:
    """The qun image from deploy/Dockerfile and the PostgreSQL stand-in, built side by side."""
    qun, postgres = f"{QUN_IMAGE}:{tag}", f"{POSTGRES_IMAGE}:{tag}"
    # No layer cache: the storage lives for this run only, and committing every step costs time.
    common = ["build", "--network=host", "--pull=never", "--layers=false", "--build-arg", f"BASE_IMAGE={base}"]
    bundle = ca_bundle()
    mount = ["--volume", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"] if bundle else []
    ignore = ["--ignorefile", f"{DOCKERFILE}.dockerignore"]
    builds = {
        qun: [*common, *mount, "--file", str(DOCKERFILE), *ignore, "--tag", qun, str(ROOT)],
        postgres: [
            *common,
            "--file",
            str(POSTGRES_CONTEXT / POSTGRES_FILES[0]),
            "--tag",
            postgres,
            str(POSTGRES_CONTEXT),
        ],
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


# --- the images both harnesses share, through the cache ------------------------------------------


def _ignore_rules(ignore_file: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(admits, pattern) per line of a .dockerignore, in order; the last rule that matches a path
    or one of its parent folders decides, as in Docker's own matcher."""
    rules = []
    for raw in ignore_file.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        admits = line.startswith("!")
        pattern = line[1:].strip() if admits else line
        pattern = pattern.strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((admits, re.compile(regex + r"\Z")))
    return rules


def context_files(context: Path, ignore_file: Path | None) -> list[str]:
    """The files of a build context that the ignore file admits, relative and sorted.

    Candidates are what git knows of (tracked, or new and not ignored): the virtualenv and
    generated code never reach the hash, and are excluded from the context anyway."""
    listed = run(
        ["git", "-C", str(context), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "."],
        capture_output=True,
    ).stdout.decode()
    rules = _ignore_rules(ignore_file) if ignore_file else []
    admitted = []
    for name in sorted(set(filter(None, listed.split("\0")))):
        if not (context / name).is_file():
            continue  # deleted, not yet staged
        parts = name.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        included = True
        for admits, pattern in rules:
            if any(pattern.match(prefix) for prefix in prefixes):
                included = admits
        if included:
            admitted.append(name)
    return admitted


def images_key() -> str:
    """A hash of everything the two images are made from (uv.lock among them): equal keys mean equal images."""
    digest = hashlib.sha256(json.dumps([IMAGES_RECIPE_VERSION, base_key()]).encode())
    ignore = Path(f"{DOCKERFILE}.dockerignore")
    contexts = [
        ("qun", ROOT, [str(DOCKERFILE.relative_to(ROOT)), str(ignore.relative_to(ROOT))], ignore),
        ("postgres", POSTGRES_CONTEXT, list(POSTGRES_FILES), None),
    ]
    for label, context, build_files, ignore_file in contexts:
        names = [*build_files, *context_files(context, ignore_file)] if ignore_file else build_files
        for name in names:
            digest.update(f"\0{label}\0{name}\0".encode())
            digest.update((context / name).read_bytes())
    return digest.hexdigest()[:16]


def prepared_images(podman: Podman, workdir: Path) -> tuple[str, str]:
    """The qun image and the PostgreSQL stand-in in ``podman``'s storage: loaded from the cache
    when it holds them for these sources, else built (and then saved there for the next run)."""
    key = images_key()
    qun, postgres = f"{QUN_IMAGE}:{key}", f"{POSTGRES_IMAGE}:{key}"
    cache = cache_dir()
    archive = cache / f"images-{key}.tar"
    if archive.is_file():
        log(f"images for these sources from the cache ({archive.name})")
        try:
            podman("load", "--input", str(archive))
            archive.touch()  # recently used: kept by the pruning below
            return qun, postgres
        except RuntimeError as error:
            archive.unlink(missing_ok=True)  # damaged: build anew
            log(f"cached images unusable, building: {error}")
    base = base_image(podman, workdir)
    build_images(podman, base, key)
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".images-{key}.{os.getpid()}.tar"
    try:
        podman("save", "--multi-image-archive", "--output", str(partial), qun, postgres)
        os.replace(partial, archive)  # whole or not at all, also with concurrent runs
    finally:
        partial.unlink(missing_ok=True)
    kept = sorted(cache.glob("images-*.tar"), key=lambda path: path.stat().st_mtime, reverse=True)
    for old in kept[KEEP_ARCHIVES:]:
        old.unlink(missing_ok=True)
    log(f"images saved to the cache ({archive.name}, {archive.stat().st_size >> 20} MiB)")
    return qun, postgres
