"""A real S3-compatible store for the export tests (tests/tests/s3_export.rs), and boto3 to look
into it: moto's server mode, which implements multipart uploads as S3 does (5 MiB minimum part
size, part ETags checked at completion, the MD5-of-MD5s "-N" ETag, NoSuchUpload / NoSuchBucket).

  s3_store.py serve PORT                  run the store on 127.0.0.1:PORT (0: a free port); prints
                                          the port, then serves until killed
  s3_store.py mkbucket ENDPOINT BUCKET
  s3_store.py stat ENDPOINT BUCKET KEY    prints JSON: size, sha256 of the bytes, etag, parts
  s3_store.py keys ENDPOINT BUCKET        prints JSON: every key
  s3_store.py uploads ENDPOINT BUCKET     prints JSON: the keys of multipart uploads in progress
  s3_store.py url URL                     GET (a presigned URL); prints JSON: size, sha256
  s3_store.py put ENDPOINT BUCKET KEY FILE   boto3's own multipart upload (bench/EXPORT.md):
                                          8 MiB parts, 4 at once; prints JSON: seconds
  s3_store.py rm ENDPOINT BUCKET KEY
"""

import hashlib
import json
import sys
import time
import urllib.request

KEY_ID, SECRET = "quicft-test", "quicft-test-secret"


def client(endpoint):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=Config(s3={"addressing_style": "path"}),
    )


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(args[0]), verbose=False)
        server.start()
        print(server._server.server_port, flush=True)
        while True:
            time.sleep(3600)
    elif cmd == "mkbucket":
        client(args[0]).create_bucket(Bucket=args[1])
    elif cmd == "stat":
        s3 = client(args[0])
        obj = s3.get_object(Bucket=args[1], Key=args[2])
        h, n = hashlib.sha256(), 0
        for chunk in iter(lambda: obj["Body"].read(1 << 20), b""):
            h.update(chunk)
            n += len(chunk)
        head = s3.head_object(Bucket=args[1], Key=args[2], PartNumber=1)
        print(json.dumps({"size": n, "sha256": h.hexdigest(), "etag": obj["ETag"].strip('"'),
                          "parts": head.get("PartsCount", 1)}))
    elif cmd == "keys":
        s3 = client(args[0])
        out = s3.list_objects_v2(Bucket=args[1]).get("Contents", [])
        print(json.dumps([o["Key"] for o in out]))
    elif cmd == "uploads":
        out = client(args[0]).list_multipart_uploads(Bucket=args[1]).get("Uploads", [])
        print(json.dumps([u["Key"] for u in out]))
    elif cmd == "url":
        with urllib.request.urlopen(args[0]) as r:
            h, n = hashlib.sha256(), 0
            for chunk in iter(lambda: r.read(1 << 20), b""):
                h.update(chunk)
                n += len(chunk)
        print(json.dumps({"size": n, "sha256": h.hexdigest()}))
    elif cmd == "put":
        from boto3.s3.transfer import TransferConfig

        t = time.monotonic()
        client(args[0]).upload_file(args[3], args[1], args[2], Config=TransferConfig(
            multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4))
        print(json.dumps({"seconds": time.monotonic() - t}))
    elif cmd == "rm":
        client(args[0]).delete_object(Bucket=args[1], Key=args[2])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
