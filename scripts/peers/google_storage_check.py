"""Google's Python client (google-cloud-storage) against `resumable serve`.

Run by scripts/peers/google, which starts the server and sets STORAGE_EMULATOR_HOST:

    python google_storage_check.py http://127.0.0.1:PORT

1. Uploads of 0 B, 1 B, 256 KiB, 3 MB (multipart: the client's cut-off is 8 MiB), 9 MB
   (resumable, one request) and 40 MB (resumable in 4 MiB chunks), each with
   checksum="crc32c" and if_generation_match=0, then read back: the metadata (size, crc32c,
   md5Hash) and the bytes, compared byte for byte.
2. The same uploads and downloads through faults injected with storage-testbench's Retry
   Test API (POST /retry_test, the x-retry-test-id header on every request of the
   client): the client must retry, store the right bytes, and every instruction must be
   consumed (the retry test ends "completed").
3. `gcloud storage cp` of 20 MB up and back down, when gcloud is installed.

Prints one line per check and exits 1 if any failed.
"""

import base64
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import google_crc32c
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

URL = sys.argv[1].rstrip("/")
BUCKET = "google-peers"
KIB = 1024
MIB = 1024 * 1024

SIZES = [
    ("0B", 0),
    ("1B", 1),
    ("256KiB", 256 * KIB),
    ("3MB", 3_000_000),
    ("9MB", 9_000_000),
    ("40MB", 40_000_000),
]

failures = []


def report(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    if not ok:
        failures.append(name)


def payload(n, seed):
    return random.Random(seed).randbytes(n)


def new_client(test_id=None):
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": URL},
    )
    if test_id is not None:
        client._http.headers.update({"x-retry-test-id": test_id})
    return client


def retry_test(instructions):
    body = json.dumps({"instructions": instructions, "transport": "HTTP"}).encode()
    req = urllib.request.Request(
        URL + "/retry_test",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def retry_test_state(test_id):
    with urllib.request.urlopen(URL + "/retry_test/" + test_id, timeout=10) as r:
        return json.load(r)


def upload(client, name, data):
    blob = client.bucket(BUCKET).blob(name)
    if len(data) > 16 * MIB:
        # Chunked: a resumable upload in several PUTs.
        blob.chunk_size = 4 * MIB
    blob.upload_from_file(
        io.BytesIO(data),
        size=len(data),
        checksum="crc32c",
        if_generation_match=0,
        timeout=30,
    )


def check_stored(client, name, data, label):
    meta = client.bucket(BUCKET).get_blob(name, timeout=30)
    want_crc = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
    want_md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    if meta is None:
        report(label, False, "the object is missing")
        return
    if meta.size != len(data) or meta.crc32c != want_crc or meta.md5_hash != want_md5:
        report(
            label,
            False,
            "metadata size=%s crc32c=%s md5Hash=%s, want %d %s %s"
            % (meta.size, meta.crc32c, meta.md5_hash, len(data), want_crc, want_md5),
        )
        return
    got = client.bucket(BUCKET).blob(name).download_as_bytes(checksum="crc32c", timeout=30)
    if got != data:
        report(label, False, "downloaded %d bytes that differ from the %d sent" % (len(got), len(data)))
        return
    report(label, True, "%d bytes, crc32c %s, md5 %s" % (len(data), want_crc, want_md5))


def plain_round_trips(client):
    for i, (label, n) in enumerate(SIZES):
        name = "plain/" + label
        data = payload(n, i)
        t = time.monotonic()
        try:
            upload(client, name, data)
        except Exception as e:  # noqa: BLE001 - report and go on
            report("upload " + label, False, repr(e))
            continue
        dt = time.monotonic() - t
        check_stored(client, name, data, "upload %s (%.2f s)" % (label, dt))
    # The precondition holds the other way too: a second upload of the name is refused.
    try:
        upload(client, "plain/1B", b"x")
        report("if_generation_match=0 on an existing object", False, "the upload was accepted")
    except exceptions.PreconditionFailed:
        report("if_generation_match=0 on an existing object", True, "412")


# (operation, instruction, which sizes) for uploads; every instruction must be consumed.
UPLOAD_FAULTS = [
    ("return-503", ["0B", "1B", "256KiB", "3MB", "9MB", "40MB"]),
    ("return-408", ["1B", "9MB"]),
    ("return-429", ["1B", "9MB"]),
    ("return-500", ["3MB", "40MB"]),
    ("return-reset-connection", ["1B", "3MB", "9MB", "40MB"]),
    ("return-503-after-256K", ["3MB", "9MB", "40MB"]),
    ("stall-for-1s-after-256K", ["3MB", "9MB"]),
    ("return-broken-stream-final-chunk-after-10B", ["9MB", "40MB"]),
]

DOWNLOAD_FAULTS = [
    "return-503",
    "return-reset-connection",
    "return-broken-stream",
    "return-broken-stream-after-256K",
    "stall-for-1s-after-128K",
]


def faulted_uploads():
    sizes = dict(SIZES)
    for f, (instruction, labels) in enumerate(UPLOAD_FAULTS):
        for label in labels:
            name = "faults/%s/%s" % (instruction, label)
            data = payload(sizes[label], 1000 + f)
            test = retry_test({"storage.objects.insert": [instruction]})
            client = new_client(test["id"])
            check = "upload %s through %s" % (label, instruction)
            try:
                upload(client, name, data)
            except Exception as e:  # noqa: BLE001
                report(check, False, repr(e))
                continue
            state = retry_test_state(test["id"])
            if not state["completed"]:
                report(check, False, "the instruction was not consumed: %s" % state)
                continue
            check_stored(new_client(), name, data, check)


def faulted_downloads():
    data = payload(3 * MIB + 17, 77)
    name = "faults/download.bin"
    upload(new_client(), name, data)
    for instruction in DOWNLOAD_FAULTS:
        test = retry_test({"storage.objects.get": [instruction]})
        client = new_client(test["id"])
        check = "download 3 MiB through " + instruction
        try:
            got = client.bucket(BUCKET).blob(name).download_as_bytes(checksum="crc32c", timeout=30)
        except Exception as e:  # noqa: BLE001
            report(check, False, repr(e))
            continue
        state = retry_test_state(test["id"])
        if got != data:
            report(check, False, "got %d bytes that differ" % len(got))
        elif not state["completed"]:
            report(check, False, "the instruction was not consumed: %s" % state)
        else:
            report(check, True, "%d bytes" % len(got))


def gcloud_round_trip():
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        print("note gcloud is not installed: the gcloud storage cp check is skipped", flush=True)
        return
    data = payload(20_000_000, 2020)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src.bin")
        back = os.path.join(tmp, "back.bin")
        with open(src, "wb") as f:
            f.write(data)
        env = dict(os.environ)
        env.update(
            {
                # An isolated configuration: no account, no credentials, this endpoint.
                "CLOUDSDK_CONFIG": os.path.join(tmp, "gcloud-config"),
                "CLOUDSDK_CORE_PROJECT": "test",
                "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE": URL + "/",
                "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
                "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
                "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
            }
        )
        target = "gs://%s/gcloud/20MB.bin" % BUCKET
        for what, args in [
            ("gcloud storage cp up", [gcloud, "storage", "cp", src, target]),
            ("gcloud storage cp down", [gcloud, "storage", "cp", target, back]),
        ]:
            t = time.monotonic()
            p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
            dt = time.monotonic() - t
            if p.returncode != 0:
                report(what, False, "exit %d: %s" % (p.returncode, (p.stderr or p.stdout)[-2000:]))
                return
            report(what, True, "%.2f s" % dt)
        with open(back, "rb") as f:
            got = f.read()
        report("gcloud 20 MB byte for byte", got == data, "%d bytes back" % len(got))
        check_stored(new_client(), "gcloud/20MB.bin", data, "gcloud 20 MB as the Python client reads it")


def main():
    client = new_client()
    try:
        client.create_bucket(BUCKET)
    except exceptions.Conflict:
        pass
    plain_round_trips(client)
    faulted_uploads()
    faulted_downloads()
    gcloud_round_trip()
    print("%d failed" % len(failures), flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
