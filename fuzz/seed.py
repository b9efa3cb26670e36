#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into fuzz/corpus/<target>/ from the repository's own
fixtures and formats. Run once when a format changes; the seeds are committed."""
import hashlib, os, pathlib, struct

root = pathlib.Path(__file__).resolve().parent
repo = root.parent
nho = repo / "tests/fixtures/ssmix2/nho-sample"
TYPES = ["ADT-00", "ADT-01", "ADT-12", "ADT-21", "ADT-22", "ADT-31", "ADT-32", "ADT-41", "ADT-42", "ADT-51", "ADT-52", "ADT-61", "PPR-01", "OMD", "OMP-01",
         "OMP-02", "OMP-11", "OMP-12", "OML-01", "OML-11", "OMG-01", "OMG-02", "OMG-03", "OMG-11", "OMG-12", "OMG-13", "ZZZ-99"]

def put(target, data):
    d = root / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)

files = sorted(p for p in nho.rglob("*") if p.is_file() and p.name not in ("LICENSE", "NOTICE.md"))
for p in files:
    rel = p.relative_to(nho).as_posix()
    kind = rel.split("/")[4]
    put("hl7", bytes([TYPES.index(kind)]) + p.read_bytes())
    put("ssmix2_path", rel.encode())
put("ssmix2_path", b"999/901/9999013/20111220/ADT-00/9999013_20111220_ADT-00_999999999999999_20111220224447339_01_1")
put("ssmix2_path", "999/901/9999013/20111220/20^退院時サマリ^99XYZ^^^/9999013_20111220_20_999999999999999_20111220224447339_01_1/summary.pdf".encode())

def varint(v):
    out = []
    while True:
        out.append(v & 0x7F)
        v >>= 7
        if not v:
            break
    return bytes([b | 0x80 for b in reversed(out[1:])] + [out[0]]) if len(out) > 1 else bytes(out)

def seg(seq, body, raw_len, created="2026-12-01T00:00:00Z"):
    c = created.encode()
    return struct.pack(">QQQ", seq, raw_len, 1) + bytes(32) + hashlib.sha256(body).digest() + struct.pack(">H", len(c)) + c + struct.pack(">I", len(body)) + body

def text(s):
    b = s.encode()
    return b"\x03" + varint(len(b)) + b

def table(name, pk):
    return b"T" + varint(len(pk)) + bytes(pk) + name.encode() + b"\0"

insert = table("patient", [1, 0, 0]) + bytes([18, 0]) + b"\x01" + struct.pack(">q", 7) + text("0000770001") + b"\x05"
update = table("encounter", [1, 0]) + bytes([23, 0]) + b"\x01" + struct.pack(">q", 3) + b"\x00" + b"\x00" + text("外来")
delete = table("outbox", [1, 0]) + bytes([9, 0]) + b"\x01" + struct.pack(">q", 1) + b"\x04" + varint(2) + b"\xde\xad"
for cs in (insert, update, delete, insert + update, b"P" + insert[1:]):
    put("changeset", cs)

for segs in ([seg(1, b"\x28\xb5\x2f\xfd\x00\x00", 0)], [seg(1, b"abc", 3), seg(2, b"", 0)], []):
    put("wire", b"TSB1" + b"3710000001" + struct.pack(">I", len(segs)) + b"".join(segs))
restore = b"S" + struct.pack(">II", 4, 3) + b"xyz" + b"G" + seg(5, b"body", 4) + b"E" + struct.pack(">Q", 5) + bytes(32)
put("wire", restore)

for p in ["/", "/login", "/patient/R0000000001", "/patient/R1/document/12/3", "/admin/users/dr.sato/reset", "/history.csv", "/static/portal.css",
          "/fleet/3710000001/a1/command", "//v1/restore", "/%761/restore", "/v1%2frestore", "/patient/..", "/patient/R1/../../v1/restore", "/patient//calendar",
          "https://hub/v1/restore", "/patient/a\\b", "*"]:
    put("portal_path", p.encode())
