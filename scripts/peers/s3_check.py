"""Real S3 peers for `resumable s3` (run by scripts/peers/s3; exits non-zero on any mismatch).

    s3_check.py moto URL BIN     our CLI (BIN) uploads to moto's server at URL: 0 B, one part,
                                 several parts, interrupted (SIGINT) and resumed, interrupted
                                 and aborted with --cancel; each object downloaded with boto3
                                 and compared byte for byte.
    s3_check.py server URL       boto3's upload_file with a small multipart threshold against
                                 `resumable serve`'s S3 side (URL/s3); the stored object is
                                 downloaded and compared.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

MIB = 1024 * 1024
BUCKET = "peer-bucket"
ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDPEERTEST",
    "AWS_SECRET_ACCESS_KEY": "peer/secret/key/that/is/not/real",
    "AWS_REGION": "us-east-1",
}


def client(endpoint):
    # No checksums of botocore's own on uploads: it would frame bodies as aws-chunked with
    # trailers, which the conformance server does not speak (it checks x-amz-checksum-*).
    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=endpoint, config=config, **{
        "aws_access_key_id": ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": ENV["AWS_REGION"],
    })


def data(size, seed):
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        out += block
        block = hashlib.sha256(block).digest()
    return bytes(out[:size])


def fail(message):
    print(f"s3 peers: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def compare(s3, key, expected, what):
    got = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    if got != expected:
        fail(f"{what}: the object differs ({len(got)} bytes stored, {len(expected)} sent)")
    print(f"s3 peers: ok: {what} ({len(expected)} bytes)", file=sys.stderr)


def cli(binary, endpoint, path, key, state, extra=()):
    args = [binary, "s3", path, f"s3://{BUCKET}/{key}", "--endpoint", endpoint,
            "--state", state, "--json", "--no-progress", *extra]
    env = dict(os.environ, **ENV)
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc, what, expect=0):
    out, err = proc.communicate(timeout=300)
    if proc.returncode != expect:
        fail(f"{what}: exit {proc.returncode}, expected {expect}: {err.decode(errors='replace')}")
    if b"peer/secret" in out + err:
        fail(f"{what}: the secret key appears in the output")
    return json.loads(out) if out.strip() else None


def interrupt_when_parts_held(s3, proc, key, parts):
    """SIGINT the CLI once the server holds `parts` parts of its upload of `key`."""
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            fail(f"{key}: the upload ended before it could be interrupted")
        uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        for u in uploads:
            if u["Key"] == key:
                listed = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=u["UploadId"])
                if len(listed.get("Parts", [])) >= parts:
                    proc.send_signal(signal.SIGINT)
                    return u["UploadId"]
        time.sleep(0.02)
    fail(f"{key}: the server never held {parts} parts")


def moto(endpoint, binary):
    s3 = client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    tmp = tempfile.mkdtemp(prefix="s3-peers-")
    part = "5MiB"  # moto runs with S3_UPLOAD_PART_MIN_SIZE = 5 MiB (S3's own minimum)

    cases = [("empty.bin", 0), ("one-part.bin", 3 * MIB + 17), ("parts.bin", 23 * MIB + 5)]
    for name, size in cases:
        body = data(size, name)
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(body)
        result = finish(cli(binary, endpoint, path, name, path + ".state",
                            ["--part-size", part, "--parallel", "3"]), name)
        if not result["ok"] or result["bytes"] != size:
            fail(f"{name}: unexpected result {result}")
        compare(s3, name, body, f"{name}, {result['parts']} part(s)")

    # Interrupted by SIGINT (exit 130, state kept), then resumed.
    name = "resumed.bin"
    body = data(60 * MIB + 3, name)
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(body)
    state = path + ".state"
    proc = cli(binary, endpoint, path, name, state, ["--part-size", part, "--parallel", "1"])
    interrupt_when_parts_held(s3, proc, name, 3)
    finish(proc, f"{name} (interrupted)", expect=130)
    if not os.path.exists(state):
        fail(f"{name}: no state kept after the interrupt")
    result = finish(cli(binary, endpoint, path, name, state, ["--part-size", part]), name)
    if result["resumed_from"] < 3 * 5 * MIB:
        fail(f"{name}: resumed from {result['resumed_from']}, expected at least 3 parts")
    compare(s3, name, body, f"{name}, resumed from {result['resumed_from']} bytes")

    # Interrupted, then aborted with --cancel: moto holds no upload afterwards.
    name = "aborted.bin"
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data(40 * MIB, name))
    state = path + ".state"
    proc = cli(binary, endpoint, path, name, state, ["--part-size", part, "--parallel", "1"])
    upload_id = interrupt_when_parts_held(s3, proc, name, 2)
    finish(proc, f"{name} (interrupted)", expect=130)
    result = finish(cli(binary, endpoint, path, name, state, ["--part-size", part, "--cancel"]),
                    f"{name} --cancel")
    if not result.get("cancelled"):
        fail(f"{name}: --cancel reported {result}")
    left = [u for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
            if u["UploadId"] == upload_id]
    if left:
        fail(f"{name}: the upload is still there after --cancel")
    print(f"s3 peers: ok: {name} aborted", file=sys.stderr)


def server(url):
    s3 = client(url.rstrip("/") + "/s3")
    s3.create_bucket(Bucket=BUCKET)
    tmp = tempfile.mkdtemp(prefix="s3-peers-")
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB,
                            max_concurrency=4)
    for name, size in [("small.bin", 1000), ("boto3-multipart.bin", 17 * MIB + 123)]:
        body = data(size, name)
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(body)
        s3.upload_file(path, BUCKET, name, Config=config)
        head = s3.head_object(Bucket=BUCKET, Key=name)
        if head["ContentLength"] != size:
            fail(f"{name}: HEAD says {head['ContentLength']} bytes")
        if size > 5 * MIB and not head["ETag"].endswith('-4"'):
            fail(f"{name}: not a multipart object (ETag {head['ETag']})")
        compare(s3, name, body, f"boto3 upload_file {name} to our server")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "moto":
        moto(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "server":
        server(sys.argv[2])
    else:
        fail(__doc__)
