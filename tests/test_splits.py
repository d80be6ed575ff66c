"""Object grouping and seeded, stratified, grouped splits."""

from __future__ import annotations

import numpy as np
import pytest

from specclass.spectra.dataset import SpectralDataset, empty_meta
from specclass.spectra.splits import assign_object_ids, assign_splits, check_no_leak, object_keys, split_indices


def _meta(plate, mjd, fiber, ra, dec, files=None):
    n = len(plate)
    m = empty_meta(n)
    m.update(plate=np.array(plate), mjd=np.array(mjd), fiberid=np.array(fiber), ra=np.array(ra, float), dec=np.array(dec, float))
    m["file"] = np.array(files or [f"f{i}.fits" for i in range(n)])
    return m


def test_object_keys_and_same_plate_mjd_fiber():
    m = _meta([266, 266, -1], [51602, 51602, -1], [13, 13, -1], [np.nan] * 3, [np.nan] * 3, ["a.fits", "b.fits", "c.txt"])
    assert object_keys(m).tolist() == ["0266-51602-0013", "0266-51602-0013", "c.txt"]
    ids = assign_object_ids(m)
    assert ids[0] == ids[1] != ids[2]


def test_position_matching_is_transitive_and_respects_radius():
    # a chain: 0-1 are 1.5" apart, 1-2 are 1.5" apart (0-2 3" apart) -> one object; 3 is 10" away
    dec0 = 10.0
    d = 1.5 / 3600
    m = _meta([1, 2, 3, 4], [50000] * 4, [1, 2, 3, 4], [150.0] * 4, [dec0, dec0 + d, dec0 + 2 * d, dec0 + 10 / 3600])
    ids = assign_object_ids(m, radius_arcsec=2.0)
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert ids[0] == "0001-50000-0001"  # smallest key names the group
    ids = assign_object_ids(m, radius_arcsec=0)
    assert len(set(ids)) == 4
    with pytest.raises(ValueError, match="radius_arcsec"):
        assign_object_ids(m, radius_arcsec=-1)


@pytest.fixture(scope="module")
def real_meta(sdss_dir):
    from specclass.io import read_spectrum

    rows = {k: [] for k in ("plate", "mjd", "fiberid", "ra", "dec", "file", "class")}
    for path in sorted((sdss_dir / "spectra").glob("*.fits")):
        m = read_spectrum(path).meta
        for k, v in (("plate", m.plate), ("mjd", m.mjd), ("fiberid", m.fiberid), ("ra", m.ra), ("dec", m.dec),
                     ("file", path.name), ("class", m.class_)):
            rows[k].append(v)
    return rows


def test_rm017_epochs_are_one_object(real_meta):
    m = _meta(real_meta["plate"], real_meta["mjd"], real_meta["fiberid"], real_meta["ra"], real_meta["dec"], real_meta["file"])
    ids = assign_object_ids(m)
    _, counts = np.unique(ids, return_counts=True)
    assert counts.max() >= 78  # the SDSS-RM quasar RM017
    assert len(counts) < len(ids)


def test_real_split_has_no_leak_and_is_seeded(real_meta):
    n = len(real_meta["file"])
    m = _meta(real_meta["plate"], real_meta["mjd"], real_meta["fiberid"], real_meta["ra"], real_meta["dec"], real_meta["file"])
    classes = sorted(set(real_meta["class"]))
    labels = np.array([classes.index(c) for c in real_meta["class"]], dtype=np.int32)
    ds = SpectralDataset(np.zeros((n, 4)), np.ones((n, 4)), labels, classes, np.arange(4.0), meta=m)
    assign_splits(ds, seed=7)
    assert check_no_leak(ds) == []
    assert set(np.unique(ds.meta["split"])) <= {0, 1, 2}
    assert ds.attrs["split"]["seed"] == 7
    first = ds.meta["split"].copy()
    assign_splits(ds, seed=7)
    assert np.array_equal(first, ds.meta["split"])
    # the 78-epoch group is not picked as the test fold when a closer-sized fold exists
    assert np.count_nonzero(ds.meta["split"] == 2) < 78


def test_split_fractions_and_stratification():
    rng = np.random.default_rng(0)
    n = 600
    labels = rng.integers(0, 3, n)
    groups = np.repeat(np.arange(300), 2)  # pairs of epochs
    labels = labels[::2].repeat(2)  # one label per object
    codes = split_indices(labels, groups, val_frac=0.1, test_frac=0.2, seed=1)
    frac = np.bincount(codes, minlength=3) / n
    assert frac[2] == pytest.approx(0.2, abs=0.03)
    assert frac[1] == pytest.approx(0.1, abs=0.03)
    for g in range(300):
        assert np.unique(codes[groups == g]).size == 1
    for c in range(3):  # stratified: every class in every split, in proportion
        share = np.count_nonzero((codes == 2) & (labels == c)) / np.count_nonzero(labels == c)
        assert share == pytest.approx(0.2, abs=0.06)
    other = split_indices(labels, groups, val_frac=0.1, test_frac=0.2, seed=2)
    assert not np.array_equal(codes, other)


def test_split_validation_and_tiny_inputs():
    with pytest.raises(ValueError, match="test_frac must be in \\[0, 1\\), got 1.5"):
        split_indices(np.zeros(3), np.arange(3), test_frac=1.5)
    with pytest.raises(ValueError, match="val_frac \\+ test_frac"):
        split_indices(np.zeros(3), np.arange(3), val_frac=0.5, test_frac=0.5)
    assert split_indices(np.zeros(0), np.zeros(0)).size == 0
    # one object: everything stays in train
    assert split_indices(np.zeros(4, int), np.zeros(4, int)).tolist() == [0, 0, 0, 0]
    # no test/val requested
    assert not split_indices(np.zeros(10, int), np.arange(10), val_frac=0, test_frac=0).any()


def test_tiny_classes_smaller_than_fold_count_still_split_grouped():
    # Regression: a 3-per-class fetch made StratifiedGroupKFold raise
    # "n_splits=7 cannot be greater than the number of members in each class".
    labels = np.repeat(np.arange(4), 3)
    groups = np.arange(12)
    groups[1] = groups[0]  # one object observed twice
    codes = split_indices(labels, groups, val_frac=0.15, test_frac=0.15, seed=0)
    assert set(codes.tolist()) == {0, 1, 2}
    assert codes[0] == codes[1]
    assert (codes == 0).sum() >= 6
