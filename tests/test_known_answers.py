"""Known answers: what a fixed project secret gives, written down as literals.

A longitudinal study lives for years and is pseudonymized by many versions of ``pseudo``: the
same patient must get the same pseudonym, tokens, UIDs and date offset from every one of them,
and every sealed linkage record must still open. Each value below was computed by the code at
commit 12db384549f6274b0f5584ffa35478e417af5043 (version 0.1.0). A change that alters any of
them breaks every existing project: the fix is in the change, never in these literals (see
"Compatibility promise" in docs/operations.md).
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from keystore import crypto
from keystore.db import connect
from keystore.errors import InvalidTokenError
from keystore.keyring import KEY_LABELS, Keyring, ProjectSettings
from keystore.linkage import LinkageEntry, LinkageStore, journal_key, sealed_aad
from pseudo.deid import anchors
from pseudo.deid.dates import offset_in_range, shift_da
from pseudo.deid.engine import Pseudonymizer
from pseudo.deid.identity import IdentityFields, identity_of, read_identity
from pseudo.deid.tokens import (
    date_offset_digest,
    decrypt_token,
    encrypt_token,
    hmac_token,
    pseudonym,
)
from pseudo.deid.uids import remap_uid
from pseudo.io.dicomio import encode, read_source, write_temporary
from pseudo.policy import load_policy

#: The fixed 256-bit project secret of these tests (never a real project's).
SECRET = hashlib.sha256(b"pseudo known-answer tests: project secret").digest()
#: The fixed X25519 re-identification private key (any 32 bytes are a valid X25519 key).
REID_PRIVATE = hashlib.sha256(b"pseudo known-answer tests: re-identification key").digest()
SETTINGS = ProjectSettings("kat", "KAT", -3652, -1)
IDENTITY = ("patient-id", "ISSUER-A", "PAT-0001")


@pytest.fixture(scope="module")
def ring() -> Keyring:
    """The keyring of the fixed secret, derived the way an unlocked operator slot derives it."""
    return Keyring.from_secret(SECRET, SETTINGS, crypto.public_from_private(REID_PRIVATE))


# -- key derivation ---------------------------------------------------------------------------
def test_inputs_of_the_known_answers() -> None:
    """The secret and key pair the answers below come from."""
    assert SECRET.hex() == "057160db609927c7bf4d201150adbf6257e655c2992fe46733257fe037b7967a"
    assert crypto.public_from_private(REID_PRIVATE).hex() == (
        "af504dd878dd6ad513e116f0c2ff97bbfdc7326035b449a759f43df7e22f2732"
    )


def test_hkdf_labels_are_never_edited() -> None:
    """Every sub-key's HKDF label, as documented in docs/cryptography.md."""
    assert KEY_LABELS == {
        "token": "pseudo/v1/token",
        "uid": "pseudo/v1/uid",
        "date": "pseudo/v1/date-offset",
        "reversible": "pseudo/v1/reversible-token",
        "journal": "pseudo/v1/journal",
        "linkage": "pseudo/v1/linkage-digest",
        "state": "pseudo/v1/operator-state",
    }


# -- pseudonyms, tokens, UIDs -----------------------------------------------------------------
def test_patient_pseudonym(ring: Keyring) -> None:
    """By Patient ID (with issuer), and by name and birth date when there is no Patient ID."""
    assert pseudonym(ring, IDENTITY) == "KAT-YVYU567MB5NPVZFZ"
    assert pseudonym(ring, ("name", "DOE^JANE", "19610412")) == "KAT-WAE6G5HIAXHXD2UE"


def test_hmac_token(ring: Keyring) -> None:
    """An HMAC token, at the default length and at a VR's full length."""
    assert hmac_token(ring, "AccessionNumber", "ACC-42") == "V7LSPLVLJQTLT4AO"
    assert hmac_token(ring, "StudyID", "STUDY7", 64) == (
        "L7MT5BGCGZM24YJOBZAFGKMZ7VKTVPWRLNV2JBQG77LIBG6F555A"
    )


def test_reversible_token(ring: Keyring) -> None:
    """A reversible token is deterministic, and a token made today still opens."""
    token = "ON5GDBXYKP3JREY5LMOXQ2XL32ZSZCYMC43W2ZQ"
    assert encrypt_token(ring, "OtherPatientIDs", "OTHER-99") == token
    assert decrypt_token(ring, "OtherPatientIDs", token) == "OTHER-99"
    with pytest.raises(InvalidTokenError):
        decrypt_token(ring, "PatientID", token)  # bound to its attribute


def test_uid_remapping(ring: Keyring) -> None:
    """An instance UID is remapped under 2.25; a standard UID is kept."""
    assert remap_uid(ring, "1.2.826.0.1.3680043.2.1125.1.42") == (
        "2.25.323915421750636198124819052655196805017"
    )
    assert remap_uid(ring, "1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"


def test_journal_name_of_an_input(ring: Keyring) -> None:
    """The journal names an input by a keyed digest of its path: a re-run by a later version
    must find what an earlier one did, or it would process every file again."""
    assert journal_key(ring, "/data/incoming/patient/1.dcm") == (
        "ace4de7b1604bfcc5e5a8fd5d990e1518fed96a2f06fee4e1f824ab11e611af4"
    )


# -- dates ------------------------------------------------------------------------------------
def test_date_offset(ring: Keyring) -> None:
    """The per-patient offset: its digest, its value in the range, and the engine's answer."""
    digest = date_offset_digest(ring, IDENTITY)
    assert digest.hex() == "766703e383a5e5781a688f73f468b329b33378d84ef46d9bfa9e774dfc57c2d1"
    assert offset_in_range(digest, -3652, -1) == -167
    assert shift_da("20230105", -167) == "20220722"
    ds = Dataset()
    ds.PatientID, ds.IssuerOfPatientID = "PAT-0001", "ISSUER-A"
    engine = Pseudonymizer(ring, load_policy("default"))
    assert engine.patient(read_identity(ds)) == ("KAT-YVYU567MB5NPVZFZ", -167)


def test_anchored_offset(ring: Keyring, tmp_path: Path) -> None:
    """Anchored dates: anchor minus the patient's earliest study date, recorded by the first
    batch that sees the patient and reused by every later one."""
    policy_file = tmp_path / "anchored.yaml"
    policy_file.write_text("name: anchored\nextends: default\ndates:\n  anchor: 2000-01-01\n")
    policy = load_policy(str(policy_file))
    engine = connect(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        store = LinkageStore(engine)
        known, other = IdentityFields(IDENTITY[2], IDENTITY[1]), IdentityFields("P2")
        assert (identity_of(known).key, identity_of(other).key) == (
            IDENTITY,
            ("patient-id", "", "P2"),
        )
        scans = [
            anchors.Scan(known, "2023-01-05"),
            anchors.Scan(known, "2021-06-30"),
            anchors.Scan(other, "2019-03-04"),
        ]
        assert anchors.resolve(ring, policy, store, scans) == {
            "KAT-YVYU567MB5NPVZFZ": -7851,
            "KAT-QAVTFX7CBQL5BQNY": -7002,
        }
        later = anchors.resolve(ring, policy, store, [anchors.Scan(known, "2010-01-01")])
        assert later == {"KAT-YVYU567MB5NPVZFZ": -7851}, "the first recorded offset is kept"
    finally:
        engine.dispose()


# -- sealed linkage records -------------------------------------------------------------------
#: The patient record sealed by the code of 0.1.0 to the public key of REID_PRIVATE.
SEALED_PLAINTEXT = (
    b'{"date_offset_days":-167,"identity_basis":"patient-id","issuer_of_patient_id":"ISSUER-A",'
    b'"patient_birth_date":"19700101","patient_id":"PAT-0001","patient_name":"KNOWN^ANSWER"}'
)
SEALED_BLOB = bytes.fromhex(
    "0116c9f722bec7a8e5626f786770e60a6530b17e4e4854c4389dd63592286ca25dbd0e4a31524f2326189a"
    "7ccc842b47f1c4b0847081eb5197d840fa782ae2ce3d4b8920dbeb47cf159be989f45fc367394328644f9b"
    "3176540c7fb11c64564fd0865952d86ba7baca49354dc2fb57fe27841a84eb412168e5f7fac3274198fd41"
    "0ebd7e3f47511b4244e9c6d0f42c67c649a2e773c3834e5c4eb0c230467239fb568c03fbecdb252064db9c"
    "4c2b54e1d8b0057cd499641cdcdb1d54a4d6e14961098fe7eb28d5eb04e29ebf841e7c7f44e3c7babf4db2"
    "9fb6a36cffce49c2045d7e77022265074ee7f04c30"
)


def _patient_entry() -> LinkageEntry:
    return LinkageEntry(
        "patient",
        "KAT-YVYU567MB5NPVZFZ",
        "KAT-YVYU567MB5NPVZFZ",
        {
            "patient_id": "PAT-0001",
            "issuer_of_patient_id": "ISSUER-A",
            "patient_name": "KNOWN^ANSWER",
            "patient_birth_date": "19700101",
            "date_offset_days": -167,
            "identity_basis": "patient-id",
        },
    )


def test_sealed_record_plaintext_and_associated_data() -> None:
    """What is sealed (canonical JSON) and what it is bound to (project, kind, key)."""
    assert _patient_entry().canonical() == SEALED_PLAINTEXT
    assert sealed_aad("kat", "patient", "KAT-X").hex() == (
        "0000001070736575646f2d6c696e6b6167652f31000000036b61740000000770617469656e74"
        "000000054b41542d58"
    )


def test_a_record_sealed_by_0_1_0_still_opens() -> None:
    """The committed blob opens with the fixed private key, and only in its own row."""
    aad = sealed_aad("kat", "patient", "KAT-YVYU567MB5NPVZFZ")
    assert crypto.open_sealed(REID_PRIVATE, SEALED_BLOB, aad) == SEALED_PLAINTEXT
    with pytest.raises(InvalidTokenError):
        crypto.open_sealed(REID_PRIVATE, SEALED_BLOB, sealed_aad("kat", "patient", "KAT-Y"))


def test_sealed_record_layout() -> None:
    """Version byte 0x01, ephemeral X25519 public key (32), nonce (12), ciphertext and
    16-byte GCM tag: for the committed blob and for one sealed by the current code."""
    assert crypto.SEAL_VERSION == 1
    public = crypto.public_from_private(REID_PRIVATE)
    aad = sealed_aad("kat", "patient", "KAT-YVYU567MB5NPVZFZ")
    fresh = crypto.seal(public, SEALED_PLAINTEXT, aad)
    for blob in (SEALED_BLOB, fresh):
        assert blob[0] == 0x01
        assert len(blob) == 1 + 32 + 12 + len(SEALED_PLAINTEXT) + 16 == 236
    assert SEALED_BLOB[1:33].hex() == (
        "16c9f722bec7a8e5626f786770e60a6530b17e4e4854c4389dd63592286ca25d"
    )
    assert SEALED_BLOB[33:45].hex() == "bd0e4a31524f2326189a7ccc"
    assert fresh[1:33] != SEALED_BLOB[1:33], "each seal has a fresh ephemeral key"
    assert crypto.open_sealed(REID_PRIVATE, fresh, aad) == SEALED_PLAINTEXT


# -- a whole data set -------------------------------------------------------------------------
CT_SMALL_SHA256 = "3dd31e5cc835b3f2cdd46c9da1982f59251e78518fefa8163d914631c66437d6"
OUTPUT_SHA256 = "9ffd1d3e687cac38fe49bcda6b5227634a55545e6738355ef8a97aa2f41231c0"
OUTPUT_PATH = (
    "KAT-QLEJSN6EW6OLUL3O/2.25.25283382780809317162159564577312368921/"
    "2.25.151469079278774173742085706999008130320/2.25.4349141665389225737445428172291333905.dcm"
)


@pytest.fixture(scope="module")
def ct_small() -> Path:
    """pydicom's bundled CT_small.dcm, checked to be the file the answers were made from."""
    path = Path(str(get_testdata_file("CT_small.dcm")))
    if hashlib.sha256(path.read_bytes()).hexdigest() != CT_SMALL_SHA256:
        pytest.fail("pydicom's CT_small.dcm changed: the input, not pseudo, differs")
    return path


def _check_output(ds: Dataset, relative_path: str, offset: int) -> None:
    assert ds.PatientID == "KAT-QLEJSN6EW6OLUL3O"
    assert ds.StudyInstanceUID == "2.25.25283382780809317162159564577312368921"
    assert ds.StudyDate == "19990324"  # 20040119 shifted by -1762 days
    assert offset == -1762
    assert relative_path == OUTPUT_PATH


def test_whole_dataset_in_memory(ring: Keyring, ct_small: Path) -> None:
    """CT_small.dcm, read whole, pseudonymized with the default policy and encoded."""
    result = Pseudonymizer(ring, load_policy("default")).pseudonymize(pydicom.dcmread(ct_small))
    _check_output(result.dataset, result.relative_path, result.date_offset_days)
    data = encode(copy.deepcopy(result.dataset))
    assert len(data) == 34740
    assert hashlib.sha256(data).hexdigest() == OUTPUT_SHA256


def test_whole_dataset_as_a_run_writes_it(ring: Keyring, ct_small: Path, tmp_path: Path) -> None:
    """The same file the way ``pseudo run`` reads and writes it: the same bytes."""
    engine = Pseudonymizer(ring, load_policy("default"))
    source = read_source(ct_small, engine.droppable, keep_dropped=False)
    result = engine.pseudonymize(source.dataset)
    _check_output(result.dataset, result.relative_path, result.date_offset_days)
    written, _ = write_temporary(result.dataset, tmp_path, source.pixels, sync=False)
    assert hashlib.sha256(written.read_bytes()).hexdigest() == OUTPUT_SHA256
