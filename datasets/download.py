"""Checksummed downloads and safe archive extraction for the public datasets.

Nothing here runs unless a family is built with ``download=True``: without it, a missing
dataset raises :class:`~adbench.data.DataError` with :func:`missing_message`, which names the
expected path, the URL, the licence and the layout to place by hand.

* :func:`fetch` streams a URL (``http(s)://`` or ``file://``; a list of mirrors is tried in
  order) to a temporary file next to ``dest`` with a tqdm progress bar (by default only when stderr is
  a terminal), checks its sha256 and only then renames it to ``dest``. A mismatch deletes the
  temporary file and names both hashes.
* :func:`extract` unpacks a tar (any compression) or zip archive into a temporary folder after
  rejecting absolute paths, ``..`` components, links that leave the destination (resolved through
  the links extracted before them) and special files (tar members also go through :mod:`tarfile`'s
  ``data`` filter where Python has it), then moves the result
  into place with renames, so an interrupted extraction never leaves a half tree.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from adbench.data import DataError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """Where a dataset comes from and how it must look on disk.

    ``urls`` are mirrors tried in order (empty: manual download only, ``homepage`` explains);
    ``layout`` is the tree expected under the dataset root, shown in error messages.
    """

    title: str
    urls: tuple[str, ...]
    sha256: str
    filename: str
    licence: str
    homepage: str
    layout: str


MVTEC_AD = Resource(
    title="MVTec AD",
    urls=(
        "https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/download/"
        "420938113-1629960298/mvtec_anomaly_detection.tar.xz",
    ),
    sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
    filename="mvtec_anomaly_detection.tar.xz",
    licence="CC BY-NC-SA 4.0 (non-commercial, share-alike; not redistributed with adbench)",
    homepage="https://www.mvtec.com/company/research/datasets/mvtec-ad",
    layout="<root>/<category>/train/good/*.png, <root>/<category>/test/<good|defect>/*.png, "
    "<root>/<category>/ground_truth/<defect>/<stem>_mask.png",
)

VISA = Resource(
    title="VisA",
    urls=("https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",),
    sha256="2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
    filename="VisA_20220922.tar",
    licence="CC BY 4.0",
    homepage="https://github.com/amazon-science/spot-diff",
    layout="<root>/split_csv/1cls.csv, <root>/<object>/Data/Images/{Normal,Anomaly}/*.JPG, "
    "<root>/<object>/Data/Masks/Anomaly/*.png (the raw VisA_20220922.tar layout)",
)

BTAD = Resource(
    title="BTAD (beanTech Anomaly Detection)",
    urls=("https://avires.dimi.uniud.it/papers/btad/btad.zip",),
    sha256="461c9387e515bfed41ecaae07c50cf6b10def647b36c9e31d239ab2736b10d2a",
    filename="btad.zip",
    licence="CC BY-SA 4.0",
    homepage="https://avires.dimi.uniud.it/papers/btad/btad.zip",
    layout="<root>/<01|02|03>/train/ok/*, <root>/<product>/test/<ok|ko>/*, "
    "<root>/<product>/ground_truth/ko/<image stem>.<png|bmp> (the contents of BTech_Dataset_transformed/)",
)

MPDD = Resource(
    title="MPDD (Metal Parts Defect Detection)",
    urls=(),
    sha256="",
    filename="",
    licence="CC BY-NC-SA 4.0",
    homepage="https://vutbr-my.sharepoint.com/:f:/g/personal/xjezek16_vutbr_cz/"
    "EhHS_ufVigxDo3MC6Lweau0BVMuoCmhMZj6ddamiQ7-FnA?e=oHKCxI",
    layout="<root>/<category>/train/good/*.png, <root>/<category>/test/<good|defect>/*.png, "
    "<root>/<category>/ground_truth/<defect>/<stem>_mask.png",
)

DTD = Resource(
    title="DTD (Describable Textures Dataset)",
    urls=(
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
        "https://thor.robots.ox.ac.uk/dtd/dtd-r1.0.1.tar.gz",
    ),
    sha256="e42855a52a4950a3b59612834602aa253914755c95b0cff9ead6d07395f8e205",
    filename="dtd-r1.0.1.tar.gz",
    licence="research use only (Oxford VGG; not redistributed with adbench)",
    homepage="https://www.robots.ox.ac.uk/~vgg/data/dtd/",
    layout="<root>/images/<class>/<class>_<id>.jpg (47 class folders), <root>/labels/",
)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(urls: str | Sequence[str], dest: str | Path, sha256: str, progress: bool | None = None) -> Path:
    """Download the first working mirror of ``urls`` to ``dest`` and check its sha256.

    A ``dest`` that already exists with the right checksum is reused. Each mirror is streamed
    to a temporary file beside ``dest``; a network error or a checksum mismatch deletes it and
    moves on to the next mirror. DataError (listing every mirror's failure) if none works.
    """
    dest = Path(dest)
    mirrors = [urls] if isinstance(urls, str) else list(urls)
    if not mirrors:
        raise DataError(f"no download URL given for {dest.name}")
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in mirrors:
        try:
            _stream(url, dest, sha256, progress)
            return dest
        except (OSError, DataError) as err:
            failures.append(f"{url}: {err}")
    raise DataError(f"could not download {dest.name}:\n  " + "\n  ".join(failures))


def _stream(url: str, dest: Path, sha256: str, progress: bool | None) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "adbench"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=None if progress is None else not progress,  # None: on a terminal only
            ) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != sha256:
            raise DataError(
                f"checksum mismatch: expected sha256 {sha256}, got {digest.hexdigest()}; "
                "the download was deleted (a corrupted transfer or a changed file on the server)"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _check_name(name: str, archive: Path) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DataError(f"unsafe member {name!r} in {archive} (absolute path or '..'); refusing to extract")


def _resolve(path: str, links: dict[str, str]) -> str | None:
    """``path`` (relative to the extraction root) with every symbolic link among ``links`` (link →
    its target, both relative to the root) followed, as a normalised relative path ("" = the root);
    None when it leaves the root or follows more than 40 links (a loop)."""
    parts: list[str] = []
    pending = [p for p in path.split("/") if p not in ("", ".")]
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
        target = links.get("/".join(parts))
        if target is not None:
            hops += 1
            if hops > 40:
                return None
            parts = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
    return "/".join(parts)


def _unsafe_link(member: tarfile.TarInfo, archive: Path) -> DataError:
    return DataError(f"unsafe link {member.name!r} -> {member.linkname!r} in {archive} leaves the "
                     "destination; refusing to extract")


def _check_tar(tar: tarfile.TarFile, archive: Path) -> None:
    """Refuse members that would be written, and links that would point, outside the destination.

    Paths are resolved through the symbolic links of the members before them, as extraction creates
    them (a file written at a link's path goes where the link points), so ``s -> .`` followed by
    ``s/t -> ../outside`` is refused without tarfile's ``data`` filter (absent from Python before
    3.10.12 / 3.11.4)."""
    links: dict[str, str] = {}
    for member in tar.getmembers():
        _check_name(member.name, archive)
        name = member.name.replace("\\", "/").rstrip("/")
        if member.issym():  # created at its folder's resolved path; its target is relative to that folder
            folder, _, base = name.rpartition("/")
            resolved = _resolve(folder, links)
            target = None if resolved is None else posixpath.join(resolved, member.linkname)
            if posixpath.isabs(member.linkname) or target is None or _resolve(target, links) is None:
                raise _unsafe_link(member, archive)
            links[posixpath.join(resolved, base)] = target
        elif _resolve(name, links) is None:
            raise DataError(f"member {member.name!r} in {archive} is written outside the destination "
                            "through a link; refusing to extract")
        elif member.islnk():  # a hard link's target is relative to the archive root
            if posixpath.isabs(member.linkname) or _resolve(member.linkname, links) is None:
                raise _unsafe_link(member, archive)
        elif not (member.isfile() or member.isdir()):
            raise DataError(f"special file {member.name!r} in {archive}; refusing to extract")


def _check_zip(archive_zip: zipfile.ZipFile, archive: Path) -> None:
    for info in archive_zip.infolist():
        _check_name(info.filename, archive)
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise DataError(f"symbolic link {info.filename!r} in {archive}; refusing to extract")


def _content_root(folder: Path, marker: str | None) -> Path:
    """Descend through single-folder wrappers (``BTech_Dataset_transformed/``) until ``marker`` exists."""
    if marker is None:
        return folder
    entries = list(folder.iterdir())
    while not (folder / marker).exists() and len(entries) == 1 and entries[0].is_dir():
        folder = entries[0]
        entries = list(folder.iterdir())
    return folder


def extract(archive: str | Path, dest: str | Path, marker: str | None = None) -> Path:
    """Safely unpack a tar or zip ``archive`` into the folder ``dest`` and return ``dest``.

    With ``marker`` (a path the dataset root must contain, e.g. ``bottle``), single top-level
    wrapper folders are stripped until it appears. Entries already in ``dest`` are kept; new
    ones are moved in by rename (the whole tree in one rename when ``dest`` does not exist).
    """
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.extract-"))
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                _check_tar(tar, archive)
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, **extra)
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as archive_zip:
                _check_zip(archive_zip, archive)
                archive_zip.extractall(tmp)
        else:
            raise DataError(f"{archive} is neither a tar nor a zip archive; delete it and download again")
        content = _content_root(tmp, marker)
        if not dest.exists():
            os.replace(content, dest)
        else:
            for entry in sorted(content.iterdir()):
                if not (dest / entry.name).exists():
                    os.replace(entry, dest / entry.name)
    except (tarfile.TarError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot extract {archive}: {err}; delete it and download again") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def missing_message(resource: Resource, root: Path, expected: Path) -> str:
    """The DataError text for a dataset that is not on disk: path, URL, licence, layout."""
    if resource.urls:
        how = (
            f"pass download=True (data.download=true) to fetch {resource.urls[0]} "
            f"(sha256 {resource.sha256}), or download it by hand and extract it into {root}"
        )
    else:
        how = f"it cannot be downloaded automatically: fetch it by hand from {resource.homepage}"
    return (
        f"{resource.title} not found: {expected} does not exist. {how}. "
        f"Expected layout: {resource.layout}. Licence: {resource.licence}; see {resource.homepage}"
    )


def ensure_dataset(
    resource: Resource, root: Path, download: bool, expected: Path, progress: bool | None = None
) -> None:
    """Make sure ``expected`` (a path inside ``root``) exists, downloading when allowed.

    Without ``download`` (or for a manual-only resource) a missing path raises DataError with
    :func:`missing_message`. The archive is fetched beside ``root`` and deleted once extracted.
    """
    if expected.exists():
        return
    if not download or not resource.urls:
        raise DataError(missing_message(resource, root, expected))
    archive = fetch(
        resource.urls, root.parent / f".{root.name}.download" / resource.filename, resource.sha256, progress
    )
    extract(archive, root, expected.relative_to(root).as_posix())
    shutil.rmtree(archive.parent, ignore_errors=True)
    if not expected.exists():
        raise DataError(
            f"{resource.title} was downloaded and extracted into {root}, but {expected} is still missing; "
            f"expected layout: {resource.layout}"
        )
