"""The CUDA paths (skipped without a GPU; CI has none): every registered method end to end on
``device=cuda`` (its tiny CPU preset, ``TINY_METHODS`` in conftest.py; test_methods.py checks the
contract there too),
the feature cache's GPU memory tier against CPU features, same seed → same model on the GPU, and
`synchronize` leaving no queued work behind a timer."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_METHODS

from adbench.components.knn import FlatL2Index
from adbench.config import compose
from adbench.data import iterate_batches
from adbench.devices import resolve_device, synchronize
from adbench.features import memory_tier
from adbench.registry import list_methods
from adbench.runner import build_context, build_method, load_categories, run, seed_everything

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CUDA = torch.device("cuda")
SMALL = ["data.category=brick", "method.image.resize=64", "method.image.crop=64", "progress=false",
         "cache.dir=null"]


@pytest.mark.parametrize("name", list_methods())
def test_every_method_runs_on_cuda(name, tiny_methods, small_toy, tmp_path):
    (record,) = run(compose([*small_toy, "data.category=cat", *tiny_methods[name], "device=cuda",
                             f"results_dir={tmp_path}"]))
    assert record["status"] == "ok", record.get("traceback")
    assert record["device"].startswith("cuda") and record["peak_gpu_mb"] > 0
    assert 0.0 <= record["image_auroc"] <= 1.0 and 0.0 <= record["pixel_auroc"] <= 1.0


def test_gpu_memory_tier_serves_the_cpu_features(small_toy):
    """Features extracted on the GPU agree with the CPU's to fp16/TF32 round-off (relative L2 error
    < 1e-2 per layer), live on the GPU, and a second request is a memory-tier hit."""
    cfg = compose([*small_toy, *SMALL, "method=padim"])
    (category,) = load_categories(cfg)
    method = build_method(cfg)
    on_cpu = build_context(cfg, method, category, torch.device("cpu")).features
    memory_tier(CUDA, float(cfg.cache.max_gb)).clear()
    gpu_ctx = build_context(cfg, method.to(CUDA), category, CUDA)
    on_gpu = gpu_ctx.features
    batch = next(iterate_batches(category.test, gpu_ctx.transform, 4))
    cpu_feats, gpu_feats = on_cpu(batch), on_gpu(batch)
    assert (on_gpu.stats.hits, on_gpu.stats.misses) == (0, 4)
    for layer, expected in cpu_feats.items():
        got = gpu_feats[layer]
        assert got.device.type == "cuda"
        expected = expected.float()
        error = torch.linalg.vector_norm(got.cpu().float() - expected) / torch.linalg.vector_norm(expected)
        assert error < 1e-2, (layer, float(error))
    again = on_gpu(batch)
    assert (on_gpu.stats.hits, on_gpu.stats.misses) == (4, 4)
    assert all(torch.equal(again[k], gpu_feats[k]) for k in gpu_feats)


def test_glass_same_seed_same_model_on_cuda(small_toy):
    """The runner's seeding and deterministic cuDNN make two GPU fits bit-identical."""
    cfg = compose([*small_toy, *SMALL, "method=glass", *TINY_METHODS["glass"]])
    (category,) = load_categories(cfg)
    states = []
    for _ in range(2):
        seed_everything(int(cfg.seed))
        method = build_method(cfg).to(CUDA).train()
        method.fit(build_context(cfg, method, category, CUDA))
        states.append(method.state_dict())
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name


def test_gpu_knn_matches_the_cpu_index():
    """On a GPU the index searches there (faiss-gpu, else torch) and finds the CPU index's neighbours."""
    generator = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(5000, 256, generator=generator), torch.randn(700, 256, generator=generator)
    index = FlatL2Index(bank.to(CUDA), CUDA)
    assert index.backend in ("faiss-gpu", "torch")
    dist, idx = index.search(queries.to(CUDA), 3)
    ref_dist, ref_idx = FlatL2Index(bank).search(queries, 3)
    assert dist.device.type == "cuda" and torch.equal(idx.cpu(), ref_idx)
    torch.testing.assert_close(dist.cpu(), ref_dist, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("device", [CUDA, None])
def test_synchronize_waits_for_queued_kernels(device):
    """A timer stopped after ``synchronize`` must count the queued work: the stream is idle after it."""
    x = torch.randn(4096, 4096, device=CUDA)
    for _ in range(20):
        x = x @ x / 64.0
    synchronize(device)
    assert torch.cuda.current_stream(CUDA).query()


def test_auto_device_is_the_gpu():
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cpu") == torch.device("cpu")
