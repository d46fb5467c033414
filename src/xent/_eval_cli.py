"""``xent eval``: evaluate a saved prediction set (``.npy`` / ``.npz``) in one pass.

Files are memory-mapped (members of an uncompressed ``.npz`` too, at their offset in the
archive), so a prediction file larger than memory streams through in row blocks.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zipfile

import numpy as np


class CliError(Exception):
    """An error reported as one line, exit status 2."""


def _npz_member(path: str, key: str | None, what: str):
    with zipfile.ZipFile(path) as zf:
        names = [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]
        if key is None:
            if len(names) != 1:
                raise CliError(
                    f"{path} holds {len(names)} arrays ({', '.join(names)}); "
                    f"choose one with --{what}-key"
                )
            key = names[0]
        if key not in names:
            raise CliError(f"{path} has no array {key!r}; it holds: {', '.join(names)}")
        info = zf.getinfo(key + ".npy" if key + ".npy" in zf.namelist() else key)
        if info.compress_type != zipfile.ZIP_STORED:
            print(
                f"xent eval: note: {path}[{key}] is compressed; it is read into memory "
                f"(save with np.savez, not savez_compressed, to stream it)",
                file=sys.stderr,
            )
            return np.load(path)[key]
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise CliError(f"{path}: damaged zip archive")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if dtype.hasobject:
        raise CliError(f"{path}[{key}] holds Python objects, not numbers")
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


def load_array(path: str, key: str | None, what: str):
    """A ``.npy`` (memory-mapped) or an ``.npz`` member."""
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            return _npz_member(path, key, what)
        if key is not None:
            raise CliError(f"--{what}-key applies to .npz archives; {path} is not one")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except CliError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CliError(f"{path}: cannot read as .npy/.npz ({exc})") from None


def add_parser(sub):
    p = sub.add_parser(
        "eval",
        help="loss, accuracy, top-k and perplexity of saved predictions, in one pass",
        description="Evaluates a saved prediction set against its labels in one streaming pass: "
        "mean cross-entropy (Keras semantics), accuracy, top-k accuracy and perplexity. "
        "Files are memory-mapped and processed in row blocks, so they may be larger than memory. "
        "Exits with status 2 and a one-line message on a missing file, a shape mismatch, a wrong "
        "dtype or out-of-range labels.",
    )
    p.add_argument(
        "predictions",
        metavar="PREDICTIONS",
        help=".npy or .npz file of shape (..., C): probabilities, or logits with "
        "--from-logits (float16/32/64)",
    )
    p.add_argument(
        "labels",
        metavar="LABELS",
        help=".npy or .npz file: class indices of shape (...) or one-hot/soft rows "
        "of shape (..., C)",
    )
    p.add_argument(
        "--from-logits",
        action="store_true",
        help="PREDICTIONS hold logits (default: probabilities)",
    )
    p.add_argument(
        "--top-k",
        type=int,
        nargs="+",
        default=[1, 5],
        metavar="K",
        help="k values of the top-k accuracies (default: 1 5)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="rows per block (default: about 64 MiB of predictions per block)",
    )
    p.add_argument(
        "--ignore-class",
        type=int,
        default=None,
        metavar="LABEL",
        help="label value whose rows are not counted",
    )
    p.add_argument(
        "--pred-key",
        default=None,
        metavar="NAME",
        help="array name inside a PREDICTIONS .npz (needed when it holds several)",
    )
    p.add_argument(
        "--labels-key",
        default=None,
        metavar="NAME",
        help="array name inside a LABELS .npz (needed when it holds several)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import xent

    try:
        pred = load_array(args.predictions, args.pred_key, "pred")
        labels = load_array(args.labels, args.labels_key, "labels")
        ev = xent.evaluate(
            labels,
            pred,
            from_logits=args.from_logits,
            top_k=tuple(args.top_k),
            ignore_class=args.ignore_class,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    except (CliError, ValueError, TypeError) as exc:
        msg = " ".join(str(exc).split())
        msg = msg.replace("y_true", f"LABELS ({args.labels})").replace(
            "y_pred", f"PREDICTIONS ({args.predictions})"
        )
        print(f"xent eval: error: {msg}", file=sys.stderr)
        return 2
    if args.json:
        out = {
            "predictions": args.predictions,
            "labels": args.labels,
            "shape": list(pred.shape),
            "dtype": str(pred.dtype),
            **ev.to_dict(),
        }
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{args.predictions}: {pred.shape} {pred.dtype}"
            f" ({'logits' if args.from_logits else 'probabilities'}), labels {args.labels}: "
            f"{labels.shape} {labels.dtype}"
        )
        print(ev)
    return 0
