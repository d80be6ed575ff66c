"""The native spec parser: header cards, BINTABLE offsets, fallbacks to astropy, reading only HDU 0-3."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from specclass.io import SpectrumReadError, read_spectrum
from specclass.io import native
from specclass.io.native import Unsupported, card_value

LITE = "spectra/spec-0266-51602-0013.fits"


@pytest.fixture()
def lite(sdss_dir: Path) -> Path:
    return sdss_dir / LITE


def _derive(src: Path, dst: Path, edit) -> Path:
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    out = edit(hdul) or hdul
    out.writeto(dst, overwrite=True)
    return dst


def _assert_same(a, b) -> None:
    for name in ("loglam", "flux", "ivar", "and_mask", "or_mask"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    da, db = dataclasses.asdict(a.meta), dataclasses.asdict(b.meta)
    for d in (da, db):
        d["extra"].pop("reader")
        d.pop("file")
    assert da == db


def test_card_values() -> None:
    assert card_value("'COADD   '           / extension name") == "COADD"
    assert card_value("'it''s   '") == "it's"
    assert card_value("                   T / flag") is True
    assert card_value("                   F") is False
    assert card_value("                 3838 / rows") == 3838
    assert card_value("   1.0000000000000D-04 / step") == pytest.approx(1e-4)
    assert card_value("  -0.67040397 / dec") == pytest.approx(-0.67040397)
    assert card_value("                      / empty") is None


def test_unknown_tform_is_unsupported() -> None:
    cards = [
        "XTENSION= 'BINTABLE'", "BITPIX  =                    8", "NAXIS   =                    2",
        "NAXIS1  =                    4", "NAXIS2  =                    1", "PCOUNT  =                    0",
        "GCOUNT  =                    1", "TFIELDS =                    1", "TTYPE1  = 'flux    '",
        "TFORM1  = 'Z       '", "END",
    ]
    header = "".join(c.ljust(80) for c in cards).encode()
    with pytest.raises(Unsupported, match="TFORM1 = 'Z' is not a known format"):
        native._table_layout(header)  # noqa: SLF001


def test_scaled_flux_falls_back_to_astropy(lite: Path, tmp_path: Path) -> None:
    def scale(h):
        cols = []
        for c in h[1].columns:
            if c.name == "flux":
                c = fits.Column(name="flux", format="E", bscale=2.0, bzero=1.0, array=np.asarray(h[1].data["flux"]))
            cols.append(c)
        return fits.HDUList([h[0], fits.BinTableHDU.from_columns(cols, name="COADD"), h[2], h[3]])

    scaled = _derive(lite, tmp_path / "scaled.fits", scale)
    with fits.open(scaled) as hdul:
        assert "TSCAL1" in hdul[1].header
    spec = read_spectrum(scaled)
    assert spec.meta.extra["reader"] == "astropy"
    np.testing.assert_allclose(spec.flux, read_spectrum(lite).flux, rtol=1e-5, atol=1e-5)
    with pytest.raises(SpectrumReadError, match=r"not the standard spec lite/full layout \(HDU 1 column FLUX is scaled"):
        read_spectrum(scaled, engine="native")


def test_heap_column_falls_back_to_astropy(lite: Path, tmp_path: Path) -> None:
    def add_vla(h):
        n = len(h[1].data)
        vla = fits.Column(name="notes", format="PE()", array=[np.arange(i % 3, dtype=np.float32) for i in range(n)])
        cols = list(h[1].columns) + [vla]
        return fits.HDUList([h[0], fits.BinTableHDU.from_columns(cols, name="COADD"), h[2], h[3]])

    heap = _derive(lite, tmp_path / "heap.fits", add_vla)
    spec = read_spectrum(heap)
    assert spec.meta.extra["reader"] == "astropy"
    _assert_same(spec, read_spectrum(lite))
    with pytest.raises(SpectrumReadError, match="heap"):
        read_spectrum(heap, engine="native")


def test_column_offsets_with_every_tform(lite: Path, tmp_path: Path) -> None:
    """Columns of all fixed-width types placed before and between flux/loglam/ivar/and_mask."""

    def shuffle(h):
        d = h[1].data
        n = len(d)
        rng = np.random.default_rng(0)
        extra = [
            fits.Column(name="l", format="L", array=rng.random(n) > 0.5),
            fits.Column(name="bits", format="11X", array=np.zeros((n, 11), dtype=bool)),
            fits.Column(name="c", format="C", array=rng.random(n) + 1j),
            fits.Column(name="m", format="M", array=rng.random(n) + 2j),
            fits.Column(name="pair", format="2E", array=rng.random((n, 2)).astype(np.float32)),
            fits.Column(name="txt", format="5A", array=np.array(["ab"] * n)),
            fits.Column(name="k", format="K", array=np.arange(n, dtype=np.int64)),
            fits.Column(name="b", format="B", array=np.arange(n, dtype=np.uint8)),
            fits.Column(name="i", format="I", array=np.arange(n, dtype=np.int16)),
        ]
        by = {c.name: c for c in h[1].columns}
        flux64 = fits.Column(name="flux", format="D", array=np.asarray(d["flux"], dtype=np.float64))
        order = extra[:3] + [flux64] + extra[3:6] + [by["loglam"], by["and_mask"], by["or_mask"]] + extra[6:] + [by["ivar"]]
        return fits.HDUList([h[0], fits.BinTableHDU.from_columns(order, name="COADD"), h[2], h[3]])

    odd = _derive(lite, tmp_path / "odd-columns.fits", shuffle)
    fast = read_spectrum(odd, engine="native")
    assert fast.meta.extra["reader"] == "native"
    _assert_same(fast, read_spectrum(odd, engine="astropy"))
    _assert_same(fast, read_spectrum(lite))


def test_primary_image_is_skipped(lite: Path, tmp_path: Path) -> None:
    def with_image(h):
        h[0] = fits.PrimaryHDU(data=np.arange(1000 * 3, dtype=">i2").reshape(3, 1000), header=h[0].header)
        h[0].header["EXTEND"] = True

    img = _derive(lite, tmp_path / "with-image.fits", with_image)
    fast = read_spectrum(img, engine="native")
    _assert_same(fast, read_spectrum(img, engine="astropy"))
    _assert_same(fast, read_spectrum(lite))


def test_three_hdu_file_is_lite(lite: Path, tmp_path: Path) -> None:
    short = _derive(lite, tmp_path / "three.fits", lambda h: fits.HDUList([h[0], h[1], h[2]]))
    fast, slow = read_spectrum(short), read_spectrum(short, engine="astropy")
    assert fast.meta.extra["reader"] == "native"
    assert fast.meta.format == slow.meta.format == "spec-lite"
    _assert_same(fast, slow)


class _CountingFile(io.RawIOBase):
    """A read-only file object that counts the bytes handed out."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fh.fileno()

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._fh.close()
        super().close()


def test_full_file_reads_only_up_to_hdu4_header(sdss_dir: Path) -> None:
    path = sdss_dir / "full" / "spec-7340-57576-0740.fits"
    with fits.open(path) as hdul:
        assert len(hdul) > 4
        hdu4_data = hdul[4]._data_offset  # noqa: SLF001
    fh = _CountingFile(path)
    try:
        head = fh.read(2880)
        spec = native.read_spec_file(fh, head, str(path), strict=True)
    finally:
        fh.close()
    assert spec.meta.format == "spec-full"
    size = path.stat().st_size
    # up to HDU 4's header, and at most one read-ahead chunk beyond
    assert fh.bytes_read <= hdu4_data + native._READ_CHUNK  # noqa: SLF001
    assert fh.bytes_read < size
    _assert_same(spec, read_spectrum(path, engine="astropy"))


def test_layout_cache_reused_and_harmless(sdss_dir: Path) -> None:
    files = sorted((sdss_dir / "spectra").glob("spec-0266-51602-*.fits"))[:3]
    native._LAYOUT_CACHE.clear()  # noqa: SLF001
    first = [read_spectrum(p) for p in files]
    n_layouts = sum(len(b) for b in native._LAYOUT_CACHE.values())  # noqa: SLF001
    assert 1 <= n_layouts <= 2 * len(files)
    again = [read_spectrum(p) for p in files]
    assert sum(len(b) for b in native._LAYOUT_CACHE.values()) == n_layouts  # noqa: SLF001
    for a, b in zip(first, again):
        _assert_same(a, b)


def test_native_strict_refuses_other_layouts(sdss_dir: Path) -> None:
    with pytest.raises(SpectrumReadError, match=r"not the standard spec lite/full layout \(HDU 1 lacks"):
        read_spectrum(sdss_dir / "dr7" / "spSpec-51993-0542-631.fit", engine="native")
    with pytest.raises(SpectrumReadError, match="not the standard spec lite/full layout"):
        read_spectrum(sdss_dir / "other_layouts" / "NGC3522_SDSS.fits", engine="native")


def test_lite_full_decided_by_exposure_hdus(lite: Path, tmp_path: Path) -> None:
    """Extra HDUs that are not exposures (as in newer layouts) keep a file 'lite'; an exposure HDU makes it 'full'."""
    def extra_tables(h):
        extra = fits.BinTableHDU.from_columns([fits.Column(name="z", format="E", array=np.zeros(3))], name="ZALL")
        return fits.HDUList([h[0], h[1], h[2], h[3], extra])

    def with_exposure(h):
        exp = fits.BinTableHDU.from_columns(list(h[1].columns), name="B1-00002591-00002595-00002596")
        return fits.HDUList([h[0], h[1], h[2], h[3], exp])

    five = _derive(lite, tmp_path / "five.fits", extra_tables)
    exposure = _derive(lite, tmp_path / "exposure.fits", with_exposure)
    for engine in ("auto", "astropy"):
        assert read_spectrum(five, engine=engine).meta.format == "spec-lite"
        assert read_spectrum(exposure, engine=engine).meta.format == "spec-full"
    assert native.is_exposure_extname("r2-00214700-00214699-00214698")
    assert not native.is_exposure_extname("SPZLINE")


def test_unforeseen_header_value_falls_back(lite: Path, tmp_path: Path) -> None:
    """A malformed TFIELDS value: the native parser hands over, astropy explains, nothing crashes."""
    data = bytearray(lite.read_bytes())
    card = b"TFIELDS =                    8"
    i = data.find(card)
    assert i > 0
    data[i : i + len(card)] = b"TFIELDS = 'eight'".ljust(len(card))
    bad = tmp_path / lite.name
    bad.write_bytes(bytes(data))
    with pytest.raises(SpectrumReadError, match="not the standard spec lite/full layout .TFIELDS is not an integer"):
        read_spectrum(bad, engine="native")
    with pytest.raises(SpectrumReadError) as info:
        read_spectrum(bad)
    assert str(bad) in str(info.value)


def test_parser_bug_falls_back_to_astropy(lite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception the native parser did not foresee costs speed, not the file."""

    def broken(header: bytes):
        raise IndexError("simulated parser bug")

    native._LAYOUT_CACHE.clear()  # noqa: SLF001
    monkeypatch.setattr(native, "_table_layout", broken)
    spec = read_spectrum(lite)
    assert spec.meta.extra["reader"] == "astropy" and spec.meta.class_ == "GALAXY"
    with pytest.raises(SpectrumReadError, match="native parser failed .IndexError: simulated parser bug"):
        read_spectrum(lite, engine="native")
    monkeypatch.undo()
    native._LAYOUT_CACHE.clear()  # noqa: SLF001
    assert read_spectrum(lite).meta.extra["reader"] == "native"
