#!/usr/bin/env python3
"""The mature peer of bench/run: one GCS resumable upload with google-resumable-media + requests.

    peer_upload.py --chunk-size BYTES FILE START_URL

START_URL is a JSON API start URL (`.../upload/storage/v1/b/BUCKET/o?uploadType=resumable&name=N`).
The file is sent in chunks of a fixed size with CRC32C (google-crc32c's C extension, when
installed, as `resumable` computes it by default) through one requests.Session. Prints one
JSON object: bytes uploaded, requests made, and the seconds from the start request to the last
answer (interpreter start-up and imports excluded).
"""

import argparse
import json
import sys
import time

import requests
from google.resumable_media.requests import ResumableUpload


class CountingSession(requests.Session):
    """A requests session that counts the requests made through it."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def request(self, *args, **kwargs):
        self.count += 1
        return super().request(*args, **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-size", type=int, required=True)
    parser.add_argument("--checksum", choices=["crc32c", "md5", "none"], default="crc32c")
    parser.add_argument("file")
    parser.add_argument("url")
    args = parser.parse_args()

    checksum = None if args.checksum == "none" else args.checksum
    if checksum == "crc32c":
        import google_crc32c

        if google_crc32c.implementation != "c":
            # The pure-Python fallback would measure Python, not the upload.
            print("google-crc32c has no C extension here: no checksum", file=sys.stderr)
            checksum = None

    session = CountingSession()
    session.trust_env = False  # loopback: no proxy from the environment
    upload = ResumableUpload(args.url, args.chunk_size, checksum=checksum)
    with open(args.file, "rb") as stream:
        started = time.perf_counter()
        upload.initiate(session, stream, {}, "application/octet-stream")
        while not upload.finished:
            upload.transmit_next_chunk(session)
        seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "bytes": upload.bytes_uploaded,
                "requests": session.count,
                "seconds": round(seconds, 4),
                "checksum": checksum or "none",
            },
            separators=(",", ":"),
        )
    )


if __name__ == "__main__":
    main()
