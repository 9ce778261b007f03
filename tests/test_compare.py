"""Paired bootstrap, DeLong's test, Friedman/Nemenyi and the leaderboard's comparisons.

Reference values: DeLong's test against pROC's tested ``roc.test`` results on its ``aSAH`` data
(tests/testthat/test-roc.test.R of pROC 1.18: wfns vs s100b) and against a slow literal implementation
with the pairwise kernel; Friedman, Iman-Davenport and the Nemenyi CD against Demšar (2006),
section 3.2.2, Table 6 and Table 5(a).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats as sps

from adbench import results, stats
from adbench.metrics import auroc
from adbench.reporting import viz
from adbench.reporting.compare import cd_groups, delong_test, friedman, nemenyi_cd, paired_bootstrap
from adbench.reporting.leaderboard import (
    ComparisonError,
    RunArrays,
    accuracy_tables,
    compare_runs,
    main,
    pivot,
    render,
    split_pair,
)

# pROC's aSAH data (Turck et al. 2010; 113 patients, 41 with a poor outcome), as distributed with
# pROC: outcome (1 = Poor), WFNS grade and S100B in hundredths, in the data set's row order.
ASAH_POOR = ("00001101001011001011101000000000100110110000000001100010001010011101101111000110100000010000000"
             "000001111110001000")
ASAH_WFNS = ("11113254125255125225211112121134214541425511241125521251222151125214524414121421232421451154221"
             "113125225552445111")
ASAH_S100B = (
    "13 14 10 4 13 10 47 16 18 10 12 10 44 71 4 8 49 4 7 33 9 9 7 11 7 17 7 11 13 19 5 16 41 14 34 35 48 9 "
    "96 25 50 46 16 7 43 45 11 8 9 86 52 8 6 13 207 10 14 15 7 6 77 5 9 30 3 9 4 23 70 9 27 71 8 26 8 16 9 "
    "13 10 8 11 33 11 28 7 10 32 22 7 5 24 38 10 15 8 14 10 7 4 19 56 14 58 32 82 74 15 47 17 44 15 50 48")


# ---------------------------------------------------------------------------------------------- bootstrap


def test_paired_bootstrap_matches_its_definition():
    rng = np.random.default_rng(0)
    a = rng.normal(0.90, 0.02, 500)
    b = a - rng.normal(0.005, 0.01, 500)  # correlated, A slightly better
    result = paired_bootstrap(a, b)
    d = a - b
    assert result.mean == pytest.approx(d.mean()) and result.n_boot == 500
    assert (result.lo, result.hi) == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])))
    below = sum(1 for x in d if x <= 0)  # literal counts
    above = sum(1 for x in d if x >= 0)
    assert result.p == pytest.approx(min(1.0, 2 * (min(below, above) + 1) / 501))
    swapped = paired_bootstrap(b, a)  # symmetric: same p, mirrored interval
    assert swapped.p == result.p and (swapped.lo, swapped.hi) == pytest.approx((-result.hi, -result.lo))


def test_paired_bootstrap_edge_cases():
    a = np.linspace(0.8, 0.9, 99)
    assert paired_bootstrap(a, a).p == 1.0 and paired_bootstrap(a, a).mean == 0.0
    assert paired_bootstrap(a + 0.01, a).p == pytest.approx(2 / 100)  # never 0: the smallest is 2/(B+1)
    with_nan = paired_bootstrap(np.r_[a, np.nan], np.r_[a - 0.01, 0.5])
    assert with_nan.n_boot == 99  # the NaN pair is dropped
    with pytest.raises(ValueError, match="resampled alike"):
        paired_bootstrap(a, a[:-1])


def test_paired_bootstrap_is_calibrated_under_the_null():
    """Two runs with the same expected score on a shared test set: p <= 0.05 about 5 % of the time."""
    rng = np.random.default_rng(1)
    n_images, n_boot, trials = 60, 400, 300
    rejections = 0
    for _ in range(trials):
        labels = np.r_[np.zeros(n_images // 2), np.ones(n_images // 2)]
        signal = rng.normal(size=n_images) + labels  # the shared difficulty of each image
        a, b = signal + rng.normal(0, 0.7, n_images), signal + rng.normal(0, 0.7, n_images)
        weights = stats.stratified_weights(labels, n_boot, seed=int(rng.integers(1 << 30)))
        boot_a = stats.image_replicates(a, labels, weights)["image_auroc"]
        boot_b = stats.image_replicates(b, labels, weights)["image_auroc"]
        rejections += paired_bootstrap(boot_a, boot_b).p <= 0.05
    assert 0.01 <= rejections / trials <= 0.10


# ---------------------------------------------------------------------------------------------- DeLong


def _delong_literal(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray) -> tuple[float, ...]:
    """DeLong et al. (1988) written out: psi(x, y) = 1, 1/2, 0 for every (anomalous x, normal y) pair."""
    positive = labels.astype(bool)
    v10, v01, aucs = [], [], []
    for s in (scores_a, scores_b):
        x, y = s[positive], s[~positive]
        psi = np.array([[1.0 if xi > yj else 0.5 if xi == yj else 0.0 for yj in y] for xi in x])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    m, n = positive.sum(), (~positive).sum()
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    z = (aucs[0] - aucs[1]) / np.sqrt(var)
    return aucs[0], aucs[1], z, 2 * sps.norm.sf(abs(z))


@pytest.mark.parametrize("seed", range(4))
def test_delong_matches_the_literal_pairwise_kernel(seed):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.r_[np.zeros(23), np.ones(14)])
    scores_a = np.round(rng.normal(size=37) + labels, 1)  # many ties, within and across classes
    scores_b = np.round(0.5 * scores_a + rng.normal(size=37), 1)  # correlated with a
    result = delong_test(scores_a, scores_b, labels)
    np.testing.assert_allclose(result, _delong_literal(scores_a, scores_b, labels), rtol=1e-10)
    assert result.auc_a == pytest.approx(auroc(scores_a, labels), abs=1e-12)


def test_delong_reproduces_proc_roc_test_on_asah():
    """pROC: roc.test(roc(outcome, wfns), roc(outcome, s100b)) gives Z = 2.20898359144091,
    p = 0.0271757822291882; AUCs 0.823678861788618 and 0.731368563685637."""
    poor = np.array([int(c) for c in ASAH_POOR])
    wfns = np.array([int(c) for c in ASAH_WFNS], dtype=float)
    s100b = np.array(ASAH_S100B.split(), dtype=float) / 100
    assert len(poor) == len(wfns) == len(s100b) == 113 and poor.sum() == 41
    result = delong_test(wfns, s100b, poor)
    assert result.auc_a == pytest.approx(0.823678861788618, abs=1e-12)
    assert result.auc_b == pytest.approx(0.731368563685637, abs=1e-12)
    assert result.z == pytest.approx(2.20898359144091, rel=1e-10)
    assert result.p == pytest.approx(0.0271757822291882, rel=1e-9)
    assert delong_test(s100b, wfns, poor).z == pytest.approx(-result.z)


def test_delong_edge_cases():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.9])
    same = delong_test(scores, scores, labels)
    assert same.z == 0.0 and same.p == 1.0
    with pytest.raises(ValueError, match="same images"):
        delong_test(scores, scores[:-1], labels)
    with pytest.raises(ValueError, match="2 anomalous and 2 normal"):
        delong_test(scores, scores, np.array([0, 0, 0, 0, 0, 1]))


# ---------------------------------------------------------------------------------------------- Friedman


def demsar_table6() -> pd.DataFrame:
    """Demšar (2006) Table 6: AUC of C4.5 variants on 14 data sets, as printed (3 decimals). The paper
    ranks voting's C4.5+cf (2) above C4.5+m+cf (3), both printed 0.975: their unrounded AUCs differ,
    so C4.5+m+cf gets 0.9749 here, reproducing the paper's ranks and average ranks exactly."""
    rows = {
        "adult (sample)": (0.763, 0.768, 0.771, 0.798), "breast cancer": (0.599, 0.591, 0.590, 0.569),
        "breast cancer wisconsin": (0.954, 0.971, 0.968, 0.967), "cmc": (0.628, 0.661, 0.654, 0.657),
        "ionosphere": (0.882, 0.888, 0.886, 0.898), "iris": (0.936, 0.931, 0.916, 0.931),
        "liver disorders": (0.661, 0.668, 0.609, 0.685), "lung cancer": (0.583, 0.583, 0.563, 0.625),
        "lymphography": (0.775, 0.838, 0.866, 0.875), "mushroom": (1.000, 1.000, 1.000, 1.000),
        "primary tumor": (0.940, 0.962, 0.965, 0.962), "rheum": (0.619, 0.666, 0.614, 0.669),
        "voting": (0.972, 0.981, 0.975, 0.9749), "wine": (0.957, 0.978, 0.946, 0.970),
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"])


def test_friedman_reproduces_demsar_section_3_2_2():
    result = friedman(demsar_table6())
    np.testing.assert_allclose(result.avg_ranks, [44 / 14, 28 / 14, 40.5 / 14, 27.5 / 14])
    assert list(result.avg_ranks.round(3)) == [3.143, 2.000, 2.893, 1.964]  # as printed
    assert result.n_blocks == 14
    assert result.chi2 == pytest.approx(9.28, abs=0.005) and result.f == pytest.approx(3.69, abs=0.005)
    # "The critical value of F(3, 39) for alpha = 0.05 is 2.85, so we reject the null-hypothesis."
    assert sps.f.ppf(0.95, 3, 39) == pytest.approx(2.85, abs=0.005) and result.p_f < 0.05
    assert result.p_chi2 == pytest.approx(sps.chi2.sf(result.chi2, 3))


def test_friedman_ranks_literally_and_agrees_with_scipy_without_ties():
    rng = np.random.default_rng(3)
    scores = pd.DataFrame(rng.random((9, 5)), columns=list("abcde"))
    result = friedman(scores)
    literal = [[1 + sum(other > value for other in row) for value in row] for row in scores.to_numpy()]
    np.testing.assert_allclose(result.avg_ranks, np.mean(literal, axis=0))
    expected = sps.friedmanchisquare(*scores.to_numpy().T)  # equals chi2_F when no block has ties
    assert result.chi2 == pytest.approx(expected.statistic)
    assert result.p_chi2 == pytest.approx(expected.pvalue)
    lower = friedman(scores, higher_is_better=False)
    np.testing.assert_allclose(lower.avg_ranks, 6 - result.avg_ranks)
    tied = friedman(pd.DataFrame([[0.9, 0.9, 0.5], [0.8, 0.7, 0.7]], columns=list("xyz")))
    np.testing.assert_allclose(tied.avg_ranks, [(1.5 + 1) / 2, (1.5 + 2.5) / 2, (3 + 2.5) / 2])
    with pytest.raises(ValueError, match="incomplete blocks"):
        friedman(scores.where(scores > 0.05))


@pytest.mark.parametrize("alpha, published", [
    (0.05, (1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164)),
    (0.10, (1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920)),
])
def test_nemenyi_cd_uses_demsar_table_5a(alpha, published):
    for k, q in zip(range(2, 11), published):
        assert nemenyi_cd(k, 6, alpha) / np.sqrt(k * (k + 1) / 36) == pytest.approx(q, abs=1e-3)
    assert nemenyi_cd(4, 14, 0.05) == pytest.approx(1.25, abs=0.005)  # the paper's example
    assert nemenyi_cd(4, 14, 0.10) == pytest.approx(1.12, abs=0.005)


def test_cd_groups_of_demsar_figure_1():
    ranks = friedman(demsar_table6()).avg_ranks.to_dict()
    # alpha 0.05: even best vs worst (1.179) is below the CD (1.25): one group
    assert cd_groups(ranks, nemenyi_cd(4, 14, 0.05)) == [["C4.5+m+cf", "C4.5+m", "C4.5+cf", "C4.5"]]
    # alpha 0.10 (CD 1.12): C4.5 is worse than C4.5+m and C4.5+m+cf; C4.5+cf is in both groups
    expected = [["C4.5+m+cf", "C4.5+m", "C4.5+cf"], ["C4.5+cf", "C4.5"]]
    assert cd_groups(ranks, nemenyi_cd(4, 14, 0.10)) == expected


def test_cd_groups_are_the_maximal_cliques_of_insignificant_pairs():
    rng = np.random.default_rng(5)
    for _ in range(50):
        ranks = {f"m{i}": float(r) for i, r in enumerate(rng.uniform(1, 8, rng.integers(2, 9)))}
        cd = float(rng.uniform(0.2, 4))
        groups = cd_groups(ranks, cd)
        names = sorted(ranks)
        close = {(a, b) for a in names for b in names if a < b and abs(ranks[a] - ranks[b]) < cd}
        covered = {(a, b) for g in groups for a in g for b in g if a < b}
        assert covered == close  # every insignificant pair is joined, and no significant one
        assert all(not set(g) < set(h) for g in groups for h in groups)  # maximal


def test_cd_diagram_writes_a_readable_png(tmp_path):
    ranks = friedman(demsar_table6()).avg_ranks.to_dict()
    path = viz.cd_diagram(ranks, nemenyi_cd(4, 14, 0.10), tmp_path / "cd.png", "Demšar Table 6")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 600 and img.size[1] > 200
        assert np.asarray(img.convert("L")).std() > 10


# ---------------------------------------------------------------------------------------------- leaderboard


def _run(root: Path, method: str, category: str, seed: int, scores: np.ndarray | None, labels: np.ndarray,
         paths: list[str] | None = None, n_boot: int = 300) -> dict:
    """Write one finished run's record and, unless ``scores`` is None, its npz with replicates."""
    config = {"method": {"name": method, "variant": "default"}, "protocol": "one_class", "seed": seed,
              "data": {"name": "toy", "category": category}}
    chash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    record = {"run_id": f"toy/{category}/{method}/{chash}", "status": "ok", "method": method,
              "variant": "default", "dataset": "toy", "category": category, "protocol": "one_class",
              "seed": seed, "config_hash": chash, "finished_at": "2026-01-01T00:00:00+00:00",
              "config": config, "image_auroc": np.nan if scores is None else auroc(scores, labels)}
    path = results.record_path(root, "toy", category, method, chash)
    results.atomic_write_text(path, json.dumps(record))
    if scores is not None:
        boot = stats.image_replicates(scores, labels, stats.stratified_weights(labels, n_boot))
        paths = paths or [f"/data/toy/{category}/{i:03d}.png" for i in range(len(labels))]
        np.savez(path.with_suffix(".npz"), image_scores=scores, labels=labels, paths=np.array(paths),
                 boot_image_auroc=boot["image_auroc"])
    return record


@pytest.fixture()
def runs(tmp_path) -> tuple[Path, dict]:
    """Three methods on two categories of one test set: ``good`` (2 seeds), ``close`` (about as good,
    2 seeds), ``weak`` (much worse, 1 seed); image scores share each image's difficulty."""
    rng = np.random.default_rng(7)
    truth = {}
    for category in ("brick", "grass"):
        labels = np.r_[np.zeros(40, dtype=int), np.ones(30, dtype=int)]
        difficulty = rng.normal(size=70)
        for method, strength, seeds in (("good", 2.0, (0, 1)), ("close", 1.9, (0, 1)), ("weak", 0.5, (0,))):
            for seed in seeds:
                scores = strength * labels + difficulty + rng.normal(0, 0.6, 70)
                truth[(method, category, seed)] = _run(tmp_path, method, category, seed, scores, labels)
    results.rebuild_leaderboard(tmp_path)
    return tmp_path, truth


def _boot(root: Path, record: dict) -> np.ndarray:
    path = results.record_path(root, "toy", record["category"], record["method"], record["config_hash"])
    with np.load(path.with_suffix(".npz")) as data:
        return data["boot_image_auroc"]


def _cell_replicates(root: Path, truth: dict, method: str, column: str) -> np.ndarray:
    """Replicates averaged over the method's seeds (and over categories for the mean column)."""
    categories = ("brick", "grass") if column == "mean" else (column,)
    return np.mean([np.mean([_boot(root, record) for (m, c, _), record in truth.items()
                             if m == method and c == category], axis=0) for category in categories], axis=0)


def test_accuracy_marks_cells_not_significantly_worse_than_the_best(runs):
    root, truth = runs
    frame = results.rebuild_leaderboard(root)
    (table,) = accuracy_tables(frame, "image_auroc", RunArrays(root))
    values = pivot(frame, "image_auroc")["toy"]
    rows = {row[0]: i for i, row in enumerate(table.rows)}
    for j, column in enumerate(table.header[1:], start=1):
        best = values[column].idxmax()
        for method, i in rows.items():
            d = _cell_replicates(root, truth, best, column) - _cell_replicates(root, truth, method, column)
            p = min(1.0, 2 * (min(np.sum(d <= 0), np.sum(d >= 0)) + 1) / (len(d) + 1))
            assert ((i, j) in table.marked) == (p > 0.05), (method, column, p)
        assert (rows[best], j) in table.marked and (rows["weak"], j) not in table.marked
    assert any(note.startswith("† = not significantly worse") for note in table.notes)
    markdown = table.markdown()
    assert re.search(r"\| \*\*\d+\.\d\*\*† \|", markdown) and "†**" not in markdown  # after the bold
    latex = table.latex()
    assert r"$^\dagger$" in latex and latex.count("{") == latex.count("}")


def test_cells_without_replicates_are_not_marked(runs):
    root, _ = runs
    labels = np.r_[np.zeros(40, dtype=int), np.ones(30, dtype=int)]
    legacy = _run(root, "legacy", "brick", 0, None, labels)  # an old record: no npz
    legacy["image_auroc"] = 0.999  # the best brick cell, but without replicates: nothing to test against
    results.write_record(root, legacy)
    (table,) = accuracy_tables(results.rebuild_leaderboard(root), "image_auroc", RunArrays(root))
    brick = table.header.index("brick")
    assert not any(j == brick for _, j in table.marked)
    assert any("cells without replicates (older records) are not marked" in n for n in table.notes)
    old = accuracy_tables(results.rebuild_leaderboard(root), "image_auroc", RunArrays(root / "elsewhere"))
    assert not old[0].marked and any(n.startswith("no † marks") for n in old[0].notes)
    plain = accuracy_tables(results.rebuild_leaderboard(root), "image_auroc")  # no arrays: no tests, no note
    assert not plain[0].marked and not any("†" in n for n in plain[0].notes)


def test_intervals_show_percentile_interval_and_seed_std(runs):
    root, truth = runs
    frame = results.rebuild_leaderboard(root)
    (table,) = accuracy_tables(frame, "image_auroc", RunArrays(root), intervals=True)
    row = next(r for r in table.rows if r[0] == "good")
    brick = [truth[("good", "brick", s)] for s in (0, 1)]
    values = [r["image_auroc"] for r in brick]
    replicates = np.mean([_boot(root, r) for r in brick], axis=0)
    lo, hi = np.quantile(replicates, [0.025, 0.975])
    expected = (f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f} "
                f"[{100 * lo:.1f}, {100 * hi:.1f}]")
    assert row[table.header.index("brick")] == expected
    weak = next(r for r in table.rows if r[0] == "weak")[table.header.index("grass")]
    lo, hi = np.quantile(_boot(root, truth[("weak", "grass", 0)]), [0.025, 0.975])
    assert weak == f"{100 * truth[('weak', 'grass', 0)]['image_auroc']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    assert any(n.startswith("[lo, hi]: 95 % percentile interval") for n in table.notes)
    text = render(frame, ["accuracy"], ["image_auroc"], "latex", arrays=RunArrays(root), intervals=True)
    cells = [line for line in text.splitlines() if not line.startswith("%")]
    assert any(r"$\pm$" in line for line in cells) and not any("±" in line for line in cells)


def test_compare_pairs_seeds_and_tests_the_seed_mean_difference(runs, capsys):
    root, truth = runs
    frame = results.rebuild_leaderboard(root)
    comparison = compare_runs(frame, RunArrays(root), "good", "close", ["image_auroc"])
    rows = comparison.rows.set_index("category")
    assert list(rows.index) == ["brick", "grass", "mean"] and rows.loc["brick", "seeds"] == "0, 1"
    pairs = [(truth[("good", "brick", s)], truth[("close", "brick", s)]) for s in (0, 1)]
    assert rows.loc["brick", "delta"] == pytest.approx(np.mean([a["image_auroc"] - b["image_auroc"]
                                                                for a, b in pairs]))
    d = np.mean([_boot(root, a) - _boot(root, b) for a, b in pairs], axis=0)
    interval = (rows.loc["brick", "lo"], rows.loc["brick", "hi"])
    assert interval == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])))
    assert rows.loc["brick", "p"] == pytest.approx(paired_bootstrap(d, np.zeros_like(d)).p)
    ps = []
    for a, b in pairs:
        path_a = results.record_path(root, "toy", "brick", "good", a["config_hash"]).with_suffix(".npz")
        path_b = results.record_path(root, "toy", "brick", "close", b["config_hash"]).with_suffix(".npz")
        with np.load(path_a) as npz_a, np.load(path_b) as npz_b:
            ps.append(delong_test(npz_a["image_scores"], npz_b["image_scores"], npz_a["labels"]).p)
    assert rows.loc["brick", "delong_p"] == pytest.approx(tuple(ps))
    assert rows.loc["mean", "delta"] == pytest.approx(rows.loc[["brick", "grass"], "delta"].mean())

    weak = compare_runs(frame, RunArrays(root), "good", "weak", ["image_auroc"]).rows.set_index("category")
    assert weak.loc["brick", "seeds"] == "0" and (weak["p"] < 0.05).all() and (weak["lo"] > 0).all()
    assert main(["--results", str(root), "--compare", "good,weak", "--metric", "image_auroc"]) == 0
    out = capsys.readouterr().out
    assert "good (A) vs weak (B) — toy" in out and "seeds run by only one of them" in out


def test_compare_refuses_runs_on_different_test_images(runs, capsys):
    root, truth = runs
    labels = np.r_[np.zeros(40, dtype=int), np.ones(30, dtype=int)]
    other = _run(root, "moved", "brick", 0, labels + np.linspace(0, 1, 70), labels,
                 paths=[f"/elsewhere/{i}.png" for i in range(70)])
    results.rebuild_leaderboard(root)
    assert main(["--results", str(root), "--compare", "good,moved"]) == 2
    err = capsys.readouterr().err
    assert truth[("good", "brick", 0)]["run_id"] in err and other["run_id"] in err
    assert "different images" in err and "Traceback" not in err
    assert main(["--results", str(root), "--compare", "good,nosuch"]) == 2
    assert "no finished run of 'nosuch'; labels: close; good; moved; weak" in capsys.readouterr().err
    assert main(["--results", str(root), "--compare", "good"]) == 2
    assert "two labels or method names" in capsys.readouterr().err
    assert main(["--results", str(root), "--compare", "good,weak", "--metric", "image_aurco"]) == 2
    assert "unknown metric image_aurco; metrics: image_auroc," in capsys.readouterr().err


def test_compare_names_may_hold_commas():
    small, large = "patchcore[crop=64, resize=64]", "patchcore[crop=96, resize=96]"
    frame = pd.DataFrame({"method": ["patchcore", "patchcore", "padim"], "label": [small, large, "padim"]})
    assert split_pair(f"{small},padim", frame) == (small, "padim")
    assert split_pair(f"padim, {large}", frame) == ("padim", large)
    assert split_pair("padim,nosuch", frame) == ("padim", "nosuch")  # compare_runs names the unknown one
    with pytest.raises(ComparisonError, match="two labels or method names"):
        split_pair("a,b,c", frame)
