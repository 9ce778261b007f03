"""Background synthesis (adbench.components.prefetch): same items in the same order, errors surface, early
close stops the producer, and DRAEM trains the same model with synthesis in a thread."""

from __future__ import annotations

import threading

import pytest
import torch

from adbench.components.prefetch import background
from adbench.config import compose
from adbench.runner import build_context, build_method, load_categories, seed_everything


def test_background_yields_every_item_in_order():
    assert list(background(iter(range(50)), depth=3)) == list(range(50))
    assert list(background(iter([]))) == []


def test_producer_errors_are_raised_where_they_happened():
    def items():
        yield 1
        yield 2
        raise KeyError("texture 7")

    got = []
    with pytest.raises(KeyError, match="texture 7"):
        for item in background(items()):
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_the_producer():
    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    stream = background(items(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert len(produced) <= 3 + 2 + 1  # taken, queued, the one being made
    assert not any(t.name == "adbench-prefetch" for t in threading.enumerate())


def fit_draem(toy_root, in_background: bool, device: str = "cpu"):
    cfg = compose(["method=draem_cpu", "data=toy", f"data.root={toy_root}", "data.category=brick",
                   "progress=false", "method.image.resize=32", "method.image.crop=32",
                   "method.params.epochs=2", "method.params.recon_width=4", "method.params.disc_width=4"])
    (category,) = load_categories(cfg)
    seed_everything(int(cfg.seed))
    method = build_method(cfg).to(device)
    method.synthesis_in_background = in_background
    method.fit(build_context(cfg, method, category, torch.device(device)))
    return method


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
])
def test_draem_trains_the_same_model_with_synthesis_in_the_background(toy_root, device):
    inline, threaded = fit_draem(toy_root, False, device), fit_draem(toy_root, True, device)
    assert (inline.info["synthesis_thread"], threaded.info["synthesis_thread"]) == ("inline", "background")
    assert inline.loss_history == threaded.loss_history
    for (name, a), b in zip(inline.state_dict().items(), threaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_failing_draem_step_stops_the_background_producer(toy_root, monkeypatch):
    from adbench.methods.draem import Draem

    def fail(self, batch, optimiser):
        raise RuntimeError("step failed")

    monkeypatch.setattr(Draem, "train_step", fail)
    with pytest.raises(RuntimeError, match="step failed") as failure:
        fit_draem(toy_root, True)
    assert failure.tb is not None  # the traceback keeps fit's frame (and its iterator) alive
    assert not any(t.name == "adbench-prefetch" for t in threading.enumerate())
