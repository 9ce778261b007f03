"""The few_shot protocol: shot drawing, the toy source/target split, config hashing, the record."""

from __future__ import annotations

import pytest
from adbench.datasets.toy import TOY_SOURCE, TOY_TARGET

from adbench.config import compose
from adbench.data import Category, DataError, Sample
from adbench.method import Context, Method
from adbench.protocols import FewShotSettings, apply_few_shot, draw_shots
from adbench.runner import attach_few_shot, config_hash, load_categories, run

TINY = ["method.image.resize=32", "method.image.crop=32", "progress=false", "batch_size=16"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _train(n: int, category: str = "widget") -> list[Sample]:
    folder = f"/d/{category}/train/good"
    return [Sample(f"{folder}/{i:03d}.png", 0, None, "good", category, "train") for i in range(n)]


def _few_shot(toy: list[str], *extra: str) -> list[str]:
    return [*toy, "protocol=few_shot", "source=toy", *extra]


def test_same_seed_same_shots_other_seed_other_shots():
    train = _train(40)
    first = draw_shots(train, 4, seed=0, category="widget")
    assert first == draw_shots(list(reversed(train)), 4, seed=0, category="widget")  # order-independent
    assert len({s.image_path for s in first}) == 4 and all(s in train for s in first)
    others = [draw_shots(train, 4, seed=s, category="widget") for s in range(1, 6)]
    assert all(o != first for o in others)
    assert draw_shots(train, 4, seed=0, category="gadget") != first  # each category its own draw
    assert draw_shots(train, 8, seed=0, category="widget") != first


def test_shots_never_come_from_test_images():
    test_sample = Sample("/d/widget/test/good/000.png", 0, None, "good", "widget", "test")
    with pytest.raises(DataError, match="normal train images"):
        draw_shots([*_train(3), test_sample], 2, seed=0, category="widget")
    anomalous = Sample("/d/widget/train/good/099.png", 1, None, "crack", "widget", "train")
    with pytest.raises(DataError, match="normal train images"):
        draw_shots([*_train(3), anomalous], 2, seed=0, category="widget")
    with pytest.raises(DataError, match="only 3"):
        draw_shots(_train(3), 4, seed=0, category="widget")
    # a file listed both as train and test (a broken tree) cannot become a reference
    train = _train(4)
    duplicate = Sample(train[0].image_path, 0, None, "good", "widget", "test")
    leaky = Category("d", "widget", "/d", train, [duplicate])
    with pytest.raises(DataError, match="are test images"):
        apply_few_shot(leaky, FewShotSettings("d", None, None, 4, 0))


def test_toy_split_and_reference_pools(small_toy):
    categories = load_categories(compose(_few_shot(small_toy, "shots=2", "shot_seed=7")))
    assert [c.name for c in categories] == list(TOY_TARGET)
    full = {c.name: c for c in load_categories(compose(small_toy))}
    for category in categories:
        train_files = {s.image_path for s in full[category.name].train}
        test_files = {s.image_path for s in category.test}
        assert len(category.train) == 2 and {s.image_path for s in category.train} <= train_files
        assert not {s.image_path for s in category.train} & test_files
        assert category.test == full[category.name].test
        assert category.info["few_shot"]["source_categories"] == list(TOY_SOURCE)
    with pytest.raises(DataError, match="source group"):
        load_categories(compose(_few_shot(small_toy, "data.category=brick")))
    with pytest.raises(DataError, match="needs source"):
        load_categories(compose([*small_toy, "protocol=few_shot"]))


def test_config_hash_covers_the_protocol():
    few_shot = ["protocol=few_shot", "source=toy"]
    base = compose(few_shot)
    assert config_hash(base, "cat") != config_hash(compose([*few_shot, "shots=2"]), "cat")
    assert config_hash(base, "cat") != config_hash(compose([*few_shot, "shot_seed=1"]), "cat")
    assert config_hash(base, "cat") != config_hash(compose([]), "cat")
    # one_class hashes ignore the few-shot keys
    assert config_hash(compose([]), "cat") == config_hash(compose(["shots=8", "source=toy"]), "cat")


def test_source_reaches_only_methods_that_train_on_it(small_toy):
    cfg = compose(_few_shot(small_toy, "data.category=cat"))
    (category,) = load_categories(cfg)

    class Probe:
        uses_source = True

    ctx = Context(category=category, transform=None, device=None, seed=0)  # type: ignore[arg-type]
    record: dict = {}
    attach_few_shot(cfg, Probe(), category, ctx, record)  # type: ignore[arg-type]
    assert [c.name for c in ctx.source] == list(TOY_SOURCE)
    assert all(any(s.label == 1 and s.mask_path for s in c.test) for c in ctx.source)
    assert record["source_test_consumed"] is True
    assert "never an evaluation of the source" in record["protocol_note"]
    plain = Context(category=category, transform=None, device=None, seed=0)  # type: ignore[arg-type]
    record = {}
    attach_few_shot(cfg, Method(), category, plain, record)
    assert plain.source == [] and record["source_test_consumed"] is False


def test_patchcore_few_shot_baseline_record(small_toy, tmp_path):
    overrides = [*_few_shot(small_toy, "data.category=gravel", "shots=2"), "method=patchcore",
                 f"results_dir={tmp_path}", *TINY]
    (record,) = run(compose(overrides))
    assert record["status"] == "ok", record.get("traceback")
    (category,) = load_categories(compose(overrides))
    assert record["protocol"] == "few_shot" and record["source"] == "toy" and record["shots"] == 2
    assert record["reference_files"] == [s.image_path for s in category.train] and record["n_train"] == 2
    assert record["source_categories"] == list(TOY_SOURCE) and record["n_train_available"] == 10
    assert 0.0 <= record["image_auroc"] <= 1.0
