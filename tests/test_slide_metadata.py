"""Metadata parsers: stated values are read, absent or implausible ones stay None (no guesses)."""

from __future__ import annotations

import pytest

from napari_histo.slide._metadata import (
    mpp_from_openslide,
    mpp_from_tiff_resolution,
    mpp_power_from_aperio,
    mpp_power_from_ome,
    parse_aperio_description,
    power_from_openslide,
)


def test_openslide_properties_of_several_vendors():
    hamamatsu = {"openslide.vendor": "hamamatsu", "openslide.mpp-x": "0.2265", "openslide.mpp-y": "0.2267",
                 "openslide.objective-power": "40"}
    assert mpp_from_openslide(hamamatsu) == pytest.approx((0.2265, 0.2267))
    assert power_from_openslide(hamamatsu) == 40
    mirax_x_only = {"openslide.mpp-x": "0.243"}
    assert mpp_from_openslide(mirax_x_only) == pytest.approx((0.243, 0.243))
    assert mpp_from_openslide({}) is None and power_from_openslide({}) is None
    assert mpp_from_openslide({"openslide.mpp-x": "0", "openslide.mpp-y": "nan"}) is None
    assert power_from_openslide({"openslide.objective-power": "unknown"}) is None


def test_aperio_description_fields():
    desc = ("Aperio Image Library v11.2.1 \r\n46000x32914 [42673,5576 2220x2967] (240x240) "
            "JPEG/RGB Q=30|AppMag = 20|StripeWidth = 2040|MPP = 0.4990|Left = 25.691574")
    fields = parse_aperio_description(desc)
    assert fields["AppMag"] == "20" and fields["StripeWidth"] == "2040"
    assert mpp_power_from_aperio(desc) == ((0.499, 0.499), 20.0)
    assert mpp_power_from_aperio("Aperio Image Library v11.0.37\r\n4443x3567 (256x256) J2K/KDU Q=70") == (None, None)
    assert mpp_power_from_aperio("ImageJ=1.52\nunit=micron") == (None, None)


def test_ome_physical_size_units_and_objective():
    xml = """<?xml version="1.0"?>
    <OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">
      <Instrument ID="Instrument:0"><Objective ID="Objective:0" NominalMagnification="40.0"/></Instrument>
      <Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="10" SizeY="10"
        SizeC="3" SizeZ="1" SizeT="1" PhysicalSizeX="250" PhysicalSizeXUnit="nm"
        PhysicalSizeY="0.25"/></Image>
    </OME>"""
    mpp, power = mpp_power_from_ome(xml)
    assert mpp == pytest.approx((0.25, 0.25))
    assert power == 40
    assert mpp_power_from_ome("<OME><Image><Pixels SizeX='3'/></Image></OME>") == (None, None)
    assert mpp_power_from_ome("not xml <") == (None, None)


def test_tiff_resolution_only_with_a_physical_unit():
    assert mpp_from_tiff_resolution((40000, 1), (40000, 1), 3) == pytest.approx((0.25, 0.25))  # px/cm
    assert mpp_from_tiff_resolution(101600.0, 101600.0, 2) == pytest.approx((0.25, 0.25))  # px/inch
    assert mpp_from_tiff_resolution((1, 1), (1, 1), 1) is None  # unit NONE
    assert mpp_from_tiff_resolution((72, 1), (72, 1), 2) is None  # 72 dpi screen default
