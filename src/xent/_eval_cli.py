"""``xent eval``: evaluate a saved prediction set (``.npy``, ``.npz``, ``.safetensors``) in one
pass.

Files are memory-mapped (members of an uncompressed ``.npz`` and tensors of a ``.safetensors``
file too, at their offsets in the file), so a prediction file larger than memory streams
through in row blocks.  Nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import sys
import zipfile

import numpy as np

from xent._frameworks import BFLOAT16, as_bfloat16, dtype_name, is_bfloat16


class CliError(Exception):
    """An error reported as one line, exit status 2."""


def _chosen(path: str, names: list, key: str | None, what: str, noun: str) -> str:
    """The member ``--<what>-key`` names, or the only one (``noun``: array / tensor)."""
    if key is None:
        if len(names) != 1:
            raise CliError(
                f"{path} holds {len(names)} {noun}s ({', '.join(names)}); "
                f"choose one with --{what}-key"
            )
        return names[0]
    if key not in names:
        raise CliError(f"{path} has no {noun} {key!r}; it holds: {', '.join(names)}")
    return key


def _npz_member(path: str, key: str | None, what: str):
    with zipfile.ZipFile(path) as zf:
        names = [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]
        key = _chosen(path, names, key, what, "array")
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


# safetensors: an 8-byte little-endian header length, a JSON header naming each tensor's
# dtype, shape and byte range (relative to the end of the header), then the raw data,
# little-endian and C-ordered.  Read here directly, so no extra package is needed.
_SAFETENSORS_DTYPES = {
    "BF16": BFLOAT16.newbyteorder("<"),
    "F16": "<f2",
    "F32": "<f4",
    "F64": "<f8",
    "I8": "i1",
    "I16": "<i2",
    "I32": "<i4",
    "I64": "<i8",
    "U8": "u1",
    "U16": "<u2",
    "U32": "<u4",
    "U64": "<u8",
    "BOOL": "?",
}
_SAFETENSORS_MAX_HEADER = 100 * 2**20  # the format's own limit


def _safetensors_header(path: str):
    """``(header dict, data offset)``, or ``None`` if the file is not safetensors."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(9)
        if len(head) < 9 or head[8:9] != b"{":
            return None
        (n,) = struct.unpack("<Q", head[:8])
        if n > min(size - 8, _SAFETENSORS_MAX_HEADER):
            return None
        f.seek(8)
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CliError(f"{path}: damaged safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CliError(f"{path}: damaged safetensors header (not a JSON object)")
    return header, 8 + n


def _safetensors_tensor(path: str, header: dict, data_start: int, key: str | None, what: str):
    key = _chosen(path, [k for k in header if k != "__metadata__"], key, what, "tensor")
    entry = header[key]
    try:
        code, shape, (start, stop) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise CliError(f"{path}: damaged safetensors entry for {key!r}: {entry!r}") from None
    if code not in _SAFETENSORS_DTYPES:
        raise CliError(
            f"{path}[{key}] has dtype {code}; xent eval reads {', '.join(_SAFETENSORS_DTYPES)}"
        )
    dtype = np.dtype(_SAFETENSORS_DTYPES[code])
    count = int(np.prod(shape, dtype=np.int64))
    end = data_start + stop
    if (
        min(shape, default=0) < 0
        or not 0 <= start <= stop
        or stop - start != count * dtype.itemsize
        or end > os.path.getsize(path)
    ):
        raise CliError(
            f"{path}[{key}]: its byte range {start}..{stop} does not hold a {code} tensor of "
            f"shape {list(shape)} inside the file"
        )
    if count == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=data_start + start, shape=shape)


def _as_requested(arr, path: str, dtype: str | None, what: str):
    """Apply ``--dtype``: NumPy saves ``ml_dtypes.bfloat16`` arrays as 2-byte void (``<V2``).
    It must fit the predictions; labels are reinterpreted only if they are such data."""
    void2 = arr.dtype.kind == "V" and arr.dtype.itemsize == 2 and arr.dtype.names is None
    if dtype is None:
        if void2:
            raise CliError(
                f"{path} holds 2-byte void values ({arr.dtype.str}), as NumPy saves "
                f"ml_dtypes.bfloat16 arrays; pass --dtype bfloat16 to read them as bfloat16"
            )
        return arr
    if what == "labels" and not void2:
        return arr
    if not void2 and not is_bfloat16(arr.dtype):
        raise CliError(
            f"--dtype {dtype} reinterprets 2-byte void data (how NumPy saves bfloat16); "
            f"{path} holds {dtype_name(arr.dtype)}, read as it is without --dtype"
        )
    return as_bfloat16(arr)


def load_array(path: str, key: str | None, what: str, dtype: str | None = None):
    """A ``.npy`` (memory-mapped), an ``.npz`` member or a ``.safetensors`` tensor."""
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            arr = _npz_member(path, key, what)
        elif (found := _safetensors_header(path)) is not None:
            arr = _safetensors_tensor(path, *found, key, what)
        elif key is not None:
            raise CliError(
                f"--{what}-key applies to .npz and .safetensors files; {path} is neither"
            )
        else:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except CliError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CliError(f"{path}: cannot read as .npy/.npz/.safetensors ({exc})") from None
    return _as_requested(arr, path, dtype, what)


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
        help=".npy, .npz or .safetensors file of shape (..., C): probabilities, or logits "
        "with --from-logits (bfloat16, float16, float32, float64)",
    )
    p.add_argument(
        "labels",
        metavar="LABELS",
        help=".npy, .npz or .safetensors file: class indices of shape (...) or one-hot/soft "
        "rows of shape (..., C)",
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
        help="array name inside a PREDICTIONS .npz or .safetensors (needed when it holds several)",
    )
    p.add_argument(
        "--labels-key",
        default=None,
        metavar="NAME",
        help="array name inside a LABELS .npz or .safetensors (needed when it holds several)",
    )
    p.add_argument(
        "--dtype",
        choices=["bfloat16"],
        default=None,
        help="read 2-byte void data (<V2, how np.save stores an ml_dtypes.bfloat16 array) "
        "in PREDICTIONS (and soft LABELS) as bfloat16",
    )
    p.add_argument(
        "--n-bins",
        type=int,
        default=15,
        metavar="N",
        help="equal-width confidence bins of the calibration errors (default: 15)",
    )
    p.add_argument(
        "--ties",
        choices=["stable", "optimistic", "pessimistic"],
        default="stable",
        help="how a class scoring the same as the true class ranks: after it if its index is "
        "larger (stable, np.argsort's order; default), never ahead (optimistic, TensorFlow's "
        "in_top_k) or always ahead (pessimistic)",
    )
    p.add_argument(
        "--confusion",
        action="store_true",
        help="also the C x C confusion matrix (in --json; C <= 2048)",
    )
    p.add_argument(
        "--per-row",
        metavar="OUT.npz",
        default=None,
        help="write per-row loss, lse, rank, argmax, entropy and p_true to OUT.npz, block by "
        "block through memory-mapped files (bounded memory for any size)",
    )
    p.add_argument(
        "--plot",
        metavar="REPORT.png",
        default=None,
        help="draw a reliability diagram and, for up to 50 classes, per-class accuracy "
        "(needs matplotlib)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import xent

    try:
        if args.plot:  # before the evaluation, which may take minutes
            from xent._eval_plot import require_matplotlib

            require_matplotlib("xent eval")
        pred = load_array(args.predictions, args.pred_key, "pred", args.dtype)
        labels = load_array(args.labels, args.labels_key, "labels", args.dtype)
        ev = xent.evaluate(
            labels,
            pred,
            from_logits=args.from_logits,
            top_k=tuple(args.top_k),
            ignore_class=args.ignore_class,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            n_bins=args.n_bins,
            ties=args.ties,
            confusion=args.confusion,
            per_row=False if args.per_row is None else args.per_row,
        )
        if args.plot:
            from xent._eval_plot import plot_report

            plot_report(ev, args.plot, f"{args.predictions} vs {args.labels}")
    except (CliError, ValueError, TypeError, ImportError, OSError) as exc:
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
            "dtype": dtype_name(pred.dtype),
            # the per-row arrays are in their file, not in the JSON
            **dataclasses.replace(ev, per_row=None).to_dict(),
        }
        if args.per_row:
            out["per_row"] = args.per_row
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{args.predictions}: {pred.shape} {dtype_name(pred.dtype)}"
            f" ({'logits' if args.from_logits else 'probabilities'}), labels {args.labels}: "
            f"{labels.shape} {labels.dtype}"
        )
        print(ev)
        if args.confusion:
            print("confusion matrix (rows: true class, columns: arg-max):")
            print(np.array2string(ev.confusion_matrix, max_line_width=100, threshold=400))
        if args.per_row:
            print(f"per-row outputs: {args.per_row}")
        if args.plot:
            print(f"report: {args.plot}")
    return 0
