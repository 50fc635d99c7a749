"""Names a manifest or a remote listing gives stay inside the bundle, links included."""

from __future__ import annotations

import pytest

from tests.toy_bundle import small_bundle


@pytest.mark.parametrize(
    ("name", "inside"),
    [
        ("model.onnx", True),
        ("parity/report.json", True),
        ("parity/images/a.png", True),
        ("../x", False),
        ("parity/../../x", False),
        ("/etc/passwd", False),
        ("a\\..\\x", False),
        ("C:x", False),
        ("gs://b/x", False),
        ("", False),
        (".", False),
        ("a//b", False),
        ("linked/x", False),
    ],
)
def test_names_from_a_manifest_or_a_remote_listing_stay_inside(tmp_path, name, inside):
    """What pull applies to every name it will write (the emulator cleans '..' out of object names,
    so a listing with one cannot be made there)."""
    from serving.bundle import is_inside

    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "linked").symlink_to(tmp_path)  # a folder link out of the bundle
    assert is_inside(tmp_path / "bundle", name) is inside


def test_a_link_out_of_the_bundle_is_refused(tmp_path):
    """The path check follows links: a bundle file that is a symlink to elsewhere is not read."""
    from serving.bundle import BundleError, load_bundle

    bundle = small_bundle(tmp_path / "fast")
    outside = tmp_path / "secret.bin"
    outside.write_bytes((bundle / "model.onnx").read_bytes())  # same bytes: only the link betrays it
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="leaves the bundle"):
        load_bundle(bundle, verify=False)
