"""A small column-oriented CSV reader for the tool verbs (profile, drift, ab, register, validate, train).

The image carries no pandas, so tables are read with the csv module into columns of strings and converted on
demand. Missing cells are the empty string and the usual spellings of "not available" (see `MISSING_TOKENS`);
non-finite numbers count as missing too, because no statistic here is defined on them.

Type inference (`infer_type`): a column whose non-missing cells all parse as floats is numeric (`integer` when
every value is whole, else `number`); one whose cells are all true/false (any case) is `boolean`; anything else is
`categorical`. Drift tests treat number and integer as numeric, categorical and boolean as categorical.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlsteward_runtime.contracts import FeatureType
from mlsteward_runtime.errors import UsageError

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
_BOOL_TOKENS = {"true": True, "false": False}
NUMERIC_TYPES = frozenset({FeatureType.number, FeatureType.integer})


def is_missing(value: Any) -> bool:
    """True for None, NaN/inf floats and the missing-value spellings of a CSV cell."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in MISSING_TOKENS
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return False
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def category_key(value: Any) -> str:
    """The string a categorical value is counted under, so 1, 1.0, "1" and True/"true" meet in one cell."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, str):
        s = value.strip()
        low = s.lower()
        if low in _BOOL_TOKENS:
            return low
        try:
            f = float(s)
        except ValueError:
            return s
        return _number_key(f) if math.isfinite(f) else s
    if isinstance(value, (int, float, np.integer, np.floating)):
        return _number_key(float(value))
    return str(value)


def _number_key(f: float) -> str:
    return str(int(f)) if f.is_integer() and abs(f) < 2**63 else repr(f)


def to_float_array(values: Iterable[Any], *, what: str = "column") -> np.ndarray:
    """Convert to float64 with NaN for missing cells. Raises UsageError naming `what` on a non-number."""
    out = []
    for i, v in enumerate(values):
        if is_missing(v):
            out.append(math.nan)
            continue
        if isinstance(v, str) and v.strip().lower() in _BOOL_TOKENS:
            out.append(1.0 if _BOOL_TOKENS[v.strip().lower()] else 0.0)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise UsageError(f"{what}: value {v!r} at position {i + 1} is not a number") from None
    arr = np.asarray(out, dtype=np.float64)
    arr[~np.isfinite(arr)] = np.nan
    return arr


def infer_type(values: Sequence[Any]) -> FeatureType:
    """Infer a feature type from values (see the module docstring). An all-missing column is `number`."""
    present = [v for v in values if not is_missing(v)]
    if not present:
        return FeatureType.number
    if all(isinstance(v, (bool, np.bool_)) or (isinstance(v, str) and v.strip().lower() in _BOOL_TOKENS)
           for v in present):
        return FeatureType.boolean
    whole = True
    for v in present:
        if isinstance(v, (bool, np.bool_)):
            return FeatureType.categorical
        try:
            f = float(v)
        except (TypeError, ValueError):
            return FeatureType.categorical
        whole = whole and f.is_integer()
    return FeatureType.integer if whole else FeatureType.number


@dataclass
class Table:
    """Columns of raw cell strings, in header order. `source` names the file in error messages."""

    source: str
    header: list[str]
    columns: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return len(self.columns[self.header[0]]) if self.header else 0

    def column(self, name: str) -> list[str]:
        if name not in self.columns:
            raise UsageError(f"{self.source}: no column {name!r} (columns: {', '.join(self.header)})")
        return self.columns[name]

    def numeric(self, name: str) -> np.ndarray:
        return to_float_array(self.column(name), what=f"{self.source}: column {name!r}")

    def infer_types(self, *, categorical: Iterable[str] = ()) -> dict[str, FeatureType]:
        forced = set(categorical)
        unknown = forced - set(self.header)
        if unknown:
            raise UsageError(
                f"{self.source}: --categorical names no column {', '.join(sorted(unknown))} "
                f"(columns: {', '.join(self.header)})"
            )
        return {
            name: FeatureType.categorical if name in forced else infer_type(self.columns[name]) for name in self.header
        }


def read_csv(source: str | Path | bytes, *, name: str | None = None) -> Table:
    """Read a CSV with a header row from a path or from bytes.

    Rules (each broken one is a UsageError naming the file): a header row with unique, non-empty names; at least
    one data row; every row as long as the header.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "data")
    try:
        if isinstance(source, bytes):
            text = source.decode("utf-8-sig")
        else:
            text = Path(source).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{label}: is a directory, expected a CSV file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{label}: not UTF-8 text, expected a CSV file") from None
    except OSError as exc:
        raise UsageError(f"{label}: cannot read ({exc.strerror or exc})") from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise UsageError(f"{label}: not valid CSV ({exc})") from None
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        raise UsageError(f"{label}: empty file, expected a header row and data rows")
    header = [h.strip() for h in rows[0]]
    if any(not h for h in header):
        raise UsageError(f"{label}: header has an empty column name (column {header.index('') + 1})")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise UsageError(f"{label}: header repeats column name(s) {', '.join(dupes)}")
    body = rows[1:]
    if not body:
        raise UsageError(f"{label}: has a header but no data rows")
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise UsageError(f"{label}: line {i} has {len(r)} fields, the header has {len(header)}")
    columns = {h: [r[j] for r in body] for j, h in enumerate(header)}
    return Table(source=label, header=header, columns=columns)


def columns_from_mapping(data: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """Normalise a mapping of columns (lists, arrays) into lists, for functions that accept either."""
    return {k: list(v.tolist() if isinstance(v, np.ndarray) else v) for k, v in data.items()}


def read_csv_uri(uri: str, *, what: str = "data") -> Table:
    """Read a CSV from a path or a file://, http(s):// or s3:// URI (fetched with the artifact fetcher).

    A fetch failure raises `ModelLoadError("FetchFailed", ...)`; a malformed CSV raises UsageError.
    """
    from mlsteward_runtime.artifacts import fetch_artifact

    return read_csv(fetch_artifact(uri), name=uri)


def write_uri(uri: str, data: bytes) -> None:
    """Write bytes to a path, a file:// URI or s3://bucket/key (boto3, AWS_ENDPOINT_URL honoured).

    OSError (and boto3's errors) propagate; callers map them to their reason.
    """
    import os
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "s3":
        import boto3

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        boto3.client("s3", endpoint_url=endpoint).put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"),
                                                             Body=data)
        return
    if scheme not in ("", "file"):
        raise OSError(f"cannot write to {uri}: use a path, file:// or s3://")
    path = Path(unquote(parsed.path) if scheme == "file" else uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def sibling_uri(uri: str, suffix: str) -> str:
    """`uri` with its last extension replaced by `suffix` (s3://b/m.skops -> s3://b/m.profile.json)."""
    head, _, last = uri.rpartition("/")
    stem = last.rsplit(".", 1)[0] if "." in last else last
    return f"{head}/{stem}{suffix}" if head else f"{stem}{suffix}"
