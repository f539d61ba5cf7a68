"""ISMRMRD header: round trips, fastMRI's metadata logic on written headers, real header structure,
and every malformed-header class raising DataError naming the file."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import pytest

from magphase.errors import DataError
from magphase.io.ismrmrd import (
    ISMRMRD_NAMESPACE,
    AcquisitionHeader,
    EncodingLimits,
    header_to_xml,
    parse_header,
)


def fastmri_metadata(xml: str | bytes) -> dict:
    """Independent re-implementation of fastMRI SliceDataset's header parsing (et_query + padding)."""
    root = ET.fromstring(xml.encode() if isinstance(xml, str) else xml)
    ns = {"ismrmrd_namespace": "http://www.ismrm.org/ISMRMRD"}

    def query(parts):
        s = "." + "".join(f"//ismrmrd_namespace:{p}" for p in parts)
        return root.find(s, ns).text

    enc = ["encoding", "encodedSpace", "matrixSize"]
    rec = ["encoding", "reconSpace", "matrixSize"]
    lims = ["encoding", "encodingLimits", "kspace_encoding_step_1"]
    enc_size = tuple(int(query([*enc, a])) for a in "xyz")
    recon_size = tuple(int(query([*rec, a])) for a in "xyz")
    center = int(query([*lims, "center"]))
    maximum = int(query([*lims, "maximum"])) + 1
    padding_left = enc_size[1] // 2 - center
    return {
        "encoding_size": enc_size,
        "recon_size": recon_size,
        "padding_left": padding_left,
        "padding_right": padding_left + maximum,
    }


def make_header(encoded=(640, 320, 1), recon=(320, 320, 1), **overrides) -> AcquisitionHeader:
    fields = dict(
        encoded_matrix=encoded,
        encoded_fov_mm=(440.0, 220.0 * encoded[1] / recon[1], 5.0),
        recon_matrix=recon,
        recon_fov_mm=(220.0, 220.0, 5.0),
        field_strength_t=2.8936,
        tr_ms=250.0,
        te_ms=2.64,
        ti_ms=300.0,
        flip_angle_deg=70.0,
        n_coils=16,
        protocol_name="AX T1 POST",
        sequence_type="Flash",
        vendor="SIEMENS",
        model="Skyra",
        institution="magphase simulator",
    )
    fields.update(overrides)
    return AcquisitionHeader(**fields)


SIZES = [
    ((640, 320, 1), (320, 320, 1)),
    ((768, 396, 1), (384, 384, 1)),
    ((640, 272, 1), (320, 272, 1)),
    ((512, 213, 1), (256, 213, 1)),
    ((32, 16, 1), (16, 16, 1)),
]


@pytest.mark.parametrize(("encoded", "recon"), SIZES)
def test_round_trip_is_exact(encoded, recon):
    header = make_header(encoded, recon)
    assert parse_header(header_to_xml(header)) == header
    assert parse_header(header_to_xml(header).encode("utf-8")) == header


@pytest.mark.parametrize(("encoded", "recon"), SIZES)
def test_written_header_satisfies_fastmri_slice_dataset(encoded, recon):
    header = make_header(encoded, recon)
    meta = fastmri_metadata(header_to_xml(header))
    assert meta["encoding_size"] == encoded
    assert meta["recon_size"] == recon
    # Fully sampled: the acquired columns are the whole k-space width.
    assert meta["padding_left"] == 0
    assert meta["padding_right"] == encoded[1]
    assert (meta["padding_left"], meta["padding_right"]) == (header.padding_left, header.padding_right)


def test_partial_phase_encoding_limits_give_fastmri_padding():
    # 198 acquired lines out of 264, centre line 99: fastMRI puts them at columns [33, 231).
    header = make_header((640, 264, 1), (320, 260, 1), kspace_encoding_step_1=EncodingLimits(0, 197, 99))
    meta = fastmri_metadata(header_to_xml(header))
    assert (meta["padding_left"], meta["padding_right"]) == (33, 231)
    assert (header.padding_left, header.padding_right) == (33, 231)
    assert 0 <= meta["padding_left"] < meta["padding_right"] <= meta["encoding_size"][1]


def test_defaults_fill_limits_and_larmor_frequency():
    header = AcquisitionHeader(
        encoded_matrix=(64, 33, 1),
        encoded_fov_mm=(440, 220, 5),
        recon_matrix=(32, 32, 1),
        recon_fov_mm=(220, 220, 5),
        field_strength_t=3.0,
        tr_ms=9000,
        te_ms=86,
    )
    assert header.kspace_encoding_step_1 == EncodingLimits(minimum=0, maximum=32, center=16)
    assert header.h1_resonance_frequency_hz == pytest.approx(127.732e6, rel=1e-4)
    assert header.readout_oversampling == 2.0
    assert header.ti_ms is None and header.vendor is None
    parsed = parse_header(header_to_xml(header))
    assert parsed == header
    assert parsed.ti_ms is None and parsed.flip_angle_deg is None and parsed.n_coils is None


def test_xml_is_namespaced_ismrmrd_with_schema_required_elements():
    root = ET.fromstring(header_to_xml(make_header()))
    assert root.tag == f"{{{ISMRMRD_NAMESPACE}}}ismrmrdHeader"
    ns = {"m": ISMRMRD_NAMESPACE}
    # Required by ismrmrd.xsd: experimentalConditions, encoding with the four mandatory children,
    # and patientPosition inside measurementInformation.
    for element in (
        "m:experimentalConditions/m:H1resonanceFrequency_Hz",
        "m:encoding/m:encodedSpace/m:fieldOfView_mm/m:z",
        "m:encoding/m:reconSpace/m:matrixSize/m:z",
        "m:encoding/m:encodingLimits/m:kspace_encoding_step_1/m:minimum",
        "m:encoding/m:trajectory",
        "m:measurementInformation/m:patientPosition",
        "m:acquisitionSystemInformation/m:receiverChannels",
        "m:sequenceParameters/m:flipAngle_deg",
    ):
        assert root.find(element, ns) is not None, element
    # Top-level order follows the schema's xs:sequence.
    order = [child.tag.split("}")[1] for child in root]
    schema = [
        "measurementInformation",
        "acquisitionSystemInformation",
        "experimentalConditions",
        "encoding",
        "sequenceParameters",
    ]
    assert order == schema


# A header written in the structure of real fastMRI scanner headers (values made up): extra
# sections, coil labels, trajectory before encodingLimits, two echo times, no TI, user parameters.
SCANNER_STYLE_HEADER = b"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xs="http://www.w3.org/2001/XMLSchema"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
 xsi:schemaLocation="http://www.ismrm.org/ISMRMRD ismrmrd.xsd">
   <studyInformation>
      <studyTime>11:22:33</studyTime>
   </studyInformation>
   <measurementInformation>
      <measurementID>12345_1_2_3</measurementID>
      <patientPosition>HFS</patientPosition>
      <protocolName>AX T2_FBB</protocolName>
      <frameOfReferenceUID>1.2.3.4</frameOfReferenceUID>
   </measurementInformation>
   <acquisitionSystemInformation>
      <systemVendor>SIEMENS</systemVendor>
      <systemModel>Prisma_fit</systemModel>
      <systemFieldStrength_T>2.89362</systemFieldStrength_T>
      <relativeReceiverNoiseBandwidth>0.793</relativeReceiverNoiseBandwidth>
      <receiverChannels>4</receiverChannels>
      <coilLabel>
         <coilNumber>7</coilNumber>
         <coilName>Head_32:1:H7</coilName>
      </coilLabel>
      <coilLabel>
         <coilNumber>8</coilNumber>
         <coilName>Head_32:1:H8</coilName>
      </coilLabel>
      <institutionName>SOMEWHERE</institutionName>
   </acquisitionSystemInformation>
   <experimentalConditions>
      <H1resonanceFrequency_Hz>123255000</H1resonanceFrequency_Hz>
   </experimentalConditions>
   <encoding>
      <encodedSpace>
         <matrixSize><x>768</x><y>396</y><z>1</z></matrixSize>
         <fieldOfView_mm><x>460</x><y>237.19</y><z>5</z></fieldOfView_mm>
      </encodedSpace>
      <reconSpace>
         <matrixSize><x>384</x><y>384</y><z>1</z></matrixSize>
         <fieldOfView_mm><x>230</x><y>230</y><z>5</z></fieldOfView_mm>
      </reconSpace>
      <trajectory>cartesian</trajectory>
      <encodingLimits>
         <kspace_encoding_step_1><minimum>0</minimum><maximum>301</maximum><center>151</center>
         </kspace_encoding_step_1>
         <kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center>
         </kspace_encoding_step_2>
         <slice><minimum>0</minimum><maximum>15</maximum><center>0</center></slice>
      </encodingLimits>
      <parallelImaging>
         <accelerationFactor>
            <kspace_encoding_step_1>2</kspace_encoding_step_1>
            <kspace_encoding_step_2>1</kspace_encoding_step_2>
         </accelerationFactor>
         <calibrationMode>other</calibrationMode>
      </parallelImaging>
   </encoding>
   <sequenceParameters>
      <TR>6000</TR>
      <TE>113</TE>
      <TE>12</TE>
      <flipAngle_deg>150</flipAngle_deg>
      <sequence_type>TurboSpinEcho</sequence_type>
      <echo_spacing>11.3</echo_spacing>
   </sequenceParameters>
   <userParameters>
      <userParameterDouble><name>MaxwellCoefficient_0</name><value>0</value></userParameterDouble>
   </userParameters>
</ismrmrdHeader>
"""


def test_parses_scanner_style_header():
    header = parse_header(SCANNER_STYLE_HEADER, path="file_brain_AXT2_200_1.h5")
    assert header.encoded_matrix == (768, 396, 1)
    assert header.recon_matrix == (384, 384, 1)
    assert header.encoded_fov_mm == (460.0, 237.19, 5.0)
    assert header.field_strength_t == pytest.approx(2.89362)
    assert header.tr_ms == 6000 and header.te_ms == 113  # first echo of a multi-echo list
    assert header.ti_ms is None
    assert header.flip_angle_deg == 150
    assert header.n_coils == 4
    assert header.kspace_encoding_step_1 == EncodingLimits(0, 301, 151)
    assert (header.padding_left, header.padding_right) == (47, 349)
    assert fastmri_metadata(SCANNER_STYLE_HEADER)["padding_left"] == 47
    assert (header.vendor, header.model, header.institution) == ("SIEMENS", "Prisma_fit", "SOMEWHERE")
    assert header.protocol_name == "AX T2_FBB"
    assert header.sequence_type == "TurboSpinEcho"
    assert header.echo_spacing_ms == pytest.approx(11.3)
    assert header.h1_resonance_frequency_hz == 123255000
    # Re-serialising keeps every value magphase models.
    assert parse_header(header_to_xml(header)) == header


def _mutate(xml: bytes, old: bytes, new: bytes) -> bytes:
    assert old in xml
    return xml.replace(old, new, 1)


BAD_HEADERS = {
    "malformed": (SCANNER_STYLE_HEADER[:-40], "malformed XML"),
    "empty": (b"   ", "empty"),
    "not_ismrmrd": (b"<?xml version='1.0'?><root><a>1</a></root>", "root element"),
    "no_namespace": (
        SCANNER_STYLE_HEADER.replace(b'xmlns="http://www.ismrm.org/ISMRMRD" ', b""),
        "root element",
    ),
    "missing_recon_matrix": (
        _mutate(SCANNER_STYLE_HEADER, b"<matrixSize><x>384</x><y>384</y><z>1</z></matrixSize>", b""),
        "reconSpace/matrixSize/x",
    ),
    "missing_center": (
        _mutate(SCANNER_STYLE_HEADER, b"<center>151</center>", b""),
        "kspace_encoding_step_1/center",
    ),
    "missing_field_strength": (
        _mutate(SCANNER_STYLE_HEADER, b"<systemFieldStrength_T>2.89362</systemFieldStrength_T>", b""),
        "systemFieldStrength_T",
    ),
    "missing_tr": (_mutate(SCANNER_STYLE_HEADER, b"<TR>6000</TR>", b""), "TR"),
    "not_a_number": (_mutate(SCANNER_STYLE_HEADER, b"<x>768</x>", b"<x>seven</x>"), "not a number"),
    "fractional_matrix": (_mutate(SCANNER_STYLE_HEADER, b"<x>768</x>", b"<x>768.5</x>"), "not an integer"),
    "nan_fov": (_mutate(SCANNER_STYLE_HEADER, b"<x>460</x>", b"<x>nan</x>"), "not finite"),
    "limits_outside_matrix": (
        _mutate(SCANNER_STYLE_HEADER, b"<maximum>301</maximum>", b"<maximum>500</maximum>"),
        "inconsistent",
    ),
    "zero_matrix": (_mutate(SCANNER_STYLE_HEADER, b"<y>396</y>", b"<y>0</y>"), "inconsistent"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_bad_header_raises_data_error_naming_file_and_field(case):
    xml, expected = BAD_HEADERS[case]
    with pytest.raises(DataError) as info:
        parse_header(xml, path="/data/file_brain_AXFLAIR_201_6003001.h5")
    error = info.value
    assert error.field == "ismrmrd_header"
    assert "file_brain_AXFLAIR_201_6003001.h5" in str(error)
    assert expected in str(error)


def test_constructor_rejects_inconsistent_values():
    with pytest.raises(ValueError, match="encoded_matrix"):
        make_header((640, 320), (320, 320, 1))
    with pytest.raises(ValueError, match="field_strength_t"):
        make_header(field_strength_t=0.0)
    with pytest.raises(ValueError, match="kspace_encoding_step_1"):
        make_header(kspace_encoding_step_1=EncodingLimits(0, 319, 300))
    with pytest.raises(ValueError, match="patient_position"):
        make_header(patient_position="SIDEWAYS")


def test_header_is_immutable_and_replace_revalidates():
    header = make_header()
    with pytest.raises(dataclasses.FrozenInstanceError):
        header.tr_ms = 1.0  # type: ignore[misc]
    assert dataclasses.replace(header, n_coils=8).n_coils == 8
    assert header.to_dict()["kspace_encoding_step_1"] == {"minimum": 0, "maximum": 319, "center": 160}
