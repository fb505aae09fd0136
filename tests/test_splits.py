"""Groups and splits: no sequence on both sides, deterministic from the seed, reproducible from split.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from polypseg.data.layouts import discover
from polypseg.data.splits import Split, check_no_leak, load_groups, make_split
from polypseg.errors import PolypsegError


@pytest.fixture(scope="module")
def cvc_groups(cvc):
    ds = discover(cvc)
    groups, source = load_groups(ds)
    assert "29 sequences" in source
    return ds.names, groups


def test_builtin_table_matches_published_ranges(cvc_groups):
    names, groups = cvc_groups
    g = dict(zip(names, groups))
    assert len(set(groups)) == 29 and g["1"] == "1" and g["612"] == "29"


def test_group_holdout_has_no_leak_and_is_deterministic(cvc_groups):
    names, groups = cvc_groups
    a = make_split(names, groups, "group", val_fraction=0.2, seed=3)
    b = make_split(names, groups, "group", val_fraction=0.2, seed=3)
    c = make_split(names, groups, "group", val_fraction=0.2, seed=4)
    assert a == b and a.val != c.val
    check_no_leak(a, names, groups)
    g = dict(zip(names, groups))
    assert not ({g[n] for n in a.train} & {g[n] for n in a.val})
    assert 0.15 < len(a.val) / len(names) < 0.3
    assert sorted(a.train + a.val, key=int) == names


def test_kfold_partitions_all_frames_by_group(cvc_groups):
    names, groups = cvc_groups
    g = dict(zip(names, groups))
    vals = [make_split(names, groups, "kfold", folds=5, fold=k, seed=0).val for k in range(5)]
    assert sorted(n for v in vals for n in v) == sorted(names)
    group_sets = [{g[n] for n in v} for v in vals]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not group_sets[i] & group_sets[j]
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 30  # balanced by frame count


def test_frame_split_is_random_and_labelled(cvc_groups):
    names, groups = cvc_groups
    s = make_split(names, groups, "frame", val_fraction=0.2, seed=0)
    assert s.method == "frame" and len(s.val) == round(0.2 * 612)
    check_no_leak(s, names, groups)  # allowed by design for the leaky protocol


def test_split_json_round_trip(cvc_groups, tmp_path):
    names, groups = cvc_groups
    s = make_split(names, groups, "kfold", folds=5, fold=2, seed=1)
    s.save(tmp_path / "split.json")
    t = Split.load(tmp_path / "split.json")
    assert t == s
    tr, va = t.indices(names)
    assert len(tr) + len(va) == 612


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe", "cannot read split s.json: 'utf-8' codec can't decode"),
        (
            b"[1]",
            "s.json: not a polypseg split (the split.json a run writes): expected a JSON object, got list",
        ),
        (b"{}", "s.json: not a polypseg split (the split.json a run writes): no method, seed, train, val"),
        (
            b'{"method": "group", "seed": 0, "train": "a", "val": []}',
            "train and val must be lists of frame names",
        ),
        (b'{"method": "group", "seed": 0, "train": [], "val": [], "x": 1}', "unknown key(s) x"),
    ],
)
def test_a_file_that_is_not_a_split_is_one_line(tmp_path, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)
    Path("s.json").write_bytes(content)
    with pytest.raises(PolypsegError) as e:
        Split.load("s.json")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_leak_is_detected(cvc_groups):
    names, groups = cvc_groups
    bad = Split("group", 0, train=names[:300], val=names[290:])
    with pytest.raises(PolypsegError, match="leaks groups"):
        check_no_leak(bad, names, groups)


def test_groups_csv_and_default(cvc_subset, subset_groups):
    ds = discover(cvc_subset)
    groups, src = load_groups(ds, subset_groups)
    assert len(set(groups)) == 4 and "groups from" in src
    groups, src = load_groups(ds)
    assert len(set(groups)) == 40 and "each frame is its own group" in src


def test_train_fraction_keeps_whole_groups_nested_and_leaves_validation_alone(cvc_groups):
    names, groups = cvc_groups
    full = make_split(names, groups, "kfold", folds=5, fold=1, seed=0)
    group_of = dict(zip(names, groups))
    train_groups = {group_of[n] for n in full.train}
    kept = {}
    for f in (0.25, 0.5, 0.75):
        s = make_split(names, groups, "kfold", folds=5, fold=1, seed=0, train_fraction=f)
        assert s.val == full.val and s.val_groups == full.val_groups
        kept[f] = {group_of[n] for n in s.train}
        assert len(kept[f]) == round(f * len(train_groups))
        # whole sequences only: every frame of a kept sequence trains
        assert s.train == [n for n in full.train if group_of[n] in kept[f]]
        check_no_leak(s, names, groups)
        assert Split.from_dict(s.to_dict()) == s
    assert kept[0.25] < kept[0.5] < kept[0.75] < train_groups
    # a final model (nothing held out) takes whole sequences too
    s = make_split(names, groups, "none", seed=0, train_fraction=0.5)
    assert len({group_of[n] for n in s.train}) == round(0.5 * 29) and not s.val
    # a frame split subsamples frames; the smallest fraction still keeps one
    s = make_split(names, groups, "frame", seed=0, train_fraction=0.001)
    assert len(s.train) == 1
    with pytest.raises(PolypsegError, match="train fraction"):
        make_split(names, groups, "kfold", train_fraction=0.0)
