"""Binary files named .csv (one line, no loop between encoding hints), did-you-mean for a
misspelt column family, and standard input spooled into a private file."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner
from conftest import config_for, mobile, write_config

from batch_updater.cli import main
from batch_updater.config import InputSettings
from batch_updater.errors import InputError
from batch_updater.input.columns import resolve_headers
from batch_updater.input.csv_file import CFB_SIGNATURE
from batch_updater.input.reader import open_input
from batch_updater.input.stdin import spooled_stdin
from batch_updater.state.jobs import job_folder, job_identity

NO_API = "http://127.0.0.1:1"  # validate sends nothing
TEXT = f"identifierValue,firstName\n{mobile(1)},Asha\n{mobile(2)},रवि\n"


def validate(tmp_path: Path, path: Path, *options: str):
    config = write_config(tmp_path, NO_API)
    result = CliRunner().invoke(main, ["validate", str(path), "--config", str(config), *options],
                                env={"BATCH_UPDATER_PASSWORD": "x"})
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def error_of(tmp_path: Path, path: Path, *options: str) -> str:
    """The one line `validate` says about `path`: exit 2, one line on stderr, nothing on stdout."""
    result = validate(tmp_path, path, *options)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("batch-updater: error: ")
    return line.removeprefix("batch-updater: error: ")


def settings() -> InputSettings:
    return InputSettings(chunk_rows=10_000, encoding=None, delimiter=None)


def rows(reader) -> list[list[str]]:
    return [row for chunk in reader.chunks() for row in chunk.frame.values.tolist()]


# --- Real files of other kinds ----------------------------------------------------------

def xlsx_bytes() -> bytes:
    book = openpyxl.Workbook()
    book.active.append(["identifierValue", "firstName"])
    book.active.append([int(mobile(1)), "Asha"])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def zip_bytes(entries: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def ole2_bytes(stream_name: str) -> bytes:
    """An OLE2 (CFB) container, as an .xls is: a 512-byte header, then a directory sector of
    128-byte entries named in UTF-16-LE (Root Entry, then the workbook's stream)."""
    header = CFB_SIGNATURE + bytes(16) + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
    header = header.ljust(512, b"\x00")

    def entry(name: str, kind: int) -> bytes:
        encoded = (name + "\x00").encode("utf-16-le")
        return (encoded.ljust(64, b"\x00") + struct.pack("<HBB", len(encoded), kind, 1)).ljust(128, b"\x00")

    return header + entry("Root Entry", 5) + entry(stream_name, 2) + bytes(256) + random.Random(1).randbytes(4096)


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = b"".join(b"\x00" + bytes(3 * 16) for _ in range(16))  # 16x16 black, RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))


def pdf_bytes() -> bytes:
    return (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
            b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n")


def jpeg_bytes() -> bytes:
    return (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
            + random.Random(2).randbytes(2048) + b"\xff\xd9")


CHECK = "check that it is the exported CSV file"
BINARY = [
    ("book.csv", xlsx_bytes(), "this is a zip archive (an .xlsx workbook?), not CSV text: give a workbook its"
                               " .xlsx suffix, or export the sheet as CSV"),
    ("sheet.csv", zip_bytes({"mimetype": "application/vnd.oasis.opendocument.spreadsheet", "content.xml": "<x/>"}),
     "this looks like an OpenDocument spreadsheet, not CSV text: give it its .ods suffix"),
    ("archive.csv", zip_bytes({"customers.csv": TEXT}),
     "this is a zip archive, not CSV text: unzip it, or export the data as CSV"),
    ("old.csv", ole2_bytes("Workbook"),
     "this looks like an old Excel .xls workbook, not CSV text: give it its .xls suffix"),
    ("locked.csv", ole2_bytes("EncryptedPackage"),
     "this is a password-protected (encrypted) workbook, not CSV text: remove the password in the spreadsheet"
     " program and save it as .xlsx, or export the sheet as CSV"),
    ("export.csv", gzip.compress(TEXT.encode()),
     "this file is gzip-compressed: give it a .gz suffix (e.g. customers.csv.gz)"),
    ("report.csv", pdf_bytes(), "this is a PDF document, not CSV text: export the data as CSV"),
    ("logo.csv", png_bytes(), f"this is a PNG image, not CSV text: {CHECK}"),
    ("photo.csv", jpeg_bytes(), f"this is a JPEG image, not CSV text: {CHECK}"),
    ("junk.csv", random.Random(7).randbytes(8192),
     f"this is binary data, not CSV text (control bytes such as NUL in its first 8,192 bytes): {CHECK}"),
    # NUL bytes at every other position, as in UTF-16 text, but not text: 16-bit samples, zeros
    ("samples.csv", struct.pack("<2048h", *(i % 200 for i in range(2048))),
     f"this is binary data, not CSV text (control bytes such as NUL in its first 4,096 bytes): {CHECK}"),
    ("zeros.csv", bytes(4096),
     f"this is binary data, not CSV text (control bytes such as NUL in its first 4,096 bytes): {CHECK}"),
]


@pytest.mark.parametrize("name, content, message", BINARY, ids=[case[0] for case in BINARY])
def test_a_binary_file_named_csv_is_one_line_whatever_the_encoding(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    assert error_of(tmp_path, path) == f"{path}: {message}"
    # The hint used to loop: utf-16-le for NUL bytes, then latin-1 for what does not decode.
    for encoding in ("utf-16-le", "utf-16", "utf-16-be", "latin-1"):
        assert error_of(tmp_path, path, "--encoding", encoding) == f"{path}: {message}"


def test_only_the_first_block_is_looked_at(tmp_path):
    path = tmp_path / "late.csv"
    cell = "x" * (64 * 1024)
    path.write_bytes(f"{TEXT}{mobile(3)},{cell}\n{mobile(4)},".encode() + b"\x01" * 4096 + b"\n")
    reader = open_input(path, settings())  # control bytes past the first 64 KiB: not looked for
    assert reader.row_count == 4


def test_an_xlsx_named_csv_reads_once_given_the_suffix_it_is_told(tmp_path):
    path = tmp_path / "book.csv"
    path.write_bytes(xlsx_bytes())
    assert "give a workbook its .xlsx suffix" in error_of(tmp_path, path)
    assert rows(open_input(path.rename(tmp_path / "book.xlsx"), settings())) == [[mobile(1), "Asha"]]


# --- UTF-16 and UTF-32 text: read as before, and every hint leads to a read ----------------

WIDE = [
    ("utf16.csv", TEXT.encode("utf-16"), "utf-16"),
    ("utf16be-bom.csv", b"\xfe\xff" + TEXT.encode("utf-16-be"), "utf-16"),
    ("utf16le.csv", TEXT.encode("utf-16-le"), "utf-16-le"),
    ("utf16be.csv", TEXT.encode("utf-16-be"), "utf-16-be"),
    ("utf32.csv", TEXT.encode("utf-32"), "utf-32"),
    ("utf32le.csv", TEXT.encode("utf-32-le"), "utf-32-le"),
]


@pytest.mark.parametrize("name, content, encoding", WIDE, ids=[case[0] for case in WIDE])
def test_wide_text_reads_with_its_encoding(tmp_path, name, content, encoding):
    path = tmp_path / name
    path.write_bytes(content)
    reader = open_input(path, InputSettings(chunk_rows=10_000, encoding=encoding, delimiter=None))
    assert reader.headers == ["identifierValue", "firstName"]
    assert rows(reader) == [[mobile(1), "Asha"], [mobile(2), "रवि"]]
    result = validate(tmp_path, path, "--encoding", encoding)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name, content, encoding", WIDE, ids=[case[0] for case in WIDE])
@pytest.mark.parametrize("given", [None, "utf-8", "latin-1", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_following_the_hints_reads_the_file(tmp_path, name, content, encoding, given):
    path = tmp_path / name
    path.write_bytes(content)
    options = ["--encoding", given] if given else []
    for _ in range(2):  # at most one hint, and it names the right encoding
        result = validate(tmp_path, path, *options)
        if result.exit_code == 0:
            return
        hint = result.stderr.rpartition("pass --encoding ")[2].strip()
        assert hint == encoding, result.stderr
        options = ["--encoding", hint]
    pytest.fail(f"still refused with {options}")


def test_a_utf16_file_larger_than_the_first_block_reads(tmp_path):
    path = tmp_path / "big16.csv"
    lines = ["identifierValue,firstName"] + [f"{mobile(i)},नाम{i}" for i in range(1, 5001)]
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-16-le"))
    assert path.stat().st_size > 64 * 1024
    reader = open_input(path, InputSettings(chunk_rows=2000, encoding="utf-16-le", delimiter=None))
    assert reader.row_count == 5000 and rows(reader)[-1] == [mobile(5000), "नाम5000"]


def test_text_in_another_encoding_than_the_wide_one_given(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_bytes(TEXT.encode())
    assert error_of(tmp_path, path, "--encoding", "utf-16-le") == (
        f"{path}: this is not UTF-16-LE text: leave out --encoding utf-16-le, or pass the file's own"
        " encoding (e.g. latin-1)")


# --- Did you mean: a misspelt column family ----------------------------------------------

ADVICE = ("rename unknown columns, map them in the config's [columns] table, or start their names with _"
          " to have them ignored")


@pytest.mark.parametrize("header, suggestion", [
    ("feilds.x", "fields.x"),
    ("Feilds.Gender", "fields.Gender"),
    ("extendedfeilds.city", "extendedFields.city"),
    ("extended_fields.city", "extendedFields.city"),
    ("identifers.email", "identifiers.email"),
    ("comChannels.email.value", "commChannels.email.value"),
    ("commChanels.mobilePush.lastViewedDate", "commChannels.mobilePush.lastViewedDate"),
    ("comChannels.email.meta.residence", "commChannels.email.meta.residence"),
    ("loyaltyProgramEnrolments.programId", "loyaltyProgramEnrollments.programId"),
    ("Fist Name", "firstName"),  # whole-name suggestions are still made
    ("loyalty_type", "loyaltyType"),
])
def test_an_unknown_column_suggests_its_family_corrected(header, suggestion):
    with pytest.raises(InputError) as error:
        resolve_headers(["identifierValue", header], {}, "in.csv")
    assert str(error.value) == f"in.csv: header row: unknown column '{header}' (did you mean {suggestion}?); {ADVICE}"


def test_a_rename_to_a_misspelt_family_suggests_it_corrected():
    with pytest.raises(InputError) as error:
        resolve_headers(["identifierValue", "City"], {"city": "extendedFeilds.city"}, "in.csv")
    assert str(error.value) == ("in.csv: header row: the config's [columns] maps 'City' to 'extendedFeilds.city',"
                                " which is not a column name (did you mean extendedFields.city?): fix the"
                                " [columns] table")


def test_no_family_suggestion_far_from_every_family():
    with pytest.raises(InputError) as error:
        resolve_headers(["identifierValue", "custom.x"], {}, "in.csv")
    assert str(error.value) == f"in.csv: header row: unknown column 'custom.x'; {ADVICE}"


def test_the_family_suggestion_through_validate(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(f"identifierValue,feilds.tier\n{mobile(1)},gold\n")
    assert error_of(tmp_path, path) == (f"{path}: header row: unknown column 'feilds.tier' (did you mean"
                                        f" fields.tier?); {ADVICE}")


# --- Standard input ----------------------------------------------------------------------

class Pipe(io.RawIOBase):
    """A pipe of `size` pseudo-random bytes made as they are read (never held whole); it
    remembers the largest read asked of it."""

    def __init__(self, size: int, head: bytes = b""):
        self.left, self.head, self.largest = size, head, 0
        self.random = random.Random(5)
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.largest = max(self.largest, len(buffer))
        count = min(len(buffer), self.left)
        data = self.head[:count] + self.random.randbytes(count - len(self.head[:count]))
        self.head = self.head[count:]
        buffer[:count] = data
        self.left -= count
        self.digest.update(data)
        return count


class Terminal(io.BytesIO):
    def isatty(self) -> bool:
        return True


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_stdin_is_spooled_into_a_private_file_removed_afterwards(tmp_path):
    folder = tmp_path / "not" / "yet"
    with spooled_stdin(io.BytesIO(TEXT.encode()), folder) as path:
        assert path.name == "stdin.csv" and path.parent.parent == folder
        assert path.read_bytes() == TEXT.encode()
        assert (mode(path), mode(path.parent)) == (0o600, 0o700)
        assert rows(open_input(path, settings())) == [[mobile(1), "Asha"], [mobile(2), "रवि"]]
    assert not path.parent.exists() and list(folder.iterdir()) == []


def test_a_large_stdin_is_copied_in_blocks(tmp_path):
    pipe = Pipe(40 * 1024 * 1024 + 7)
    with spooled_stdin(io.BufferedReader(pipe), tmp_path) as path:
        assert path.stat().st_size == 40 * 1024 * 1024 + 7
        with open(path, "rb") as handle:
            assert hashlib.file_digest(handle, "sha256").digest() == pipe.digest.digest()
    assert pipe.largest <= 1024 * 1024  # never the whole stream at once


@pytest.mark.parametrize("content, name", [
    (TEXT.encode(), "stdin.csv"),
    (TEXT.encode("utf-16"), "stdin.csv"),
    (xlsx_bytes(), "stdin.xlsx"),
    (gzip.compress(TEXT.encode()), "stdin.csv.gz"),
    (ole2_bytes("Workbook"), "stdin.xls"),
    (zip_bytes({"customers.csv": TEXT}), "stdin.csv"),  # a zip that is no workbook: the reader says so
])
def test_the_spool_is_named_by_its_first_bytes(tmp_path, content, name):
    with spooled_stdin(io.BytesIO(content), tmp_path) as path:
        assert path.name == name and path.read_bytes() == content


@pytest.mark.parametrize("content", [xlsx_bytes(), gzip.compress(TEXT.encode())], ids=["xlsx", "gzip"])
def test_a_piped_workbook_or_gzip_reads(tmp_path, content):
    with spooled_stdin(io.BytesIO(content), tmp_path) as path:
        assert rows(open_input(path, settings()))[0] == [mobile(1), "Asha"]


def test_the_same_bytes_piped_again_are_the_same_job(tmp_path):
    config = config_for(tmp_path, NO_API)
    jobs = []
    for folder in ("a", "b"):
        with spooled_stdin(io.BytesIO(TEXT.encode()), tmp_path / folder) as path:
            job_id = job_identity(path, config)
            jobs.append((job_id, job_folder(config, path, job_id).name))
    assert jobs[0] == jobs[1] and jobs[0][1] == f"stdin-{jobs[0][0]}"


def test_an_empty_stdin(tmp_path):
    with pytest.raises(InputError) as error, spooled_stdin(io.BytesIO(b""), tmp_path):
        pass
    assert str(error.value) == ("standard input is empty: pipe a CSV or Excel file into batch-updater, or give"
                                " the file's path")
    assert list(tmp_path.iterdir()) == []


def test_a_terminal_as_stdin_is_refused_without_reading(tmp_path):
    folder = tmp_path / "spool"
    with pytest.raises(InputError) as error, spooled_stdin(Terminal(b"typed"), folder):
        pass
    assert str(error.value) == ("standard input is a terminal: pipe a file into it (... | batch-updater run - ...)"
                                " or give the file's path")
    assert not folder.exists()


def test_the_spool_is_removed_when_the_run_fails(tmp_path):
    with pytest.raises(RuntimeError), spooled_stdin(io.BytesIO(TEXT.encode()), tmp_path) as path:
        raise RuntimeError("the run failed")
    assert not path.exists() and list(tmp_path.iterdir()) == []
