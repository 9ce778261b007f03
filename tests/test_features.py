"""The feature cache: keys, memory and disk tiers, invalidation, corruption, shared layer union."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from adbench.backbones import build_backbone
from adbench.data import ImageTransform, Sample, iterate_batches
from adbench.features import DiskTier, FeatureExtractor, MemoryTier, memory_tier

TRANSFORM = ImageTransform(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
DEVICE = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbones() -> dict[str, object]:
    built: dict[tuple[str, ...], object] = {}

    def factory(layers: list[str]):
        if tuple(layers) not in built:
            built[tuple(layers)] = build_backbone("efficientnet_lite0", layers, hub=False)
        return built[tuple(layers)]

    return {"method": factory(["layer2", "layer3"]), "factory": factory}


@pytest.fixture
def images(tmp_path) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(autouse=True)
def _fresh_memory_tier():
    memory_tier(DEVICE, 1.0).clear()
    yield
    memory_tier(DEVICE, 1.0).clear()


def batch_of(paths: list[str], transform: ImageTransform = TRANSFORM):
    samples = [Sample(p, 0, None, "good", "x", "train") for p in paths]
    return next(iterate_batches(samples, transform, batch_size=len(paths)))


def extractor(backbones, cache_dir, transform=TRANSFORM, **kwargs) -> FeatureExtractor:
    return FeatureExtractor(backbones["method"], transform, DEVICE, max_gb=1.0, cache_dir=cache_dir,
                            cache_layers=["layer1", "layer2", "layer3", "layer4"],
                            backbone_factory=backbones["factory"], **kwargs)


def reference(backbones, paths: list[str]) -> dict[str, torch.Tensor]:
    """Direct backbone pass, rounded to fp16 like every cached feature."""
    with torch.no_grad():
        feats = backbones["method"](batch_of(paths).images)
    return {name: t.half().float() for name, t in feats.items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool = True) -> None:
    """Equal features; ``exact=False`` allows one fp16 rounding step (a backbone pass over another
    batch composition may differ by float32 round-off, which can flip an fp16 rounding)."""
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == torch.float32
        tol = {"rtol": 0.0, "atol": 0.0} if exact else {"rtol": 2e-3, "atol": 1e-5}
        torch.testing.assert_close(a[name], b[name], **tol)


def test_miss_then_memory_hit_then_disk_hit(backbones, images, tmp_path):
    cache_dir = tmp_path / "cache"
    expected = reference(backbones, images)
    ex = extractor(backbones, cache_dir)
    assert_same(ex(batch_of(images)), expected)
    assert (ex.stats.hits, ex.stats.misses) == (0, 3) and ex.stats.extract_s > 0
    # the union layer1..layer4 was extracted and stored: 3 images x 4 layers on disk
    assert len(list(cache_dir.rglob("*.feat"))) == 12 and not list(cache_dir.rglob("*.tmp"))

    assert_same(ex(batch_of(images)), expected)
    assert (ex.stats.hits, ex.stats.misses, ex.stats.disk_hits) == (3, 3, 0)

    memory_tier(DEVICE, 1.0).clear()
    fresh = extractor(backbones, cache_dir)  # e.g. a new process
    assert_same(fresh(batch_of(images)), expected)
    assert (fresh.stats.hits, fresh.stats.misses, fresh.stats.disk_hits) == (3, 0, 3)
    assert fresh.stats.extract_s == 0.0


def test_union_serves_a_method_with_other_layers(backbones, images, tmp_path):
    """PatchCore (layer2+3) fills the cache; a PaDiM-like layer1..3 extractor then only hits."""
    extractor(backbones, tmp_path / "c")(batch_of(images))
    memory_tier(DEVICE, 1.0).clear()
    other = FeatureExtractor(backbones["factory"](["layer1", "layer2", "layer3"]), TRANSFORM, DEVICE,
                             cache_dir=tmp_path / "c")
    feats = other(batch_of(images))
    assert list(feats) == ["layer1", "layer2", "layer3"] and feats["layer1"].shape[1] == 24
    assert (other.stats.hits, other.stats.misses) == (3, 0)
    with torch.no_grad():
        direct = other.backbone(batch_of(images).images)
    torch.testing.assert_close(feats["layer1"], direct["layer1"].half().float(), rtol=0, atol=0)


def test_changed_image_or_transform_is_a_miss(backbones, images, tmp_path):
    ex = extractor(backbones, tmp_path / "c")
    before = ex(batch_of(images))
    Image.fromarray(np.full((40, 40, 3), 200, dtype=np.uint8)).save(images[1])
    stat = os.stat(images[1])
    os.utime(images[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a different mtime for sure
    after = ex(batch_of(images))
    assert (ex.stats.hits, ex.stats.misses) == (2, 4)
    assert not torch.equal(before["layer2"][1], after["layer2"][1])
    assert_same(after, reference(backbones, images), exact=False)
    assert torch.equal(before["layer2"][0], after["layer2"][0])

    other = ImageTransform(resize=36, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    ex2 = extractor(backbones, tmp_path / "c", transform=other)
    ex2(batch_of(images, other))
    assert ex2.stats.misses == 3
    assert ex.key(images[0]) != ex2.key(images[0]) != ex.key(images[0], "layer3")


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_corrupt_disk_entry_is_recomputed(backbones, images, tmp_path, damage):
    cache_dir = tmp_path / "c"
    expected = reference(backbones, images)
    extractor(backbones, cache_dir)(batch_of(images))
    memory_tier(DEVICE, 1.0).clear()
    target = DiskTier(cache_dir).path(extractor(backbones, cache_dir).key(images[2], "layer3"))
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[-7] ^= 0x40
    elif damage == "truncate":
        data = data[: len(data) - 10]
    elif damage == "garbage":
        data = bytearray(b"not a feature file at all")
    else:
        data = bytearray()
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        DiskTier(cache_dir).get(target.stem)

    ex = extractor(backbones, cache_dir)
    assert_same(ex(batch_of(images)), expected, exact=False)
    assert ex.stats.corrupt == 1 and (ex.stats.hits, ex.stats.misses) == (2, 1)
    assert DiskTier(cache_dir).get(target.stem) is not None  # rewritten, valid again


def test_disabled_cache_touches_nothing_and_gives_the_same_numbers(backbones, images, tmp_path):
    ex = extractor(backbones, tmp_path / "c", enabled=False)
    feats = ex(batch_of(images))
    ex(batch_of(images))
    assert (ex.stats.hits, ex.stats.misses) == (0, 6)
    assert not (tmp_path / "c").exists() and len(memory_tier(DEVICE, 1.0).entries) == 0
    assert_same(feats, reference(backbones, images))


def test_unwritable_disk_tier_turns_itself_off(backbones, images, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    ex = extractor(backbones, blocker / "cache")  # mkdir under a file fails with an OSError
    assert_same(ex(batch_of(images)), reference(backbones, images))
    assert ex.disk is None and ex.stats.misses == 3


def test_live_is_never_cached(backbones, images, tmp_path):
    ex = extractor(backbones, tmp_path / "c")
    out = ex.live(batch_of(images).images)
    assert list(out) == ["layer2", "layer3"] and ex.stats.live_s > 0
    assert ex.stats.misses == 0 and not (tmp_path / "c").exists()


def test_memory_tier_is_lru_and_bounded():
    tier = MemoryTier(max_bytes=3 * 400)
    for i in range(3):
        tier.put(str(i), torch.zeros(100))
    assert tier.get("0") is not None  # 0 becomes most recent
    tier.put("3", torch.zeros(100))
    assert tier.get("1") is None and tier.get("0") is not None and tier.used == 1200
    tier.put("big", torch.zeros(1000))  # larger than the bound: not stored
    assert tier.get("big") is None


def test_disk_roundtrip_is_fp16_and_memory_mappable(tmp_path):
    tier = DiskTier(tmp_path)
    array = np.random.default_rng(1).normal(size=(5, 3, 2)).astype(np.float16)
    tier.put("ab" + "0" * 62, array)
    path = tier.path("ab" + "0" * 62)
    assert path.parent.name == "ab" and path.stat().st_size % 2 == 0
    np.testing.assert_array_equal(tier.get("ab" + "0" * 62), array)
    assert tier.get("cd" + "0" * 62) is None



def test_bounded_disk_tier_deletes_least_recently_used(tmp_path):
    array = np.zeros((1000,), dtype=np.float16)  # 2000 payload bytes + a 64-byte-aligned header
    probe = DiskTier(tmp_path / "probe")
    probe.put("00" * 32, array)
    entry = probe.path("00" * 32).stat().st_size
    tier = DiskTier(tmp_path / "bounded", max_bytes=int(4.5 * entry))  # room for 4 entries
    keys = [f"{i:02d}" * 32 for i in range(1, 7)]
    for i, key in enumerate(keys[:4]):
        tier.put(key, array + i)
        os.utime(tier.path(key), (1000 + i, 1000 + i))  # distinct ages: keys[0] oldest
    assert tier.get(keys[0]) is not None  # a hit makes keys[0] the most recently used
    tier.put(keys[4], array)  # 5 entries > bound → prune to ≤ 90 % (4 entries): keys[1] goes
    stored = {p.stem for p in (tmp_path / "bounded").rglob("*.feat")}
    assert stored == {keys[0], keys[2], keys[3], keys[4]}
    assert sum(p.stat().st_size for p in (tmp_path / "bounded").rglob("*.feat")) <= 4.5 * entry
    tier.put(keys[5], array)
    assert tier.get(keys[1]) is None and tier.get(keys[5]) is not None and len(tier.entries()) == 4
    assert DiskTier(tmp_path / "probe").prune() == 0  # no bound: nothing deleted
