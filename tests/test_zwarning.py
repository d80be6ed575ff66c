"""ZWARNING bit names, decoding/encoding and the golden selection, on real files."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from specclass.spectra import zwarning as zw


def test_bit_names_match_the_sdss_data_model():
    assert [zw.ZWARNING_BITS[b] for b in range(10)] == [
        "SKY",
        "LITTLE_COVERAGE",
        "SMALL_DELTA_CHI2",
        "NEGATIVE_MODEL",
        "MANY_OUTLIERS",
        "Z_FITLIMIT",
        "NEGATIVE_EMISSION",
        "UNPLUGGED",
        "BAD_TARGET",
        "NODATA",
    ]


def test_decode_encode_roundtrip():
    assert zw.decode(0) == []
    assert zw.decode(6) == ["LITTLE_COVERAGE", "SMALL_DELTA_CHI2"]
    assert zw.decode(1 << 9 | 1) == ["SKY", "NODATA"]
    assert zw.decode(1 << 12) == ["BIT12"]
    assert zw.decode(528, dr7=True) == ["DR7_BIT4", "DR7_BIT9"]
    for value in (1, 6, 13, 16, 1023):
        assert zw.encode(zw.decode(value)) == value
    assert zw.encode("sky, nodata") == 1 | 1 << 9
    with pytest.raises(ValueError, match="unknown ZWARNING bit 'SKIES'.*LITTLE_COVERAGE"):
        zw.encode(["SKIES"])
    with pytest.raises(ValueError, match="-1 means unknown"):
        zw.decode(-1)


def test_golden_and_sky():
    z = np.array([0, 4, -1, 16, 0])
    assert zw.golden(z).tolist() == [True, False, False, False, True]
    assert zw.golden(0) is True and zw.golden(5) is False
    assert zw.is_sky(5) and not zw.is_sky(4) and not zw.is_sky(-1)


def test_count_removals_per_bit():
    got = zw.count_removals([6, 4, 16, 0, -1, 1])
    assert got == {"SKY": 1, "LITTLE_COVERAGE": 1, "SMALL_DELTA_CHI2": 2, "MANY_OUTLIERS": 1, "UNKNOWN": 1}
    assert list(got)[0] == "SKY"  # bit order


def test_real_sky_fibres_have_the_sky_bit(sdss_dir):
    files = sorted((sdss_dir / "sky").glob("*.fits"))
    assert len(files) >= 10
    for path in files[:10]:
        with fits.open(path) as h:
            value = int(h[2].data["ZWARNING"][0])
        assert zw.is_sky(value), path
        assert "SKY" in zw.decode(value)


def test_real_all_masked_file_decodes(sdss_dir):
    with fits.open(sdss_dir / "spectra" / "spec-0269-51581-0003.fits") as h:
        value = int(h[2].data["ZWARNING"][0])
    assert value == 6
    assert zw.decode(value) == ["LITTLE_COVERAGE", "SMALL_DELTA_CHI2"]
    assert not zw.golden(value)
