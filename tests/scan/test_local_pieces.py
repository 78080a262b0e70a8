"""Piece hashes of the local scan (``Torrent.Enabled``): computed in the same read as the file
hashes, stored in ``FILEPIECES_<path>``, recomputed when the file or the piece length changes,
computed once for files indexed before torrents were on, and removed with the file."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from mirrorbits.config import TorrentConfig
from mirrorbits.scan import local
from tests.scan.test_local import ScanTestBase, run, write

PIECE = 32 * 1024


def expected(data: bytes, length: int) -> tuple[str, str]:
    parts = [data[i:i + length] for i in range(0, len(data), length)]
    return ("".join(hashlib.sha1(p).hexdigest() for p in parts),
            "".join(hashlib.sha256(p).hexdigest() for p in parts))


class PieceLength(unittest.SynchronousTestCase):
    def test_automatic_and_configured(self) -> None:
        self.assertEqual(local.piece_length_for(0, 0), 256 * 1024)
        self.assertEqual(local.piece_length_for(512 * 1024 * 1024, 0), 256 * 1024)
        self.assertEqual(local.piece_length_for(512 * 1024 * 1024 + 1, 0), 512 * 1024)
        self.assertEqual(local.piece_length_for(4 * 1024 ** 3, 0), 2 * 1024 * 1024)
        self.assertEqual(local.piece_length_for(1024 ** 4, 0), 16 * 1024 * 1024)
        self.assertEqual(local.piece_length_for(10, 65536), 65536)

    def test_pieces_across_read_boundaries(self) -> None:
        tmp = tempfile.mkdtemp(prefix="mirrorbits-pieces-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "f")
        data = os.urandom(local.READ_SIZE * 2 + 12345)
        with open(path, "wb") as f:
            f.write(data)
        for length in (PIECE, local.READ_SIZE, 3 * local.READ_SIZE):
            digests, size, _ = local.hash_file(path.encode(), ("sha256",), None, length)
            self.assertEqual(size, len(data))
            self.assertEqual(digests["sha256"], hashlib.sha256(data).hexdigest())
            self.assertEqual((digests[local.PIECES_SHA1], digests[local.PIECES_SHA256]),
                             expected(data, length))


class PieceScan(ScanTestBase):
    def torrents(self, length: int = PIECE) -> None:
        self.config = self.config.replace(Torrent=TorrentConfig(Enabled=True, PieceLength=length))

    def pieces(self, path: str) -> dict[bytes, bytes]:
        return self.redis.hgetall("FILEPIECES_" + path)  # type: ignore[no-any-return]

    @defer.inlineCallbacks
    def test_stored_rehashed_and_removed(self) -> Any:
        data = os.urandom(5 * PIECE + 7)
        write(os.path.join(self.repo, "a.iso"), data)
        yield run(self.scanner().scan())
        self.assertEqual(self.pieces("/a.iso"), {})  # torrents off: none
        self.torrents()
        r = yield run(self.scanner().scan())  # existing files get their pieces once
        self.assertEqual(r.hashed, 1)
        rec = self.pieces("/a.iso")
        file_rec = self.redis.hgetall("FILE_/a.iso")
        self.assertEqual((rec[b"size"], rec[b"modTime"], rec[b"length"]),
                         (file_rec[b"size"], file_rec[b"modTime"], str(PIECE).encode()))
        self.assertEqual((rec[b"sha1"].decode(), rec[b"sha256"].decode()), expected(data, PIECE))
        r = yield run(self.scanner().scan())  # nothing changed: nothing hashed
        self.assertEqual(r.hashed, 0)
        self.torrents(2 * PIECE)  # another piece length: hashed again
        r = yield run(self.scanner().scan())
        self.assertEqual(r.hashed, 1)
        self.assertEqual(self.pieces("/a.iso")[b"sha1"].decode(), expected(data, 2 * PIECE)[0])
        data2 = os.urandom(3 * PIECE)
        write(os.path.join(self.repo, "a.iso"), data2)
        os.utime(os.path.join(self.repo, "a.iso"), ns=(10**18, 10**18))
        r = yield run(self.scanner().scan())
        self.assertEqual(r.hashed, 1)
        self.assertEqual(self.pieces("/a.iso")[b"sha256"].decode(), expected(data2, 2 * PIECE)[1])
        os.unlink(os.path.join(self.repo, "a.iso"))
        yield run(self.scanner().scan())
        self.assertFalse(self.redis.exists("FILE_/a.iso"))
        self.assertFalse(self.redis.exists("FILEPIECES_/a.iso"))
