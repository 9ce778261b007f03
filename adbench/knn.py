"""Exact nearest-neighbour search with faiss (``IndexFlatL2``; a GPU index when CUDA is present).

faiss' L2 metric returns *squared* Euclidean distances, as the official PatchCore scores use.
One ``StandardGpuResources`` is shared per process (official PatchCore creates one per index,
which exhausts GPU memory across classes: patchcore-inspection issue #57).
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

_GPU_RESOURCES: dict[int, object] = {}


def faiss_has_gpu() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _gpu_resources(device: int) -> object:
    if device not in _GPU_RESOURCES:
        _GPU_RESOURCES[device] = faiss.StandardGpuResources()
    return _GPU_RESOURCES[device]


class FlatL2Index:
    """Exact L2 index over a memory bank [N, D] (float32).

    ``search(queries [Q, D], k)`` → (squared distances [Q, k], indices [Q, k]) as torch tensors
    on the device of ``queries``. Uses faiss' GPU index on ``device`` when it is CUDA and faiss
    was built with GPU support, else the CPU index.
    """

    def __init__(self, bank: torch.Tensor, device: torch.device | None = None) -> None:
        bank_np = np.ascontiguousarray(bank.detach().float().cpu().numpy())
        self.dim = bank_np.shape[1]
        self.size = bank_np.shape[0]
        index = faiss.IndexFlatL2(self.dim)
        self.on_gpu = device is not None and device.type == "cuda" and faiss_has_gpu()
        if self.on_gpu:
            gpu_id = device.index or 0
            torch.cuda.empty_cache()
            index = faiss.index_cpu_to_gpu(_gpu_resources(gpu_id), gpu_id, index)
        index.add(bank_np)
        self.index = index

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        q = np.ascontiguousarray(queries.detach().float().cpu().numpy())
        dist, idx = self.index.search(q, k)
        return (
            torch.from_numpy(dist).to(queries.device),
            torch.from_numpy(idx).to(queries.device),
        )
